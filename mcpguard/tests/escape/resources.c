/* Resource attacks (escape suite class 7), run as a guarded server.
 *
 *   resources forkbomb HOLD_S
 *       fork children that sleep until fork fails; print how many and the
 *       errno, then hold them HOLD_S seconds so the cgroup can be inspected.
 *   resources balloon MIB
 *       a child touches MIB MiB one page at a time; print how far it got and
 *       how it ended (killed by SIGKILL, or malloc failing with ENOMEM).
 *   resources flood SECS ALLOWED DENIED SECRET
 *       4 threads open()+close() ALLOWED and DENIED (a path Landlock denies)
 *       as fast as they can, a fifth forks and reaps children, for SECS
 *       seconds; halfway through, the main thread reads SECRET and connects
 *       to 192.0.2.1:9 (both must fail); print each result and the exact
 *       number of flood opens.
 *   resources quiet SECS PATH
 *       open PATH every 10 ms for SECS seconds; print how many times.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common.h"

static int forkbomb(int hold) {
    int n = 0, err = 0;
    for (;;) {
        pid_t p = fork();
        if (p == 0) {
            pause();
            _exit(0);
        }
        if (p < 0) {
            err = errno;
            break;
        }
        n++;
        if (n > 100000) break; /* no limit at all: stop before the host suffers */
    }
    printf("forked=%d errno=%s\n", n, err ? strerrorname_np(err) : "none");
    fflush(stdout);
    sleep(hold);
    return 0;
}

static int balloon(long mib) {
    int fds[2];
    if (pipe(fds) != 0) return 1;
    pid_t p = fork();
    if (p == 0) {
        close(fds[0]);
        long page = sysconf(_SC_PAGESIZE);
        for (long i = 0; i < mib; i++) {
            char *chunk = malloc(1 << 20);
            if (!chunk) {
                dprintf(fds[1], "enomem %ld\n", i);
                _exit(3);
            }
            for (long off = 0; off < (1 << 20); off += page) chunk[off] = 1;
            /* Progress, one byte per MiB, so the parent knows how far it got. */
            if (write(fds[1], "+", 1) != 1) _exit(4);
        }
        _exit(0);
    }
    close(fds[1]);
    long touched = 0;
    char buf[256];
    ssize_t r;
    int enomem = 0;
    while ((r = read(fds[0], buf, sizeof buf)) > 0) {
        for (ssize_t i = 0; i < r; i++) {
            if (buf[i] == '+') touched++;
            if (buf[i] == 'e') enomem = 1;
        }
    }
    int status = 0;
    waitpid(p, &status, 0);
    if (WIFSIGNALED(status))
        printf("touched_mib=%ld end=signal%d\n", touched, WTERMSIG(status));
    else
        printf("touched_mib=%ld end=%s%d\n", touched, enomem ? "enomem" : "exit",
               WEXITSTATUS(status));
    return 0;
}

static atomic_long opens;
static atomic_int stop;
static const char *allowed, *denied;

static void *open_loop(void *arg) {
    (void)arg;
    long n = 0;
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        int fd = open(allowed, O_RDONLY);
        if (fd >= 0) close(fd);
        open(denied, O_RDONLY);
        n += 2;
    }
    atomic_fetch_add(&opens, n);
    return NULL;
}

static void *fork_loop(void *arg) {
    (void)arg;
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        pid_t p = fork();
        if (p == 0) _exit(0);
        if (p > 0) waitpid(p, NULL, 0);
    }
    return NULL;
}

static int flood(double secs, const char *secret) {
    pthread_t t[5];
    for (int i = 0; i < 4; i++) pthread_create(&t[i], NULL, open_loop, NULL);
    pthread_create(&t[4], NULL, fork_loop, NULL);
    double start = now_s();
    usleep((useconds_t)(secs / 2 * 1e6));

    int fd = open(secret, O_RDONLY);
    int read_errno = fd < 0 ? errno : 0;
    if (fd >= 0) close(fd);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(9)};
    inet_pton(AF_INET, "192.0.2.1", &sa.sin_addr);
    int rc = connect(s, (struct sockaddr *)&sa, sizeof sa);
    int connect_errno = rc < 0 ? errno : 0;
    close(s);
    double mid = now_s() - start;

    while (now_s() - start < secs) usleep(10000);
    atomic_store(&stop, 1);
    for (int i = 0; i < 5; i++) pthread_join(t[i], NULL);
    printf("secret=%s connect=%s at=%.2f opens=%ld secs=%.2f\n",
           read_errno ? strerrorname_np(read_errno) : "OPENED",
           connect_errno ? strerrorname_np(connect_errno) : "CONNECTED", mid,
           atomic_load(&opens), now_s() - start);
    return 0;
}

static int quiet(double secs, const char *path) {
    double start = now_s();
    long n = 0;
    while (now_s() - start < secs) {
        int fd = open(path, O_RDONLY);
        if (fd >= 0) close(fd);
        n++;
        usleep(10000);
    }
    printf("quiet_opens=%ld\n", n);
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc == 3 && !strcmp(argv[1], "forkbomb")) return forkbomb(atoi(argv[2]));
    if (argc == 3 && !strcmp(argv[1], "balloon")) return balloon(atol(argv[2]));
    if (argc == 6 && !strcmp(argv[1], "flood")) {
        allowed = argv[3];
        denied = argv[4];
        return flood(atof(argv[2]), argv[5]);
    }
    if (argc == 4 && !strcmp(argv[1], "quiet")) return quiet(atof(argv[2]), argv[3]);
    fprintf(stderr, "usage: see the comment at the top of resources.c\n");
    return 2;
}
