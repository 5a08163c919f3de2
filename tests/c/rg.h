/* Small helpers shared by the C test clients. Written against the Raw Gadget UAPI header
 * (<linux/usb/raw_gadget.h>, 6.7 or newer for the SUSPEND/RESUME/RESET/DISCONNECT events) and
 * <linux/usb/ch9.h> only, as any raw gadget program is; they run unchanged on raw_gadget.ko and
 * on `rawgadget serve`. */
#ifndef RG_H
#define RG_H

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include <linux/types.h>
#include <linux/usb/ch9.h>
#include <linux/usb/raw_gadget.h>

#define RG_EP0_BUF 4096

/* An ioctl's result the way the kernel returns it: >= 0, or -errno. */
static inline long rg_ioctl(int fd, unsigned long req, unsigned long arg)
{
	long r = ioctl(fd, req, arg);
	return r < 0 ? -errno : r;
}

static inline void rg_die(const char *what, long r)
{
	fprintf(stderr, "%s: %s\n", what, strerror((int)-r));
	exit(1);
}

/* usb_raw_event with room for a SETUP packet. */
struct rg_event {
	struct usb_raw_event inner;
	struct usb_ctrlrequest ctrl;
};

/* usb_raw_ep_io with a payload buffer. */
struct rg_io {
	struct usb_raw_ep_io inner;
	__u8 data[RG_EP0_BUF];
};

static inline const char *rg_event_name(__u32 t)
{
	switch (t) {
	case USB_RAW_EVENT_CONNECT: return "CONNECT";
	case USB_RAW_EVENT_CONTROL: return "CONTROL";
	case USB_RAW_EVENT_SUSPEND: return "SUSPEND";
	case USB_RAW_EVENT_RESUME: return "RESUME";
	case USB_RAW_EVENT_RESET: return "RESET";
	case USB_RAW_EVENT_DISCONNECT: return "DISCONNECT";
	default: return "INVALID";
	}
}

/* A signal whose only job is to make a blocked ioctl return EINTR (no SA_RESTART). */
static void rg_wake_handler(int sig) { (void)sig; }

static inline void rg_install_wake(int sig)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = rg_wake_handler;
	sigemptyset(&sa.sa_mask);
	sigaction(sig, &sa, NULL);
}

/* An endpoint thread that a reset or a configuration change stops: it loops until `stop` is
 * set; the stopper signals it until it is gone, since a signal that arrives just before the
 * thread enters the ioctl is lost (spec Appendix, step 6). */
struct rg_worker {
	pthread_t thread;
	volatile int stop;
	int running;
};

static inline void rg_worker_stop(struct rg_worker *w)
{
	if (!w->running)
		return;
	w->stop = 1;
	for (;;) {
		pthread_kill(w->thread, SIGUSR1);
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 2 * 1000 * 1000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		if (pthread_timedjoin_np(w->thread, NULL, &ts) == 0)
			break;
	}
	w->running = 0;
	w->stop = 0;
}

/* Picks an EPS_INFO endpoint for (type, direction) and an address for it, as xairy's
 * examples do: a fixed address if the endpoint has one, else the lowest unused number. */
struct rg_eps {
	struct usb_raw_eps_info info;
	int num;
	__u8 used[USB_RAW_EPS_NUM_MAX];
	__u16 addr_used[2]; /* bit n: number n taken, per direction (0 out, 1 in) */
};

static inline int rg_eps_load(int fd, struct rg_eps *e)
{
	memset(e, 0, sizeof(*e));
	long n = rg_ioctl(fd, USB_RAW_IOCTL_EPS_INFO, (unsigned long)&e->info);
	if (n < 0)
		return (int)n;
	e->num = (int)n;
	return 0;
}

/* Returns bEndpointAddress, or -1. `xfer` is USB_ENDPOINT_XFER_BULK/INT. */
static inline int rg_eps_assign(struct rg_eps *e, int xfer, int in)
{
	for (int i = 0; i < e->num; i++) {
		struct usb_raw_ep_info *ep = &e->info.eps[i];
		if (e->used[i])
			continue;
		if (in ? !ep->caps.dir_in : !ep->caps.dir_out)
			continue;
		if (xfer == USB_ENDPOINT_XFER_BULK && !ep->caps.type_bulk)
			continue;
		if (xfer == USB_ENDPOINT_XFER_INT && !ep->caps.type_int)
			continue;
		int num = -1;
		if (ep->addr != USB_RAW_EP_ADDR_ANY) {
			if (!(e->addr_used[in] & (1u << ep->addr)))
				num = (int)ep->addr;
		} else {
			for (int n = 1; n < 16; n++)
				if (!(e->addr_used[in] & (1u << n))) {
					num = n;
					break;
				}
		}
		if (num < 0)
			continue;
		e->used[i] = 1;
		e->addr_used[in] |= 1u << num;
		return num | (in ? USB_DIR_IN : USB_DIR_OUT);
	}
	return -1;
}

static inline void rg_ep_desc(struct usb_endpoint_descriptor *d, int addr, int xfer,
			      int maxpacket, int interval)
{
	memset(d, 0, sizeof(*d));
	d->bLength = USB_DT_ENDPOINT_SIZE;
	d->bDescriptorType = USB_DT_ENDPOINT;
	d->bEndpointAddress = (__u8)addr;
	d->bmAttributes = (__u8)xfer;
	d->wMaxPacketSize = __cpu_to_le16(maxpacket);
	d->bInterval = (__u8)interval;
}

/* A string descriptor from ASCII. */
static inline int rg_string(__u8 *out, const char *s)
{
	int n = (int)strlen(s);
	out[0] = (__u8)(2 + 2 * n);
	out[1] = USB_DT_STRING;
	for (int i = 0; i < n; i++) {
		out[2 + 2 * i] = (__u8)s[i];
		out[3 + 2 * i] = 0;
	}
	return 2 + 2 * n;
}

/* Answers an IN control request with `len` bytes (at most wLength); sets the ZERO flag when
 * the reply is shorter than asked, so a reply that fills whole packets still ends. */
static inline long rg_ep0_reply(int fd, const struct usb_ctrlrequest *c, const void *buf, int len)
{
	struct rg_io io;
	int want = __le16_to_cpu(c->wLength);
	if (len > want)
		len = want;
	io.inner.ep = 0;
	io.inner.flags = len < want ? USB_RAW_IO_FLAGS_ZERO : 0;
	io.inner.length = (__u32)len;
	memcpy(io.data, buf, (size_t)len);
	return rg_ioctl(fd, USB_RAW_IOCTL_EP0_WRITE, (unsigned long)&io);
}

/* The status stage of a request without data: a 0-length EP0_READ. */
static inline long rg_ep0_ack(int fd)
{
	struct usb_raw_ep_io io = { .ep = 0, .flags = 0, .length = 0 };
	return rg_ioctl(fd, USB_RAW_IOCTL_EP0_READ, (unsigned long)&io);
}

/* The speed argument of the clients: "full", "high" or "super". */
static inline int rg_parse_speed(const char *s)
{
	if (!strcmp(s, "low")) return USB_SPEED_LOW;
	if (!strcmp(s, "full")) return USB_SPEED_FULL;
	if (!strcmp(s, "super")) return USB_SPEED_SUPER;
	return USB_SPEED_HIGH;
}

static inline int rg_open_init_run(const char *node, const char *driver, const char *device,
				   int speed)
{
	int fd = open(node, O_RDWR);
	if (fd < 0) {
		perror(node);
		exit(1);
	}
	struct usb_raw_init init;
	memset(&init, 0, sizeof(init));
	strncpy((char *)init.driver_name, driver, UDC_NAME_LENGTH_MAX - 1);
	strncpy((char *)init.device_name, device, UDC_NAME_LENGTH_MAX - 1);
	init.speed = (__u8)speed;
	long r = rg_ioctl(fd, USB_RAW_IOCTL_INIT, (unsigned long)&init);
	if (r < 0)
		rg_die("USB_RAW_IOCTL_INIT", r);
	r = rg_ioctl(fd, USB_RAW_IOCTL_RUN, 0);
	if (r < 0)
		rg_die("USB_RAW_IOCTL_RUN", r);
	return fd;
}

#endif
