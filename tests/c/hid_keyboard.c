/* A HID boot keyboard that types a text, as a raw gadget program (C, UAPI header only).
 *
 * One interface (HID, boot subclass, keyboard protocol) with an 8-byte interrupt IN endpoint.
 * Each character is a press report then a release report (HID 1.11 appendix B.1). Typing
 * starts at SET_CONFIGURATION; a bus reset or a disconnect stops the endpoint thread and
 * disables the endpoint (re-arming: the next SET_CONFIGURATION enables it again and typing
 * goes on from the first character not yet read by the host). Reports are written only as the
 * host polls, so nothing is lost while no program reads the input device.
 *
 * Answers GET_DESCRIPTOR(HID, REPORT), GET_REPORT, SET_REPORT (LEDs), GET/SET_IDLE,
 * GET/SET_PROTOCOL.
 *
 * Usage: hid_keyboard [-n NODE] [-d DRIVER] [-u DEVICE] [-s low|full|high] [-x] TEXT
 *   -x: exit (status 0) once the whole text has been read by the host.
 * Prints "typed N/M resets R" to stderr at exit. */
#include "rg.h"

#define HID_DT_HID 0x21
#define HID_DT_REPORT 0x22
#define HID_REQ_GET_REPORT 0x01
#define HID_REQ_GET_IDLE 0x02
#define HID_REQ_GET_PROTOCOL 0x03
#define HID_REQ_SET_REPORT 0x09
#define HID_REQ_SET_IDLE 0x0a
#define HID_REQ_SET_PROTOCOL 0x0b

static const __u8 report_desc[63] = {
	0x05, 0x01, 0x09, 0x06, 0xa1, 0x01,       /* Generic Desktop, Keyboard, Application */
	0x05, 0x07, 0x19, 0xe0, 0x29, 0xe7,       /* Key Codes 224..231 */
	0x15, 0x00, 0x25, 0x01, 0x75, 0x01,       /* logical 0..1, size 1 */
	0x95, 0x08, 0x81, 0x02,                   /* 8 modifier bits: Input (Data, Var, Abs) */
	0x95, 0x01, 0x75, 0x08, 0x81, 0x01,       /* reserved byte: Input (Const) */
	0x95, 0x05, 0x75, 0x01, 0x05, 0x08,       /* 5 LEDs */
	0x19, 0x01, 0x29, 0x05, 0x91, 0x02,       /* Output (Data, Var, Abs) */
	0x95, 0x01, 0x75, 0x03, 0x91, 0x01,       /* 3 bits padding: Output (Const) */
	0x95, 0x06, 0x75, 0x08, 0x15, 0x00,       /* 6 keys of 8 bits */
	0x25, 0x65, 0x05, 0x07, 0x19, 0x00,       /* logical 0..101, Key Codes */
	0x29, 0x65, 0x81, 0x00, 0xc0,             /* Input (Data, Array), End Collection */
};

static int fd;
static int speed = USB_SPEED_HIGH;
static const char *text = "";
static int text_len;
static int exit_when_done;
static volatile int typed; /* characters whose release report the host has read */
static int handle = -1;
static struct rg_worker worker;
static struct usb_endpoint_descriptor ep_in;
static __u8 protocol = 1, idle, leds;
static unsigned long resets;

/* US layout: ASCII → (modifier, usage). */
static int keycode(char ch, __u8 *mod, __u8 *key)
{
	static const char *shifted = "!@#$%^&*()";
	static const char *punct = "-=[]\\;'`,./";
	static const __u8 punct_keys[] = { 0x2d, 0x2e, 0x2f, 0x30, 0x31, 0x33, 0x34, 0x35, 0x36, 0x37, 0x38 };
	static const char *punct_shift = "_+{}|:\"~<>?";
	*mod = 0;
	if (ch >= 'a' && ch <= 'z') { *key = (__u8)(0x04 + ch - 'a'); return 0; }
	if (ch >= 'A' && ch <= 'Z') { *mod = 0x02; *key = (__u8)(0x04 + ch - 'A'); return 0; }
	if (ch >= '1' && ch <= '9') { *key = (__u8)(0x1e + ch - '1'); return 0; }
	if (ch == '0') { *key = 0x27; return 0; }
	if (ch == '\n') { *key = 0x28; return 0; }
	if (ch == '\t') { *key = 0x2b; return 0; }
	if (ch == ' ') { *key = 0x2c; return 0; }
	const char *p = strchr(shifted, ch);
	if (p && ch) { *mod = 0x02; *key = (__u8)(p - shifted == 9 ? 0x27 : 0x1e + (p - shifted)); return 0; }
	p = strchr(punct, ch);
	if (p && ch) { *key = punct_keys[p - punct]; return 0; }
	p = strchr(punct_shift, ch);
	if (p && ch) { *mod = 0x02; *key = punct_keys[p - punct_shift]; return 0; }
	return -1;
}

static void report(void);

static void *typer(void *arg)
{
	(void)arg;
	struct { struct usb_raw_ep_io io; __u8 report[8]; } r;
	int release = 0;
	while (!worker.stop && typed < text_len) {
		__u8 mod = 0, key = 0;
		memset(r.report, 0, 8);
		if (!release) {
			if (keycode(text[typed], &mod, &key) < 0) {
				typed++; /* untypable: skip */
				continue;
			}
			r.report[0] = mod;
			r.report[2] = key;
		}
		r.io.ep = (__u16)handle;
		r.io.flags = 0;
		r.io.length = 8;
		long n = rg_ioctl(fd, USB_RAW_IOCTL_EP_WRITE, (unsigned long)&r);
		if (n == 8) {
			if (release)
				typed++;
			release = !release;
			if (exit_when_done && typed >= text_len) {
				report();
				_exit(0);
			}
			continue;
		}
		/* EINTR (stopped), ESHUTDOWN (reset): the press is typed again after re-arming */
		while (!worker.stop)
			usleep(1000);
	}
	return NULL;
}

static void disarm(void)
{
	rg_worker_stop(&worker);
	if (handle >= 0) {
		rg_ioctl(fd, USB_RAW_IOCTL_EP_DISABLE, (unsigned long)handle);
		handle = -1;
	}
}

static int arm(void)
{
	long h = rg_ioctl(fd, USB_RAW_IOCTL_EP_ENABLE, (unsigned long)&ep_in);
	if (h < 0) {
		fprintf(stderr, "EP_ENABLE: %s\n", strerror((int)-h));
		return -1;
	}
	handle = (int)h;
	worker.stop = 0;
	pthread_create(&worker.thread, NULL, typer, NULL);
	worker.running = 1;
	return 0;
}

static int build_config(__u8 *out)
{
	int n = 0;
	struct usb_config_descriptor c = {
		.bLength = USB_DT_CONFIG_SIZE, .bDescriptorType = USB_DT_CONFIG,
		.bNumInterfaces = 1, .bConfigurationValue = 1, .iConfiguration = 0,
		.bmAttributes = USB_CONFIG_ATT_ONE | USB_CONFIG_ATT_WAKEUP, .bMaxPower = 50,
	};
	struct usb_interface_descriptor i = {
		.bLength = USB_DT_INTERFACE_SIZE, .bDescriptorType = USB_DT_INTERFACE,
		.bInterfaceNumber = 0, .bNumEndpoints = 1, .bInterfaceClass = USB_CLASS_HID,
		.bInterfaceSubClass = 1, .bInterfaceProtocol = 1,
	};
	__u8 hid[9] = { 9, HID_DT_HID, 0x11, 0x01, 0, 1, HID_DT_REPORT,
			sizeof(report_desc) & 0xff, sizeof(report_desc) >> 8 };
	memcpy(out + n, &c, USB_DT_CONFIG_SIZE); n += USB_DT_CONFIG_SIZE;
	memcpy(out + n, &i, USB_DT_INTERFACE_SIZE); n += USB_DT_INTERFACE_SIZE;
	memcpy(out + n, hid, 9); n += 9;
	memcpy(out + n, &ep_in, USB_DT_ENDPOINT_SIZE); n += USB_DT_ENDPOINT_SIZE;
	((struct usb_config_descriptor *)out)->wTotalLength = __cpu_to_le16(n);
	return n;
}

static struct usb_device_descriptor dev_desc = {
	.bLength = USB_DT_DEVICE_SIZE, .bDescriptorType = USB_DT_DEVICE,
	.bcdUSB = __constant_cpu_to_le16(0x0200), .bMaxPacketSize0 = 64,
	.idVendor = __constant_cpu_to_le16(0x1d6b), .idProduct = __constant_cpu_to_le16(0x0104),
	.bcdDevice = __constant_cpu_to_le16(0x0100),
	.iManufacturer = 1, .iProduct = 2, .iSerialNumber = 3, .bNumConfigurations = 1,
};

static const char *strings[] = { NULL, "rawgadget", "C HID keyboard", "0001" };

static void handle_control(const struct usb_ctrlrequest *c)
{
	__u8 buf[RG_EP0_BUF];
	int value = __le16_to_cpu(c->wValue);
	int type = c->bRequestType & USB_TYPE_MASK;
	int in = c->bRequestType & USB_DIR_IN;
	if (type == USB_TYPE_STANDARD) {
		switch (c->bRequest) {
		case USB_REQ_GET_DESCRIPTOR:
			switch (value >> 8) {
			case USB_DT_DEVICE:
				rg_ep0_reply(fd, c, &dev_desc, sizeof(dev_desc));
				return;
			case USB_DT_CONFIG:
				rg_ep0_reply(fd, c, buf, build_config(buf));
				return;
			case USB_DT_DEVICE_QUALIFIER:
				if (speed != USB_SPEED_HIGH)
					break;
				{
					struct usb_qualifier_descriptor q = {
						.bLength = sizeof(q), .bDescriptorType = USB_DT_DEVICE_QUALIFIER,
						.bcdUSB = __constant_cpu_to_le16(0x0200),
						.bMaxPacketSize0 = 64, .bNumConfigurations = 1,
					};
					rg_ep0_reply(fd, c, &q, sizeof(q));
				}
				return;
			case USB_DT_STRING:
				if ((value & 0xff) == 0) {
					__u8 lang[4] = { 4, USB_DT_STRING, 0x09, 0x04 };
					rg_ep0_reply(fd, c, lang, 4);
					return;
				}
				if ((value & 0xff) < 4) {
					rg_ep0_reply(fd, c, buf, rg_string(buf, strings[value & 0xff]));
					return;
				}
				break;
			case HID_DT_HID: {
				/* the HID descriptor inside the configuration */
				int n = build_config(buf);
				(void)n;
				rg_ep0_reply(fd, c, buf + USB_DT_CONFIG_SIZE + USB_DT_INTERFACE_SIZE, 9);
				return;
			}
			case HID_DT_REPORT:
				rg_ep0_reply(fd, c, report_desc, sizeof(report_desc));
				return;
			}
			break;
		case USB_REQ_SET_CONFIGURATION:
			disarm();
			if (value == 1 && arm() < 0)
				break;
			if (value == 1) {
				rg_ioctl(fd, USB_RAW_IOCTL_CONFIGURE, 0);
				rg_ioctl(fd, USB_RAW_IOCTL_VBUS_DRAW, 50);
			}
			rg_ep0_ack(fd);
			return;
		case USB_REQ_GET_CONFIGURATION:
			buf[0] = handle >= 0;
			rg_ep0_reply(fd, c, buf, 1);
			return;
		case USB_REQ_SET_INTERFACE:
			if (value != 0)
				break;
			rg_ep0_ack(fd);
			return;
		case USB_REQ_GET_INTERFACE:
			buf[0] = 0;
			rg_ep0_reply(fd, c, buf, 1);
			return;
		}
	} else if (type == USB_TYPE_CLASS) {
		switch (c->bRequest) {
		case HID_REQ_GET_REPORT:
			memset(buf, 0, 8);
			rg_ep0_reply(fd, c, buf, 8);
			return;
		case HID_REQ_SET_REPORT:
			if (in)
				break;
			{
				struct rg_io io = { .inner = { .ep = 0, .length = __le16_to_cpu(c->wLength) } };
				if (io.inner.length > RG_EP0_BUF)
					break;
				if (rg_ioctl(fd, USB_RAW_IOCTL_EP0_READ, (unsigned long)&io) > 0)
					leds = io.data[0];
			}
			return;
		case HID_REQ_GET_IDLE:
			rg_ep0_reply(fd, c, &idle, 1);
			return;
		case HID_REQ_SET_IDLE:
			idle = (__u8)(value >> 8);
			rg_ep0_ack(fd);
			return;
		case HID_REQ_GET_PROTOCOL:
			rg_ep0_reply(fd, c, &protocol, 1);
			return;
		case HID_REQ_SET_PROTOCOL:
			protocol = (__u8)value;
			rg_ep0_ack(fd);
			return;
		}
	}
	rg_ioctl(fd, USB_RAW_IOCTL_EP0_STALL, 0);
}

static void report(void)
{
	fprintf(stderr, "hid_keyboard: typed %d/%d resets %lu leds %#x\n", typed, text_len, resets,
		leds);
}

static void on_term(int sig)
{
	(void)sig;
	report();
	_exit(0);
}

int main(int argc, char **argv)
{
	const char *node = "/dev/raw-gadget", *driver = "dummy_udc", *device = "dummy_udc.0";
	int opt;
	while ((opt = getopt(argc, argv, "n:d:u:s:x")) != -1) {
		switch (opt) {
		case 'n': node = optarg; break;
		case 'd': driver = optarg; break;
		case 'u': device = optarg; break;
		case 's': speed = rg_parse_speed(optarg); break;
		case 'x': exit_when_done = 1; break;
		default:
			fprintf(stderr, "usage: %s [-n node] [-d driver] [-u device] [-s low|full|high] "
					"[-x] TEXT\n", argv[0]);
			return 1;
		}
	}
	if (optind < argc)
		text = argv[optind];
	text_len = (int)strlen(text);
	if (speed == USB_SPEED_SUPER)
		speed = USB_SPEED_HIGH;
	rg_install_wake(SIGUSR1);
	signal(SIGTERM, on_term);
	signal(SIGINT, on_term);
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
			int addr = rg_eps_assign(&eps, USB_ENDPOINT_XFER_INT, 1);
			if (addr < 0) {
				fprintf(stderr, "no interrupt IN endpoint\n");
				return 1;
			}
			/* 10 ms polling: bInterval 10 frames at LS/FS, 2^(7-1) microframes at HS */
			rg_ep_desc(&ep_in, addr, USB_ENDPOINT_XFER_INT, 8, speed == USB_SPEED_HIGH ? 7 : 10);
			break;
		}
		case USB_RAW_EVENT_CONTROL:
			handle_control(&ev.ctrl);
			break;
		case USB_RAW_EVENT_RESET:
		case USB_RAW_EVENT_DISCONNECT:
			resets++;
			disarm(); /* re-armed by the next SET_CONFIGURATION */
			break;
		default:
			break;
		}
	}
}
