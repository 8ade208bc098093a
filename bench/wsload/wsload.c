/*
 * wsload: the WebSocket load generator of bench/ (scenario ws-echo). Built by bench/run.py with
 * `cc -O2 -o WORK/wsload bench/wsload/wsload.c` and pinned to the load CPU like wrk.
 *
 * One thread, epoll, N connections to a loopback address. Each connection completes the RFC 6455
 * handshake, then plays ping-pong: it sends one binary message (a frame masked once, at start-up, and
 * re-sent as is) and waits for its echo before sending the next. Echoed frames are parsed for their
 * lengths only (no payload is copied or checked beyond its length).
 *
 * Bounded in time and count: -d SECONDS of load (then it stops sending), or -n MESSAGES in total; -t
 * SECONDS is a hard limit on the whole run either way. Loopback addresses only (127.0.0.0/8).
 *
 * Prints one line: BENCH_JSON {"messages": ..., "bytes": ..., "duration_us": ..., "p50_us": ...,
 * "p99_us": ..., "connected": ..., "connect_errors": ..., "handshake_errors": ..., "read_errors": ...,
 * "protocol_errors": ..., "cpu_us": ...} and exits 0 when every connection was established.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS 4096
#define RECV_BUF (256 * 1024)
#define HIST_US 1000000 /* round trips up to 1 s at 1 us resolution; longer ones land in the last slot */
#define MAX_MESSAGE (1 << 20)

enum state { CONNECTING, HANDSHAKE, RUNNING, FINISHED, FAILED };

struct conn {
    int fd;
    enum state state;
    size_t out_off;       /* bytes of the current frame already written */
    const uint8_t *out;   /* the frame being written (the message, or a pong) */
    size_t out_len;
    int waiting;          /* a message is out and its echo not yet complete */
    uint64_t sent_ns;
    uint64_t echoed;      /* payload bytes of the echo received so far (over fragments) */
    uint8_t *buf;
    size_t len;
    uint8_t pong[2 + 4 + 125];
};

static struct conn conns[MAX_CONNS];
static uint32_t *hist;
static uint8_t *frame;
static size_t frame_len;
static size_t message_size = 1024;
static uint8_t close_frame[8];
static uint64_t messages, bytes_in, sent_total, limit_messages;
static uint64_t connect_errors, handshake_errors, read_errors, protocol_errors;
static int stop_sending;
static const uint8_t MASK[4] = {0x3a, 0x91, 0x5c, 0xe7};

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void build_frame(void) {
    size_t header = message_size < 126 ? 2 : message_size < 65536 ? 4 : 10;
    frame_len = header + 4 + message_size;
    frame = malloc(frame_len);
    if (!frame) exit(2);
    frame[0] = 0x82; /* FIN, binary */
    if (header == 2) {
        frame[1] = 0x80 | (uint8_t)message_size;
    } else if (header == 4) {
        frame[1] = 0x80 | 126;
        frame[2] = (uint8_t)(message_size >> 8);
        frame[3] = (uint8_t)message_size;
    } else {
        frame[1] = 0x80 | 127;
        for (int i = 0; i < 8; i++) frame[2 + i] = (uint8_t)((uint64_t)message_size >> (56 - 8 * i));
    }
    memcpy(frame + header, MASK, 4);
    for (size_t i = 0; i < message_size; i++) {
        uint8_t plain = (uint8_t)(i * 131 + 7);
        frame[header + 4 + i] = plain ^ MASK[i % 4];
    }
    /* close 1000, masked */
    close_frame[0] = 0x88;
    close_frame[1] = 0x80 | 2;
    memcpy(close_frame + 2, MASK, 4);
    close_frame[6] = 0x03 ^ MASK[0];
    close_frame[7] = 0xe8 ^ MASK[1];
}

static void fail(struct conn *c, uint64_t *counter) {
    if (c->state == FAILED || c->state == FINISHED) return;
    (*counter)++;
    c->state = FAILED;
    close(c->fd);
    c->fd = -1;
}

static int want_write(int ep, struct conn *c, int on) {
    struct epoll_event ev = {.events = EPOLLIN | (on ? EPOLLOUT : 0), .data.ptr = c};
    return epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

/* Writes what is left of c->out; 1 when all of it is out, 0 when the socket is full, -1 on error. */
static int flush(int ep, struct conn *c) {
    while (c->out_off < c->out_len) {
        ssize_t n = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
        if (n > 0) {
            c->out_off += (size_t)n;
        } else if (n < 0 && errno == EAGAIN) {
            want_write(ep, c, 1);
            return 0;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else {
            return -1;
        }
    }
    c->out = NULL;
    c->out_len = c->out_off = 0;
    return 1;
}

static int may_send(void) {
    return !stop_sending && (limit_messages == 0 || sent_total < limit_messages);
}

static void send_message(int ep, struct conn *c) {
    if (!may_send()) {
        c->state = FINISHED;
        return;
    }
    if (c->out != NULL) { /* a pong is still going out: never interleave two frames */
        fail(c, &protocol_errors);
        return;
    }
    sent_total++;
    c->waiting = 1;
    c->echoed = 0;
    c->out = frame;
    c->out_len = frame_len;
    c->out_off = 0;
    c->sent_ns = now_ns();
    if (flush(ep, c) < 0) fail(c, &read_errors);
}

static void message_done(int ep, struct conn *c) {
    uint64_t rtt_us = (now_ns() - c->sent_ns) / 1000;
    hist[rtt_us < HIST_US ? rtt_us : HIST_US - 1]++;
    messages++;
    bytes_in += c->echoed;
    c->waiting = 0;
    send_message(ep, c);
}

/* Parses the frames in c->buf; returns -1 on a protocol error. */
static int parse_frames(int ep, struct conn *c) {
    size_t pos = 0;
    while (c->len - pos >= 2) {
        uint8_t *p = c->buf + pos;
        int fin = p[0] & 0x80, opcode = p[0] & 0x0f;
        if (p[1] & 0x80) return -1; /* a server never masks */
        uint64_t plen = p[1] & 0x7f;
        size_t header = 2;
        if (plen == 126) {
            if (c->len - pos < 4) break;
            plen = ((uint64_t)p[2] << 8) | p[3];
            header = 4;
        } else if (plen == 127) {
            if (c->len - pos < 10) break;
            plen = 0;
            for (int i = 0; i < 8; i++) plen = (plen << 8) | p[2 + i];
            header = 10;
        }
        if (plen > MAX_MESSAGE) return -1;
        if (c->len - pos < header + plen) break;
        if (opcode == 0x2 || opcode == 0x1 || opcode == 0x0) {
            if (!c->waiting) return -1;
            c->echoed += plen;
            if (fin) {
                if (c->echoed != message_size) return -1;
                message_done(ep, c);
            }
        } else if (opcode == 0x9) { /* ping: answer with a masked pong carrying its payload */
            if (plen > 125 || c->out != NULL) return -1;
            c->pong[0] = 0x8a;
            c->pong[1] = 0x80 | (uint8_t)plen;
            memcpy(c->pong + 2, MASK, 4);
            for (size_t i = 0; i < plen; i++) c->pong[6 + i] = p[header + i] ^ MASK[i % 4];
            c->out = c->pong;
            c->out_len = 6 + plen;
            c->out_off = 0;
            if (flush(ep, c) < 0) return -1;
        } else if (opcode == 0x8) {
            return -1; /* the server closed */
        } else if (opcode != 0xa) {
            return -1;
        }
        pos += header + (size_t)plen;
        if (c->state != RUNNING) break;
    }
    if (pos > 0) {
        memmove(c->buf, c->buf + pos, c->len - pos);
        c->len -= pos;
    }
    return 0;
}

static void on_handshake_readable(int ep, struct conn *c) {
    ssize_t n = read(c->fd, c->buf + c->len, RECV_BUF - 1 - c->len);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
    if (n <= 0) {
        fail(c, &handshake_errors);
        return;
    }
    c->len += (size_t)n;
    c->buf[c->len] = 0;
    char *end = strstr((char *)c->buf, "\r\n\r\n");
    if (!end) {
        if (c->len >= RECV_BUF - 1) fail(c, &handshake_errors);
        return;
    }
    if (strncmp((char *)c->buf, "HTTP/1.1 101", 12) != 0) {
        fail(c, &handshake_errors);
        return;
    }
    size_t head = (size_t)(end + 4 - (char *)c->buf);
    memmove(c->buf, c->buf + head, c->len - head);
    c->len -= head;
    c->state = RUNNING; /* the first message waits for the start of the run */
    (void)ep;
}

static void on_running_readable(int ep, struct conn *c) {
    for (;;) {
        if (c->len >= RECV_BUF) {
            fail(c, &protocol_errors);
            return;
        }
        ssize_t n = read(c->fd, c->buf + c->len, RECV_BUF - c->len);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) return;
        if (n <= 0) {
            fail(c, &read_errors);
            return;
        }
        c->len += (size_t)n;
        if (parse_frames(ep, c) < 0) {
            fail(c, &protocol_errors);
            return;
        }
        if (c->state != RUNNING || (size_t)n < RECV_BUF / 2) return;
    }
}

static int loopback(const char *host, struct sockaddr_in *addr) {
    if (inet_pton(AF_INET, host, &addr->sin_addr) != 1) return 0;
    return (ntohl(addr->sin_addr.s_addr) >> 24) == 127;
}

static uint64_t percentile(double q) {
    if (messages == 0) return 0;
    uint64_t rank = (uint64_t)(q * (double)messages), seen = 0;
    for (uint64_t us = 0; us < HIST_US; us++) {
        seen += hist[us];
        if (seen > rank) return us;
    }
    return HIST_US - 1;
}

static int usage(void) {
    fprintf(stderr, "usage: wsload -p PORT [-h 127.0.0.1] [-u /path] [-c CONNS] [-s SIZE] "
                    "(-d SECONDS | -n MESSAGES) [-t TIMEOUT_SECONDS]\n");
    return 2;
}

int main(int argc, char **argv) {
    const char *host = "127.0.0.1", *path = "/";
    int port = 0, nconns = 64, opt;
    double seconds = 0, timeout = 60;
    while ((opt = getopt(argc, argv, "h:p:u:c:s:d:n:t:")) != -1) {
        switch (opt) {
        case 'h': host = optarg; break;
        case 'p': port = atoi(optarg); break;
        case 'u': path = optarg; break;
        case 'c': nconns = atoi(optarg); break;
        case 's': message_size = (size_t)atol(optarg); break;
        case 'd': seconds = atof(optarg); break;
        case 'n': limit_messages = (uint64_t)atoll(optarg); break;
        case 't': timeout = atof(optarg); break;
        default: return usage();
        }
    }
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (port <= 0 || nconns <= 0 || nconns > MAX_CONNS || message_size == 0 || message_size > MAX_MESSAGE ||
        (seconds <= 0) == (limit_messages == 0) || timeout <= 0)
        return usage();
    if (!loopback(host, &addr)) {
        fprintf(stderr, "wsload: %s is not a loopback address (127.0.0.0/8)\n", host);
        return 2;
    }
    hist = calloc(HIST_US, sizeof *hist);
    if (!hist) return 2;
    build_frame();
    char request[1024];
    int request_len = snprintf(request, sizeof request,
                               "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                               "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
                               path, host, port);
    if (request_len <= 0 || request_len >= (int)sizeof request) return usage();

    int ep = epoll_create1(0);
    uint64_t started = now_ns(), hard_deadline = started + (uint64_t)(timeout * 1e9);
    int one = 1;
    for (int i = 0; i < nconns; i++) {
        struct conn *c = &conns[i];
        c->buf = malloc(RECV_BUF);
        c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        if (!c->buf || c->fd < 0) return 2;
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (connect(c->fd, (struct sockaddr *)&addr, sizeof addr) < 0 && errno != EINPROGRESS) {
            fail(c, &connect_errors);
            continue;
        }
        c->state = CONNECTING;
        struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN, .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
    }

    /* Phase 1: every connection connected and upgraded (or failed). */
    struct epoll_event events[256];
    int pending = nconns;
    while (pending > 0 && now_ns() < hard_deadline) {
        int n = epoll_wait(ep, events, 256, 100);
        for (int i = 0; i < n; i++) {
            struct conn *c = events[i].data.ptr;
            if (c->state == CONNECTING && (events[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
                int err = 0;
                socklen_t len = sizeof err;
                getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
                if (err != 0) {
                    fail(c, &connect_errors);
                    continue;
                }
                c->state = HANDSHAKE;
                c->out = (const uint8_t *)request;
                c->out_len = (size_t)request_len;
                c->out_off = 0;
                int done = flush(ep, c);
                if (done < 0) fail(c, &handshake_errors);
                else if (done > 0) want_write(ep, c, 0);
            } else if (c->state == HANDSHAKE) {
                if ((events[i].events & EPOLLOUT) && c->out != NULL) {
                    int done = flush(ep, c);
                    if (done < 0) fail(c, &handshake_errors);
                    else if (done > 0) want_write(ep, c, 0);
                }
                if (c->state == HANDSHAKE && (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
                    on_handshake_readable(ep, c);
            }
        }
        pending = 0;
        for (int i = 0; i < nconns; i++)
            if (conns[i].state == CONNECTING || conns[i].state == HANDSHAKE) pending++;
    }
    int connected = 0;
    for (int i = 0; i < nconns; i++) {
        if (conns[i].state == CONNECTING || conns[i].state == HANDSHAKE) fail(&conns[i], &handshake_errors);
        if (conns[i].state == RUNNING) connected++;
    }

    /* Phase 2: ping-pong until the time or the count is spent. */
    struct rusage ru0, ru1;
    getrusage(RUSAGE_SELF, &ru0);
    uint64_t load_start = now_ns();
    uint64_t load_end = seconds > 0 ? load_start + (uint64_t)(seconds * 1e9) : hard_deadline;
    if (load_end > hard_deadline) load_end = hard_deadline;
    for (int i = 0; i < nconns; i++) {
        struct conn *c = &conns[i];
        if (c->state != RUNNING) continue;
        send_message(ep, c);
        if (c->state == RUNNING && c->len > 0 && parse_frames(ep, c) < 0) fail(c, &protocol_errors);
    }
    uint64_t stopped_at = 0;
    for (;;) {
        uint64_t now = now_ns();
        if (!stop_sending && now >= load_end) {
            stop_sending = 1;
            stopped_at = now;
            break; /* time is up: what is still in flight is not counted */
        }
        int busy = 0;
        for (int i = 0; i < nconns && !busy; i++) busy = conns[i].state == RUNNING;
        if (!busy) {
            stopped_at = now;
            break; /* the count is spent, every echo in */
        }
        int wait_ms = (int)((load_end - now) / 1000000) + 1;
        int n = epoll_wait(ep, events, 256, wait_ms < 100 ? wait_ms : 100);
        for (int i = 0; i < n; i++) {
            struct conn *c = events[i].data.ptr;
            if (c->state != RUNNING) continue;
            if ((events[i].events & EPOLLOUT) && c->out != NULL) {
                int done = flush(ep, c);
                if (done < 0) {
                    fail(c, &read_errors);
                    continue;
                }
                if (done > 0) want_write(ep, c, 0);
            }
            if (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) on_running_readable(ep, c);
        }
    }
    getrusage(RUSAGE_SELF, &ru1);
    uint64_t cpu_us = (uint64_t)((ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec) * 1000000L +
                                 (ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec) +
                                 (ru1.ru_stime.tv_sec - ru0.ru_stime.tv_sec) * 1000000L +
                                 (ru1.ru_stime.tv_usec - ru0.ru_stime.tv_usec));
    for (int i = 0; i < nconns; i++) {
        struct conn *c = &conns[i];
        if (c->fd < 0) continue;
        ssize_t ignored = write(c->fd, close_frame, sizeof close_frame);
        (void)ignored;
        close(c->fd);
    }
    printf("BENCH_JSON {\"messages\": %llu, \"bytes\": %llu, \"duration_us\": %llu, \"p50_us\": %llu, "
           "\"p99_us\": %llu, \"connected\": %d, \"connect_errors\": %llu, \"handshake_errors\": %llu, "
           "\"read_errors\": %llu, \"protocol_errors\": %llu, \"cpu_us\": %llu}\n",
           (unsigned long long)messages, (unsigned long long)bytes_in,
           (unsigned long long)((stopped_at - load_start) / 1000), (unsigned long long)percentile(0.5),
           (unsigned long long)percentile(0.99), connected, (unsigned long long)connect_errors,
           (unsigned long long)handshake_errors, (unsigned long long)read_errors,
           (unsigned long long)protocol_errors, (unsigned long long)cpu_us);
    return connected == nconns ? 0 : 1;
}
