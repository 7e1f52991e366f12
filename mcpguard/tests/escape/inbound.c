/* Escape suite, classes 11 (inbound), 13 (resolver access) and 15 (silent
 * refusals, network part).
 *
 * `inbound ATTACK ARGS...` prints lines `ATTACK WHAT...`. Attacks that wait
 * for the test to act first print `ATTACK port N` (the local port the
 * kernel gave them), then wait a few seconds and print what reached them.
 *
 *   listen4 | listen6       listen() on a never-bound TCP socket; accept
 *   tcp_bind ADDR PORT      bind a TCP socket to ADDR:PORT (v4 or v6)
 *   udp_bind ADDR PORT      bind a UDP socket to ADDR:PORT; receive
 *   udp_autobind ADDR PORT  sendto ADDR:PORT, then receive on the port the
 *                           kernel bound for it
 *   serve PORT              bind TCP 0.0.0.0:PORT, listen, accept
 *   sock_packet             socket(AF_INET, SOCK_PACKET, ETH_P_ALL)
 *   dns_probe NAME          learn the resolver's port (connect a UDP socket
 *                           to 192.0.2.53:53, getpeername), hold 3 idle TCP
 *                           connections to it, then time UDP and TCP
 *                           lookups of NAME
 * Run directly (not through mcpguard), as another user:
 *   stranger PORT NAME      one UDP query (1 s for an answer), then one TCP
 *                           query, to 127.0.0.1:PORT
 *   hold PORT N SECS        N idle TCP connections to 127.0.0.1:PORT
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if_ether.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common.h"

/* ADDR:PORT as a sockaddr (v4 or v6 literal); returns its length. */
static socklen_t addr_of(const char *addr, int port, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof *ss);
    struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, addr, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons(port);
        return sizeof *a4;
    }
    inet_pton(AF_INET6, addr, &a6->sin6_addr);
    a6->sin6_family = AF_INET6;
    a6->sin6_port = htons(port);
    return sizeof *a6;
}

static int local_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    getsockname(fd, (struct sockaddr *)&ss, &len);
    return ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
                                         : ((struct sockaddr_in6 *)&ss)->sin6_port);
}

/* Waits up to 4 s for a connection on a listening socket. */
static void accept_one(int fd)
{
    say("port %d", local_port(fd));
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, 4000) == 1 && accept(fd, NULL, NULL) >= 0)
        say("accepted");
    else
        say("none");
}

/* Prints every datagram's sender for 4 s, then `done`. */
static void receive_all(int fd)
{
    struct timespec end, now;
    clock_gettime(CLOCK_MONOTONIC, &end);
    end.tv_sec += 4;
    for (;;) {
        clock_gettime(CLOCK_MONOTONIC, &now);
        long left = (end.tv_sec - now.tv_sec) * 1000 + (end.tv_nsec - now.tv_nsec) / 1000000;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (left <= 0 || poll(&p, 1, (int)left) != 1)
            break;
        char buf[512], host[INET6_ADDRSTRLEN];
        struct sockaddr_storage from;
        socklen_t flen = sizeof from;
        if (recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&from, &flen) < 0)
            break;
        int port;
        if (from.ss_family == AF_INET) {
            inet_ntop(AF_INET, &((struct sockaddr_in *)&from)->sin_addr, host, sizeof host);
            port = ntohs(((struct sockaddr_in *)&from)->sin_port);
        } else {
            inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&from)->sin6_addr, host, sizeof host);
            port = ntohs(((struct sockaddr_in6 *)&from)->sin6_port);
        }
        say("from %s:%d", host, port);
    }
    say("done");
}

static void listen_unbound(int family)
{
    int fd = socket(family, SOCK_STREAM, 0);
    if (fd < 0)
        return say_errno(errno);
    if (listen(fd, 8) < 0)
        return say_errno(errno);
    accept_one(fd);
}

static void bind_to(int type, const char *addr, int port)
{
    struct sockaddr_storage ss;
    socklen_t len = addr_of(addr, port, &ss);
    int fd = socket(ss.ss_family, type, 0);
    if (fd < 0)
        return say_errno(errno);
    if (bind(fd, (struct sockaddr *)&ss, len) < 0)
        return say_errno(errno);
    say("bound");
    if (type == SOCK_DGRAM) {
        say("port %d", local_port(fd));
        receive_all(fd);
    } else if (listen(fd, 8) == 0) {
        accept_one(fd);
    }
}

static void udp_autobind(const char *addr, int port)
{
    struct sockaddr_storage ss;
    socklen_t len = addr_of(addr, port, &ss);
    int fd = socket(ss.ss_family, SOCK_DGRAM, 0);
    if (fd < 0)
        return say_errno(errno);
    if (sendto(fd, "hello", 5, 0, (struct sockaddr *)&ss, len) < 0)
        return say_errno(errno);
    say("port %d", local_port(fd));
    receive_all(fd);
}

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000.0 + t.tv_nsec / 1e6;
}

/* One UDP query to SA; whether an answer came within SECS. */
static int query_udp(const struct sockaddr *sa, socklen_t len, const char *name, int secs)
{
    unsigned char q[512], r[4096];
    size_t qlen = build_query(name, q, 0x4d47);
    int fd = socket(sa->sa_family, SOCK_DGRAM, 0);
    struct timeval tv = {.tv_sec = secs};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    int ok = sendto(fd, q, qlen, 0, sa, len) >= 0 && recv(fd, r, sizeof r, 0) > 0;
    close(fd);
    return ok;
}

/* One TCP query to SA; whether a whole answer came within 3 s. */
static int query_tcp(const struct sockaddr *sa, socklen_t len, const char *name)
{
    unsigned char q[514], r[65536];
    size_t qlen = build_query(name, q + 2, 0x4d48);
    q[0] = qlen >> 8;
    q[1] = qlen & 0xff;
    int fd = socket(sa->sa_family, SOCK_STREAM, 0);
    struct timeval tv = {.tv_sec = 3};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    int ok = connect(fd, sa, len) == 0 && write(fd, q, qlen + 2) == (ssize_t)(qlen + 2) &&
             !read_full(fd, r, 2) && !read_full(fd, r + 2, (r[0] << 8) | r[1]) && (r[0] | r[1]) != 0;
    close(fd);
    return ok;
}

static void dns_probe(const char *name)
{
    struct sockaddr_storage ss;
    socklen_t len = addr_of("192.0.2.53", 53, &ss);
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (connect(fd, (struct sockaddr *)&ss, len) < 0)
        return say_errno(errno);
    struct sockaddr_in peer;
    socklen_t plen = sizeof peer;
    getpeername(fd, (struct sockaddr *)&peer, &plen);
    say("port %d", ntohs(peer.sin_port));
    /* The server's own idle TCP clients: they must not hold it either. */
    for (int i = 0; i < 3; i++) {
        int h = socket(AF_INET, SOCK_STREAM, 0);
        connect(h, (struct sockaddr *)&ss, len);
    }
    sleep(2);
    double worst_udp = 0, worst_tcp = 0;
    int answered = 0;
    for (int i = 0; i < 3; i++) {
        double t = now_ms();
        answered += query_udp((struct sockaddr *)&ss, len, name, 3);
        double u = now_ms() - t;
        t = now_ms();
        answered += query_tcp((struct sockaddr *)&ss, len, name);
        double c = now_ms() - t;
        worst_udp = u > worst_udp ? u : worst_udp;
        worst_tcp = c > worst_tcp ? c : worst_tcp;
    }
    say("answered %d of 6 udp_ms %.0f tcp_ms %.0f", answered, worst_udp, worst_tcp);
}

static void stranger(int port, const char *name)
{
    struct sockaddr_storage ss;
    socklen_t len = addr_of("127.0.0.1", port, &ss);
    say("udp %s", query_udp((struct sockaddr *)&ss, len, name, 1) ? "answered" : "none");
    say("tcp %s", query_tcp((struct sockaddr *)&ss, len, name) ? "answered" : "none");
}

static void hold(int port, int n, int secs)
{
    struct sockaddr_storage ss;
    socklen_t len = addr_of("127.0.0.1", port, &ss);
    int open = 0;
    for (int i = 0; i < n; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        open += connect(fd, (struct sockaddr *)&ss, len) == 0;
    }
    say("open %d", open);
    sleep(secs);
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return 2;
    attack = argv[1];
    const char *a = argv[1];
    if (!strcmp(a, "listen4"))
        listen_unbound(AF_INET);
    else if (!strcmp(a, "listen6"))
        listen_unbound(AF_INET6);
    else if (!strcmp(a, "tcp_bind") && argc == 4)
        bind_to(SOCK_STREAM, argv[2], atoi(argv[3]));
    else if (!strcmp(a, "udp_bind") && argc == 4)
        bind_to(SOCK_DGRAM, argv[2], atoi(argv[3]));
    else if (!strcmp(a, "udp_autobind") && argc == 4)
        udp_autobind(argv[2], atoi(argv[3]));
    else if (!strcmp(a, "serve") && argc == 3)
        bind_to(SOCK_STREAM, "0.0.0.0", atoi(argv[2]));
    else if (!strcmp(a, "sock_packet")) {
        int fd = socket(AF_INET, SOCK_PACKET, htons(ETH_P_ALL));
        if (fd < 0)
            say_errno(errno);
        else
            say("ok");
    } else if (!strcmp(a, "dns_probe") && argc == 3)
        dns_probe(argv[2]);
    else if (!strcmp(a, "stranger") && argc == 4)
        stranger(atoi(argv[2]), argv[3]);
    else if (!strcmp(a, "hold") && argc == 5)
        hold(atoi(argv[2]), atoi(argv[3]), atoi(argv[4]));
    else
        return 2;
    return 0;
}
