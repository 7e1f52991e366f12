/*
 * Hostile filesystem probes for escape classes 1 (sensitive reads) and 2
 * (path tricks).
 *
 * Usage: files STEP...   where each STEP is NAME=OP,ARG,ARG...
 *        files hold FILE  (write FILE, print "HOLD <pid>", wait for EOF)
 *
 * Every step prints one line: "NAME OK <detail>" when the syscall worked,
 * "NAME <ERRNO> <what failed>" when it did not. Steps run in order, so a
 * `chdir` step changes what later relative paths mean. An argument
 * containing "{stdin}" has it replaced by the first line read from stdin
 * (the test hands over pids it only knows after the launch that way).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "common.h"

static char stdin_line[64];

static void fail(const char *name, const char *what)
{
    printf("%s %s %s\n", name, errname(errno), what);
}

/* Read up to 200 bytes from fd and print them as one line, so the test can
 * see whether a secret leaked. */
static void print_content(const char *name, int fd, const char *how)
{
    char buf[201];
    ssize_t n = read(fd, buf, sizeof buf - 1);
    if (n < 0) {
        /* The open worked: that alone counts as a leak. */
        printf("%s OK %s opened, read: %s\n", name, how, errname(errno));
        return;
    }
    buf[n] = 0;
    for (ssize_t i = 0; i < n; i++)
        if (buf[i] == '\n' || buf[i] == '\0')
            buf[i] = ' ';
    printf("%s OK %s: %s\n", name, how, buf);
}

/* Non-blocking, so a pipe reached through /proc/<pid>/fd cannot hang us. */
static void op_read(const char *name, const char *path)
{
    int fd = open(path, O_RDONLY | O_NONBLOCK);
    if (fd < 0)
        return fail(name, "open");
    print_content(name, fd, "read");
    close(fd);
}

static void op_readdir(const char *name, const char *path)
{
    DIR *d = opendir(path);
    if (!d)
        return fail(name, "opendir");
    errno = 0;
    int n = 0;
    char first[64] = "";
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") && !first[0])
            snprintf(first, sizeof first, "%.63s", e->d_name);
        n++;
    }
    if (errno) {
        fail(name, "readdir");
    } else {
        printf("%s OK %d entries, e.g. %s\n", name, n, first);
    }
    closedir(d);
}

/* Whatever a path's magic link or symlink points to, then a read through it. */
static void op_readlink(const char *name, const char *path)
{
    char buf[256];
    ssize_t n = readlink(path, buf, sizeof buf - 1);
    if (n < 0)
        return fail(name, "readlink");
    buf[n] = 0;
    printf("%s OK -> %s\n", name, buf);
}

static int resolve_flags(const char *spec)
{
    int r = 0;
    if (strstr(spec, "beneath")) r |= RESOLVE_BENEATH;
    if (strstr(spec, "in_root")) r |= RESOLVE_IN_ROOT;
    if (strstr(spec, "no_xdev")) r |= RESOLVE_NO_XDEV;
    if (strstr(spec, "no_symlinks")) r |= RESOLVE_NO_SYMLINKS;
    if (strstr(spec, "no_magiclinks")) r |= RESOLVE_NO_MAGICLINKS;
    return r;
}

static void op_openat2(const char *name, const char *dir, const char *path,
                       const char *resolve)
{
    int dfd = open(dir, O_PATH | O_DIRECTORY);
    if (dfd < 0)
        return fail(name, "open dirfd");
    struct open_how how = { .flags = O_RDONLY, .resolve = resolve_flags(resolve) };
    int fd = syscall(SYS_openat2, dfd, path, &how, sizeof how);
    if (fd < 0) {
        fail(name, "openat2");
    } else {
        print_content(name, fd, "openat2");
        close(fd);
    }
    close(dfd);
}

/* O_PATH needs no access right; what matters is whether it can be turned
 * into a readable fd: read(2) on it, then a re-open through /proc/self/fd. */
static void op_opath(const char *name, const char *path)
{
    int fd = open(path, O_PATH);
    if (fd < 0)
        return fail(name, "open O_PATH");
    char buf[8];
    if (read(fd, buf, sizeof buf) >= 0) {
        printf("%s OK read(2) on an O_PATH fd\n", name);
        return;
    }
    char proc[64];
    snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
    int rfd = open(proc, O_RDONLY);
    if (rfd < 0) {
        printf("%s %s reopen %s\n", name, errname(errno), proc);
    } else {
        print_content(name, rfd, proc);
        close(rfd);
    }
    close(fd);
}

/* An O_PATH fd of a directory as the base of a relative open. */
static void op_dirfd(const char *name, const char *dir, const char *file)
{
    int dfd = open(dir, O_PATH | O_DIRECTORY);
    if (dfd < 0)
        return fail(name, "open O_PATH dir");
    int fd = openat(dfd, file, O_RDONLY);
    if (fd < 0) {
        fail(name, "openat");
    } else {
        print_content(name, fd, "openat");
        close(fd);
    }
    close(dfd);
}

/* flink(2) by another name: link an O_PATH fd into a writable tree. */
static void op_flink(const char *name, const char *path, const char *newpath)
{
    int fd = open(path, O_PATH);
    if (fd < 0)
        return fail(name, "open O_PATH");
    if (linkat(fd, "", AT_FDCWD, newpath, AT_EMPTY_PATH) < 0)
        fail(name, "linkat AT_EMPTY_PATH");
    else
        printf("%s OK linked\n", name);
    close(fd);
}

static void op_handle(const char *name, const char *path, const char *mountdir)
{
    struct {
        struct file_handle fh;
        unsigned char bytes[MAX_HANDLE_SZ];
    } h;
    h.fh.handle_bytes = MAX_HANDLE_SZ;
    int mnt_id;
    if (name_to_handle_at(AT_FDCWD, path, &h.fh, &mnt_id, 0) < 0)
        return fail(name, "name_to_handle_at");
    int mfd = open(mountdir, O_RDONLY | O_DIRECTORY);
    if (mfd < 0)
        return fail(name, "open mount dir");
    int fd = open_by_handle_at(mfd, &h.fh, O_RDONLY);
    if (fd < 0) {
        fail(name, "open_by_handle_at");
    } else {
        print_content(name, fd, "open_by_handle_at");
        close(fd);
    }
    close(mfd);
}

static void op_hold(const char *file)
{
    FILE *f = fopen(file, "w");
    if (!f || fputs("OTHER-SERVER-STATE\n", f) < 0 || fclose(f)) {
        perror(file);
        exit(1);
    }
    printf("HOLD %d\n", getpid());
    fflush(stdout);
    char buf[64];
    while (read(0, buf, sizeof buf) > 0)
        ;
    exit(0);
}

/* Replace "{stdin}" in `arg` with the first stdin line. */
static const char *expand(const char *arg)
{
    const char *at = strstr(arg, "{stdin}");
    if (!at)
        return arg;
    if (!stdin_line[0]) {
        ssize_t n = read(0, stdin_line, sizeof stdin_line - 1);
        while (n > 0 && (stdin_line[n - 1] == '\n' || stdin_line[n - 1] == ' '))
            n--;
        stdin_line[n > 0 ? n : 0] = 0;
    }
    static char out[4][512];
    static int slot;
    char *o = out[slot++ % 4];
    snprintf(o, 512, "%.*s%s%s", (int)(at - arg), arg, stdin_line, at + 7);
    return o;
}

static void step(char *spec)
{
    const char *name;
    const char *a[4] = { "", "", "", "" };
    char *op = split_step(spec, &name, a, 4);
    for (int i = 0; i < 4; i++)
        a[i] = expand(a[i]);
    if (!strcmp(op, "read")) op_read(name, a[0]);
    else if (!strcmp(op, "readdir")) op_readdir(name, a[0]);
    else if (!strcmp(op, "readlink")) op_readlink(name, a[0]);
    else if (!strcmp(op, "chdir")) {
        if (chdir(a[0]) < 0) fail(name, "chdir");
        else printf("%s OK chdir\n", name);
    } else if (!strcmp(op, "symlink")) {
        if (symlink(a[0], a[1]) < 0) fail(name, "symlink");
        else printf("%s OK symlinked\n", name);
    } else if (!strcmp(op, "link")) {
        if (link(a[0], a[1]) < 0) fail(name, "link");
        else printf("%s OK linked\n", name);
    } else if (!strcmp(op, "rename")) {
        if (rename(a[0], a[1]) < 0) fail(name, "rename");
        else printf("%s OK renamed\n", name);
    } else if (!strcmp(op, "write")) {
        int fd = open(a[0], O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0) return fail(name, "open for writing");
        if (write(fd, a[1], strlen(a[1])) < 0) fail(name, "write");
        else printf("%s OK written\n", name);
        close(fd);
    } else if (!strcmp(op, "openat2")) op_openat2(name, a[0], a[1], a[2]);
    else if (!strcmp(op, "opath")) op_opath(name, a[0]);
    else if (!strcmp(op, "dirfd")) op_dirfd(name, a[0], a[1]);
    else if (!strcmp(op, "flink")) op_flink(name, a[0], a[1]);
    else if (!strcmp(op, "handle")) op_handle(name, a[0], a[1]);
    else {
        printf("BADOP %s\n", op);
        exit(2);
    }
    fflush(stdout);
}

int main(int argc, char **argv)
{
    if (argc == 3 && !strcmp(argv[1], "hold"))
        op_hold(argv[2]);
    for (int i = 1; i < argc; i++)
        step(argv[i]);
    return 0;
}
