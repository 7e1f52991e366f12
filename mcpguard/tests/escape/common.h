/* What the hostile programs of the escape suite (the .c files beside it) share:
 * errno names, the one-line reports, a monotonic clock, DNS questions,
 * exact reads and the NAME=OP,ARG... step syntax. Each program defines
 * _GNU_SOURCE and includes this after its system headers; everything here
 * is static inline (or marked unused) so a program that needs only part
 * of it still compiles under -Wall -Werror.
 */
#ifndef ESCAPE_COMMON_H
#define ESCAPE_COMMON_H

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* The symbolic name of errno value `e` (EACCES, ...), or "E<n>". */
static inline const char *errname(int e)
{
    const char *name = strerrorname_np(e);
    if (name)
        return name;
    static char buf[16];
    snprintf(buf, sizeof buf, "E%d", e);
    return buf;
}

/* The attack being run, which starts every line `say` prints. */
static const char *attack __attribute__((unused));

/* Prints `ATTACK <fmt...>` as one line, flushed. */
static inline void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static inline void say(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("%s ", attack);
    vprintf(fmt, ap);
    printf("\n");
    fflush(stdout);
    va_end(ap);
}

/* Prints `ATTACK <errno name>`. */
static inline void say_errno(int e)
{
    say("%s", errname(e));
}

/* Seconds on the monotonic clock. */
static inline double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* A DNS query with id `id` and recursion desired, for NAME, type A, class
 * IN, written to `q`; returns its length. */
static inline size_t build_query(const char *name, unsigned char *q, int id)
{
    unsigned char header[12] = {(id >> 8) & 0xff, id & 0xff, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0};
    memcpy(q, header, sizeof header);
    size_t n = sizeof header;
    const char *label = name;
    while (*label) {
        const char *dot = strchr(label, '.');
        size_t len = dot ? (size_t)(dot - label) : strlen(label);
        q[n++] = (unsigned char)len;
        memcpy(q + n, label, len);
        n += len;
        label += len + (dot ? 1 : 0);
    }
    memcpy(q + n, "\0\0\1\0\1", 5);
    return n + 5;
}

/* Reads exactly LEN bytes: 0 when they all came, else the errno (or
 * ECONNRESET when the peer closed first). */
static inline int read_full(int fd, unsigned char *buf, size_t len)
{
    size_t got = 0;
    while (got < len) {
        ssize_t n = read(fd, buf + got, len - got);
        if (n <= 0)
            return n < 0 ? errno : ECONNRESET;
        got += n;
    }
    return 0;
}

/* Splits step SPEC (`NAME=OP,ARG...`) in place: sets *name and up to `n`
 * ARGs in `args` (the rest stay as they are), and returns OP. A step
 * without `=` ends the program with `BADSTEP SPEC`. */
static inline char *split_step(char *spec, const char **name, const char **args, int n)
{
    char *eq = strchr(spec, '=');
    if (!eq) {
        printf("BADSTEP %s\n", spec);
        exit(2);
    }
    *eq = 0;
    *name = spec;
    char *op = strtok(eq + 1, ",");
    for (int i = 0; i < n; i++) {
        char *t = strtok(NULL, ",");
        if (!t)
            break;
        args[i] = t;
    }
    return op;
}

#endif
