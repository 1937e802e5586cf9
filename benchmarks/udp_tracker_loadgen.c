/*
 * udp_tracker_loadgen.c - closed-loop BEP 15 UDP tracker load generator (natkit
 * benchmarks).
 *
 *   udp_tracker_loadgen [-d SECONDS] [-W WARMUP] [-w WINDOW] [-s SOCKETS] [-c CPU]
 *                       [-i INFO_HASH_HEX] HOST:PORT
 *
 * Each of SOCKETS UDP sockets (connected to HOST:PORT) sends a connect request, then
 * keeps WINDOW announces in flight, each with a random peer_id and port on one info_hash,
 * and sends the next when a response with a matching transaction id comes back; an error
 * response (an expired connection id) makes it connect again, and a socket that hears
 * nothing for 500 ms reopens its window. Counts announce responses after WARMUP seconds;
 * prints one JSON line: {"sent":N,"received":N,"errors":N,"seconds":F,"rate":F}.
 * Talks only to HOST:PORT; bounded by -d.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_SOCKETS 256
#define PROTOCOL_ID 0x41727101980ULL

struct client {
    int fd;
    uint64_t connection_id;
    int connected;
    int outstanding;
    uint32_t connect_tid;
    double last_rx;
};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void put64(unsigned char *p, uint64_t v) {
    for (int i = 7; i >= 0; i--) { p[i] = (unsigned char)v; v >>= 8; }
}
static void put32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24); p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8); p[3] = (unsigned char)v;
}
static uint32_t get32(const unsigned char *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static uint64_t get64(const unsigned char *p) {
    return ((uint64_t)get32(p) << 32) | get32(p + 4);
}

static unsigned char info_hash[20];
static long long g_sent, g_received, g_errors;
static int g_counting;

static void send_connect(struct client *c) {
    unsigned char p[16];
    c->connect_tid = (uint32_t)rand();
    put64(p, PROTOCOL_ID);
    put32(p + 8, 0);
    put32(p + 12, c->connect_tid);
    send(c->fd, p, sizeof(p), 0);
    c->connected = 0;
    c->outstanding = 0;
}

static void send_announce(struct client *c) {
    unsigned char p[98];
    memset(p, 0, sizeof(p));
    put64(p, c->connection_id);
    put32(p + 8, 1);
    put32(p + 12, 0x80000000u | (uint32_t)(rand() & 0x7fffffff)); /* high bit: announce */
    memcpy(p + 16, info_hash, 20);
    memcpy(p + 36, "-UL0001-", 8);
    for (int i = 44; i < 56; i++) p[i] = (unsigned char)rand();
    put64(p + 56, 0);   /* downloaded */
    put64(p + 64, 100); /* left */
    put64(p + 72, 0);   /* uploaded */
    put32(p + 80, 0);   /* event */
    put32(p + 84, 0);   /* ip */
    put32(p + 88, (uint32_t)rand());
    put32(p + 92, 30);  /* num_want */
    unsigned port = 1024 + (unsigned)(rand() % 60000);
    p[96] = (unsigned char)(port >> 8);
    p[97] = (unsigned char)port;
    if (send(c->fd, p, sizeof(p), 0) == (ssize_t)sizeof(p)) {
        c->outstanding++;
        if (g_counting) g_sent++;
    }
}

int main(int argc, char **argv) {
    double seconds = 3, warmup = 1;
    int window = 8, nsockets = 16, cpu = -1, i = 1;
    const char *hash_hex = NULL;
    for (; i < argc - 1 && argv[i][0] == '-'; i += 2) {
        if (!strcmp(argv[i], "-d")) seconds = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "-W")) warmup = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "-w")) window = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-s")) nsockets = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-c")) cpu = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-i")) hash_hex = argv[i + 1];
        else { fprintf(stderr, "unknown option %s\n", argv[i]); return 2; }
    }
    if (i != argc - 1 || nsockets < 1 || nsockets > MAX_SOCKETS || window < 1) {
        fprintf(stderr, "usage: udp_tracker_loadgen [-d S] [-W S] [-w N] [-s N] [-c CPU] HOST:PORT\n");
        return 2;
    }
    if (cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(cpu, &set);
        sched_setaffinity(0, sizeof(set), &set);
    }
    char host[64];
    const char *colon = strrchr(argv[i], ':');
    if (!colon || (size_t)(colon - argv[i]) >= sizeof(host)) return 2;
    memcpy(host, argv[i], (size_t)(colon - argv[i]));
    host[colon - argv[i]] = 0;
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(colon + 1))};
    if (inet_pton(AF_INET, host, &to.sin_addr) != 1) return 2;
    srand((unsigned)(time(NULL) ^ getpid()));
    for (int k = 0; k < 20; k++) {
        unsigned byte = (unsigned)rand() & 0xff;
        if (hash_hex != NULL && (strlen(hash_hex) != 40 || sscanf(hash_hex + 2 * k, "%2x", &byte) != 1)) {
            fprintf(stderr, "-i: 40 hex digits expected\n");
            return 2;
        }
        info_hash[k] = (unsigned char)byte;
    }
    static struct client clients[MAX_SOCKETS];
    int ep = epoll_create1(0);
    double start = now_s();
    for (int k = 0; k < nsockets; k++) {
        struct client *c = &clients[k];
        c->fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
        if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&to, sizeof(to)) < 0) {
            perror("socket");
            return 1;
        }
        struct epoll_event ev = {.events = EPOLLIN, .data = {.u32 = (uint32_t)k}};
        epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
        c->last_rx = start;
        send_connect(c);
    }
    double counting_from = start + warmup, end = counting_from + seconds;
    struct epoll_event events[MAX_SOCKETS];
    unsigned char buf[2048];
    while (1) {
        double now = now_s();
        if (now >= end) break;
        if (!g_counting && now >= counting_from) g_counting = 1;
        int n = epoll_wait(ep, events, MAX_SOCKETS, 50);
        for (int e = 0; e < n; e++) {
            struct client *c = &clients[events[e].data.u32];
            for (;;) {
                ssize_t len = recv(c->fd, buf, sizeof(buf), 0);
                if (len < 0) break;
                if (len < 8) continue;
                uint32_t action = get32(buf), tid = get32(buf + 4);
                c->last_rx = now_s();
                if (action == 0 && len >= 16 && tid == c->connect_tid) {
                    c->connection_id = get64(buf + 8);
                    c->connected = 1;
                    for (int w = 0; w < window; w++) send_announce(c);
                } else if (action == 1 && len >= 20 && (tid & 0x80000000u)) {
                    if (c->outstanding > 0) c->outstanding--;
                    if (g_counting) g_received++;
                    send_announce(c);
                } else if (action == 3) {
                    if (g_counting) g_errors++;
                    send_connect(c);
                }
            }
        }
        now = now_s();
        for (int k = 0; k < nsockets; k++) {
            struct client *c = &clients[k];
            if (now - c->last_rx > 0.5) {
                c->last_rx = now;
                if (c->connected) {
                    c->outstanding = 0;
                    for (int w = 0; w < window; w++) send_announce(c);
                } else {
                    send_connect(c);
                }
            }
        }
    }
    double measured = now_s() - counting_from;
    printf("{\"sent\":%lld,\"received\":%lld,\"errors\":%lld,\"seconds\":%.3f,\"rate\":%.1f}\n",
           g_sent, g_received, g_errors, measured, measured > 0 ? g_received / measured : 0.0);
    return 0;
}
