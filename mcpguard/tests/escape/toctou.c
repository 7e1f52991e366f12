/*
 * Hostile TOCTOU races for escape class 6: while one thread makes a
 * syscall, a second thread keeps rewriting the argument it passed, hoping
 * the check and the use see different objects.
 *
 * Usage:
 *   toctou open ALLOWED SECRET SECS MAX      open(2) a path flipping between
 *                                            an allowed file and a secret
 *   toctou connect ALLOWED DENIED SECS MAX   connect(2) to 127.0.0.1, the
 *                                            port flipping between the two
 *   toctou exec ALLOWED DENIED MARKER SECS MAX
 *                                            execve(2) a path flipping
 *                                            between a non-executable file
 *                                            in an exec-allowed dir (fails
 *                                            with ENOEXEC) and a binary the
 *                                            policy does not let run
 *   toctou pwned MARKER                      what DENIED runs if it ever
 *                                            starts: leaves MARKER behind
 *
 * Each race runs until SECS seconds or MAX attempts, whichever comes first,
 * and prints one line: "<race> attempts=N ok=A denied=D other=O leaked=L
 * flips=F", where ok counts successes on the allowed object, denied the
 * kernel's refusals, other the torn paths, and leaked a success on the
 * secret object (read the secret's marker, or exec'd the binary).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common.h"

#define BUF 512

static char path[BUF];
static char path_a[BUF], path_b[BUF];
static struct sockaddr_in addr;
static unsigned short port_a, port_b;
static volatile int stop;
static unsigned long flips;

static size_t path_len;

/* Keep the compiler from merging or dropping the alternating stores. */
#define BARRIER() __asm__ volatile("" ::: "memory")

/* Hold each value for a moment: a buffer that is being copied all the time
 * is torn all the time, and a torn path only fails with ENOENT. */
static void hold(void)
{
    for (volatile int i = 0; i < 64; i++)
        ;
}

static void *flip_path(void *unused)
{
    (void)unused;
    while (!stop) {
        memcpy(path, path_a, path_len);
        BARRIER();
        hold();
        memcpy(path, path_b, path_len);
        BARRIER();
        hold();
        flips++;
    }
    return NULL;
}

static void *flip_port(void *unused)
{
    (void)unused;
    while (!stop) {
        *(volatile unsigned short *)&addr.sin_port = port_a;
        hold();
        *(volatile unsigned short *)&addr.sin_port = port_b;
        hold();
        flips++;
    }
    return NULL;
}

static pthread_t start(void *(*fn)(void *))
{
    pthread_t t;
    if (pthread_create(&t, NULL, fn, NULL)) {
        perror("pthread_create");
        exit(2);
    }
    return t;
}

static void finish(pthread_t t, const char *race, long n, long ok, long denied,
                   long other, long leaked)
{
    stop = 1;
    pthread_join(t, NULL);
    printf("%s attempts=%ld ok=%ld denied=%ld other=%ld leaked=%ld flips=%lu\n",
           race, n, ok, denied, other, leaked, flips);
}

/* Copy `s` into a zero-padded buffer of BUF bytes; the flipper copies
 * just enough of it to cover the longer path and its NUL. */
static void set(char *dst, const char *s)
{
    if (strlen(s) >= BUF) {
        fprintf(stderr, "path too long: %s\n", s);
        exit(2);
    }
    memset(dst, 0, BUF);
    strcpy(dst, s);
    if (strlen(s) + 1 > path_len)
        path_len = strlen(s) + 1;
}

static void race_open(const char *allowed, const char *secret, double secs, long max)
{
    set(path_a, allowed);
    set(path_b, secret);
    memcpy(path, path_a, BUF);
    pthread_t t = start(flip_path);
    long n = 0, ok = 0, denied = 0, other = 0, leaked = 0;
    double end = now_s() + secs;
    while (n < max && now_s() < end) {
        n++;
        int fd = open(path, O_RDONLY);
        if (fd < 0) {
            if (errno == EACCES) denied++;
            else other++;
            continue;
        }
        char buf[32] = "";
        ssize_t got = read(fd, buf, sizeof buf - 1);
        close(fd);
        if (got > 0 && !strncmp(buf, "ESCAPE-SECRET", 13)) leaked++;
        else ok++;
    }
    finish(t, "open", n, ok, denied, other, leaked);
}

static void race_connect(int allowed, int denied_port, double secs, long max)
{
    port_a = htons(allowed);
    port_b = htons(denied_port);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = port_a;
    pthread_t t = start(flip_port);
    long n = 0, ok = 0, denied = 0, other = 0;
    double end = now_s() + secs;
    /* Reset on close: no TIME_WAIT, so the local ports never run out. */
    struct linger lg = { .l_onoff = 1, .l_linger = 0 };
    while (n < max && now_s() < end) {
        n++;
        int s = socket(AF_INET, SOCK_STREAM, 0);
        if (s < 0) {
            perror("socket");
            exit(2);
        }
        setsockopt(s, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        if (connect(s, (struct sockaddr *)&addr, sizeof addr) == 0) ok++;
        else if (errno == EPERM || errno == EACCES) denied++;
        else other++;
        close(s);
    }
    /* Whether a connection reached the denied port only its listener knows. */
    finish(t, "connect", n, ok, denied, other, 0);
}

static void race_exec(const char *allowed, const char *denied_bin, const char *marker,
                      double secs, long max)
{
    set(path_a, allowed);
    set(path_b, denied_bin);
    memcpy(path, path_a, BUF);
    char *argv[] = { "toctou", "pwned", (char *)marker, NULL };
    char *envp[] = { NULL };
    pthread_t t = start(flip_path);
    long n = 0, ok = 0, denied = 0, other = 0;
    double end = now_s() + secs;
    while (n < max && now_s() < end) {
        n++;
        execve(path, argv, envp);
        /* Only failures return; a success ran `pwned` instead of us. */
        if (errno == ENOEXEC) ok++;
        else if (errno == EACCES) denied++;
        else other++;
    }
    finish(t, "exec", n, ok, denied, other, 0);
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc == 3 && !strcmp(argv[1], "pwned")) {
        int fd = open(argv[2], O_WRONLY | O_CREAT, 0644);
        printf("PWNED %s\n", fd >= 0 ? "marker written" : strerror(errno));
        return 0;
    }
    if (argc == 6 && !strcmp(argv[1], "open")) {
        race_open(argv[2], argv[3], atof(argv[4]), atol(argv[5]));
    } else if (argc == 6 && !strcmp(argv[1], "connect")) {
        race_connect(atoi(argv[2]), atoi(argv[3]), atof(argv[4]), atol(argv[5]));
    } else if (argc == 7 && !strcmp(argv[1], "exec")) {
        race_exec(argv[2], argv[3], argv[4], atof(argv[5]), atol(argv[6]));
    } else {
        fprintf(stderr, "usage: see the comment at the top of toctou.c\n");
        return 2;
    }
    return 0;
}
