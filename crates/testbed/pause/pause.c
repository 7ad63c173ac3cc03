/*
 * Pod sandbox ("pause") process for the kata-pulse test bed.
 *
 * No image registry is reachable on test machines, so the sandbox image is
 * built from this file. It sleeps until told to stop, exits 0 on SIGTERM or
 * SIGINT, and reaps orphans, since it is PID 1 of the pod's PID namespace.
 * `pause spin` burns one CPU instead, so tests have a container whose CPU
 * usage is known (about one core).
 */
#include <signal.h>
#include <stddef.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_stop(int sig)
{
	(void)sig;
	_exit(0);
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
	for (;;)
		pause();
	return 0;
}
