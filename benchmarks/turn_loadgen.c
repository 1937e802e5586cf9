/*
 * turn_loadgen.c - closed-loop TURN ChannelData load generator and echo peer (natkit
 * benchmarks). It saturates a relay where turnutils_uclient cannot (uclient tops out near
 * 42k messages/s on one core of the development machine, below what either relay carries).
 *
 * Client mode:
 *   turn_loadgen [-d SECONDS] [-W WARMUP] [-w WINDOW] [-l LENGTH] [-n CHANNEL] [-c CPU]
 *                [-T TIMEOUT_MS] FD...
 *
 *   FD... are inherited UDP sockets, each already connected to the relay, holding an
 *   allocation with CHANNEL bound to an echo peer (the caller sets that up). On each
 *   socket it keeps WINDOW ChannelData messages of LENGTH bytes outstanding (sendmmsg),
 *   and sends one more for each echo that comes back as ChannelData on CHANNEL carrying
 *   this run's salt (recvmmsg, epoll). A socket that gets nothing for TIMEOUT_MS counts
 *   its outstanding messages as lost and refills its window. Counts only after WARMUP
 *   seconds; prints one JSON line:
 *     {"sent":N,"received":N,"lost":N,"invalid":N,"seconds":F,"rate":F}
 *
 * Echo mode:
 *   turn_loadgen --echo [-d MAX_SECONDS] [-c CPU] HOST:PORT
 *
 *   Sends every datagram back to its source (recvmmsg/sendmmsg). PORT may be 0; prints
 *   "READY <port>" once bound and exits after MAX_SECONDS or on SIGTERM.
 *
 * Talks only to the sockets and the address it is given; every run is bounded by -d.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_DGRAM 2048
#define BATCH 64
#define MAX_FDS 1024

static volatile sig_atomic_t g_stop = 0;

static void on_signal(int sig) {
    (void)sig;
    g_stop = 1;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void pin(int cpu) {
    if (cpu < 0)
        return;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    sched_setaffinity(0, sizeof(set), &set);
}

static unsigned char rx[BATCH][MAX_DGRAM];
static struct iovec rx_iov[BATCH];
static struct mmsghdr rx_msgs[BATCH];
static struct sockaddr_in6 rx_names[BATCH];

static void setup_rx(int with_names) {
    memset(rx_msgs, 0, sizeof(rx_msgs));
    for (int i = 0; i < BATCH; i++) {
        rx_iov[i].iov_base = rx[i];
        rx_iov[i].iov_len = MAX_DGRAM;
        rx_msgs[i].msg_hdr.msg_iov = &rx_iov[i];
        rx_msgs[i].msg_hdr.msg_iovlen = 1;
        if (with_names) {
            rx_msgs[i].msg_hdr.msg_name = &rx_names[i];
            rx_msgs[i].msg_hdr.msg_namelen = sizeof(rx_names[i]);
        }
    }
}

/* ------------------------------------------------------------------ echo peer */

static int run_echo(const char *target, double max_seconds) {
    char host[256];
    const char *colon = strrchr(target, ':');
    if (colon == NULL || (size_t)(colon - target) >= sizeof(host)) {
        fprintf(stderr, "echo: HOST:PORT expected\n");
        return 2;
    }
    memcpy(host, target, (size_t)(colon - target));
    host[colon - target] = 0;
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(colon + 1))};
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
        fprintf(stderr, "echo: %s is not an IPv4 address\n", host);
        return 2;
    }
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    int size = 4 << 20;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));
    if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
        perror("echo: bind");
        return 1;
    }
    socklen_t len = sizeof(addr);
    getsockname(fd, (struct sockaddr *)&addr, &len);
    printf("READY %d\n", ntohs(addr.sin_port));
    fflush(stdout);
    setup_rx(1);
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data = {.fd = fd}};
    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    double deadline = now_s() + max_seconds;
    while (!g_stop && now_s() < deadline) {
        struct epoll_event got;
        if (epoll_wait(ep, &got, 1, 200) <= 0)
            continue;
        for (;;) {
            for (int i = 0; i < BATCH; i++)
                rx_msgs[i].msg_hdr.msg_namelen = sizeof(rx_names[i]);
            int n = recvmmsg(fd, rx_msgs, BATCH, MSG_DONTWAIT, NULL);
            if (n <= 0)
                break;
            for (int i = 0; i < n; i++)
                rx_iov[i].iov_len = rx_msgs[i].msg_len; /* echo exactly what came */
            int start = 0;
            while (start < n) {
                int sent = sendmmsg(fd, rx_msgs + start, (unsigned)(n - start), 0);
                if (sent <= 0) {
                    start++; /* full buffer: that echo is lost, like any UDP drop */
                    continue;
                }
                start += sent;
            }
            for (int i = 0; i < n; i++)
                rx_iov[i].iov_len = MAX_DGRAM;
            if (n < BATCH)
                break;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------ client */

struct client {
    int fd;
    int outstanding;
    double last_rx;
};

static unsigned char tx[BATCH][MAX_DGRAM];
static struct iovec tx_iov[BATCH];
static struct mmsghdr tx_msgs[BATCH];

static long long g_sent, g_received, g_lost, g_invalid;
static int g_counting;

static void send_some(struct client *c, int count) {
    while (count > 0) {
        int n = count < BATCH ? count : BATCH;
        int sent = sendmmsg(c->fd, tx_msgs, (unsigned)n, 0);
        if (sent <= 0) {
            if (sent < 0 && errno == EINTR)
                continue;
            return; /* the socket buffer is full: the window refills on the next echo */
        }
        c->outstanding += sent;
        if (g_counting)
            g_sent += sent;
        count -= sent;
    }
}

static int run_client(char **fds, int nfds, double seconds, double warmup, int window,
                      int length, int channel, int timeout_ms) {
    static struct client clients[MAX_FDS];
    if (nfds > MAX_FDS || length < 8 || length + 4 > MAX_DGRAM || window < 1 || window > BATCH) {
        fprintf(stderr, "client: at most %d sockets, 8 <= LENGTH <= %d, 1 <= WINDOW <= %d\n",
                MAX_FDS, MAX_DGRAM - 4, BATCH);
        return 2;
    }
    uint32_t salt;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    salt = (uint32_t)(ts.tv_nsec ^ (ts.tv_sec << 7) ^ getpid());
    for (int i = 0; i < BATCH; i++) {
        unsigned char *p = tx[i];
        p[0] = (unsigned char)(channel >> 8);
        p[1] = (unsigned char)channel;
        p[2] = (unsigned char)(length >> 8);
        p[3] = (unsigned char)length;
        memcpy(p + 4, &salt, 4);
        memset(p + 8, 0xA5, (size_t)length - 4);
        tx_iov[i].iov_base = p;
        tx_iov[i].iov_len = (size_t)length + 4;
        tx_msgs[i].msg_hdr.msg_iov = &tx_iov[i];
        tx_msgs[i].msg_hdr.msg_iovlen = 1;
    }
    setup_rx(0);
    int ep = epoll_create1(0);
    double start = now_s();
    for (int i = 0; i < nfds; i++) {
        clients[i].fd = atoi(fds[i]);
        clients[i].outstanding = 0;
        clients[i].last_rx = start;
        struct epoll_event ev = {.events = EPOLLIN, .data = {.u32 = (uint32_t)i}};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, clients[i].fd, &ev) < 0) {
            fprintf(stderr, "client: fd %s: %s\n", fds[i], strerror(errno));
            return 2;
        }
        send_some(&clients[i], window);
    }
    double counting_from = start + warmup, end = counting_from + seconds;
    double timeout = timeout_ms / 1000.0, next_check = start + timeout;
    struct epoll_event events[MAX_FDS];
    while (!g_stop) {
        double now = now_s();
        if (now >= end)
            break;
        if (!g_counting && now >= counting_from)
            g_counting = 1;
        int n = epoll_wait(ep, events, MAX_FDS, 50);
        for (int e = 0; e < n; e++) {
            struct client *c = &clients[events[e].data.u32];
            int echoed = 0;
            for (;;) {
                int got = recvmmsg(c->fd, rx_msgs, BATCH, MSG_DONTWAIT, NULL);
                if (got <= 0)
                    break;
                for (int i = 0; i < got; i++) {
                    const unsigned char *p = rx[i];
                    unsigned len = rx_msgs[i].msg_len;
                    if (len >= 8 && p[0] == (unsigned char)(channel >> 8) &&
                        p[1] == (unsigned char)channel &&
                        ((p[2] << 8) | p[3]) == length && len >= (unsigned)length + 4 &&
                        memcmp(p + 4, &salt, 4) == 0) {
                        echoed++;
                    } else if (g_counting) {
                        g_invalid++;
                    }
                }
                if (got < BATCH)
                    break;
            }
            if (echoed) {
                c->outstanding -= echoed;
                if (c->outstanding < 0)
                    c->outstanding = 0;
                if (g_counting)
                    g_received += echoed;
                c->last_rx = now_s();
                send_some(c, window - c->outstanding);
            }
        }
        now = now_s();
        if (now >= next_check) { /* reopen the windows of sockets that went quiet */
            next_check = now + timeout / 4;
            for (int i = 0; i < nfds; i++) {
                struct client *c = &clients[i];
                if (now - c->last_rx >= timeout) {
                    if (g_counting)
                        g_lost += c->outstanding;
                    c->outstanding = 0;
                    c->last_rx = now;
                    send_some(c, window);
                }
            }
        }
    }
    double measured = now_s() - counting_from;
    printf("{\"sent\":%lld,\"received\":%lld,\"lost\":%lld,\"invalid\":%lld,"
           "\"seconds\":%.3f,\"rate\":%.1f}\n",
           g_sent, g_received, g_lost, g_invalid, measured,
           measured > 0 ? g_received / measured : 0.0);
    return 0;
}

int main(int argc, char **argv) {
    double seconds = 3, warmup = 1;
    int window = 8, length = 200, channel = 0x4000, cpu = -1, timeout_ms = 300, echo = 0;
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        const char *opt = argv[i];
        if (strcmp(opt, "--echo") == 0) {
            echo = 1;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "%s needs a value\n", opt);
            return 2;
        }
        const char *val = argv[++i];
        if (strcmp(opt, "-d") == 0)
            seconds = atof(val);
        else if (strcmp(opt, "-W") == 0)
            warmup = atof(val);
        else if (strcmp(opt, "-w") == 0)
            window = atoi(val);
        else if (strcmp(opt, "-l") == 0)
            length = atoi(val);
        else if (strcmp(opt, "-n") == 0)
            channel = (int)strtol(val, NULL, 0);
        else if (strcmp(opt, "-c") == 0)
            cpu = atoi(val);
        else if (strcmp(opt, "-T") == 0)
            timeout_ms = atoi(val);
        else {
            fprintf(stderr, "unknown option %s\n", opt);
            return 2;
        }
    }
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    pin(cpu);
    if (echo) {
        if (i != argc - 1) {
            fprintf(stderr, "usage: turn_loadgen --echo [-d S] [-c CPU] HOST:PORT\n");
            return 2;
        }
        return run_echo(argv[i], seconds);
    }
    if (i >= argc) {
        fprintf(stderr, "usage: turn_loadgen [options] FD...\n");
        return 2;
    }
    return run_client(argv + i, argc - i, seconds, warmup, window, length, channel, timeout_ms);
}
