/*
 * Workload of the containerd-api test: known memory, file I/O, tasks, CPU.
 *
 * 1. touches 16 MiB of anonymous memory (rss);
 * 2. writes 64 MiB through the page cache and fsyncs it (cache; with the
 *    test's 48 MiB limit the cgroup has to reclaim, so failcnt moves);
 * 3. writes 4 MiB with O_DIRECT and reads them back with O_DIRECT (block
 *    I/O that reaches the disk for sure, both directions);
 * 4. forks a child that sleeps (two tasks in the cgroup: the test's signal
 *    that the I/O is done);
 * 5. spins (CPU; with the test's CPU quota, throttling).
 * SIGTERM ends both processes with status 0.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#define MIB (1024 * 1024)

static pid_t child;

static void on_stop(int sig)
{
	(void)sig;
	if (child > 0)
		kill(child, SIGKILL);
	_exit(0);
}

static void die(const char *what)
{
	perror(what);
	exit(2);
}

static void write_all(int fd, const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, buf, len);
		if (n <= 0)
			die("write");
		buf += n;
		len -= (size_t)n;
	}
}

int main(void)
{
	struct sigaction stop = { .sa_handler = on_stop };
	char *anon, *buf;
	int fd, i;

	sigaction(SIGTERM, &stop, NULL);
	sigaction(SIGINT, &stop, NULL);

	anon = malloc(16 * MIB);
	if (!anon)
		die("malloc");
	memset(anon, 1, 16 * MIB);

	if (posix_memalign((void **)&buf, 4096, MIB))
		die("posix_memalign");
	memset(buf, 7, MIB);

	fd = open("/buffered.bin", O_CREAT | O_WRONLY | O_TRUNC, 0644);
	if (fd < 0)
		die("open buffered");
	/* Written back every 8 MiB: cgroup v1 throttles dirty pages poorly,
	 * and 64 MiB left dirty under a 48 MiB limit can end in an OOM kill. */
	for (i = 0; i < 64; i++) {
		write_all(fd, buf, MIB);
		if (i % 8 == 7 && fsync(fd))
			die("fsync");
	}
	if (fsync(fd))
		die("fsync");
	close(fd);

	fd = open("/direct.bin", O_CREAT | O_RDWR | O_TRUNC | O_DIRECT, 0644);
	if (fd < 0)
		die("open direct");
	for (i = 0; i < 4; i++)
		write_all(fd, buf, MIB);
	if (fsync(fd))
		die("fsync direct");
	if (lseek(fd, 0, SEEK_SET) != 0)
		die("lseek");
	for (i = 0; i < 4; i++)
		if (read(fd, buf, MIB) != MIB)
			die("read direct");
	close(fd);

	child = fork();
	if (child < 0)
		die("fork");
	if (child == 0) {
		for (;;)
			pause();
	}
	fprintf(stderr, "workload: I/O done, spinning\n");
	{
		volatile unsigned long n = 0;
		for (;;)
			n++;
	}
	return 0;
}
