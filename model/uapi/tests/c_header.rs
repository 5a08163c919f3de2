//! ABI check: compile a C program against the kernel's `<linux/usb/raw_gadget.h>` with gcc, run
//! it, and compare every size, offset, ioctl number, constant, bitfield position and flag helper
//! it prints with the Rust definitions of this crate (spec §1.2–§1.4).
//!
//! Two headers are checked when available:
//! - the system one (`/usr/include`, the 6.1 header on Debian 12: it has no SUSPEND/RESUME/RESET/
//!   DISCONNECT events);
//! - the Linux 6.12 UAPI header from `/work/ksrc/linux-source-6.12` (override the source tree
//!   with `RAWGADGET_KSRC`), put first on the include path so it shadows the system one.
//!
//! Event values a header lacks are detected by compiling a probe (no `#ifdef` can see an enum
//! constant); when no available header has them they are compared with the spec §1.2 table.
//!
//! gcc is required: without it the tests fail and say `apt-get install gcc`.

use std::collections::BTreeMap;
use std::mem::{offset_of, size_of};
use std::path::{Path, PathBuf};
use std::process::Command;

use rawgadget_uapi::*;

/// The Linux 6.12 source tree that holds the newest header we compare with.
fn ksrc() -> PathBuf {
    std::env::var_os("RAWGADGET_KSRC")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/work/ksrc/linux-source-6.12"))
}

/// A fresh scratch directory for one test run (integration tests get CARGO_TARGET_TMPDIR).
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("c_header")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// Runs gcc; a missing gcc is a test failure that names the fix.
fn gcc(args: &[&std::ffi::OsStr]) -> std::process::Output {
    match Command::new("gcc").args(args).output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("gcc not found: the ABI test needs a C compiler, run `apt-get install gcc`")
        }
        Err(e) => panic!("cannot run gcc: {e}"),
    }
}

/// Compiles `source` in `dir` (with `include` first on the include path, if given) and returns
/// the executable, or gcc's stderr on failure.
fn compile(
    dir: &Path,
    stem: &str,
    source: &str,
    include: Option<&Path>,
) -> Result<PathBuf, String> {
    let c = dir.join(format!("{stem}.c"));
    let exe = dir.join(stem);
    std::fs::write(&c, source).expect("write C source");
    let mut args: Vec<&std::ffi::OsStr> = vec!["-std=gnu11".as_ref(), "-Wall".as_ref()];
    if let Some(inc) = include {
        args.push("-I".as_ref());
        args.push(inc.as_os_str());
    }
    args.extend(["-o".as_ref(), exe.as_os_str(), c.as_os_str()]);
    let out = gcc(&args);
    if out.status.success() {
        Ok(exe)
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

const PRELUDE: &str = r#"
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <linux/usb/ch9.h>
#include <linux/usb/raw_gadget.h>
#define P(key, expr) printf("%s %llu\n", key, (unsigned long long)(expr))
#define SIZE(s) P("size." #s, sizeof(struct s))
#define OFF(s, f) P("offset." #s "." #f, offsetof(struct s, f))
#define CONST(c) P("const." #c, c)
static void hex(const char *key, const void *p, size_t n)
{
	const unsigned char *b = p;
	printf("%s ", key);
	for (size_t i = 0; i < n; i++)
		printf("%02x", b[i]);
	printf("\n");
}
"#;

/// Does this header define the 6.7+ events? A probe that uses them either compiles or not.
fn header_has_bus_events(dir: &Path, include: Option<&Path>) -> bool {
    let probe = format!(
        "{PRELUDE}\nint main(void) {{ return USB_RAW_EVENT_SUSPEND + USB_RAW_EVENT_RESUME + \
         USB_RAW_EVENT_RESET + USB_RAW_EVENT_DISCONNECT == 0; }}\n"
    );
    compile(dir, "probe_events", &probe, include).is_ok()
}

/// The C program printing `key value` lines.
fn program(with_bus_events: bool) -> String {
    let mut body = String::new();
    for s in [
        "usb_raw_init",
        "usb_raw_event",
        "usb_raw_ep_io",
        "usb_raw_ep_caps",
        "usb_raw_ep_limits",
        "usb_raw_ep_info",
        "usb_raw_eps_info",
        "usb_endpoint_descriptor",
        "usb_ctrlrequest",
    ] {
        body += &format!("SIZE({s});\n");
    }
    for (s, fields) in [
        ("usb_raw_init", &["driver_name", "device_name", "speed"][..]),
        ("usb_raw_event", &["type", "length", "data"]),
        ("usb_raw_ep_io", &["ep", "flags", "length", "data"]),
        (
            "usb_raw_ep_limits",
            &["maxpacket_limit", "max_streams", "reserved"],
        ),
        ("usb_raw_ep_info", &["name", "addr", "caps", "limits"]),
        ("usb_raw_eps_info", &["eps"]),
        (
            "usb_endpoint_descriptor",
            &[
                "bLength",
                "bDescriptorType",
                "bEndpointAddress",
                "bmAttributes",
                "wMaxPacketSize",
                "bInterval",
                "bRefresh",
                "bSynchAddress",
            ],
        ),
        (
            "usb_ctrlrequest",
            &["bRequestType", "bRequest", "wValue", "wIndex", "wLength"],
        ),
    ] {
        for f in fields {
            body += &format!("OFF({s}, {f});\n");
        }
    }
    for (name, _) in IOCTLS_BY_NAME {
        body += &format!("P(\"ioctl.{name}\", {name});\n");
    }
    let mut consts = vec![
        "UDC_NAME_LENGTH_MAX",
        "USB_RAW_EPS_NUM_MAX",
        "USB_RAW_EP_NAME_MAX",
        "USB_RAW_EP_ADDR_ANY",
        "USB_RAW_IO_FLAGS_ZERO",
        "USB_RAW_IO_FLAGS_MASK",
        "USB_RAW_EVENT_INVALID",
        "USB_RAW_EVENT_CONNECT",
        "USB_RAW_EVENT_CONTROL",
        "USB_SPEED_UNKNOWN",
        "USB_SPEED_LOW",
        "USB_SPEED_FULL",
        "USB_SPEED_HIGH",
        "USB_SPEED_WIRELESS",
        "USB_SPEED_SUPER",
        "USB_SPEED_SUPER_PLUS",
        "USB_DT_ENDPOINT_AUDIO_SIZE",
    ];
    if with_bus_events {
        consts.extend([
            "USB_RAW_EVENT_SUSPEND",
            "USB_RAW_EVENT_RESUME",
            "USB_RAW_EVENT_RESET",
            "USB_RAW_EVENT_DISCONNECT",
        ]);
    }
    for c in consts {
        body += &format!("CONST({c});\n");
    }
    // One bitfield set at a time: the u32 shows where the compiler put it.
    for bit in [
        "type_control",
        "type_iso",
        "type_bulk",
        "type_int",
        "dir_in",
        "dir_out",
    ] {
        body += &format!(
            "{{ struct usb_raw_ep_caps c; unsigned int u; memset(&c, 0, sizeof c); c.{bit} = 1; \
             memcpy(&u, &c, sizeof u); P(\"caps.{bit}\", u); }}\n"
        );
    }
    // The flag helpers over every 16-bit value.
    body += "for (unsigned int f = 0; f <= 0xffff; f++)\n\
             \tprintf(\"flags.%u %d %d\\n\", f, usb_raw_io_flags_valid(f) != 0, \
             usb_raw_io_flags_zero(f) != 0);\n";
    // Filled structs as bytes: the Rust to_bytes() encoders must put fields where C does.
    body += r#"
{ struct usb_raw_init s; memset(&s, 0, sizeof s);
  strcpy((char *)s.driver_name, "dummy_udc"); strcpy((char *)s.device_name, "dummy_udc.0");
  s.speed = USB_SPEED_HIGH; hex("bytes.usb_raw_init", &s, sizeof s); }
{ struct usb_raw_event s; memset(&s, 0, sizeof s); s.type = 0x01020304; s.length = 0x05060708;
  hex("bytes.usb_raw_event", &s, sizeof s); }
{ struct usb_raw_ep_io s; memset(&s, 0, sizeof s); s.ep = 0x0102; s.flags = 0x0304;
  s.length = 0x05060708; hex("bytes.usb_raw_ep_io", &s, sizeof s); }
{ struct usb_raw_ep_info s; memset(&s, 0, sizeof s); strcpy((char *)s.name, "ep1in-bulk");
  s.addr = 0x11223344; s.caps.type_bulk = 1; s.caps.dir_in = 1;
  s.limits.maxpacket_limit = 0x0400; s.limits.max_streams = 0x0f; s.limits.reserved = 0x55667788;
  hex("bytes.usb_raw_ep_info", &s, sizeof s); }
"#;
    format!("{PRELUDE}\nint main(void)\n{{\n{body}\treturn 0;\n}}\n")
}

const IOCTLS_BY_NAME: [(&str, u32); 16] = [
    ("USB_RAW_IOCTL_INIT", USB_RAW_IOCTL_INIT),
    ("USB_RAW_IOCTL_RUN", USB_RAW_IOCTL_RUN),
    ("USB_RAW_IOCTL_EVENT_FETCH", USB_RAW_IOCTL_EVENT_FETCH),
    ("USB_RAW_IOCTL_EP0_WRITE", USB_RAW_IOCTL_EP0_WRITE),
    ("USB_RAW_IOCTL_EP0_READ", USB_RAW_IOCTL_EP0_READ),
    ("USB_RAW_IOCTL_EP_ENABLE", USB_RAW_IOCTL_EP_ENABLE),
    ("USB_RAW_IOCTL_EP_DISABLE", USB_RAW_IOCTL_EP_DISABLE),
    ("USB_RAW_IOCTL_EP_WRITE", USB_RAW_IOCTL_EP_WRITE),
    ("USB_RAW_IOCTL_EP_READ", USB_RAW_IOCTL_EP_READ),
    ("USB_RAW_IOCTL_CONFIGURE", USB_RAW_IOCTL_CONFIGURE),
    ("USB_RAW_IOCTL_VBUS_DRAW", USB_RAW_IOCTL_VBUS_DRAW),
    ("USB_RAW_IOCTL_EPS_INFO", USB_RAW_IOCTL_EPS_INFO),
    ("USB_RAW_IOCTL_EP0_STALL", USB_RAW_IOCTL_EP0_STALL),
    ("USB_RAW_IOCTL_EP_SET_HALT", USB_RAW_IOCTL_EP_SET_HALT),
    ("USB_RAW_IOCTL_EP_CLEAR_HALT", USB_RAW_IOCTL_EP_CLEAR_HALT),
    ("USB_RAW_IOCTL_EP_SET_WEDGE", USB_RAW_IOCTL_EP_SET_WEDGE),
];

/// What the C program must print, from the Rust definitions (sizes and offsets come from
/// `size_of` / `offset_of!`, not from literals).
fn rust_side(with_bus_events: bool) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    let mut put = |k: &str, v: u64| {
        m.insert(k.to_string(), v.to_string());
    };
    put("size.usb_raw_init", size_of::<UsbRawInit>() as u64);
    put("size.usb_raw_event", size_of::<UsbRawEvent>() as u64);
    put("size.usb_raw_ep_io", size_of::<UsbRawEpIo>() as u64);
    put("size.usb_raw_ep_caps", size_of::<UsbRawEpCaps>() as u64);
    put("size.usb_raw_ep_limits", size_of::<UsbRawEpLimits>() as u64);
    put("size.usb_raw_ep_info", size_of::<UsbRawEpInfo>() as u64);
    put("size.usb_raw_eps_info", size_of::<UsbRawEpsInfo>() as u64);
    put(
        "size.usb_endpoint_descriptor",
        USB_ENDPOINT_DESCRIPTOR_IOCTL_SIZE as u64,
    );
    // The CONTROL event payload (spec §1.2).
    put("size.usb_ctrlrequest", 8);

    put(
        "offset.usb_raw_init.driver_name",
        offset_of!(UsbRawInit, driver_name) as u64,
    );
    put(
        "offset.usb_raw_init.device_name",
        offset_of!(UsbRawInit, device_name) as u64,
    );
    put(
        "offset.usb_raw_init.speed",
        offset_of!(UsbRawInit, speed) as u64,
    );
    put(
        "offset.usb_raw_event.type",
        offset_of!(UsbRawEvent, type_) as u64,
    );
    put(
        "offset.usb_raw_event.length",
        offset_of!(UsbRawEvent, length) as u64,
    );
    // The flexible payload starts right after the header.
    put("offset.usb_raw_event.data", UsbRawEvent::SIZE as u64);
    put("offset.usb_raw_ep_io.ep", offset_of!(UsbRawEpIo, ep) as u64);
    put(
        "offset.usb_raw_ep_io.flags",
        offset_of!(UsbRawEpIo, flags) as u64,
    );
    put(
        "offset.usb_raw_ep_io.length",
        offset_of!(UsbRawEpIo, length) as u64,
    );
    put("offset.usb_raw_ep_io.data", UsbRawEpIo::SIZE as u64);
    put(
        "offset.usb_raw_ep_limits.maxpacket_limit",
        offset_of!(UsbRawEpLimits, maxpacket_limit) as u64,
    );
    put(
        "offset.usb_raw_ep_limits.max_streams",
        offset_of!(UsbRawEpLimits, max_streams) as u64,
    );
    put(
        "offset.usb_raw_ep_limits.reserved",
        offset_of!(UsbRawEpLimits, reserved) as u64,
    );
    put(
        "offset.usb_raw_ep_info.name",
        offset_of!(UsbRawEpInfo, name) as u64,
    );
    put(
        "offset.usb_raw_ep_info.addr",
        offset_of!(UsbRawEpInfo, addr) as u64,
    );
    put(
        "offset.usb_raw_ep_info.caps",
        offset_of!(UsbRawEpInfo, caps) as u64,
    );
    put(
        "offset.usb_raw_ep_info.limits",
        offset_of!(UsbRawEpInfo, limits) as u64,
    );
    put(
        "offset.usb_raw_eps_info.eps",
        offset_of!(UsbRawEpsInfo, eps) as u64,
    );
    // EP_ENABLE's 9-byte descriptor has no Rust struct in this crate; the layout is spec §1.3's.
    for (i, f) in [
        "bLength",
        "bDescriptorType",
        "bEndpointAddress",
        "bmAttributes",
        "wMaxPacketSize",
    ]
    .iter()
    .enumerate()
    {
        put(&format!("offset.usb_endpoint_descriptor.{f}"), i as u64);
    }
    put("offset.usb_endpoint_descriptor.bInterval", 6);
    put("offset.usb_endpoint_descriptor.bRefresh", 7);
    put("offset.usb_endpoint_descriptor.bSynchAddress", 8);
    for (i, f) in ["bRequestType", "bRequest", "wValue", "wIndex", "wLength"]
        .iter()
        .enumerate()
    {
        put(
            &format!("offset.usb_ctrlrequest.{f}"),
            if i < 2 { i as u64 } else { 2 * i as u64 - 2 },
        );
    }

    for (name, cmd) in IOCTLS_BY_NAME {
        put(&format!("ioctl.{name}"), cmd as u64);
    }
    // IOCTLS (the engine's decode table) must agree with the named constants.
    for (i, (name, cmd)) in IOCTLS_BY_NAME.iter().enumerate() {
        assert_eq!(IOCTLS[i].name, *name);
        assert_eq!(IOCTLS[i].cmd, *cmd);
    }

    put("const.UDC_NAME_LENGTH_MAX", UDC_NAME_LENGTH_MAX as u64);
    put("const.USB_RAW_EPS_NUM_MAX", USB_RAW_EPS_NUM_MAX as u64);
    put("const.USB_RAW_EP_NAME_MAX", USB_RAW_EP_NAME_MAX as u64);
    put("const.USB_RAW_EP_ADDR_ANY", USB_RAW_EP_ADDR_ANY as u64);
    put("const.USB_RAW_IO_FLAGS_ZERO", USB_RAW_IO_FLAGS_ZERO as u64);
    put("const.USB_RAW_IO_FLAGS_MASK", USB_RAW_IO_FLAGS_MASK as u64);
    put(
        "const.USB_RAW_EVENT_INVALID",
        event_type::USB_RAW_EVENT_INVALID as u64,
    );
    put(
        "const.USB_RAW_EVENT_CONNECT",
        event_type::USB_RAW_EVENT_CONNECT as u64,
    );
    put(
        "const.USB_RAW_EVENT_CONTROL",
        event_type::USB_RAW_EVENT_CONTROL as u64,
    );
    if with_bus_events {
        put(
            "const.USB_RAW_EVENT_SUSPEND",
            event_type::USB_RAW_EVENT_SUSPEND as u64,
        );
        put(
            "const.USB_RAW_EVENT_RESUME",
            event_type::USB_RAW_EVENT_RESUME as u64,
        );
        put(
            "const.USB_RAW_EVENT_RESET",
            event_type::USB_RAW_EVENT_RESET as u64,
        );
        put(
            "const.USB_RAW_EVENT_DISCONNECT",
            event_type::USB_RAW_EVENT_DISCONNECT as u64,
        );
    }
    let speeds = [
        (
            "USB_SPEED_UNKNOWN",
            speed::USB_SPEED_UNKNOWN,
            Speed::Unknown,
        ),
        ("USB_SPEED_LOW", speed::USB_SPEED_LOW, Speed::Low),
        ("USB_SPEED_FULL", speed::USB_SPEED_FULL, Speed::Full),
        ("USB_SPEED_HIGH", speed::USB_SPEED_HIGH, Speed::High),
        (
            "USB_SPEED_WIRELESS",
            speed::USB_SPEED_WIRELESS,
            Speed::Wireless,
        ),
        ("USB_SPEED_SUPER", speed::USB_SPEED_SUPER, Speed::Super),
        (
            "USB_SPEED_SUPER_PLUS",
            speed::USB_SPEED_SUPER_PLUS,
            Speed::SuperPlus,
        ),
    ];
    for (name, raw, typed) in speeds {
        assert_eq!(typed as u8, raw, "Speed::{typed:?} vs {name}");
        assert_eq!(Speed::from_u8(raw), Some(typed));
        put(&format!("const.{name}"), raw as u64);
    }
    put(
        "const.USB_DT_ENDPOINT_AUDIO_SIZE",
        USB_ENDPOINT_DESCRIPTOR_IOCTL_SIZE as u64,
    );

    put(
        "caps.type_control",
        UsbRawEpCaps::new(true, false, false, false, false, false).0 as u64,
    );
    put(
        "caps.type_iso",
        UsbRawEpCaps::new(false, true, false, false, false, false).0 as u64,
    );
    put(
        "caps.type_bulk",
        UsbRawEpCaps::new(false, false, true, false, false, false).0 as u64,
    );
    put(
        "caps.type_int",
        UsbRawEpCaps::new(false, false, false, true, false, false).0 as u64,
    );
    put(
        "caps.dir_in",
        UsbRawEpCaps::new(false, false, false, false, true, false).0 as u64,
    );
    put(
        "caps.dir_out",
        UsbRawEpCaps::new(false, false, false, false, false, true).0 as u64,
    );
    // The named masks must be the same bits as the constructor's.
    assert_eq!(
        UsbRawEpCaps::TYPE_CONTROL,
        UsbRawEpCaps::new(true, false, false, false, false, false).0
    );
    assert_eq!(
        UsbRawEpCaps::DIR_OUT,
        UsbRawEpCaps::new(false, false, false, false, false, true).0
    );

    for f in 0..=u16::MAX {
        m.insert(
            format!("flags.{f}"),
            format!(
                "{} {}",
                usb_raw_io_flags_valid(f) as u8,
                usb_raw_io_flags_zero(f) as u8
            ),
        );
    }

    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let init = UsbRawInit::new("dummy_udc", "dummy_udc.0", speed::USB_SPEED_HIGH);
    m.insert("bytes.usb_raw_init".into(), hex(&init.to_bytes()));
    let ev = UsbRawEvent {
        type_: 0x0102_0304,
        length: 0x0506_0708,
    };
    m.insert("bytes.usb_raw_event".into(), hex(&ev.to_bytes()));
    let io = UsbRawEpIo {
        ep: 0x0102,
        flags: 0x0304,
        length: 0x0506_0708,
    };
    m.insert("bytes.usb_raw_ep_io".into(), hex(&io.to_bytes()));
    let mut info = UsbRawEpInfo {
        addr: 0x1122_3344,
        caps: UsbRawEpCaps::new(false, false, true, false, true, false),
        limits: UsbRawEpLimits {
            maxpacket_limit: 0x400,
            max_streams: 0x0f,
            reserved: 0x5566_7788,
        },
        ..Default::default()
    };
    info.name[..10].copy_from_slice(b"ep1in-bulk");
    m.insert("bytes.usb_raw_ep_info".into(), hex(&info.to_bytes()));
    m
}

/// Builds and runs the program against one header; compares everything; returns whether that
/// header had the 6.7+ bus events.
fn check_header(run: &str, include: Option<&Path>) -> bool {
    let dir = scratch(run);
    let with_bus_events = header_has_bus_events(&dir, include);
    let exe = compile(&dir, "abi", &program(with_bus_events), include)
        .unwrap_or_else(|err| panic!("{run}: C program does not compile:\n{err}"));
    let out = Command::new(&exe).output().expect("run the C program");
    assert!(
        out.status.success(),
        "{run}: C program failed: {:?}",
        out.status
    );
    let stdout = String::from_utf8(out.stdout).expect("C output is ASCII");
    let c: BTreeMap<String, String> = stdout
        .lines()
        .map(|l| {
            let (k, v) = l.split_once(' ').expect("`key value` line");
            (k.to_string(), v.to_string())
        })
        .collect();
    let rust = rust_side(with_bus_events);
    let mut mismatches = Vec::new();
    for (k, want) in &rust {
        match c.get(k) {
            Some(got) if got == want => {}
            got => mismatches.push(format!("{k}: C {got:?}, Rust {want}")),
        }
    }
    for k in c.keys().filter(|k| !rust.contains_key(*k)) {
        mismatches.push(format!("{k}: printed by C, not checked in Rust"));
    }
    assert!(
        mismatches.is_empty(),
        "{run}: ABI mismatches:\n{}",
        mismatches.join("\n")
    );
    // 65536 flag rows + the named checks: make sure the comparison was not vacuous.
    assert!(
        c.len() > 65536 + 60,
        "{run}: only {} keys compared",
        c.len()
    );
    with_bus_events
}

/// spec §1.2–§1.4 against the header installed on this machine.
#[test]
fn system_header_matches_rust() {
    let has_events = check_header("system", None);
    if !has_events {
        eprintln!("system header predates 6.7: SUSPEND/RESUME/RESET/DISCONNECT not in it");
    }
}

/// spec §1.2–§1.4 against the Linux 6.12 header (the newest we have), which also defines the
/// 6.7+ bus events; without the source tree those four are checked against the spec table.
#[test]
fn linux_6_12_header_matches_rust() {
    let header = ksrc().join("include/uapi/linux/usb/raw_gadget.h");
    if !header.exists() {
        eprintln!(
            "{} missing: comparing the 6.7+ events with spec §1.2",
            header.display()
        );
        events_match_spec_table();
        return;
    }
    // Shadow only raw_gadget.h; ch9.h and the asm headers still come from the system.
    let inc = scratch("include-6.12");
    std::fs::create_dir_all(inc.join("linux/usb")).unwrap();
    std::fs::copy(&header, inc.join("linux/usb/raw_gadget.h")).unwrap();
    assert!(
        check_header("linux-6.12", Some(&inc)),
        "6.12 header must define the bus events"
    );
}

/// spec §1.2 event table, for when no header at hand has the 6.7+ events.
fn events_match_spec_table() {
    assert_eq!(event_type::USB_RAW_EVENT_SUSPEND, 3);
    assert_eq!(event_type::USB_RAW_EVENT_RESUME, 4);
    assert_eq!(event_type::USB_RAW_EVENT_RESET, 5);
    assert_eq!(event_type::USB_RAW_EVENT_DISCONNECT, 6);
}
