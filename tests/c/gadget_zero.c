/* Gadget Zero for Linux usbtest, as a raw gadget program (C, UAPI header only).
 *
 * VID 0x0525 PID 0xa4a0 (usbtest binds it as "Linux gadget zero": autoconf, ctrl_out, intr),
 * one configuration, one vendor interface with bulk IN (source), bulk OUT (sink), interrupt IN
 * and interrupt OUT, full or high speed. The source writes usbtest's pattern (pattern=1:
 * (i % maxpacket) % 63, restarting at each request; pattern=0: zeros), the sink checks it.
 * Vendor requests 0x5b (control write) and 0x5c (control read) store and return up to 4096
 * bytes (usbtest cases 14, 21). One thread per endpoint; a bus reset, a disconnect,
 * SET_CONFIGURATION or SET_INTERFACE stops them (SIGUSR1 makes their ioctl return EINTR) and
 * disables the endpoints; the next SET_CONFIGURATION starts them again.
 *
 * Usage: gadget_zero [-n NODE] [-d DRIVER] [-u DEVICE] [-s full|high] [-r REQ_SIZE]
 *                    [-p 0|1] [-t SECONDS]
 * Prints counters to stderr at exit (-t: run that long, else until killed). */
#include "rg.h"

#include <time.h>

#define REQ_CONTROL_WRITE 0x5b
#define REQ_CONTROL_READ 0x5c
#define INT_MAXPACKET 64

static int fd;
static int speed = USB_SPEED_HIGH;
static int req_size = 32768;
static int pattern = 1;

static struct usb_endpoint_descriptor ep_bulk_in, ep_bulk_out, ep_int_in, ep_int_out;
static int handles[4] = { -1, -1, -1, -1 };
static struct rg_worker workers[4];
static int configured;
static __u8 vendor_buf[RG_EP0_BUF];
static int vendor_len;

static unsigned long long bytes_in, bytes_out, pattern_errors, resets;

static void fill_pattern(__u8 *b, int len, int maxpacket)
{
	for (int i = 0; i < len; i++)
		b[i] = pattern ? (__u8)((i % maxpacket) % 63) : 0;
}

static int check_pattern(const __u8 *b, int len, int maxpacket)
{
	int bad = 0;
	for (int i = 0; i < len; i++)
		if (b[i] != (pattern ? (__u8)((i % maxpacket) % 63) : 0))
			bad++;
	return bad;
}

struct ep_job {
	int index; /* into handles/workers */
	int in;
	int len;
	int maxpacket;
};

static struct ep_job jobs[4];

static void *ep_thread(void *arg)
{
	struct ep_job *j = arg;
	struct rg_worker *w = &workers[j->index];
	struct usb_raw_ep_io *io = malloc(sizeof(*io) + (size_t)j->len);
	for (;;) {
		if (w->stop)
			break;
		io->ep = (__u16)handles[j->index];
		io->flags = 0;
		io->length = (__u32)j->len;
		long r;
		if (j->in) {
			fill_pattern(io->data, j->len, j->maxpacket);
			r = rg_ioctl(fd, USB_RAW_IOCTL_EP_WRITE, (unsigned long)io);
			if (r > 0)
				__atomic_add_fetch(&bytes_in, (unsigned long long)r, __ATOMIC_RELAXED);
		} else {
			r = rg_ioctl(fd, USB_RAW_IOCTL_EP_READ, (unsigned long)io);
			if (r > 0) {
				__atomic_add_fetch(&pattern_errors,
						   (unsigned long long)check_pattern(io->data, (int)r, j->maxpacket),
						   __ATOMIC_RELAXED);
				__atomic_add_fetch(&bytes_out, (unsigned long long)r, __ATOMIC_RELAXED);
			}
		}
		if (r == -EINTR || r == -ESHUTDOWN || r == -EBUSY || r == -EINVAL) {
			/* stopped, reset, or disabled under us: wait for the stopper */
			while (!w->stop)
				usleep(1000);
			break;
		}
	}
	free(io);
	return NULL;
}

static void stop_endpoints(void)
{
	for (int i = 0; i < 4; i++)
		rg_worker_stop(&workers[i]);
	for (int i = 0; i < 4; i++) {
		if (handles[i] >= 0) {
			long r = rg_ioctl(fd, USB_RAW_IOCTL_EP_DISABLE, (unsigned long)handles[i]);
			if (r < 0)
				fprintf(stderr, "EP_DISABLE %d: %s\n", handles[i], strerror((int)-r));
			handles[i] = -1;
		}
	}
	configured = 0;
}

static int start_endpoints(void)
{
	struct usb_endpoint_descriptor *d[4] = { &ep_bulk_in, &ep_bulk_out, &ep_int_in, &ep_int_out };
	int bulk_mp = __le16_to_cpu(ep_bulk_in.wMaxPacketSize);
	for (int i = 0; i < 4; i++) {
		long h = rg_ioctl(fd, USB_RAW_IOCTL_EP_ENABLE, (unsigned long)d[i]);
		if (h < 0) {
			fprintf(stderr, "EP_ENABLE %#x: %s\n", d[i]->bEndpointAddress,
				strerror((int)-h));
			return (int)h;
		}
		handles[i] = (int)h;
	}
	int len = (req_size + bulk_mp - 1) / bulk_mp * bulk_mp;
	jobs[0] = (struct ep_job){ 0, 1, len, bulk_mp };
	jobs[1] = (struct ep_job){ 1, 0, len, bulk_mp };
	jobs[2] = (struct ep_job){ 2, 1, INT_MAXPACKET, INT_MAXPACKET };
	jobs[3] = (struct ep_job){ 3, 0, INT_MAXPACKET, INT_MAXPACKET };
	for (int i = 0; i < 4; i++) {
		workers[i].stop = 0;
		pthread_create(&workers[i].thread, NULL, ep_thread, &jobs[i]);
		workers[i].running = 1;
	}
	configured = 1;
	return 0;
}

/* ---- descriptors ---------------------------------------------------------------------- */

static struct usb_device_descriptor dev_desc = {
	.bLength = USB_DT_DEVICE_SIZE,
	.bDescriptorType = USB_DT_DEVICE,
	.bcdUSB = __constant_cpu_to_le16(0x0200),
	.bDeviceClass = USB_CLASS_VENDOR_SPEC,
	.bMaxPacketSize0 = 64,
	.idVendor = __constant_cpu_to_le16(0x0525),
	.idProduct = __constant_cpu_to_le16(0xa4a0),
	.bcdDevice = __constant_cpu_to_le16(0x0100),
	.iManufacturer = 1,
	.iProduct = 2,
	.iSerialNumber = 3,
	.bNumConfigurations = 1,
};

/* The configuration at the current speed, or (other_speed) as it would be at the other one
 * (usbtest's case 9 reads OTHER_SPEED_CONFIGURATION of a high-speed device). */
static int build_config(__u8 *out, int other_speed)
{
	struct usb_config_descriptor c = {
		.bLength = USB_DT_CONFIG_SIZE,
		.bDescriptorType = USB_DT_CONFIG,
		.bNumInterfaces = 1,
		.bConfigurationValue = 1,
		.iConfiguration = 4,
		.bmAttributes = USB_CONFIG_ATT_ONE | USB_CONFIG_ATT_SELFPOWER,
		.bMaxPower = 1,
	};
	struct usb_interface_descriptor intf = {
		.bLength = USB_DT_INTERFACE_SIZE,
		.bDescriptorType = USB_DT_INTERFACE,
		.bInterfaceNumber = 0,
		.bAlternateSetting = 0,
		.bNumEndpoints = 4,
		.bInterfaceClass = USB_CLASS_VENDOR_SPEC,
		.iInterface = 5,
	};
	int n = 0;
	memcpy(out + n, &c, USB_DT_CONFIG_SIZE);
	n += USB_DT_CONFIG_SIZE;
	memcpy(out + n, &intf, USB_DT_INTERFACE_SIZE);
	n += USB_DT_INTERFACE_SIZE;
	struct usb_endpoint_descriptor *eps[4] = { &ep_bulk_in, &ep_bulk_out, &ep_int_in, &ep_int_out };
	int high = (speed == USB_SPEED_HIGH) != other_speed;
	for (int i = 0; i < 4; i++) {
		struct usb_endpoint_descriptor e = *eps[i];
		if ((e.bmAttributes & USB_ENDPOINT_XFERTYPE_MASK) == USB_ENDPOINT_XFER_BULK)
			e.wMaxPacketSize = __cpu_to_le16(high ? 512 : 64);
		else
			e.bInterval = high ? 4 : 1;
		memcpy(out + n, &e, USB_DT_ENDPOINT_SIZE);
		n += USB_DT_ENDPOINT_SIZE;
	}
	struct usb_config_descriptor *cp = (void *)out;
	cp->wTotalLength = __cpu_to_le16(n);
	if (other_speed)
		cp->bDescriptorType = USB_DT_OTHER_SPEED_CONFIG;
	return n;
}

static const char *strings[] = { NULL, "Linux Foundation", "Gadget Zero", "0123456789.0123456789.0123456789",
				 "source and sink data", "source/sink" };

/* ---- ep0 ------------------------------------------------------------------------------ */

static void stall(void)
{
	long r = rg_ioctl(fd, USB_RAW_IOCTL_EP0_STALL, 0);
	if (r < 0)
		fprintf(stderr, "EP0_STALL: %s\n", strerror((int)-r));
}

static void reply(const struct usb_ctrlrequest *c, const void *b, int len)
{
	long r = rg_ep0_reply(fd, c, b, len);
	if (r < 0)
		fprintf(stderr, "EP0_WRITE: %s\n", strerror((int)-r));
}

static void ack(void)
{
	long r = rg_ep0_ack(fd);
	if (r < 0)
		fprintf(stderr, "EP0_READ (status): %s\n", strerror((int)-r));
}

static void handle_standard(const struct usb_ctrlrequest *c)
{
	__u8 buf[RG_EP0_BUF];
	int value = __le16_to_cpu(c->wValue);
	switch (c->bRequest) {
	case USB_REQ_GET_DESCRIPTOR:
		if (!(c->bRequestType & USB_DIR_IN))
			break;
		switch (value >> 8) {
		case USB_DT_DEVICE:
			reply(c, &dev_desc, sizeof(dev_desc));
			return;
		case USB_DT_CONFIG:
			if ((value & 0xff) != 0)
				break;
			reply(c, buf, build_config(buf, 0));
			return;
		case USB_DT_OTHER_SPEED_CONFIG:
			if ((value & 0xff) != 0)
				break;
			reply(c, buf, build_config(buf, 1));
			return;
		case USB_DT_DEVICE_QUALIFIER: {
			struct usb_qualifier_descriptor q = {
				.bLength = sizeof(q),
				.bDescriptorType = USB_DT_DEVICE_QUALIFIER,
				.bcdUSB = __constant_cpu_to_le16(0x0200),
				.bDeviceClass = USB_CLASS_VENDOR_SPEC,
				.bMaxPacketSize0 = 64,
				.bNumConfigurations = 1,
			};
			reply(c, &q, sizeof(q));
			return;
		}
		case USB_DT_STRING: {
			int idx = value & 0xff;
			if (idx == 0) {
				__u8 lang[4] = { 4, USB_DT_STRING, 0x09, 0x04 };
				reply(c, lang, 4);
				return;
			}
			if (idx < (int)(sizeof(strings) / sizeof(strings[0])) &&
			    __le16_to_cpu(c->wIndex) == 0x0409) {
				reply(c, buf, rg_string(buf, strings[idx]));
				return;
			}
			break;
		}
		}
		break;
	case USB_REQ_SET_CONFIGURATION:
		stop_endpoints();
		if (value == 1) {
			if (start_endpoints() < 0)
				break;
			rg_ioctl(fd, USB_RAW_IOCTL_CONFIGURE, 0);
			rg_ioctl(fd, USB_RAW_IOCTL_VBUS_DRAW, 1);
		} else if (value != 0) {
			break;
		}
		ack();
		return;
	case USB_REQ_GET_CONFIGURATION:
		buf[0] = (__u8)configured;
		reply(c, buf, 1);
		return;
	case USB_REQ_SET_INTERFACE:
		if (value != 0 || !configured)
			break;
		/* a new altsetting 0: restart the data streams from the pattern's start */
		stop_endpoints();
		if (start_endpoints() < 0)
			break;
		ack();
		return;
	case USB_REQ_GET_INTERFACE:
		buf[0] = 0;
		reply(c, buf, 1);
		return;
	case USB_REQ_GET_STATUS:
		buf[0] = buf[1] = 0;
		reply(c, buf, 2);
		return;
	}
	stall();
}

static void handle_control(const struct usb_ctrlrequest *c)
{
	int length = __le16_to_cpu(c->wLength);
	if ((c->bRequestType & USB_TYPE_MASK) == USB_TYPE_STANDARD) {
		handle_standard(c);
		return;
	}
	if ((c->bRequestType & USB_TYPE_MASK) == USB_TYPE_VENDOR && length <= RG_EP0_BUF) {
		if (c->bRequest == REQ_CONTROL_WRITE && !(c->bRequestType & USB_DIR_IN)) {
			struct rg_io io = { .inner = { .ep = 0, .flags = 0, .length = (__u32)length } };
			long r = rg_ioctl(fd, USB_RAW_IOCTL_EP0_READ, (unsigned long)&io);
			if (r >= 0) {
				memcpy(vendor_buf, io.data, (size_t)r);
				vendor_len = (int)r;
			}
			return;
		}
		if (c->bRequest == REQ_CONTROL_READ && (c->bRequestType & USB_DIR_IN)) {
			reply(c, vendor_buf, length);
			return;
		}
	}
	stall();
}

static void report(void)
{
	fprintf(stderr,
		"gadget_zero: bytes_in %llu bytes_out %llu pattern_errors %llu resets %llu\n",
		bytes_in, bytes_out, pattern_errors, resets);
}

static void on_alarm(int sig)
{
	(void)sig;
	report();
	_exit(pattern_errors ? 2 : 0);
}

int main(int argc, char **argv)
{
	const char *node = "/dev/raw-gadget", *driver = "dummy_udc", *device = "dummy_udc.0";
	int seconds = 0, opt;
	while ((opt = getopt(argc, argv, "n:d:u:s:r:p:t:")) != -1) {
		switch (opt) {
		case 'n': node = optarg; break;
		case 'd': driver = optarg; break;
		case 'u': device = optarg; break;
		case 's': speed = rg_parse_speed(optarg); break;
		case 'r': req_size = atoi(optarg); break;
		case 'p': pattern = atoi(optarg); break;
		case 't': seconds = atoi(optarg); break;
		default:
			fprintf(stderr, "usage: %s [-n node] [-d driver] [-u device] [-s full|high] "
					"[-r req_size] [-p 0|1] [-t seconds]\n", argv[0]);
			return 1;
		}
	}
	if (speed != USB_SPEED_FULL)
		speed = USB_SPEED_HIGH;
	if (req_size < 1 || req_size > 1 << 22)
		req_size = 32768;
	rg_install_wake(SIGUSR1);
	signal(SIGALRM, on_alarm);
	signal(SIGTERM, on_alarm);
	signal(SIGINT, on_alarm);
	fd = rg_open_init_run(node, driver, device, speed);

	for (;;) {
		struct rg_event ev;
		memset(&ev, 0, sizeof(ev));
		ev.inner.length = sizeof(ev.ctrl);
		long r = rg_ioctl(fd, USB_RAW_IOCTL_EVENT_FETCH, (unsigned long)&ev);
		if (r == -EINTR)
			continue;
		if (r < 0)
			rg_die("USB_RAW_IOCTL_EVENT_FETCH", r);
		switch (ev.inner.type) {
		case USB_RAW_EVENT_CONNECT: {
			struct rg_eps eps;
			if (rg_eps_load(fd, &eps) < 0)
				rg_die("USB_RAW_IOCTL_EPS_INFO", -EINVAL);
			int bulk_mp = speed == USB_SPEED_HIGH ? 512 : 64;
			int bin = rg_eps_assign(&eps, USB_ENDPOINT_XFER_BULK, 1);
			int bout = rg_eps_assign(&eps, USB_ENDPOINT_XFER_BULK, 0);
			int iin = rg_eps_assign(&eps, USB_ENDPOINT_XFER_INT, 1);
			int iout = rg_eps_assign(&eps, USB_ENDPOINT_XFER_INT, 0);
			if (bin < 0 || bout < 0 || iin < 0 || iout < 0) {
				fprintf(stderr, "the UDC lacks the endpoints Gadget Zero needs\n");
				return 1;
			}
			int interval = speed == USB_SPEED_HIGH ? 4 : 1;
			rg_ep_desc(&ep_bulk_in, bin, USB_ENDPOINT_XFER_BULK, bulk_mp, 0);
			rg_ep_desc(&ep_bulk_out, bout, USB_ENDPOINT_XFER_BULK, bulk_mp, 0);
			rg_ep_desc(&ep_int_in, iin, USB_ENDPOINT_XFER_INT, INT_MAXPACKET, interval);
			rg_ep_desc(&ep_int_out, iout, USB_ENDPOINT_XFER_INT, INT_MAXPACKET, interval);
			if (seconds > 0)
				alarm((unsigned)seconds);
			break;
		}
		case USB_RAW_EVENT_CONTROL:
			handle_control(&ev.ctrl);
			break;
		case USB_RAW_EVENT_RESET:
		case USB_RAW_EVENT_DISCONNECT:
			resets++;
			stop_endpoints();
			break;
		default:
			break;
		}
	}
}
