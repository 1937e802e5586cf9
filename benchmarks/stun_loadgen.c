/*
 * stun_loadgen.c - closed-loop STUN Binding load generator (natkit benchmarks).
 *
 * Client mode (default):
 *   stun_loadgen [-d SECONDS] [-w WINDOW] [-b BATCH] [-s SOCKETS] [-c CPU]
 *                [-T TIMEOUT_MS] HOST:PORT
 *
 *   Sends RFC 8489 Binding requests (with FINGERPRINT) in sendmmsg batches over
 *   SOCKETS connected UDP sockets, keeps at most WINDOW requests outstanding
 *   (split evenly over the sockets), refills the window in BATCH-sized chunks as
 *   responses arrive (recvmmsg, non-blocking + epoll), and re-opens slots whose
 *   request got no answer within TIMEOUT_MS.  A response counts only if it is a
 *   Binding success (0x0101) with the magic cookie, a consistent length and a
 *   transaction id that matches an outstanding request: the transaction id
 *   carries the slot index (bytes 0-3), a per-request random key (bytes 4-7)
 *   and a per-run random salt (bytes 8-11).
 *   Prints one JSON line:
 *     {"sent":N,"received":N,"seconds":F,"rate":F,"timeouts":N,"invalid":N,...}
 *
 * Reflector mode (the generator's own ceiling):
 *   stun_loadgen --serve [-d MAX_SECONDS] [-b BATCH] [-c CPU] HOST:PORT
 *
 *   Answers every datagram with a Binding success response carrying an
 *   XOR-MAPPED-ADDRESS, using recvmmsg/sendmmsg; no validation.  PORT may be 0;
 *   prints "READY <port>" once bound and exits after MAX_SECONDS or on SIGTERM.
 *
 * Only talks to the address it is given; every run is bounded by -d.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define STUN_COOKIE 0x2112A442u
#define FP_XOR 0x5354554Eu
#define REQ_LEN 28 /* 20-byte header + FINGERPRINT (4 + 4) */
#define MAX_DGRAM 1500
#define MAX_BATCH 1024
#define MAX_SOCKETS 64

static volatile sig_atomic_t g_stop = 0;

static void on_signal(int sig) {
    (void)sig;
    g_stop = 1;
}

/* ---------------------------------------------------------------- helpers */

static uint32_t crc_table[256];

static void crc_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[i] = c;
    }
}

static uint32_t crc32_buf(const uint8_t *p, size_t n) {
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) c = crc_table[(c ^ p[i]) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

static uint64_t rng_state;

static uint32_t rng32(void) { /* xorshift64* */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * 0x2545F4914F6CDD1DULL) >> 32);
}

static void rng_seed(void) {
    uint64_t s = 0;
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        if (read(fd, &s, sizeof s) != (ssize_t)sizeof s) s = 0;
        close(fd);
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    s ^= ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)ts.tv_sec ^ ((uint64_t)getpid() << 40);
    rng_state = s ? s : 0x9E3779B97F4A7C15ULL;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void put16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static void put32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static uint16_t get16(const uint8_t *p) { return (uint16_t)((p[0] << 8) | p[1]); }

static uint32_t get32(const uint8_t *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static int pin_cpu(int cpu) {
    if (cpu < 0) return 0;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof set, &set) != 0) {
        fprintf(stderr, "stun_loadgen: sched_setaffinity(%d): %s\n", cpu, strerror(errno));
        return -1;
    }
    return 0;
}

/* Parse "host:port", "[v6]:port"; resolves numerically only (loopback use). */
static int parse_target(const char *spec, struct sockaddr_storage *out, socklen_t *outlen) {
    char host[256];
    const char *port;
    if (spec[0] == '[') {
        const char *close_br = strchr(spec, ']');
        if (!close_br || close_br[1] != ':') return -1;
        size_t n = (size_t)(close_br - spec - 1);
        if (n >= sizeof host) return -1;
        memcpy(host, spec + 1, n);
        host[n] = 0;
        port = close_br + 2;
    } else {
        const char *colon = strrchr(spec, ':');
        if (!colon) return -1;
        size_t n = (size_t)(colon - spec);
        if (n >= sizeof host) return -1;
        memcpy(host, spec, n);
        host[n] = 0;
        port = colon + 1;
    }
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_DGRAM;
    hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0 || !res) {
        fprintf(stderr, "stun_loadgen: bad address '%s': %s\n", spec, gai_strerror(rc));
        return -1;
    }
    memcpy(out, res->ai_addr, res->ai_addrlen);
    *outlen = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

static void set_bufs(int fd, int bytes) {
    /* Best effort: capped by net.core.{r,w}mem_max unless we may force it. */
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &bytes, sizeof bytes) != 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof bytes);
    if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &bytes, sizeof bytes) != 0)
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bytes, sizeof bytes);
}

/* ---------------------------------------------------------------- client */

typedef struct {
    int fd;
    uint32_t first_slot; /* slots [first_slot, first_slot + nslots) belong here */
    uint32_t nslots;
    uint32_t *free_stack;
    uint32_t nfree;
} sock_t;

static int run_client(const struct sockaddr_storage *dst, socklen_t dstlen, double duration,
                      uint32_t window, uint32_t batch, uint32_t nsock, double timeout_s) {
    if (nsock < 1 || nsock > MAX_SOCKETS) {
        fprintf(stderr, "stun_loadgen: sockets must be 1..%d\n", MAX_SOCKETS);
        return 2;
    }
    if (window < nsock) window = nsock;
    uint32_t per_sock = window / nsock;
    window = per_sock * nsock;
    if (batch < 1) batch = 1;
    if (batch > MAX_BATCH) batch = MAX_BATCH;
    if (batch > per_sock) batch = per_sock;

    uint32_t salt = rng32();
    uint32_t *key = calloc(window, sizeof *key);
    uint8_t *inuse = calloc(window, 1);
    double *sent_at = calloc(window, sizeof *sent_at);
    uint32_t *stacks = calloc(window, sizeof *stacks);
    uint8_t (*sbuf)[REQ_LEN] = calloc(batch, REQ_LEN);
    uint8_t (*rbuf)[MAX_DGRAM] = calloc(batch, MAX_DGRAM);
    struct mmsghdr *smsg = calloc(batch, sizeof *smsg);
    struct mmsghdr *rmsg = calloc(batch, sizeof *rmsg);
    struct iovec *siov = calloc(batch, sizeof *siov);
    struct iovec *riov = calloc(batch, sizeof *riov);
    uint32_t *batch_slots = calloc(batch, sizeof *batch_slots);
    sock_t socks[MAX_SOCKETS];
    if (!key || !inuse || !sent_at || !stacks || !sbuf || !rbuf || !smsg || !rmsg || !siov ||
        !riov || !batch_slots) {
        fprintf(stderr, "stun_loadgen: out of memory\n");
        return 2;
    }
    for (uint32_t i = 0; i < batch; i++) {
        siov[i].iov_base = sbuf[i];
        siov[i].iov_len = REQ_LEN;
        smsg[i].msg_hdr.msg_iov = &siov[i];
        smsg[i].msg_hdr.msg_iovlen = 1;
        riov[i].iov_base = rbuf[i];
        riov[i].iov_len = MAX_DGRAM;
        rmsg[i].msg_hdr.msg_iov = &riov[i];
        rmsg[i].msg_hdr.msg_iovlen = 1;
        /* Constant part of every request. */
        put16(sbuf[i], 0x0001);
        put16(sbuf[i] + 2, 8);
        put32(sbuf[i] + 4, STUN_COOKIE);
        put16(sbuf[i] + 20, 0x8028);
        put16(sbuf[i] + 22, 4);
    }

    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) {
        perror("stun_loadgen: epoll_create1");
        return 2;
    }
    for (uint32_t s = 0; s < nsock; s++) {
        int fd = socket(dst->ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0 || connect(fd, (const struct sockaddr *)dst, dstlen) != 0) {
            perror("stun_loadgen: socket/connect");
            return 2;
        }
        set_bufs(fd, 4 << 20);
        socks[s].fd = fd;
        socks[s].first_slot = s * per_sock;
        socks[s].nslots = per_sock;
        socks[s].free_stack = stacks + s * per_sock;
        socks[s].nfree = per_sock;
        for (uint32_t i = 0; i < per_sock; i++)
            socks[s].free_stack[i] = s * per_sock + (per_sock - 1 - i);
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = s};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
            perror("stun_loadgen: epoll_ctl");
            return 2;
        }
    }

    uint64_t sent = 0, received = 0, timeouts = 0, invalid = 0, stale = 0, send_errors = 0;
    uint64_t send_calls = 0, recv_calls = 0;
    double t0 = now_s();
    double end = t0 + duration;
    double next_sweep = t0 + timeout_s / 4;
    double now = t0;
    struct epoll_event events[MAX_SOCKETS];

    while (!g_stop) {
        now = now_s();
        if (now >= end) break;

        /* 1. Refill: send full batches while there is room (or any room at all
         * when nothing is in flight on that socket, so we never stall). */
        for (uint32_t s = 0; s < nsock; s++) {
            sock_t *sk = &socks[s];
            while (sk->nfree >= batch || (sk->nfree > 0 && sk->nfree == sk->nslots)) {
                uint32_t n = sk->nfree < batch ? sk->nfree : batch;
                for (uint32_t i = 0; i < n; i++) {
                    uint32_t slot = sk->free_stack[--sk->nfree];
                    uint32_t k = rng32();
                    uint8_t *m = sbuf[i];
                    memcpy(m + 8, &slot, 4);
                    memcpy(m + 12, &k, 4);
                    memcpy(m + 16, &salt, 4);
                    put32(m + 24, crc32_buf(m, 20) ^ FP_XOR);
                    key[slot] = k;
                    inuse[slot] = 1;
                    sent_at[slot] = now;
                    batch_slots[i] = slot;
                }
                int r = sendmmsg(sk->fd, smsg, n, 0);
                send_calls++;
                if (r < 0) r = 0;
                if ((uint32_t)r < n) {
                    /* Socket buffer full (or ECONNREFUSED from an ICMP): give
                     * the unsent slots back and try again after receiving. */
                    if (r == 0 && errno != EAGAIN && errno != EWOULDBLOCK) send_errors++;
                    for (uint32_t i = (uint32_t)r; i < n; i++) {
                        inuse[batch_slots[i]] = 0;
                        sk->free_stack[sk->nfree++] = batch_slots[i];
                    }
                    sent += (uint64_t)r;
                    break;
                }
                sent += (uint64_t)r;
            }
        }

        /* 2. Wait for readability (1 ms cap so timers and the deadline run). */
        int nev = epoll_wait(ep, events, (int)nsock, 1);
        if (nev < 0) {
            if (errno == EINTR) continue;
            perror("stun_loadgen: epoll_wait");
            break;
        }
        now = now_s();
        if (now >= end) break;

        /* 3. Drain every readable socket. */
        for (int e = 0; e < nev; e++) {
            sock_t *sk = &socks[events[e].data.u32];
            for (;;) {
                int r = recvmmsg(sk->fd, rmsg, batch, MSG_DONTWAIT, NULL);
                recv_calls++;
                if (r <= 0) break;
                for (int i = 0; i < r; i++) {
                    const uint8_t *m = rbuf[i];
                    unsigned len = rmsg[i].msg_len;
                    if (len < 20 || get16(m) != 0x0101 || get32(m + 4) != STUN_COOKIE ||
                        (unsigned)get16(m + 2) + 20 != len) {
                        invalid++;
                        continue;
                    }
                    uint32_t slot, k, sl;
                    memcpy(&slot, m + 8, 4);
                    memcpy(&k, m + 12, 4);
                    memcpy(&sl, m + 16, 4);
                    if (sl != salt || slot < sk->first_slot ||
                        slot >= sk->first_slot + sk->nslots) {
                        invalid++;
                        continue;
                    }
                    if (!inuse[slot] || key[slot] != k) {
                        stale++; /* answer to a request we already timed out */
                        continue;
                    }
                    inuse[slot] = 0;
                    sk->free_stack[sk->nfree++] = slot;
                    received++;
                }
                if ((uint32_t)r < batch) break;
            }
        }

        /* 4. Re-open slots whose request was lost. */
        if (now >= next_sweep) {
            next_sweep = now + timeout_s / 4;
            double cutoff = now - timeout_s;
            for (uint32_t s = 0; s < nsock; s++) {
                sock_t *sk = &socks[s];
                for (uint32_t slot = sk->first_slot; slot < sk->first_slot + sk->nslots; slot++) {
                    if (inuse[slot] && sent_at[slot] < cutoff) {
                        inuse[slot] = 0;
                        sk->free_stack[sk->nfree++] = slot;
                        timeouts++;
                    }
                }
            }
        }
    }
    double elapsed = now - t0;
    if (elapsed <= 0) elapsed = 1e-9;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu_s = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6 +
                   (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec * 1e-6;
    printf("{\"sent\":%llu,\"received\":%llu,\"seconds\":%.6f,\"rate\":%.1f,"
           "\"timeouts\":%llu,\"invalid\":%llu,\"stale\":%llu,\"send_errors\":%llu,"
           "\"send_calls\":%llu,\"recv_calls\":%llu,"
           "\"cpu_seconds\":%.3f,\"window\":%u,\"batch\":%u,\"sockets\":%u}\n",
           (unsigned long long)sent, (unsigned long long)received, elapsed,
           (double)received / elapsed, (unsigned long long)timeouts,
           (unsigned long long)invalid, (unsigned long long)stale,
           (unsigned long long)send_errors, (unsigned long long)send_calls,
           (unsigned long long)recv_calls, cpu_s, window, batch, nsock);
    fflush(stdout);
    for (uint32_t s = 0; s < nsock; s++) close(socks[s].fd);
    close(ep);
    return 0;
}

/* ------------------------------------------------------------- reflector */

static int run_reflector(const struct sockaddr_storage *bind_addr, socklen_t bind_len,
                         double max_seconds, uint32_t batch) {
    if (batch < 1) batch = 1;
    if (batch > MAX_BATCH) batch = MAX_BATCH;
    int fd = socket(bind_addr->ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || bind(fd, (const struct sockaddr *)bind_addr, bind_len) != 0) {
        perror("stun_loadgen: reflector bind");
        return 2;
    }
    set_bufs(fd, 4 << 20);
    struct timeval tv = {.tv_sec = 0, .tv_usec = 200000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    struct sockaddr_storage local;
    socklen_t llen = sizeof local;
    getsockname(fd, (struct sockaddr *)&local, &llen);
    int port = ntohs(local.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&local)->sin6_port
                                                 : ((struct sockaddr_in *)&local)->sin_port);
    printf("READY %d\n", port);
    fflush(stdout);

    uint8_t (*rbuf)[MAX_DGRAM] = calloc(batch, MAX_DGRAM);
    uint8_t (*sbuf)[44] = calloc(batch, 44);
    struct sockaddr_storage *peers = calloc(batch, sizeof *peers);
    struct mmsghdr *rmsg = calloc(batch, sizeof *rmsg);
    struct mmsghdr *smsg = calloc(batch, sizeof *smsg);
    struct iovec *riov = calloc(batch, sizeof *riov);
    struct iovec *siov = calloc(batch, sizeof *siov);
    if (!rbuf || !sbuf || !peers || !rmsg || !smsg || !riov || !siov) return 2;
    for (uint32_t i = 0; i < batch; i++) {
        riov[i].iov_base = rbuf[i];
        riov[i].iov_len = MAX_DGRAM;
        siov[i].iov_base = sbuf[i];
        put16(sbuf[i], 0x0101);
        put32(sbuf[i] + 4, STUN_COOKIE);
    }
    uint64_t answered = 0;
    double end = now_s() + max_seconds;
    while (!g_stop && now_s() < end) {
        for (uint32_t i = 0; i < batch; i++) {
            rmsg[i].msg_hdr.msg_name = &peers[i];
            rmsg[i].msg_hdr.msg_namelen = sizeof peers[i];
            rmsg[i].msg_hdr.msg_iov = &riov[i];
            rmsg[i].msg_hdr.msg_iovlen = 1;
        }
        int r = recvmmsg(fd, rmsg, batch, MSG_WAITFORONE, NULL);
        if (r <= 0) continue; /* timeout / EINTR: re-check the deadline */
        int n = 0;
        for (int i = 0; i < r; i++) {
            if (rmsg[i].msg_len < 20) continue;
            uint8_t *o = sbuf[n];
            memcpy(o + 8, rbuf[i] + 8, 12); /* transaction id */
            size_t len;
            put16(o + 20, 0x0020);
            if (peers[i].ss_family == AF_INET) {
                const struct sockaddr_in *a = (const struct sockaddr_in *)&peers[i];
                put16(o + 2, 12);
                put16(o + 22, 8);
                o[24] = 0;
                o[25] = 0x01;
                put16(o + 26, (uint16_t)(ntohs(a->sin_port) ^ (STUN_COOKIE >> 16)));
                put32(o + 28, ntohl(a->sin_addr.s_addr) ^ STUN_COOKIE);
                len = 32;
            } else {
                const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&peers[i];
                put16(o + 2, 24);
                put16(o + 22, 20);
                o[24] = 0;
                o[25] = 0x02;
                put16(o + 26, (uint16_t)(ntohs(a->sin6_port) ^ (STUN_COOKIE >> 16)));
                for (int b = 0; b < 16; b++) o[28 + b] = a->sin6_addr.s6_addr[b] ^ o[4 + b];
                len = 44;
            }
            siov[n].iov_len = len;
            smsg[n].msg_hdr.msg_iov = &siov[n];
            smsg[n].msg_hdr.msg_iovlen = 1;
            smsg[n].msg_hdr.msg_name = &peers[i];
            smsg[n].msg_hdr.msg_namelen = rmsg[i].msg_hdr.msg_namelen;
            n++;
        }
        int off = 0;
        while (off < n) {
            int w = sendmmsg(fd, smsg + off, (unsigned)(n - off), 0);
            if (w <= 0) break; /* drop the rest, like any overloaded server */
            off += w;
        }
        answered += (uint64_t)off;
    }
    fprintf(stderr, "stun_loadgen: reflector answered %llu\n", (unsigned long long)answered);
    close(fd);
    return 0;
}

/* ------------------------------------------------------------------ main */

static void usage(void) {
    fprintf(stderr,
            "usage: stun_loadgen [-d SECONDS] [-w WINDOW] [-b BATCH] [-s SOCKETS] [-c CPU]\n"
            "                    [-T TIMEOUT_MS] HOST:PORT\n"
            "       stun_loadgen --serve [-d MAX_SECONDS] [-b BATCH] [-c CPU] HOST:PORT\n");
}

int main(int argc, char **argv) {
    double duration = 3.0, timeout_ms = 100.0;
    long window = 256, batch = 32, nsock = 1;
    int cpu = -1, serve = 0;
    static const struct option longopts[] = {
        {"duration", required_argument, 0, 'd'}, {"window", required_argument, 0, 'w'},
        {"batch", required_argument, 0, 'b'},    {"sockets", required_argument, 0, 's'},
        {"cpu", required_argument, 0, 'c'},      {"timeout-ms", required_argument, 0, 'T'},
        {"serve", no_argument, 0, 'S'},          {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    int opt;
    while ((opt = getopt_long(argc, argv, "d:w:b:s:c:T:Sh", longopts, NULL)) != -1) {
        switch (opt) {
        case 'd': duration = atof(optarg); break;
        case 'w': window = atol(optarg); break;
        case 'b': batch = atol(optarg); break;
        case 's': nsock = atol(optarg); break;
        case 'c': cpu = atoi(optarg); break;
        case 'T': timeout_ms = atof(optarg); break;
        case 'S': serve = 1; break;
        default: usage(); return opt == 'h' ? 0 : 2;
        }
    }
    if (optind != argc - 1 || duration <= 0 || duration > 3600 || window < 1 ||
        window > 1000000 || batch < 1 || nsock < 1 || timeout_ms <= 0) {
        usage();
        return 2;
    }
    struct sockaddr_storage addr;
    socklen_t alen;
    if (parse_target(argv[optind], &addr, &alen) != 0) return 2;
    if (pin_cpu(cpu) != 0) return 2;
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    crc_init();
    rng_seed();
    if (serve) return run_reflector(&addr, alen, duration, (uint32_t)batch);
    return run_client(&addr, alen, duration, (uint32_t)window, (uint32_t)batch, (uint32_t)nsock,
                      timeout_ms / 1000.0);
}
