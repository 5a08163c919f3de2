/* One scripted sequence of raw gadget calls covering the errno paths reachable from userspace
 * (spec §1.5), for a differential test: run it on raw_gadget.ko (+ dummy_hcd) and on
 * `rawgadget serve` (+ vhci-hcd), then diff the outputs. Each call prints one line on stdout:
 *
 *     <name> <return value> <errno name or ->
 *
 * Everything timing-dependent (events other than the ones the script waits for, enumeration
 * traffic) goes to stderr. Known, documented differences (contract C12) are printed with a
 * name starting "known." so the diff can drop them: lseek (ESPIPE on the module, 0 on CUSE).
 *
 * The host enumerates the device while the script runs: it answers GET_DESCRIPTOR for a
 * vendor-class device that no host driver binds, stalls the first configuration request
 * (the host retries it), and checks ep0's rules with SETUPs pending. Then, configured, it
 * checks the endpoint rules. A client killed mid-call is not part of it (see the bench).
 *
 * Usage: errno_script [-n NODE] [-d DRIVER] [-u DEVICE] */
#include "rg.h"

#include <poll.h>
#include <sys/mman.h>
#include <sys/time.h>

static const char *node = "/dev/raw-gadget", *driver = "dummy_udc", *device = "dummy_udc.0";
static int failures;

static const char *errname(long e)
{
	switch (e) {
	case EPERM: return "EPERM";
	case ENOENT: return "ENOENT";
	case EINTR: return "EINTR";
	case EIO: return "EIO";
	case E2BIG: return "E2BIG";
	case EBADF: return "EBADF";
	case EAGAIN: return "EAGAIN";
	case ENOMEM: return "ENOMEM";
	case EFAULT: return "EFAULT";
	case EBUSY: return "EBUSY";
	case ENODEV: return "ENODEV";
	case EINVAL: return "EINVAL";
	case ENOTTY: return "ENOTTY";
	case ESPIPE: return "ESPIPE";
	case EPIPE: return "EPIPE";
	case ENOSYS: return "ENOSYS";
	case EOPNOTSUPP: return "EOPNOTSUPP";
	case ECONNRESET: return "ECONNRESET";
	case ENOTCONN: return "ENOTCONN";
	case ECONNABORTED: return "ECONNABORTED";
	case ESHUTDOWN: return "ESHUTDOWN";
	case ETIMEDOUT: return "ETIMEDOUT";
	default: return "E?";
	}
}

/* Prints one line; `r` is >= 0 or -errno. */
static long show(const char *name, long r)
{
	if (r < 0)
		printf("%s -1 %s\n", name, errname(-r));
	else
		printf("%s %ld -\n", name, r);
	fflush(stdout);
	return r;
}

static long sys(long r)
{
	return r < 0 ? -errno : r;
}

/* A page followed by an unmapped one: pointers near its end fault after a few bytes. */
static __u8 *edge;

static void map_edge(void)
{
	__u8 *p = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	munmap(p + 4096, 4096);
	edge = p + 4096; /* edge[-n] is mapped, edge[0] is not */
}

#define BAD_PTR ((unsigned long)8)

static void init_struct(struct usb_raw_init *i, const char *drv, const char *dev, int speed)
{
	memset(i, 0, sizeof(*i));
	strncpy((char *)i->driver_name, drv, UDC_NAME_LENGTH_MAX - 1);
	strncpy((char *)i->device_name, dev, UDC_NAME_LENGTH_MAX - 1);
	i->speed = (__u8)speed;
}

static long io(int fd, unsigned long cmd, __u16 ep, __u16 flags, __u32 length)
{
	static struct rg_io b;
	b.inner.ep = ep;
	b.inner.flags = flags;
	b.inner.length = length;
	return rg_ioctl(fd, cmd, (unsigned long)&b);
}

/* Runs `fn` with a timer that interrupts it after 200 ms (SIGALRM without SA_RESTART). */
static void arm_timer(void)
{
	struct itimerval t = { .it_value = { .tv_sec = 0, .tv_usec = 200 * 1000 } };
	setitimer(ITIMER_REAL, &t, NULL);
}

static struct usb_device_descriptor dev_desc = {
	.bLength = USB_DT_DEVICE_SIZE, .bDescriptorType = USB_DT_DEVICE,
	.bcdUSB = __constant_cpu_to_le16(0x0200), .bDeviceClass = USB_CLASS_VENDOR_SPEC,
	.bMaxPacketSize0 = 64, .idVendor = __constant_cpu_to_le16(0x1d6b),
	.idProduct = __constant_cpu_to_le16(0x0107), .bcdDevice = __constant_cpu_to_le16(0x0100),
	.bNumConfigurations = 1,
};

static int config_desc(__u8 *out)
{
	struct usb_config_descriptor c = {
		.bLength = USB_DT_CONFIG_SIZE, .bDescriptorType = USB_DT_CONFIG,
		.wTotalLength = __constant_cpu_to_le16(USB_DT_CONFIG_SIZE + USB_DT_INTERFACE_SIZE),
		.bNumInterfaces = 1, .bConfigurationValue = 1,
		.bmAttributes = USB_CONFIG_ATT_ONE | USB_CONFIG_ATT_SELFPOWER, .bMaxPower = 1,
	};
	struct usb_interface_descriptor i = {
		.bLength = USB_DT_INTERFACE_SIZE, .bDescriptorType = USB_DT_INTERFACE,
		.bInterfaceClass = USB_CLASS_VENDOR_SPEC,
	};
	memcpy(out, &c, USB_DT_CONFIG_SIZE);
	memcpy(out + USB_DT_CONFIG_SIZE, &i, USB_DT_INTERFACE_SIZE);
	return USB_DT_CONFIG_SIZE + USB_DT_INTERFACE_SIZE;
}

/* Fetches events until a CONTROL one; others go to stderr. */
static long next_control(int fd, struct rg_event *ev)
{
	for (;;) {
		memset(ev, 0, sizeof(*ev));
		ev->inner.length = sizeof(ev->ctrl);
		long r = rg_ioctl(fd, USB_RAW_IOCTL_EVENT_FETCH, (unsigned long)ev);
		if (r < 0)
			return r;
		if (ev->inner.type == USB_RAW_EVENT_CONTROL)
			return 0;
		fprintf(stderr, "event %s\n", rg_event_name(ev->inner.type));
	}
}

static void phase_opened(void)
{
	long r = sys(open(node, O_RDWR | O_NONBLOCK));
	show("open.nonblock", r);
	if (r >= 0)
		close((int)r);
	int fd = open(node, O_RDWR);
	if (fd < 0) {
		perror(node);
		exit(1);
	}
	char b[16];
	show("read", sys(read(fd, b, sizeof(b))));
	show("write", sys(write(fd, b, sizeof(b))));
	show("known.lseek", sys(lseek(fd, 0, SEEK_SET)));
	/* no poll in the module: DEFAULT_POLLMASK; CUSE: ENOSYS once gives the same (C12) */
	for (int i = 0; i < 2; i++) {
		struct pollfd p = { .fd = fd, .events = POLLIN | POLLOUT | POLLPRI };
		int n = poll(&p, 1, 0);
		printf("poll.%d %d %#x\n", i, n, p.revents);
	}

	show("ioctl.unknown_nr", rg_ioctl(fd, _IO('U', 16), 0));
	show("ioctl.unknown_type", rg_ioctl(fd, _IO('V', 1), 0));
	show("ioctl.init_wrong_size", rg_ioctl(fd, _IOW('U', 0, __u32), 0));
	show("ioctl.run_wrong_dir", rg_ioctl(fd, _IOR('U', 1, __u32), 0));

	/* OPENED: only INIT is legal */
	show("opened.run", rg_ioctl(fd, USB_RAW_IOCTL_RUN, 0));
	struct usb_raw_event ev = { .type = 0, .length = 0 };
	show("opened.event_fetch", rg_ioctl(fd, USB_RAW_IOCTL_EVENT_FETCH, (unsigned long)&ev));
	show("opened.event_fetch.efault", rg_ioctl(fd, USB_RAW_IOCTL_EVENT_FETCH, BAD_PTR));
	show("opened.ep0_write", io(fd, USB_RAW_IOCTL_EP0_WRITE, 0, 0, 4));
	show("opened.ep0_read", io(fd, USB_RAW_IOCTL_EP0_READ, 0, 0, 4));
	show("opened.ep_write", io(fd, USB_RAW_IOCTL_EP_WRITE, 0, 0, 4));
	show("opened.ep_read", io(fd, USB_RAW_IOCTL_EP_READ, 0, 0, 4));
	struct usb_raw_eps_info info;
	show("opened.eps_info", rg_ioctl(fd, USB_RAW_IOCTL_EPS_INFO, (unsigned long)&info));
	show("opened.configure", rg_ioctl(fd, USB_RAW_IOCTL_CONFIGURE, 0));
	show("opened.vbus_draw", rg_ioctl(fd, USB_RAW_IOCTL_VBUS_DRAW, 50));
	show("opened.ep0_stall", rg_ioctl(fd, USB_RAW_IOCTL_EP0_STALL, 0));
	show("opened.ep_disable", rg_ioctl(fd, USB_RAW_IOCTL_EP_DISABLE, 0));
	show("opened.ep_set_halt", rg_ioctl(fd, USB_RAW_IOCTL_EP_SET_HALT, 0));
	show("opened.ep_clear_halt", rg_ioctl(fd, USB_RAW_IOCTL_EP_CLEAR_HALT, 0));
	show("opened.ep_set_wedge", rg_ioctl(fd, USB_RAW_IOCTL_EP_SET_WEDGE, 0));
	struct usb_endpoint_descriptor d;
	rg_ep_desc(&d, 0x81, USB_ENDPOINT_XFER_BULK, 512, 0);
	show("opened.ep_enable", rg_ioctl(fd, USB_RAW_IOCTL_EP_ENABLE, (unsigned long)&d));
	show("opened.ep_enable.efault", rg_ioctl(fd, USB_RAW_IOCTL_EP_ENABLE, BAD_PTR));
	rg_ep_desc(&d, 0x81, USB_ENDPOINT_XFER_BULK, 0, 0);
	show("opened.ep_enable.maxpacket0", rg_ioctl(fd, USB_RAW_IOCTL_EP_ENABLE, (unsigned long)&d));
	rg_ep_desc(&d, 0x81, USB_ENDPOINT_XFER_BULK, 0x1800, 0); /* mult bits, size 0 */
	show("opened.ep_enable.maxpacket0_mult", rg_ioctl(fd, USB_RAW_IOCTL_EP_ENABLE, (unsigned long)&d));
	/* a descriptor whose 9th byte is unmapped */
	memcpy(edge - 8, &d, 8);
	show("opened.ep_enable.efault_9th", rg_ioctl(fd, USB_RAW_IOCTL_EP_ENABLE, (unsigned long)(edge - 8)));

	/* usb_raw_ep_io header checks come before the state checks */
	show("opened.ep0_write.ep30", io(fd, USB_RAW_IOCTL_EP0_WRITE, 30, 0, 4));
	show("opened.ep0_write.ep65535", io(fd, USB_RAW_IOCTL_EP0_WRITE, 0xffff, 0, 4));
	show("opened.ep0_write.flags2", io(fd, USB_RAW_IOCTL_EP0_WRITE, 0, 2, 4));
	show("opened.ep_read.flags_all", io(fd, USB_RAW_IOCTL_EP_READ, 0, 0xffff, 4));
	show("opened.ep0_read.len_4m_plus_1", io(fd, USB_RAW_IOCTL_EP0_READ, 0, 0, (1u << 22) + 1));
	show("opened.ep_write.len_max", io(fd, USB_RAW_IOCTL_EP_WRITE, 0, 0, 0xffffffffu));
	show("opened.ep0_write.efault_header", rg_ioctl(fd, USB_RAW_IOCTL_EP0_WRITE, BAD_PTR));
	show("opened.ep0_read.efault_header", rg_ioctl(fd, USB_RAW_IOCTL_EP0_READ, BAD_PTR));
	/* payload beyond the mapping: a write copies it (EFAULT), a read does not */
	struct usb_raw_ep_io h = { .ep = 0, .flags = 0, .length = 64 };
	memcpy(edge - 8, &h, 8);
	show("opened.ep0_write.efault_payload", rg_ioctl(fd, USB_RAW_IOCTL_EP0_WRITE, (unsigned long)(edge - 8)));
	show("opened.ep0_read.payload_unmapped", rg_ioctl(fd, USB_RAW_IOCTL_EP0_READ, (unsigned long)(edge - 8)));

	/* INIT */
	struct usb_raw_init init;
	show("init.efault", rg_ioctl(fd, USB_RAW_IOCTL_INIT, BAD_PTR));
	show("init.efault_last_byte", rg_ioctl(fd, USB_RAW_IOCTL_INIT, (unsigned long)(edge - 256)));
	int bad_speeds[] = { USB_SPEED_WIRELESS, USB_SPEED_SUPER_PLUS, 7, 255 };
	for (unsigned i = 0; i < 4; i++) {
		char name[64];
		init_struct(&init, driver, device, bad_speeds[i]);
		snprintf(name, sizeof(name), "init.speed_%d", bad_speeds[i]);
		show(name, rg_ioctl(fd, USB_RAW_IOCTL_INIT, (unsigned long)&init));
	}
	init_struct(&init, driver, device, USB_SPEED_HIGH);
	memset(init.driver_name, 'a', UDC_NAME_LENGTH_MAX);
	show("init.driver_name_unterminated", rg_ioctl(fd, USB_RAW_IOCTL_INIT, (unsigned long)&init));
	init_struct(&init, driver, device, USB_SPEED_HIGH);
	memset(init.device_name, 'a', UDC_NAME_LENGTH_MAX);
	show("init.device_name_unterminated", rg_ioctl(fd, USB_RAW_IOCTL_INIT, (unsigned long)&init));
	close(fd);
}

/* A second program wanting the same UDC: INIT works, RUN is EBUSY and leaves it FAILED. */
static void second_instance(void)
{
	int fd = open(node, O_RDWR);
	struct usb_raw_init init;
	init_struct(&init, driver, device, USB_SPEED_HIGH);
	show("second.init", rg_ioctl(fd, USB_RAW_IOCTL_INIT, (unsigned long)&init));
	show("second.run_udc_taken", rg_ioctl(fd, USB_RAW_IOCTL_RUN, 0));
	show("second.run_again_failed", rg_ioctl(fd, USB_RAW_IOCTL_RUN, 0));
	struct usb_raw_event ev = { 0, 0 };
	show("second.event_fetch_failed", rg_ioctl(fd, USB_RAW_IOCTL_EVENT_FETCH, (unsigned long)&ev));
	close(fd);
}

struct blocked_read {
	int fd;
	int handle;
	long r;
	volatile int started;
};

static void *reader(void *arg)
{
	struct blocked_read *b = arg;
	struct rg_io io = { .inner = { .ep = (__u16)b->handle, .flags = 0, .length = 512 } };
	b->started = 1;
	b->r = rg_ioctl(b->fd, USB_RAW_IOCTL_EP_READ, (unsigned long)&io);
	return NULL;
}

static void phase_running(void)
{
	int fd = open(node, O_RDWR);
	struct usb_raw_init init;
	init_struct(&init, driver, "no_such_udc.0", USB_SPEED_HIGH);
	show("init.unknown_udc", rg_ioctl(fd, USB_RAW_IOCTL_INIT, (unsigned long)&init));
	show("run.unknown_udc", rg_ioctl(fd, USB_RAW_IOCTL_RUN, 0));
	show("run.after_failure", rg_ioctl(fd, USB_RAW_IOCTL_RUN, 0));
	close(fd);

	fd = open(node, O_RDWR);
	init_struct(&init, driver, device, USB_SPEED_HIGH);
	show("init", rg_ioctl(fd, USB_RAW_IOCTL_INIT, (unsigned long)&init));
	show("init.twice", rg_ioctl(fd, USB_RAW_IOCTL_INIT, (unsigned long)&init));
	show("initialized.run_arg1", rg_ioctl(fd, USB_RAW_IOCTL_RUN, 1));
	struct usb_raw_event e0 = { 0, 0 };
	show("initialized.event_fetch", rg_ioctl(fd, USB_RAW_IOCTL_EVENT_FETCH, (unsigned long)&e0));
	show("initialized.eps_info", rg_ioctl(fd, USB_RAW_IOCTL_EPS_INFO, (unsigned long)edge - 4096));
	show("run", rg_ioctl(fd, USB_RAW_IOCTL_RUN, 0));
	show("run.twice", rg_ioctl(fd, USB_RAW_IOCTL_RUN, 0));
	second_instance();

	/* RUNNING, before the host's first SETUP */
	show("running.event_fetch.efault", rg_ioctl(fd, USB_RAW_IOCTL_EVENT_FETCH, BAD_PTR));
	struct rg_event ev;
	memset(&ev, 0, sizeof(ev));
	ev.inner.length = 0;
	long r = show("running.event_fetch.connect", rg_ioctl(fd, USB_RAW_IOCTL_EVENT_FETCH, (unsigned long)&ev));
	if (r >= 0)
		printf("running.event_fetch.connect.type %u %u\n", ev.inner.type, ev.inner.length);
	show("running.ep0_read.no_setup", io(fd, USB_RAW_IOCTL_EP0_READ, 0, 0, 0));
	show("running.ep0_write.no_setup", io(fd, USB_RAW_IOCTL_EP0_WRITE, 0, 0, 4));
	show("running.ep0_stall.no_setup", rg_ioctl(fd, USB_RAW_IOCTL_EP0_STALL, 0));
	show("running.ep0_stall.arg1", rg_ioctl(fd, USB_RAW_IOCTL_EP0_STALL, 1));
	show("running.configure.arg1", rg_ioctl(fd, USB_RAW_IOCTL_CONFIGURE, 1));
	show("running.vbus_draw", rg_ioctl(fd, USB_RAW_IOCTL_VBUS_DRAW, 0xffffffffu));
	struct usb_raw_eps_info info;
	show("running.eps_info", rg_ioctl(fd, USB_RAW_IOCTL_EPS_INFO, (unsigned long)&info));
	for (int i = 0; i < 24; i++)
	{
		__u32 caps;
		memcpy(&caps, &info.eps[i].caps, sizeof(caps));
		printf("running.eps_info.%d %s %u %#x %u %u\n", i, info.eps[i].name, info.eps[i].addr,
		       caps, info.eps[i].limits.maxpacket_limit, info.eps[i].limits.max_streams);
	}
	show("running.eps_info.efault", rg_ioctl(fd, USB_RAW_IOCTL_EPS_INFO, (unsigned long)(edge - 512)));
	show("running.ep_disable.out_of_range", rg_ioctl(fd, USB_RAW_IOCTL_EP_DISABLE, 24));
	show("running.ep_disable.negative", rg_ioctl(fd, USB_RAW_IOCTL_EP_DISABLE, (unsigned long)-1));
	show("running.ep_disable.not_enabled", rg_ioctl(fd, USB_RAW_IOCTL_EP_DISABLE, 0));
	show("running.ep_set_halt.not_enabled", rg_ioctl(fd, USB_RAW_IOCTL_EP_SET_HALT, 0));
	show("running.ep_set_halt.out_of_range", rg_ioctl(fd, USB_RAW_IOCTL_EP_SET_HALT, 30));
	show("running.ep_write.not_enabled", io(fd, USB_RAW_IOCTL_EP_WRITE, 0, 0, 4));
	show("running.ep_write.ep_24", io(fd, USB_RAW_IOCTL_EP_WRITE, 24, 0, 4));

	/* enumeration: the first SETUP is the host's GET_DESCRIPTOR(DEVICE) (an IN request) */
	r = next_control(fd, &ev);
	if (r < 0) {
		show("enum.first_setup", r);
		exit(1);
	}
	printf("enum.first_setup %02x %02x %04x %04x\n", ev.ctrl.bRequestType, ev.ctrl.bRequest,
	       __le16_to_cpu(ev.ctrl.wValue), __le16_to_cpu(ev.ctrl.wIndex));
	show("setup_in.ep0_read.wrong_direction", io(fd, USB_RAW_IOCTL_EP0_READ, 0, 0, 8));
	{
		struct usb_raw_ep_io x = { .ep = 0, .flags = 0, .length = 64 };
		memcpy(edge - 8, &x, 8);
		show("setup_in.ep0_write.efault_payload",
		     rg_ioctl(fd, USB_RAW_IOCTL_EP0_WRITE, (unsigned long)(edge - 8)));
	}
	show("setup_in.ep0_write.flags2", io(fd, USB_RAW_IOCTL_EP0_WRITE, 0, 2, 8));
	int config_stalled = 0;
	for (;;) {
		__u8 buf[256];
		int value = __le16_to_cpu(ev.ctrl.wValue);
		int in = ev.ctrl.bRequestType & USB_DIR_IN;
		if (ev.ctrl.bRequest == USB_REQ_GET_DESCRIPTOR && (value >> 8) == USB_DT_DEVICE) {
			r = rg_ep0_reply(fd, &ev.ctrl, &dev_desc, sizeof(dev_desc));
			fprintf(stderr, "GET_DESCRIPTOR(DEVICE): %ld\n", r);
		} else if (ev.ctrl.bRequest == USB_REQ_GET_DESCRIPTOR && (value >> 8) == USB_DT_CONFIG) {
			if (!config_stalled) {
				/* the host retries a stalled descriptor request */
				config_stalled = 1;
				show("setup_in.ep0_stall", rg_ioctl(fd, USB_RAW_IOCTL_EP0_STALL, 0));
				/* no second EP0_STALL here: the host's retry may already be pending */
			} else {
				r = rg_ep0_reply(fd, &ev.ctrl, buf, config_desc(buf));
				fprintf(stderr, "GET_DESCRIPTOR(CONFIG): %ld\n", r);
			}
		} else if (ev.ctrl.bRequest == USB_REQ_SET_CONFIGURATION && !in) {
			show("setup_out.ep0_write.wrong_direction", io(fd, USB_RAW_IOCTL_EP0_WRITE, 0, 0, 4));
			show("setup_out.configure", rg_ioctl(fd, USB_RAW_IOCTL_CONFIGURE, 0));
			show("setup_out.ep0_read.ack", rg_ep0_ack(fd));
			break;
		} else {
			r = rg_ioctl(fd, USB_RAW_IOCTL_EP0_STALL, 0);
			fprintf(stderr, "stalled %02x %02x %04x: %ld\n", ev.ctrl.bRequestType,
				ev.ctrl.bRequest, value, r);
		}
		r = next_control(fd, &ev);
		if (r < 0) {
			show("enum.next_setup", r);
			exit(1);
		}
	}

	/* configured: endpoints */
	struct usb_endpoint_descriptor d;
	char name[64];
	rg_ep_desc(&d, 0x85, USB_ENDPOINT_XFER_INT, 64, 4);
	int handles[8], n = 0;
	for (;;) {
		r = rg_ioctl(fd, USB_RAW_IOCTL_EP_ENABLE, (unsigned long)&d);
		snprintf(name, sizeof(name), "configured.ep_enable.int_in5.%d", n);
		show(name, r);
		if (r < 0 || n == 7)
			break;
		handles[n++] = (int)r;
	}
	rg_ep_desc(&d, 0x81, USB_ENDPOINT_XFER_ISOC, 512, 1);
	show("configured.ep_enable.iso", rg_ioctl(fd, USB_RAW_IOCTL_EP_ENABLE, (unsigned long)&d));
	rg_ep_desc(&d, 0x81, USB_ENDPOINT_XFER_BULK, 64, 0);
	show("configured.ep_enable.bulk_mp64_at_hs", rg_ioctl(fd, USB_RAW_IOCTL_EP_ENABLE, (unsigned long)&d));
	rg_ep_desc(&d, 0x81, USB_ENDPOINT_XFER_BULK, 2048, 0);
	show("configured.ep_enable.bulk_mp2048", rg_ioctl(fd, USB_RAW_IOCTL_EP_ENABLE, (unsigned long)&d));
	rg_ep_desc(&d, 0x81, USB_ENDPOINT_XFER_BULK, 512, 0);
	long bulk_in = show("configured.ep_enable.bulk_in1", rg_ioctl(fd, USB_RAW_IOCTL_EP_ENABLE, (unsigned long)&d));
	rg_ep_desc(&d, 0x02, USB_ENDPOINT_XFER_BULK, 512, 0);
	long bulk_out = show("configured.ep_enable.bulk_out2", rg_ioctl(fd, USB_RAW_IOCTL_EP_ENABLE, (unsigned long)&d));
	rg_ep_desc(&d, 0x1f, USB_ENDPOINT_XFER_BULK, 512, 0);
	show("configured.ep_enable.number15_out", rg_ioctl(fd, USB_RAW_IOCTL_EP_ENABLE, (unsigned long)&d));

	if (n > 0) {
		show("configured.ep_disable", rg_ioctl(fd, USB_RAW_IOCTL_EP_DISABLE, (unsigned long)handles[0]));
		show("configured.ep_disable.twice", rg_ioctl(fd, USB_RAW_IOCTL_EP_DISABLE, (unsigned long)handles[0]));
	}
	if (bulk_in >= 0) {
		unsigned long h = (unsigned long)bulk_in;
		show("configured.ep_set_halt", rg_ioctl(fd, USB_RAW_IOCTL_EP_SET_HALT, h));
		show("configured.ep_clear_halt", rg_ioctl(fd, USB_RAW_IOCTL_EP_CLEAR_HALT, h));
		show("configured.ep_set_wedge", rg_ioctl(fd, USB_RAW_IOCTL_EP_SET_WEDGE, h));
		show("configured.ep_clear_halt.wedged", rg_ioctl(fd, USB_RAW_IOCTL_EP_CLEAR_HALT, h));
		show("configured.ep_read.on_in_endpoint", io(fd, USB_RAW_IOCTL_EP_READ, (__u16)h, 0, 8));
		show("configured.ep_write.efault_payload", ({
			struct usb_raw_ep_io x = { .ep = (__u16)h, .flags = 0, .length = 64 };
			memcpy(edge - 8, &x, 8);
			rg_ioctl(fd, USB_RAW_IOCTL_EP_WRITE, (unsigned long)(edge - 8));
		}));
		/* dummy's IN FIFO takes a short write at once; halting it then is EAGAIN */
		show("configured.ep_write.fifo", io(fd, USB_RAW_IOCTL_EP_WRITE, (__u16)h, 0, 8));
		show("configured.ep_set_halt.fifo_busy", rg_ioctl(fd, USB_RAW_IOCTL_EP_SET_HALT, h));
		show("configured.ep_disable.fifo", rg_ioctl(fd, USB_RAW_IOCTL_EP_DISABLE, h));
	}
	if (bulk_out >= 0) {
		/* a transfer in flight: EP_DISABLE and SET_HALT refuse, a signal ends it */
		struct blocked_read b = { .fd = fd, .handle = (int)bulk_out };
		pthread_t t;
		pthread_create(&t, NULL, reader, &b);
		while (!b.started)
			usleep(1000);
		usleep(100 * 1000);
		show("busy.ep_disable", rg_ioctl(fd, USB_RAW_IOCTL_EP_DISABLE, (unsigned long)bulk_out));
		show("busy.ep_set_halt", rg_ioctl(fd, USB_RAW_IOCTL_EP_SET_HALT, (unsigned long)bulk_out));
		show("busy.ep_read.second", io(fd, USB_RAW_IOCTL_EP_READ, (__u16)bulk_out, 0, 8));
		pthread_kill(t, SIGUSR1);
		pthread_join(t, NULL);
		show("busy.ep_read.signalled", b.r);
		arm_timer();
		show("blocking.ep_read.alarm", io(fd, USB_RAW_IOCTL_EP_READ, (__u16)bulk_out, 0, 512));
		show("blocking.ep_disable", rg_ioctl(fd, USB_RAW_IOCTL_EP_DISABLE, (unsigned long)bulk_out));
	}
	memset(&ev, 0, sizeof(ev));
	ev.inner.length = 1 << 20; /* C3: a huge capacity with a small buffer is fine */
	arm_timer();
	show("blocking.event_fetch.alarm", rg_ioctl(fd, USB_RAW_IOCTL_EVENT_FETCH, (unsigned long)&ev));
	show("configured.ep0_write.200k_no_setup", ({
		struct usb_raw_ep_io *big = malloc(sizeof(*big) + 200 * 1024);
		memset(big, 0, sizeof(*big) + 200 * 1024);
		big->length = 200 * 1024;
		long x = rg_ioctl(fd, USB_RAW_IOCTL_EP0_WRITE, (unsigned long)big);
		free(big);
		x;
	}));
	close(fd);

	/* the UDC is free again after close */
	fd = open(node, O_RDWR);
	init_struct(&init, driver, device, USB_SPEED_HIGH);
	show("reopen.init", rg_ioctl(fd, USB_RAW_IOCTL_INIT, (unsigned long)&init));
	show("reopen.run", rg_ioctl(fd, USB_RAW_IOCTL_RUN, 0));
	close(fd);
}

int main(int argc, char **argv)
{
	int opt;
	while ((opt = getopt(argc, argv, "n:d:u:")) != -1) {
		switch (opt) {
		case 'n': node = optarg; break;
		case 'd': driver = optarg; break;
		case 'u': device = optarg; break;
		default:
			fprintf(stderr, "usage: %s [-n node] [-d driver] [-u device]\n", argv[0]);
			return 1;
		}
	}
	rg_install_wake(SIGUSR1);
	rg_install_wake(SIGALRM);
	map_edge();
	printf("# errno_script %s (%zu-bit)\n", node, sizeof(long) * 8);
	phase_opened();
	phase_running();
	return failures;
}
