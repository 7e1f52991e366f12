/* Hostile server for the escape suite's exec, kernel-interface and
 * namespace rows. Each subcommand tries one attack and prints
 * "RESULT <attack> <outcome>", where outcome is "ok" (the attack worked)
 * or the errno name the kernel answered with. The tests read these lines;
 * the process exits 0 either way. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <dirent.h>
#include <unistd.h>
#include <linux/capability.h>
#include <linux/io_uring.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <sys/socket.h>

#ifndef MFD_NOEXEC_SEAL
#define MFD_NOEXEC_SEAL 0x8U
#endif
#ifndef MFD_EXEC
#define MFD_EXEC 0x10U
#endif

static void result(const char *attack, long ret)
{
	if (ret < 0)
		printf("RESULT %s %s\n", attack, strerrorname_np(errno));
	else
		printf("RESULT %s ok\n", attack);
	fflush(stdout);
}

/* Copies /usr/bin/true to fd; returns 0 on success. */
static int copy_true(int fd)
{
	char buf[65536];
	int in = open("/usr/bin/true", O_RDONLY);
	ssize_t n;
	if (in < 0)
		return -1;
	while ((n = read(in, buf, sizeof buf)) > 0)
		if (write(fd, buf, n) != n)
			return -1;
	close(in);
	return n < 0 ? -1 : 0;
}

/* Runs argv-less exec of `path` in a child; returns the exec result as
 * seen by the child (0 if the exec worked, else -1 with errno set). */
static long exec_child(int dirfd, const char *path, int flags)
{
	int pipefd[2];
	int err = 0;
	pid_t pid;
	if (pipe2(pipefd, O_CLOEXEC) < 0)
		return -1;
	pid = fork();
	if (pid == 0) {
		char *argv[] = { "true", NULL };
		char *envp[] = { NULL };
		syscall(SYS_execveat, dirfd, path, argv, envp, flags);
		err = errno;
		if (write(pipefd[1], &err, sizeof err) < 0)
			_exit(2);
		_exit(1);
	}
	close(pipefd[1]);
	if (read(pipefd[0], &err, sizeof err) != sizeof err)
		err = 0; /* closed on exec: it ran */
	close(pipefd[0]);
	waitpid(pid, NULL, 0);
	if (err) {
		errno = err;
		return -1;
	}
	return 0;
}

static void memfd_exec(void)
{
	int fd = syscall(SYS_memfd_create, "x", MFD_CLOEXEC);
	result("memfd_create", fd);
	fd = syscall(SYS_memfd_create, "x", MFD_CLOEXEC | MFD_EXEC);
	result("memfd_create_exec", fd);
	/* A sealed non-executable memfd is allowed; executing it is not. */
	fd = syscall(SYS_memfd_create, "x", MFD_CLOEXEC | MFD_NOEXEC_SEAL);
	if (fd < 0 || copy_true(fd) < 0) {
		result("memfd_sealed_setup", -1);
		return;
	}
	fchmod(fd, 0755);
	result("memfd_sealed_execveat", exec_child(fd, "", AT_EMPTY_PATH));
	char path[64];
	snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
	result("memfd_sealed_proc_exec", exec_child(AT_FDCWD, path, 0));
}

static void written_exec(const char *dir)
{
	char path[256], attack[64];
	snprintf(path, sizeof path, "%s/payload", dir);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0755);
	snprintf(attack, sizeof attack, "write%s", dir);
	result(attack, fd);
	if (fd < 0)
		return;
	copy_true(fd);
	fchmod(fd, 0755);
	close(fd);
	snprintf(attack, sizeof attack, "exec%s", dir);
	result(attack, exec_child(AT_FDCWD, path, 0));
}

static void setuid_exec(const char *path)
{
	/* The binary prints its effective uid; NO_NEW_PRIVS must keep it ours. */
	pid_t pid = fork();
	if (pid == 0) {
		char *argv[] = { (char *)path, "euid", NULL };
		char *envp[] = { NULL };
		execve(path, argv, envp);
		printf("RESULT setuid_exec %s\n", strerrorname_np(errno));
		_exit(1);
	}
	waitpid(pid, NULL, 0);
	printf("RESULT my_uid %d\n", getuid());
}

static void outside(int argc, char **argv)
{
	/* argv: pids of processes outside this server's domain. */
	for (int i = 0; i < argc; i++) {
		pid_t pid = atoi(argv[i]);
		char attack[64];
		snprintf(attack, sizeof attack, "ptrace_attach_%d", pid);
		long r = ptrace(PTRACE_SEIZE, pid, 0, 0);
		result(attack, r);
		snprintf(attack, sizeof attack, "kill_%d", pid);
		result(attack, kill(pid, SIGCONT));
		char buf[16];
		struct iovec local = { buf, sizeof buf }, remote = { (void *)0x400000, sizeof buf };
		snprintf(attack, sizeof attack, "process_vm_readv_%d", pid);
		result(attack, process_vm_readv(pid, &local, 1, &remote, 1, 0));
		int pfd = syscall(SYS_pidfd_open, pid, 0);
		snprintf(attack, sizeof attack, "pidfd_signal_%d", pid);
		result(attack, pfd < 0 ? pfd : syscall(SYS_pidfd_send_signal, pfd, SIGCONT, NULL, 0));
	}
}

static void namespaces(void)
{
	result("unshare_user", unshare(CLONE_NEWUSER));
	result("unshare_mount", unshare(CLONE_NEWNS));
	result("unshare_net", unshare(CLONE_NEWNET));
	long r = syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0);
	if (r == 0)
		_exit(0);
	if (r > 0)
		waitpid(r, NULL, 0);
	result("clone_newuser", r);
	result("mount_tmpfs", mount("none", "/tmp", "tmpfs", 0, NULL));
	result("mount_bind", mount("/", "/tmp", NULL, MS_BIND, NULL));
	result("chroot", chroot("/tmp"));
	int fd = open("/proc/1/ns/mnt", O_RDONLY);
	result("setns", fd < 0 ? fd : setns(fd, 0));
}

/* io_uring_setup with a valid params struct: success is an escape from
 * the syscall tracepoints the audit uses. */
struct uring_params {
	unsigned sq_entries, cq_entries, flags, sq_thread_cpu, sq_thread_idle,
		features, wq_fd, resv[3];
	unsigned long long sq_off[5], cq_off[5];
};

static void kernel(void)
{
	struct uring_params p;
	memset(&p, 0, sizeof p);
	result("io_uring_setup", syscall(SYS_io_uring_setup, 4, &p));
	/* BPF_MAP_CREATE with a zeroed attr. */
	char attr[128];
	memset(attr, 0, sizeof attr);
	result("bpf", syscall(SYS_bpf, 0, attr, sizeof attr));
	char pattr[128];
	memset(pattr, 0, sizeof pattr);
	*(unsigned *)(pattr + 4) = 112; /* size: PERF_ATTR_SIZE_VER8 */
	*(unsigned long long *)(pattr + 8) = 0; /* PERF_COUNT_SW_CPU_CLOCK */
	*(unsigned *)pattr = 1; /* PERF_TYPE_SOFTWARE */
	result("perf_event_open", syscall(SYS_perf_event_open, pattr, 0, -1, -1, 0));
	result("userfaultfd", syscall(SYS_userfaultfd, O_CLOEXEC));
	result("keyctl", syscall(SYS_keyctl, 0 /* GET_KEYRING_ID */, -3 /* session */, 1));
	result("prctl_cap_ambient_raise",
	       prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, CAP_SYS_ADMIN, 0, 0));
	result("prctl_set_mm", prctl(PR_SET_MM, PR_SET_MM_START_CODE, 0x1000, 0, 0));
	/* Leave the guard: move into the cgroup2 root, or into our parent. */
	const char *mnt = access("/sys/fs/cgroup/unified/cgroup.procs", F_OK) == 0
				  ? "/sys/fs/cgroup/unified"
				  : "/sys/fs/cgroup";
	char path[512], self[256] = "";
	snprintf(path, sizeof path, "%s/cgroup.procs", mnt);
	int fd = open(path, O_WRONLY);
	result("cgroup_procs_root", fd < 0 ? fd : write(fd, "0", 1));
	FILE *f = fopen("/proc/self/cgroup", "r");
	if (f && fgets(self, sizeof self, f)) {
		char *rel = strstr(self, "::");
		char *slash = rel ? strrchr(rel, '/') : NULL;
		if (slash)
			*slash = 0;
		snprintf(path, sizeof path, "%s%s/cgroup.procs", mnt, rel ? rel + 2 : "");
		fd = open(path, O_WRONLY);
		result("cgroup_procs_parent", fd < 0 ? fd : write(fd, "0", 1));
	}
	if (f)
		fclose(f);
}

/* Submits one request on a fresh ring and waits for it; returns the
 * completion's result (a negative errno on failure), or -errno if the ring
 * itself could not be set up. */
static int uring_one(const struct io_uring_sqe *req)
{
	struct io_uring_params p;
	memset(&p, 0, sizeof p);
	int fd = syscall(SYS_io_uring_setup, 4, &p);
	if (fd < 0)
		return -errno;
	size_t sq_len = p.sq_off.array + p.sq_entries * sizeof(unsigned);
	size_t cq_len = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
	int single = p.features & IORING_FEAT_SINGLE_MMAP;
	if (single && cq_len > sq_len)
		sq_len = cq_len;
	char *sq = mmap(NULL, sq_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd,
			IORING_OFF_SQ_RING);
	char *cq = single ? sq
			  : mmap(NULL, cq_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd,
				 IORING_OFF_CQ_RING);
	struct io_uring_sqe *sqes = mmap(NULL, p.sq_entries * sizeof(struct io_uring_sqe),
					 PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd,
					 IORING_OFF_SQES);
	if (sq == MAP_FAILED || cq == MAP_FAILED || sqes == MAP_FAILED)
		return -errno;
	unsigned *tail = (unsigned *)(sq + p.sq_off.tail);
	unsigned mask = *(unsigned *)(sq + p.sq_off.ring_mask);
	unsigned *array = (unsigned *)(sq + p.sq_off.array);
	unsigned t = *tail, idx = t & mask;
	sqes[idx] = *req;
	array[idx] = idx;
	__atomic_store_n(tail, t + 1, __ATOMIC_RELEASE);
	if (syscall(SYS_io_uring_enter, fd, 1, 1, IORING_ENTER_GETEVENTS, NULL, 0) < 0)
		return -errno;
	unsigned *head = (unsigned *)(cq + p.cq_off.head);
	unsigned cmask = *(unsigned *)(cq + p.cq_off.ring_mask);
	struct io_uring_cqe *cqes = (struct io_uring_cqe *)(cq + p.cq_off.cqes);
	unsigned h = __atomic_load_n(head, __ATOMIC_ACQUIRE);
	int res = cqes[h & cmask].res;
	__atomic_store_n(head, h + 1, __ATOMIC_RELEASE);
	close(fd);
	return res;
}

static void uring_result(const char *attack, int res)
{
	if (res < 0)
		printf("RESULT %s %s\n", attack, strerrorname_np(-res));
	else
		printf("RESULT %s ok\n", attack);
	fflush(stdout);
}

/* io_uring, where a policy allows it: an open and a connect submitted
 * through the ring instead of the syscalls. */
static void uring(const char *path, int port)
{
	struct io_uring_sqe open_req;
	memset(&open_req, 0, sizeof open_req);
	open_req.opcode = IORING_OP_OPENAT;
	open_req.fd = AT_FDCWD;
	open_req.addr = (unsigned long)path;
	open_req.open_flags = O_RDONLY;
	uring_result("uring_openat", uring_one(&open_req));

	int s = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(port) };
	inet_pton(AF_INET, "127.0.0.1", &sin.sin_addr);
	struct io_uring_sqe conn_req;
	memset(&conn_req, 0, sizeof conn_req);
	conn_req.opcode = IORING_OP_CONNECT;
	conn_req.fd = s;
	conn_req.addr = (unsigned long)&sin;
	conn_req.off = sizeof sin;
	uring_result("uring_connect", uring_one(&conn_req));
}

static void fds(void)
{
	/* Every fd the server starts with, beyond stdio, is a leak. */
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int leaked = 0, self = d ? dirfd(d) : -1;
	while (d && (e = readdir(d))) {
		int fd = atoi(e->d_name);
		if (e->d_name[0] == '.' || fd <= 2 || fd == self)
			continue;
		char link[256] = "", path[64];
		snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
		if (readlink(path, link, sizeof link - 1) < 0)
			strcpy(link, "?");
		printf("LEAK %d %s\n", fd, link);
		leaked++;
	}
	if (d)
		closedir(d);
	printf("RESULT fds_beyond_stdio %d\n", leaked);
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: kernel memfd|tmpexec DIR|setuid PATH|euid|outside PID...|ns|kernel|fds|uring PATH PORT\n");
		return 2;
	}
	const char *cmd = argv[1];
	if (!strcmp(cmd, "memfd"))
		memfd_exec();
	else if (!strcmp(cmd, "tmpexec") && argc > 2)
		written_exec(argv[2]);
	else if (!strcmp(cmd, "setuid") && argc > 2)
		setuid_exec(argv[2]);
	else if (!strcmp(cmd, "outside"))
		outside(argc - 2, argv + 2);
	else if (!strcmp(cmd, "ns"))
		namespaces();
	else if (!strcmp(cmd, "kernel"))
		kernel();
	else if (!strcmp(cmd, "fds"))
		fds();
	else if (!strcmp(cmd, "uring") && argc > 3)
		uring(argv[2], atoi(argv[3]));
	else if (!strcmp(cmd, "euid"))
		printf("RESULT euid %d\n", geteuid());
	else
		return 2;
	return 0;
}
