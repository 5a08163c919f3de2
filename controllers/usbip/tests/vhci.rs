//! The local attach through a stand-in sysfs directory (plain files): the port choice and the
//! line written to `attach` (contract U17–U20).

mod common;

use std::fs;
use std::time::Duration;

use common::*;
use rawgadget_loopback::scripted::DeviceScript;
use rawgadget_uapi::event_type::*;
use rawgadget_uapi::speed;
use rawgadget_usbip_udc::vhci::Hub;
use rawgadget_usbip_udc::{AttachOptions, Budget, UsbipConfig, UsbipDevice, VhciSysfs};

fn fake_sysfs(used: &[u32]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut s = String::from("hub port sta spd dev      sockfd local_busid\n");
    for (hub, base) in [("hs", 0), ("ss", 15)] {
        for r in 0..15 {
            let port = base + r;
            let sta = if used.contains(&port) { 6 } else { 4 };
            s += &format!("{hub}  {port:04} {sta:03} 000 00000000 000000 0-0\n");
        }
    }
    fs::write(dir.path().join("status"), s).unwrap();
    fs::write(dir.path().join("attach"), "").unwrap();
    dir
}

fn attach_at(speed_code: u8, used: &[u32]) -> (u32, Hub, String, Vec<u32>) {
    init_logs();
    let sysfs = fake_sysfs(used);
    let device = UsbipDevice::new(UsbipConfig::default());
    let (dev, stop, thread) = run_device(&device, DeviceScript::vendor_loopback(speed_code));
    let opts = AttachOptions {
        sysfs: VhciSysfs::at(sysfs.path()),
        budget: Budget::LOCAL_VHCI,
        devid: 0x0003_0004,
        attempts: 1,
        retry_delay: Duration::ZERO,
    };
    let attachment = device.attach_local(opts).expect("attach");
    let (port, hub) = (attachment.port, attachment.hub);
    assert!(attachment
        .to_string()
        .contains(&format!("vhci port {port}")));
    // nobody holds the other end of the socketpair here: the connection ends at once
    let _ = attachment.wait();
    let line = fs::read_to_string(sysfs.path().join("attach")).unwrap();
    let deadline = std::time::Instant::now() + TIMEOUT;
    while !dev
        .0
        .lock()
        .unwrap()
        .event_types()
        .contains(&USB_RAW_EVENT_DISCONNECT)
    {
        assert!(std::time::Instant::now() < deadline, "no DISCONNECT");
        std::thread::sleep(Duration::from_millis(5));
    }
    let types = dev.0.lock().unwrap().event_types();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    device.bus().notify();
    thread.join().unwrap();
    (port, hub, line, types)
}

/// contract U17, U18: `"<port> <sockfd> <devid> <speed>"` on the first free high-speed-hub
/// port; the attach resets the port (U5), and the end of the connection disconnects (U20).
#[test]
fn u17_attach_writes_port_fd_devid_speed() {
    let (port, hub, line, types) = attach_at(speed::USB_SPEED_HIGH, &[0, 1]);
    assert_eq!((port, hub), (2, Hub::High));
    let fields: Vec<&str> = line.split(' ').collect();
    assert_eq!(fields.len(), 4, "{line:?}");
    assert_eq!(fields[0], "2");
    assert!(
        fields[1].parse::<i32>().unwrap() > 2,
        "a socket fd: {line:?}"
    );
    assert_eq!(fields[2], format!("{}", 0x0003_0004));
    assert_eq!(fields[3], "3");
    assert_eq!(types[..2], [USB_RAW_EVENT_CONNECT, USB_RAW_EVENT_RESET]);
    assert!(types.contains(&USB_RAW_EVENT_DISCONNECT));
}

/// contract U18, S1: a SuperSpeed gadget goes to the SS half with speed 5.
#[test]
fn u18_super_speed_attaches_to_the_ss_half() {
    let (port, hub, line, _) = attach_at(speed::USB_SPEED_SUPER, &[15]);
    assert_eq!((port, hub), (16, Hub::Super));
    assert!(line.starts_with("16 ") && line.ends_with(" 5"), "{line:?}");
}
