/* Escape suite, class 4: egress tricks.
 *
 * `net ATTACK ARGS...` tries one way out past the egress policy and prints
 * one line, `ATTACK RESULT`, where RESULT is `ok` (the attack got through:
 * a connection, a datagram sent, a socket created, an answer from the
 * resolver it asked) or the errno name the kernel answered with. DNS
 * attacks print the rcode of the answer they got and who sent it.
 *
 *   mapped6 PORT             TCP connect to ::ffff:127.0.0.1:PORT
 *   udp_sendto PORT          unconnected UDP sendto 127.0.0.1:PORT
 *   udp_sendmsg PORT         unconnected UDP sendmsg (msg_name) 127.0.0.1:PORT
 *   tfo PORT                 TCP Fast Open: sendto(MSG_FASTOPEN) 127.0.0.1:PORT
 *   raw                      socket(AF_INET, SOCK_RAW, IPPROTO_ICMP)
 *   packet                   socket(AF_PACKET, SOCK_RAW, ETH_P_ALL)
 *   netlink PROTO            socket(AF_NETLINK, SOCK_RAW, PROTO)
 *   getifaddrs               getifaddrs() (NETLINK_ROUTE, must keep working)
 *   unix PATH                connect to a pathname Unix socket
 *   abstract NAME            connect to the abstract Unix socket @NAME
 *   dns_udp ADDR NAME        A query for NAME to ADDR:53, unconnected sendto
 *   dns_tcp ADDR NAME        A query for NAME to ADDR:53 over TCP
 *   resolve NAME PORT        getaddrinfo(NAME), then TCP connect to each
 *                            answer on PORT
 *   connect ADDR PORT        TCP connect (IPv4 or IPv6 literal)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <linux/if_ether.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "common.h"

#ifndef MSG_FASTOPEN
#define MSG_FASTOPEN 0x20000000
#endif

static struct sockaddr_in v4(const char *addr, int port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, addr, &sa.sin_addr);
    return sa;
}

/* Connect with a 2 s limit; returns 0 or an errno (ETIMEDOUT when the
 * handshake never finished). */
static int connect_timed(int fd, const struct sockaddr *sa, socklen_t len)
{
    int flags = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, flags | O_NONBLOCK);
    if (connect(fd, sa, len) == 0)
        return 0;
    if (errno != EINPROGRESS)
        return errno;
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    if (poll(&p, 1, 2000) != 1)
        return ETIMEDOUT;
    int err = 0;
    socklen_t elen = sizeof err;
    getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen);
    return err;
}

static int tcp_connect_errno(const struct sockaddr *sa, socklen_t len)
{
    int fd = socket(sa->sa_family, SOCK_STREAM, 0);
    if (fd < 0)
        return errno;
    int e = connect_timed(fd, sa, len);
    close(fd);
    return e;
}

static void tcp_connect(const struct sockaddr *sa, socklen_t len)
{
    int e = tcp_connect_errno(sa, len);
    if (e)
        say_errno(e);
    else
        say("ok");
}

static void make_socket(int family, int type, int protocol)
{
    int fd = socket(family, type, protocol);
    if (fd < 0)
        return say_errno(errno);
    close(fd);
    say("ok");
}

static const char *rcode(const unsigned char *resp, ssize_t n)
{
    static const char *names[] = {"NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED"};
    if (n < 12 || resp[0] != 0x4d || resp[1] != 0x47)
        return "garbled";
    unsigned code = resp[3] & 15;
    return code < 6 ? names[code] : "other";
}

/* The first A record's address in an answer, or "-". */
static void first_a(const unsigned char *r, ssize_t n, char *out, size_t outlen)
{
    snprintf(out, outlen, "-");
    if (n < 12)
        return;
    size_t i = 12;
    while (i < (size_t)n && r[i])
        i += r[i] + 1;
    i += 5;
    int answers = (r[6] << 8) | r[7];
    for (int a = 0; a < answers && i + 12 <= (size_t)n; a++) {
        if ((r[i] & 0xc0) == 0xc0)
            i += 2;
        else {
            while (i < (size_t)n && r[i])
                i += r[i] + 1;
            i++;
        }
        if (i + 10 > (size_t)n)
            return;
        int type = (r[i] << 8) | r[i + 1];
        int rdlen = (r[i + 8] << 8) | r[i + 9];
        i += 10;
        if (type == 1 && rdlen == 4 && i + 4 <= (size_t)n) {
            inet_ntop(AF_INET, r + i, out, outlen);
            return;
        }
        i += rdlen;
    }
}

static void dns_udp(const char *server, const char *name)
{
    unsigned char q[512], resp[4096];
    size_t qlen = build_query(name, q, 0x4d47);
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0)
        return say_errno(errno);
    struct timeval tv = {.tv_sec = 3};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    struct sockaddr_in to = v4(server, 53);
    if (sendto(fd, q, qlen, 0, (struct sockaddr *)&to, sizeof to) < 0)
        return say_errno(errno);
    struct sockaddr_in from;
    socklen_t flen = sizeof from;
    ssize_t n = recvfrom(fd, resp, sizeof resp, 0, (struct sockaddr *)&from, &flen);
    if (n < 0)
        return say_errno(errno);
    char src[INET_ADDRSTRLEN], a[INET6_ADDRSTRLEN], line[256];
    inet_ntop(AF_INET, &from.sin_addr, src, sizeof src);
    first_a(resp, n, a, sizeof a);
    snprintf(line, sizeof line, "%s from %s:%d answer %s", rcode(resp, n), src, ntohs(from.sin_port), a);
    say("%s", line);
}

static void dns_tcp(const char *server, const char *name)
{
    unsigned char q[514], resp[4096];
    size_t qlen = build_query(name, q + 2, 0x4d47);
    q[0] = qlen >> 8;
    q[1] = qlen & 0xff;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return say_errno(errno);
    struct sockaddr_in to = v4(server, 53);
    int e = connect_timed(fd, (struct sockaddr *)&to, sizeof to);
    if (e)
        return say_errno(e);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    struct timeval tv = {.tv_sec = 3};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (write(fd, q, qlen + 2) != (ssize_t)(qlen + 2))
        return say_errno(errno);
    unsigned char len[2];
    if ((e = read_full(fd, len, 2)))
        return say_errno(e);
    size_t rlen = (len[0] << 8) | len[1];
    if (rlen > sizeof resp)
        return say("oversized");
    if ((e = read_full(fd, resp, rlen)))
        return say_errno(e);
    char a[INET6_ADDRSTRLEN], line[256];
    first_a(resp, rlen, a, sizeof a);
    snprintf(line, sizeof line, "%s answer %s", rcode(resp, rlen), a);
    say("%s", line);
}

/* getaddrinfo, then a connect to every address it returned: prints
 * `resolved A B ...` (or `gai ERROR`), then `connect ADDR RESULT` for each. */
static void resolve(const char *name, int port)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res;
    int rc = getaddrinfo(name, NULL, &hints, &res);
    if (rc) {
        char line[128];
        snprintf(line, sizeof line, "gai %s", gai_strerror(rc));
        return say("%s", line);
    }
    char line[1024] = "resolved";
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        char a[INET6_ADDRSTRLEN];
        void *p = ai->ai_family == AF_INET ? (void *)&((struct sockaddr_in *)ai->ai_addr)->sin_addr
                                           : (void *)&((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr;
        inet_ntop(ai->ai_family, p, a, sizeof a);
        strncat(line, " ", sizeof line - strlen(line) - 1);
        strncat(line, a, sizeof line - strlen(line) - 1);
    }
    say("%s", line);
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        char a[INET6_ADDRSTRLEN];
        void *p;
        if (ai->ai_family == AF_INET) {
            ((struct sockaddr_in *)ai->ai_addr)->sin_port = htons(port);
            p = &((struct sockaddr_in *)ai->ai_addr)->sin_addr;
        } else {
            ((struct sockaddr_in6 *)ai->ai_addr)->sin6_port = htons(port);
            p = &((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr;
        }
        inet_ntop(ai->ai_family, p, a, sizeof a);
        int e = tcp_connect_errno(ai->ai_addr, ai->ai_addrlen);
        const char *name = e ? strerrorname_np(e) : "ok";
        snprintf(line, sizeof line, "connect %s %s", a, name ? name : "unknown-errno");
        say("%s", line);
    }
    freeaddrinfo(res);
}

static void connect_literal(const char *addr, int port)
{
    struct sockaddr_in6 s6 = {.sin6_family = AF_INET6, .sin6_port = htons(port)};
    if (inet_pton(AF_INET6, addr, &s6.sin6_addr) == 1)
        return tcp_connect((struct sockaddr *)&s6, sizeof s6);
    struct sockaddr_in s4 = v4(addr, port);
    tcp_connect((struct sockaddr *)&s4, sizeof s4);
}

static void unix_connect(const char *path, int abstract)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    size_t len = strlen(path);
    if (len + 2 > sizeof sa.sun_path)
        return say("name-too-long");
    memcpy(sa.sun_path + (abstract ? 1 : 0), path, len);
    /* A pathname's NUL terminator, or an abstract name's leading NUL. */
    socklen_t salen = offsetof(struct sockaddr_un, sun_path) + len + 1;
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0)
        return say_errno(errno);
    int rc = connect(fd, (struct sockaddr *)&sa, salen);
    int e = errno;
    close(fd);
    if (rc)
        say_errno(e);
    else
        say("ok");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: net ATTACK ARGS...\n");
        return 2;
    }
    attack = argv[1];
    const char *a2 = argc > 2 ? argv[2] : "";
    const char *a3 = argc > 3 ? argv[3] : "";
    if (!strcmp(attack, "mapped6")) {
        struct sockaddr_in6 sa = {.sin6_family = AF_INET6, .sin6_port = htons(atoi(a2))};
        inet_pton(AF_INET6, "::ffff:127.0.0.1", &sa.sin6_addr);
        tcp_connect((struct sockaddr *)&sa, sizeof sa);
    } else if (!strcmp(attack, "udp_sendto") || !strcmp(attack, "udp_sendmsg")) {
        int fd = socket(AF_INET, SOCK_DGRAM, 0);
        if (fd < 0)
            return say_errno(errno), 0;
        struct sockaddr_in to = v4("127.0.0.1", atoi(a2));
        char payload[] = "exfiltrated";
        ssize_t n;
        if (!strcmp(attack, "udp_sendto")) {
            n = sendto(fd, payload, sizeof payload, 0, (struct sockaddr *)&to, sizeof to);
        } else {
            struct iovec iov = {.iov_base = payload, .iov_len = sizeof payload};
            struct msghdr msg = {.msg_name = &to, .msg_namelen = sizeof to, .msg_iov = &iov, .msg_iovlen = 1};
            n = sendmsg(fd, &msg, 0);
        }
        if (n < 0)
            say_errno(errno);
        else
            say("ok");
    } else if (!strcmp(attack, "tfo")) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0)
            return say_errno(errno), 0;
        struct sockaddr_in to = v4("127.0.0.1", atoi(a2));
        char payload[] = "exfiltrated";
        if (sendto(fd, payload, sizeof payload, MSG_FASTOPEN, (struct sockaddr *)&to, sizeof to) < 0)
            say_errno(errno);
        else
            say("ok");
    } else if (!strcmp(attack, "raw")) {
        make_socket(AF_INET, SOCK_RAW, IPPROTO_ICMP);
    } else if (!strcmp(attack, "packet")) {
        make_socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL));
    } else if (!strcmp(attack, "netlink")) {
        make_socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, atoi(a2));
    } else if (!strcmp(attack, "getifaddrs")) {
        struct ifaddrs *ifa;
        if (getifaddrs(&ifa))
            return say_errno(errno), 0;
        freeifaddrs(ifa);
        say("ok");
    } else if (!strcmp(attack, "unix")) {
        unix_connect(a2, 0);
    } else if (!strcmp(attack, "abstract")) {
        unix_connect(a2, 1);
    } else if (!strcmp(attack, "dns_udp")) {
        dns_udp(a2, a3);
    } else if (!strcmp(attack, "dns_tcp")) {
        dns_tcp(a2, a3);
    } else if (!strcmp(attack, "resolve")) {
        resolve(a2, atoi(a3));
    } else if (!strcmp(attack, "connect")) {
        connect_literal(a2, atoi(a3));
    } else {
        fprintf(stderr, "net: unknown attack %s\n", attack);
        return 2;
    }
    return 0;
}
