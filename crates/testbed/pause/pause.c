/*
 * Pod sandbox ("pause") process for the kata-pulse test bed.
 *
 * No image registry is reachable on test machines, so the sandbox image is
 * built from this file. It sleeps until told to stop, exits 0 on SIGTERM or
 * SIGINT, and reaps orphans, since it is PID 1 of the pod's PID namespace.
 * `pause spin` burns one CPU instead, so tests have a container whose CPU
 * usage is known (about one core). `pause write` writes 4 KiB to
 * /written.bin at start and 16 MiB more on each SIGUSR1, with O_DIRECT so
 * every byte reaches the disk (and its blkio cgroup) at once: tests then
 * know when a container's block I/O changes and by how much.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_stop(int sig)
{
	(void)sig;
	_exit(0);
}

static volatile sig_atomic_t bursts;

static void on_burst(int sig)
{
	(void)sig;
	bursts++;
}

/* Writes `len` bytes (a multiple of 4 KiB) of `buf` at the end of `fd`;
 * exits 2 on an error, so a test sees the container die. */
static void write_direct(int fd, const char *buf, size_t chunk, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, buf, chunk < len ? chunk : len);
		if (n <= 0)
			_exit(2);
		len -= (size_t)n;
	}
}

static void writer(void)
{
	const size_t chunk = 1024 * 1024;
	struct sigaction burst = { .sa_handler = on_burst, .sa_flags = SA_RESTART };
	sigset_t usr1, old;
	char *buf;
	int fd;

	if (posix_memalign((void **)&buf, 4096, chunk))
		_exit(2);
	memset(buf, 7, chunk);
	fd = open("/written.bin", O_CREAT | O_WRONLY | O_TRUNC | O_DIRECT, 0644);
	if (fd < 0)
		_exit(2);
	sigemptyset(&usr1);
	sigaddset(&usr1, SIGUSR1);
	sigprocmask(SIG_BLOCK, &usr1, &old);
	sigaction(SIGUSR1, &burst, NULL);
	write_direct(fd, buf, chunk, 4096);
	for (;;) {
		while (bursts > 0) {
			bursts--;
			sigprocmask(SIG_SETMASK, &old, NULL);
			write_direct(fd, buf, chunk, 16 * chunk);
			sigprocmask(SIG_BLOCK, &usr1, NULL);
		}
		sigsuspend(&old);
	}
}

static void on_child(int sig)
{
	(void)sig;
	while (waitpid(-1, NULL, WNOHANG) > 0)
		;
}

int main(int argc, char **argv)
{
	struct sigaction stop = { .sa_handler = on_stop };
	struct sigaction child = { .sa_handler = on_child, .sa_flags = SA_RESTART };

	sigaction(SIGTERM, &stop, NULL);
	sigaction(SIGINT, &stop, NULL);
	sigaction(SIGCHLD, &child, NULL);
	if (argc > 1 && strcmp(argv[1], "spin") == 0) {
		volatile unsigned long n = 0;
		for (;;)
			n++;
	}
	if (argc > 1 && strcmp(argv[1], "write") == 0)
		writer();
	for (;;)
		pause();
	return 0;
}
