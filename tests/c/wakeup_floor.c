/* The floor under any CUSE round: two processes bouncing one byte over a pair of pipes, the
 * same two wakeups (caller -> daemon -> caller) a FUSE request and its reply cost, without FUSE.
 * Three placements: as the scheduler likes, both on CPU 0, and on CPUs 0 and 1 (a cross-CPU
 * wakeup each way, as when the daemon sleeps on another CPU than its caller). Prints lines
 * "pipe_<placement> <iterations> <ns per round trip> 0" in ioctl_latency's format.
 *
 * Usage: wakeup_floor [-i ITERATIONS] */
#include "rg.h"

#include <sched.h>
#include <sys/wait.h>

static double now_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

static int pin(int cpu)
{
	if (cpu < 0)
		return 0;
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	return sched_setaffinity(0, sizeof(set), &set);
}

/* One measurement: parent on `cpu_a`, child on `cpu_b` (-1: unpinned). */
static int bounce(const char *name, int cpu_a, int cpu_b, int n)
{
	int ping[2], pong[2];
	if (pipe(ping) < 0 || pipe(pong) < 0) {
		perror("pipe");
		return -1;
	}
	pid_t child = fork();
	if (child < 0) {
		perror("fork");
		return -1;
	}
	char b = 0;
	if (child == 0) {
		close(ping[1]);
		close(pong[0]);
		if (pin(cpu_b) < 0)
			_exit(1);
		while (read(ping[0], &b, 1) == 1)
			if (write(pong[1], &b, 1) != 1)
				_exit(1);
		_exit(0);
	}
	close(ping[0]);
	close(pong[1]);
	cpu_set_t all;
	sched_getaffinity(0, sizeof(all), &all);
	if (pin(cpu_a) < 0) {
		perror("sched_setaffinity");
		return -1;
	}
	double t0 = now_ns();
	for (int i = 0; i < n; i++) {
		if (write(ping[1], &b, 1) != 1 || read(pong[0], &b, 1) != 1) {
			perror("ping");
			return -1;
		}
	}
	double dt = now_ns() - t0;
	close(ping[1]);
	close(pong[0]);
	waitpid(child, NULL, 0);
	sched_setaffinity(0, sizeof(all), &all);
	printf("pipe_%s %d %.0f 0\n", name, n, dt / n);
	fflush(stdout);
	return 0;
}

int main(int argc, char **argv)
{
	int n = 20000, opt;
	while ((opt = getopt(argc, argv, "i:")) != -1) {
		switch (opt) {
		case 'i': n = atoi(optarg); break;
		default:
			fprintf(stderr, "usage: %s [-i iterations]\n", argv[0]);
			return 1;
		}
	}
	if (bounce("unpinned", -1, -1, n) < 0 || bounce("same_cpu", 0, 0, n) < 0)
		return 1;
	if (sysconf(_SC_NPROCESSORS_ONLN) > 1 && bounce("cross_cpu", 0, 1, n) < 0)
		return 1;
	return 0;
}
