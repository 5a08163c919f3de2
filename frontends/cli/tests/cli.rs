//! The `rawgadget` binary: describe without a kernel, clear errors without a node.

use std::process::Command;

fn rawgadget(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_rawgadget"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run rawgadget")
}

/// `describe zero` prints Gadget Zero's descriptors like lsusb -v, no kernel needed.
#[test]
fn describe_zero() {
    let out = rawgadget(&["describe", "zero"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = String::from_utf8(out.stdout).unwrap();
    for want in [
        "idVendor           0x0525",
        "idProduct          0xa4a0",
        "bEndpointAddress     0x81",
    ] {
        assert!(s.contains(want), "missing {want:?} in:\n{s}");
    }
    assert!(s.contains("Gadget Zero"));
    assert!(!s.contains("HID keyboard"));
}

/// `describe keyboard` shows the HID interface and the report descriptor.
#[test]
fn describe_keyboard() {
    let out = rawgadget(&["describe", "keyboard", "--speed", "full"]);
    assert!(out.status.success());
    let s = String::from_utf8(out.stdout).unwrap();
    assert!(s.contains("HID report descriptor (63 bytes)"), "{s}");
    assert!(s.contains("05 01 09 06 a1 01"), "{s}");
    assert!(s.contains("full-speed"), "{s}");
}

/// USB 3.2 §9.6.3: `bMaxPower` counts 8 mA units at SuperSpeed. `describe` prints MaxPower as
/// lsusb does for the device's bcdUSB: 100 mA encoded as 12 shows as 96 mA with bcdUSB 3.20,
/// and as 100 mA at high speed.
#[test]
fn describe_max_power_per_speed() {
    for (speed, want) in [
        ("super", "MaxPower               96mA"),
        ("high", "MaxPower              100mA"),
    ] {
        let out = rawgadget(&["describe", "keyboard", "--speed", speed]);
        assert!(out.status.success());
        let s = String::from_utf8(out.stdout).unwrap();
        assert!(s.contains(want), "missing {want:?} at {speed} in:\n{s}");
    }
}

/// With no subcommand the default is the demo: both built-in devices against the in-process
/// host, no root and no kernel module (issue 3, "the embedded default").
#[test]
fn default_is_the_in_process_demo() {
    let out = rawgadget(&[]);
    let s = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{s}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // what the host saw, lsusb style, for both devices
    assert!(s.contains("ID 0525:a4a0"), "{s}");
    assert!(
        s.contains("bInterfaceClass         3 Human Interface Device"),
        "{s}"
    );
    assert!(
        s.contains("Device Status: configured (bConfigurationValue 1)"),
        "{s}"
    );
    // Linux's enumeration sequence, then the transfers
    assert!(s.contains("SET_ADDRESS 2"), "{s}");
    assert!(s.contains("typed: \"Hello from rawgadget!\\n\""), "{s}");
    assert!(s.contains("bulk IN 4096 bytes: pattern ok"), "{s}");
    assert!(s.contains("all good"), "{s}");
}

/// `describe all` prints both devices.
#[test]
fn describe_all() {
    let out = rawgadget(&["describe"]);
    assert!(out.status.success());
    let s = String::from_utf8(out.stdout).unwrap();
    assert!(
        s.contains("=== Gadget Zero") && s.contains("=== HID keyboard"),
        "{s}"
    );
}

/// A missing node gives an error naming the file and the fix, and a failure status.
#[test]
fn missing_node_is_a_clear_error() {
    for cmd in [&["zero"][..], &["keyboard", "--text", "hi"][..]] {
        let mut args = cmd.to_vec();
        args.extend(["--node", "/nonexistent/raw-gadget"]);
        let out = rawgadget(&args);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("/nonexistent/raw-gadget"), "{err}");
        assert!(err.contains("modprobe raw_gadget"), "{err}");
    }
}

/// A node that is not raw gadget fails INIT with the kernel's errno named.
#[test]
fn wrong_node_reports_init_errno() {
    let out = rawgadget(&["zero", "--node", "/dev/null"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("USB_RAW_IOCTL_INIT") && err.contains("ENOTTY"),
        "{err}"
    );
}

/// Text a US keyboard cannot type is refused before touching the node.
#[test]
fn keyboard_rejects_untypable_text() {
    let out = rawgadget(&[
        "keyboard",
        "--text",
        "née",
        "--node",
        "/nonexistent/raw-gadget",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("position 1"), "{err}");
}
