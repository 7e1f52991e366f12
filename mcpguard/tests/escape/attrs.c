/*
 * Hostile attribute changes and silent-refusal probes for escape classes
 * 10 (attribute changes) and 15 (refusals that left no record).
 *
 * Usage: attrs STEP...   where each STEP is NAME=OP,PATH[,MODE]
 *
 * OPs: chmod PATH MODE, fchmod PATH MODE (on an fd opened read-only),
 * chown PATH (to the caller's own ids), utimens PATH, setxattr PATH
 * (user.x), removexattr PATH (user.x), mkfifo PATH, mknod PATH (a regular
 * file node), truncate PATH, ftruncate PATH (on an fd opened read-only),
 * unlink PATH, mkdir PATH, rmdir PATH.
 *
 * Every step prints one line: "NAME OK" when the syscall worked,
 * "NAME <ERRNO> <what failed>" when it did not.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "common.h"

static void result(const char *name, int rc, const char *what)
{
    if (rc == 0)
        printf("%s OK\n", name);
    else
        printf("%s %s %s\n", name, errname(errno), what);
}

/* Runs `op` on an fd opened read-only: what a server holding only a read
 * grant can get. */
static void on_fd(const char *name, const char *op, const char *path, mode_t mode)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return result(name, -1, "open");
    int rc = strcmp(op, "fchmod") == 0 ? fchmod(fd, mode) : ftruncate(fd, 0);
    result(name, rc, op);
    close(fd);
}

static void step(char *spec)
{
    char *eq = strchr(spec, '=');
    if (!eq) {
        printf("%s BADSTEP\n", spec);
        return;
    }
    *eq = 0;
    const char *name = spec;
    char *op = eq + 1;
    char *path = strchr(op, ',');
    if (!path) {
        printf("%s BADSTEP\n", name);
        return;
    }
    *path++ = 0;
    char *arg = strchr(path, ',');
    if (arg)
        *arg++ = 0;
    mode_t mode = arg ? (mode_t)strtol(arg, NULL, 8) : 0644;

    if (strcmp(op, "chmod") == 0)
        result(name, chmod(path, mode), op);
    else if (strcmp(op, "fchmod") == 0 || strcmp(op, "ftruncate") == 0)
        on_fd(name, op, path, mode);
    else if (strcmp(op, "chown") == 0)
        result(name, chown(path, getuid(), getgid()), op);
    else if (strcmp(op, "utimens") == 0)
        result(name, utimensat(AT_FDCWD, path, NULL, 0), op);
    else if (strcmp(op, "setxattr") == 0)
        result(name, setxattr(path, "user.x", "1", 1, 0), op);
    else if (strcmp(op, "removexattr") == 0)
        result(name, removexattr(path, "user.x"), op);
    else if (strcmp(op, "mkfifo") == 0)
        result(name, mkfifo(path, 0600), op);
    else if (strcmp(op, "mknod") == 0)
        result(name, mknod(path, S_IFREG | 0600, 0), op);
    else if (strcmp(op, "truncate") == 0)
        result(name, truncate(path, 0), op);
    else if (strcmp(op, "unlink") == 0)
        result(name, unlink(path), op);
    else if (strcmp(op, "mkdir") == 0)
        result(name, mkdir(path, 0755), op);
    else if (strcmp(op, "rmdir") == 0)
        result(name, rmdir(path), op);
    else
        printf("%s BADOP %s\n", name, op);
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        step(argv[i]);
    fflush(stdout);
    return 0;
}
