/* Daemon budget attacks (escape suite class 14), run as a guarded server.
 *
 *   budgets bigline MIB KIND HOLD_S
 *       write one JSON-RPC notification line of just under MIB MiB to stdout:
 *       KIND "values" holds an array of single-digit numbers (millions of
 *       JSON values), KIND "string" one long string; then stay alive HOLD_S
 *       seconds so the daemon can be measured.
 *   budgets sockets SECS
 *       call socket(AF_NETLINK, SOCK_RAW, NETLINK_SOCK_DIAG) (refused by
 *       the socket fence) as fast as possible for SECS seconds; print how
 *       many calls, and the errno of the first.
 *   budgets dns BURST RATE MAX_S
 *       send DNS queries for distinct names under flood.test (denied) to
 *       127.0.0.53:53, at most WINDOW unanswered at a time, until the
 *       resolver has answered more than BURST + RATE * elapsed + MARGIN of
 *       them (so it has handled more than a record budget of BURST and RATE
 *       per second lets it record, however loaded the machine is) or MAX_S
 *       seconds pass; print how many were sent and answered, and how long
 *       it took.
 *   budgets hold SECS
 *       stay alive SECS seconds (a server that just runs).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/netlink.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common.h"

static void write_all(const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(1, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            exit(3);
        }
        p += w;
        n -= (size_t)w;
    }
}

static int bigline(long mib, const char *kind, int hold)
{
    /* The whole line stays just under MIB MiB. */
    size_t body = ((size_t)mib << 20) - 256;
    char *buf = malloc(body);
    if (!buf)
        return 2;
    int values = strcmp(kind, "values") == 0;
    for (size_t i = 0; i < body; i++)
        buf[i] = values ? (i % 2 ? ',' : '0') : 'x';
    const char *head = "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{\"level\":\"info\",\"data\":";
    write_all(head, strlen(head));
    write_all(values ? "[" : "\"", 1);
    write_all(buf, body);
    write_all(values ? "0]}}\n" : "\"}}\n", values ? 5 : 4);
    free(buf);
    sleep(hold);
    return 0;
}

static int sockets(double secs)
{
    long calls = 0;
    int first = 0;
    double end = now_s() + secs;
    while (now_s() < end) {
        for (int i = 0; i < 64; i++) {
            int fd = socket(AF_NETLINK, SOCK_RAW, NETLINK_SOCK_DIAG);
            if (fd >= 0)
                close(fd);
            else if (!first)
                first = errno;
            calls++;
        }
    }
    printf("calls=%ld errno=%s\n", calls, first ? strerrorname_np(first) : "none");
    return 0;
}

static size_t query(unsigned char *q, long n)
{
    char name[64];
    snprintf(name, sizeof name, "n%ld.flood.test", n);
    return build_query(name, q, (int)(n & 0xffff));
}

/* Unanswered queries in flight at most, so the socket buffers never drop. */
#define WINDOW 256
/* Answers beyond the budget before the flood stops. */
#define MARGIN 2000

static int dns(long burst, long rate, double max_s)
{
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0) {
        printf("sent=0 answered=0 secs=0 errno=%s\n", strerrorname_np(errno));
        return 0;
    }
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(53)};
    inet_pton(AF_INET, "127.0.0.53", &to.sin_addr);
    unsigned char q[512], sink[4096];
    long sent = 0, answered = 0, in_flight = 0;
    double start = now_s(), elapsed = 0;
    while (answered <= burst + rate * elapsed + MARGIN && elapsed < max_s) {
        if (in_flight < WINDOW) {
            size_t len = query(q, sent);
            if (sendto(fd, q, len, 0, (struct sockaddr *)&to, sizeof to) == (ssize_t)len) {
                sent++;
                in_flight++;
            }
        } else {
            struct pollfd p = {.fd = fd, .events = POLLIN};
            /* Nothing came back for a while: count those as lost. */
            if (poll(&p, 1, 100) == 0)
                in_flight = 0;
        }
        while (recv(fd, sink, sizeof sink, MSG_DONTWAIT) > 0) {
            answered++;
            if (in_flight > 0)
                in_flight--;
        }
        elapsed = now_s() - start;
    }
    printf("sent=%ld answered=%ld secs=%.1f\n", sent, answered, elapsed);
    return 0;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc == 5 && strcmp(argv[1], "bigline") == 0)
        return bigline(atol(argv[2]), argv[3], atoi(argv[4]));
    if (argc == 3 && strcmp(argv[1], "sockets") == 0)
        return sockets(atof(argv[2]));
    if (argc == 5 && strcmp(argv[1], "dns") == 0)
        return dns(atol(argv[2]), atol(argv[3]), atof(argv[4]));
    if (argc == 3 && strcmp(argv[1], "hold") == 0) {
        sleep(atoi(argv[2]));
        return 0;
    }
    fprintf(stderr, "usage: budgets bigline MIB KIND HOLD_S | sockets SECS | dns BURST RATE MAX_S | hold SECS\n");
    return 2;
}
