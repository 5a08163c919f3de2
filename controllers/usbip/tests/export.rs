//! The TCP export as the stock `usbip` client sees it (contract U22–U24).

mod common;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use common::*;
use rawgadget_loopback::scripted::{DeviceOp, DeviceScript};
use rawgadget_loopback::{Host, HostConfig};
use rawgadget_uapi::event_type::*;
use rawgadget_uapi::{speed, Speed};
use rawgadget_udc::UrbFlags;
use rawgadget_usbip::OpStatus;
use rawgadget_usbip_udc::fake_vhci::{devlist, import, FakeVhci};
use rawgadget_usbip_udc::{export, ExportError, ExportOptions, UsbipConfig, UsbipDevice};

struct Exported {
    device: UsbipDevice,
    dev: SharedDev,
    export: Option<rawgadget_usbip_udc::Export>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Exported {
    fn new() -> Exported {
        init_logs();
        let device = UsbipDevice::new(UsbipConfig::default());
        let (dev, stop, thread) = run_device(
            &device,
            DeviceScript::vendor_loopback(speed::USB_SPEED_HIGH),
        );
        device.wait_running(TIMEOUT).unwrap();
        let export = device
            .export_tcp(ExportOptions {
                addr: SocketAddr::from(([127, 0, 0, 1], 0)),
                ..ExportOptions::default()
            })
            .unwrap();
        Exported {
            device,
            dev,
            export: Some(export),
            stop,
            thread: Some(thread),
        }
    }
    fn addr(&self) -> SocketAddr {
        self.export.as_ref().unwrap().local_addr()
    }
    fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr()).unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        s
    }
    /// Imports busid 1-1 and returns a host on the imported stream.
    fn import(&self) -> FakeVhci<TcpStream> {
        let mut s = self.connect();
        let reply = import(&mut s, "1-1").unwrap();
        assert_eq!(reply.status(), OpStatus::Ok);
        let d = *reply.device().unwrap();
        FakeVhci::new(s, d.speed().unwrap(), d.devid())
    }
    fn events(&self) -> Vec<u32> {
        self.dev.0.lock().unwrap().event_types()
    }
    fn wait_events(&self, what: &str, f: impl Fn(&[u32]) -> bool) {
        let deadline = std::time::Instant::now() + TIMEOUT;
        while !f(&self.events()) {
            assert!(
                std::time::Instant::now() < deadline,
                "timed out: {what}: {:?}",
                self.events()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Exported {
    fn drop(&mut self) {
        drop(self.export.take());
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.device.bus().notify();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// contract U22: OP_REP_DEVLIST carries version 0x0111 (checked by the parser), one device
/// with our busid and the negotiated speed, descriptor fields zero before any enumeration,
/// no interface records; then the server closes.
#[test]
fn u22_devlist_lists_the_device() {
    let e = Exported::new();
    let list = devlist(&mut e.connect()).unwrap();
    assert_eq!(list.devices().len(), 1);
    let d = &list.devices()[0];
    assert_eq!(d.device.busid.as_str(), Some("1-1"));
    assert_eq!(d.device.speed().unwrap(), Speed::High);
    assert_eq!(
        (
            d.device.id_vendor,
            d.device.id_product,
            d.device.num_interfaces
        ),
        (0, 0, 0)
    );
    assert!(d.interfaces.is_empty());
    assert_eq!(
        e.events(),
        [USB_RAW_EVENT_CONNECT],
        "never probed with SETUPs (U22)"
    );
}

/// contract U22: OP_REP_IMPORT echoes the busid, says 0x0111 and the speed; URBs follow on
/// the same stream after one RESET (U5).
#[test]
fn u22_import_then_enumerate_and_transfer() {
    let e = Exported::new();
    let mut vhci = e.import();
    assert_eq!(vhci.speed(), Speed::High);
    let mut host = Host::new(HostConfig::default());
    host.enumerate(&mut vhci).unwrap();
    e.dev.0.lock().unwrap().push_op(DeviceOp::Write {
        address: 0x81,
        data: vec![5; 100],
        zero: false,
    });
    e.device.bus().with(|_| ());
    let r = host.bulk_in(&mut vhci, 0x81, 512, UrbFlags::default(), TIMEOUT);
    assert_eq!((r.status, r.data.len()), (Ok(()), 100));
    assert_eq!(vhci.error(), None);
    let ev = e.events();
    assert_eq!(ev[..2], [USB_RAW_EVENT_CONNECT, USB_RAW_EVENT_RESET]);
    // contract U22: after an enumeration the list carries the cached descriptor fields
    vhci.detach();
    e.wait_events("DISCONNECT", |ev| ev.contains(&USB_RAW_EVENT_DISCONNECT));
    let deadline = std::time::Instant::now() + TIMEOUT;
    while e.device.is_attached() {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(5));
    }
    let list = devlist(&mut e.connect()).unwrap();
    let d = list.devices()[0].device;
    assert_eq!(
        (
            d.id_vendor,
            d.id_product,
            d.device_class,
            d.num_configurations
        ),
        (0x1d6b, 0x0104, 0xff, 1)
    );
}

/// contract U22: a busid that is not ours is ST_NODEV; a second import while one runs is
/// ST_DEV_BUSY.
#[test]
fn u22_import_refusals() {
    let e = Exported::new();
    let reply = import(&mut e.connect(), "9-9").unwrap();
    assert_eq!(reply.status(), OpStatus::NoDev);
    let _first = e.import();
    let reply = import(&mut e.connect(), "1-1").unwrap();
    assert_eq!(reply.status(), OpStatus::DevBusy);
}

/// contract U24: a re-import of the running instance is a new connection: a new RESET and
/// no new CONNECT.
#[test]
fn u24_reimport_resets_without_connect() {
    let e = Exported::new();
    for round in 1..=2 {
        let mut vhci = e.import();
        let mut host = Host::new(HostConfig::default());
        host.enumerate(&mut vhci).unwrap();
        vhci.detach();
        e.wait_events("DISCONNECT", |ev| {
            ev.iter()
                .filter(|&&t| t == USB_RAW_EVENT_DISCONNECT)
                .count()
                == round
        });
        let deadline = std::time::Instant::now() + TIMEOUT;
        while e.device.is_attached() {
            assert!(std::time::Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let ev = e.events();
    assert_eq!(
        ev.iter().filter(|&&t| t == USB_RAW_EVENT_CONNECT).count(),
        1,
        "{ev:?}"
    );
    assert_eq!(
        ev.iter().filter(|&&t| t == USB_RAW_EVENT_RESET).count(),
        2,
        "{ev:?}"
    );
}

/// contract U23: accepted sockets get TCP_NODELAY.
#[test]
fn u23_accepted_sockets_have_nodelay() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let _client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (accepted, _) = listener.accept().unwrap();
    assert!(!accepted.nodelay().unwrap());
    let accepted = export::prepare_accepted(accepted).unwrap();
    assert!(accepted.nodelay().unwrap());
}

/// USB/IP has no authentication: a non-loopback address needs an explicit opt-in, and then
/// comes with a warning.
#[test]
fn non_loopback_export_needs_opt_in_and_warns() {
    let device = UsbipDevice::new(UsbipConfig::default());
    let any = SocketAddr::from(([0, 0, 0, 0], 0));
    let refused = device.export_tcp(ExportOptions {
        addr: any,
        ..ExportOptions::default()
    });
    match refused {
        Err(e @ ExportError::RemoteNotAllowed(_)) => {
            assert!(e.to_string().contains("no authentication"))
        }
        other => panic!("{other:?}"),
    }
    let export = device
        .export_tcp(ExportOptions {
            addr: any,
            allow_remote: true,
            ..ExportOptions::default()
        })
        .unwrap();
    assert!(export.warning().unwrap().contains("no authentication"));
    let local = device
        .export_tcp(ExportOptions {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            ..ExportOptions::default()
        })
        .unwrap();
    assert_eq!(local.warning(), None);
}

/// A peer that sends garbage instead of an op request is closed without a reply.
#[test]
fn bad_op_request_is_closed() {
    let e = Exported::new();
    let mut s = e.connect();
    std::io::Write::write_all(&mut s, &[0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 0]).unwrap();
    let mut rest = Vec::new();
    let n = std::io::Read::read_to_end(&mut s, &mut rest).unwrap();
    assert_eq!(n, 0);
    assert_eq!(e.events(), [USB_RAW_EVENT_CONNECT]);
}
