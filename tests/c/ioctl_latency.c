/* Cost of one raw gadget ioctl that never waits for the host, on raw_gadget.ko or on
 * `rawgadget serve` (CUSE: a round trip through the daemon per FUSE request). Prints one line
 * per kind: "<name> <iterations> <ns per call> <result>".
 *
 *   value       VBUS_DRAW in OPENED: a by-value argument, EINVAL (1 FUSE round)
 *   header      EVENT_FETCH in OPENED: reads the 8-byte header, EINVAL (fast path: 1 round;
 *               retry protocol: 2)
 *   eps_info    EPS_INFO while RUNNING: 960 bytes copied out (fast path 1 round, retry 2)
 *   ep0_header  EP0_READ of 64 bytes while RUNNING, no SETUP pending: EBUSY after the header
 *               checks (fast path 1 round, retry 3)
 *
 * Usage: ioctl_latency [-n NODE] [-d DRIVER] [-u DEVICE] [-i ITERATIONS] */
#include "rg.h"

static double now_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

static void bench(const char *name, int fd, unsigned long cmd, unsigned long arg, int n)
{
	long r = 0;
	double t0 = now_ns();
	for (int i = 0; i < n; i++)
		r = rg_ioctl(fd, cmd, arg);
	double dt = now_ns() - t0;
	printf("%s %d %.0f %ld\n", name, n, dt / n, r);
	fflush(stdout);
}

int main(int argc, char **argv)
{
	const char *node = "/dev/raw-gadget", *driver = "dummy_udc", *device = "dummy_udc.0";
	int n = 20000, opt;
	while ((opt = getopt(argc, argv, "n:d:u:i:")) != -1) {
		switch (opt) {
		case 'n': node = optarg; break;
		case 'd': driver = optarg; break;
		case 'u': device = optarg; break;
		case 'i': n = atoi(optarg); break;
		default:
			fprintf(stderr, "usage: %s [-n node] [-d driver] [-u device] [-i iterations]\n",
				argv[0]);
			return 1;
		}
	}
	int fd = open(node, O_RDWR);
	if (fd < 0) {
		perror(node);
		return 1;
	}
	struct usb_raw_event ev = { 0, 0 };
	bench("value", fd, USB_RAW_IOCTL_VBUS_DRAW, 1, n);
	bench("header", fd, USB_RAW_IOCTL_EVENT_FETCH, (unsigned long)&ev, n);
	close(fd);
	fd = rg_open_init_run(node, driver, device, USB_SPEED_HIGH);
	static struct usb_raw_eps_info info;
	bench("eps_info", fd, USB_RAW_IOCTL_EPS_INFO, (unsigned long)&info, n);
	static struct rg_io io = { .inner = { .ep = 0, .flags = 0, .length = 64 } };
	bench("ep0_header", fd, USB_RAW_IOCTL_EP0_READ, (unsigned long)&io, n);
	close(fd);
	return 0;
}
