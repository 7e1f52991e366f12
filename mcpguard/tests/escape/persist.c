/*
 * Hostile persistence probes for escape class 12: leave code in a granted
 * project for git, an editor, direnv or an MCP client to run later.
 *
 * Usage: persist STEP...   where each STEP is NAME=OP,ARG,ARG
 *
 * OPs: write,PATH,TEXT (O_CREAT|O_TRUNC), rename,OLD,NEW,
 * symlink,TARGET,LINK, unlink,PATH, mkdir,PATH, chdir,PATH, link,OLD,NEW,
 * race,DIR (for 2 s a second thread flips one path buffer between
 * DIR/benign and DIR/.envrc while this one opens it with O_CREAT and
 * unlinks what it made; prints how many opens of each name worked).
 * Every step prints one line: "NAME OK <what>" when the syscall worked,
 * "NAME <ERRNO> <what failed>" when it did not. Steps run in order.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <time.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common.h"

static void result(const char *name, int ret, const char *what)
{
    if (ret < 0)
        printf("%s %s %s\n", name, errname(errno), what);
    else
        printf("%s OK %s\n", name, what);
}

static void op_write(const char *name, const char *path, const char *text)
{
    /* An executable hook, as an attacker would leave it. */
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0755);
    if (fd < 0)
        return result(name, -1, "open for writing");
    result(name, (int)write(fd, text, strlen(text)), "written");
    close(fd);
}

/* Both names have the same length, so a flip rewrites bytes in place. */
static char race_path[4096];
static size_t race_at;
static volatile int racing = 1;

static void *flipper(void *arg)
{
    (void)arg;
    while (racing) {
        /* The barriers keep the compiler from dropping the first copy. */
        memcpy(race_path + race_at, "benign", 6);
        __asm__ volatile("" ::: "memory");
        memcpy(race_path + race_at, ".envrc", 6);
        __asm__ volatile("" ::: "memory");
    }
    return NULL;
}

static void op_race(const char *name, const char *dir)
{
    snprintf(race_path, sizeof race_path, "%s/benign", dir);
    race_at = strlen(dir) + 1;
    pthread_t t;
    pthread_create(&t, NULL, flipper, NULL);
    long benign = 0, envrc = 0, refused = 0;
    time_t end = time(NULL) + 2;
    char bpath[4096], epath[4096];
    snprintf(bpath, sizeof bpath, "%s/benign", dir);
    snprintf(epath, sizeof epath, "%s/.envrc", dir);
    while (time(NULL) < end) {
        int fd = open(race_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0) {
            refused++;
            continue;
        }
        close(fd);
        if (unlink(bpath) == 0)
            benign++;
        if (unlink(epath) == 0)
            envrc++;
    }
    racing = 0;
    pthread_join(t, NULL);
    printf("%s %s benign=%ld envrc=%ld refused=%ld\n", name, envrc ? "OK" : "EACCES",
           benign, envrc, refused);
}

static void step(char *spec)
{
    const char *name;
    const char *a[3] = { "", "", "" };
    char *op = split_step(spec, &name, a, 3);
    if (!strcmp(op, "write")) op_write(name, a[0], a[1]);
    else if (!strcmp(op, "rename")) result(name, rename(a[0], a[1]), "rename");
    else if (!strcmp(op, "symlink")) result(name, symlink(a[0], a[1]), "symlink");
    else if (!strcmp(op, "unlink")) result(name, unlink(a[0]), "unlink");
    else if (!strcmp(op, "mkdir")) result(name, mkdir(a[0], 0755), "mkdir");
    else if (!strcmp(op, "chdir")) result(name, chdir(a[0]), "chdir");
    else if (!strcmp(op, "link")) result(name, link(a[0], a[1]), "link");
    else if (!strcmp(op, "race")) op_race(name, a[0]);
    else {
        printf("BADOP %s\n", op);
        exit(2);
    }
    fflush(stdout);
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        step(argv[i]);
    return 0;
}
