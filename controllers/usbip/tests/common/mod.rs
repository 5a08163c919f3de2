//! A rig for driver tests: a scripted raw-gadget client on a [`UsbipDevice`] in its own thread,
//! the real driver on one end of a socketpair, and a [`FakeVhci`] (with vhci's checks) on the
//! other, which the loopback [`Host`] drives.

#![allow(dead_code)]

use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

use rawgadget_loopback::scripted::{DeviceOp, DeviceScript, ScriptedDevice};
use rawgadget_loopback::{Bus, Device, Host, HostConfig};
use rawgadget_uapi::{speed, Speed};
use rawgadget_usbip_udc::fake_vhci::FakeVhci;
use rawgadget_usbip_udc::{Budget, ConnectionHandle, UsbipConfig, UsbipDevice};

pub const TIMEOUT: Duration = Duration::from_secs(5);

pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A scripted device shared between its driving thread and the test.
#[derive(Clone)]
pub struct SharedDev(pub Arc<Mutex<ScriptedDevice>>);

impl Device for SharedDev {
    fn step(&mut self, bus: &mut Bus) -> bool {
        self.0.lock().unwrap().step(bus)
    }
}

pub struct Rig {
    pub device: UsbipDevice,
    pub dev: SharedDev,
    pub vhci: FakeVhci<UnixStream>,
    pub host: Host,
    pub conn: Option<ConnectionHandle>,
    stop: Arc<AtomicBool>,
    driver: Option<thread::JoinHandle<()>>,
}

/// The device program running on `device` in its own thread.
pub fn run_device(
    device: &UsbipDevice,
    script: DeviceScript,
) -> (SharedDev, Arc<AtomicBool>, thread::JoinHandle<()>) {
    let dev = SharedDev(Arc::new(Mutex::new(ScriptedDevice::new(script))));
    let stop = Arc::new(AtomicBool::new(false));
    let driver = {
        let (bus, mut d, stop) = (device.bus().clone(), dev.clone(), stop.clone());
        thread::spawn(move || {
            bus.drive_device(
                &mut d,
                |_| stop.load(Ordering::SeqCst),
                Duration::from_millis(20),
            );
        })
    };
    (dev, stop, driver)
}

impl Rig {
    /// The vendor loopback device at `speed_code`, attached over a socketpair.
    pub fn new(speed_code: u8) -> Rig {
        Rig::with(
            UsbipConfig::default(),
            DeviceScript::vendor_loopback(speed_code),
            Budget::LOCAL_VHCI,
        )
    }

    pub fn with(config: UsbipConfig, script: DeviceScript, budget: Budget) -> Rig {
        init_logs();
        let device = UsbipDevice::new(config);
        let (dev, stop, driver) = run_device(&device, script);
        let speed = device.wait_running(TIMEOUT).expect("the device runs");
        let (ours, theirs) = UnixStream::pair().unwrap();
        let conn = device
            .connect(ours, budget, tracing::info_span!("test-usbip"))
            .expect("connect");
        Rig {
            device,
            dev,
            vhci: FakeVhci::new(theirs, speed, 0x0001_0002),
            host: Host::new(HostConfig::default()),
            conn: Some(conn),
            stop,
            driver: Some(driver),
        }
    }

    pub fn hs() -> Rig {
        Rig::new(speed::USB_SPEED_HIGH)
    }

    pub fn dev(&self) -> MutexGuard<'_, ScriptedDevice> {
        self.dev.0.lock().unwrap()
    }

    /// Queues endpoint I/O on the device and wakes its thread.
    pub fn push_op(&self, op: DeviceOp) {
        self.dev().push_op(op);
        self.device.bus().with(|_| ());
    }

    pub fn enumerate(&mut self) {
        self.host
            .enumerate(&mut self.vhci)
            .expect("enumeration over USB/IP");
        assert_eq!(self.vhci.error(), None);
    }

    /// Waits until `f` holds for the device (checked every 5 ms).
    pub fn wait_dev(&self, what: &str, mut f: impl FnMut(&ScriptedDevice) -> bool) {
        let deadline = std::time::Instant::now() + TIMEOUT;
        while !f(&self.dev()) {
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for: {what}"
            );
            thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn speed(&self) -> Speed {
        self.vhci.speed()
    }

    /// Stops the device thread.
    pub fn stop_device(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.device.bus().notify();
        if let Some(t) = self.driver.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.stop_device();
    }
}

// ---- raw PDUs ---------------------------------------------------------------------------

use rawgadget_usbip::wire::Direction;
use rawgadget_usbip::{CmdSubmit, CmdSubmitRepr};
use rawgadget_usbip_udc::fake_vhci::WireReply;

/// A non-iso CMD_SUBMIT as vhci sends it (`number_of_packets` 0, U15).
pub fn submit(seqnum: u32, endpoint: u8, tbl: u32, out: Option<Vec<u8>>) -> CmdSubmit {
    let direction = if endpoint & 0x80 != 0 {
        Direction::In
    } else {
        Direction::Out
    };
    let data = out.unwrap_or_default();
    CmdSubmit {
        header: CmdSubmitRepr {
            seqnum,
            devid: 0x0001_0002,
            direction,
            ep: endpoint & 0x0f,
            transfer_flags: if direction == Direction::In { 0x200 } else { 0 },
            transfer_buffer_length: tbl,
            start_frame: 0,
            number_of_packets: 0,
            interval: 0,
            setup: [0; 8],
        },
        data,
        iso_packets: Vec::new(),
    }
}

/// A control CMD_SUBMIT on ep0 with its direction from bRequestType and wLength.
pub fn control(seqnum: u32, setup: [u8; 8], out: Vec<u8>) -> CmdSubmit {
    let w_length = u16::from_le_bytes([setup[6], setup[7]]) as u32;
    let is_in = setup[0] & 0x80 != 0 && w_length > 0;
    let mut s = submit(
        seqnum,
        if is_in { 0x80 } else { 0 },
        w_length,
        (!is_in).then_some(out),
    );
    s.header.setup = setup;
    s
}

impl Rig {
    /// Reads replies until `f` finds one, or panics after [`TIMEOUT`].
    pub fn wait_reply(&mut self, what: &str, mut f: impl FnMut(&WireReply) -> bool) -> WireReply {
        let deadline = std::time::Instant::now() + TIMEOUT;
        loop {
            if let Some(r) = self.vhci.replies.iter().find(|r| f(r)) {
                return r.clone();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {what}; replies: {:?}",
                self.vhci.replies
            );
            assert!(
                self.vhci.is_connected(),
                "connection broken while waiting for {what}: {:?}",
                self.vhci.error()
            );
            self.vhci.pump(Duration::from_millis(50));
        }
    }

    /// The RET_SUBMIT for `seqnum`.
    pub fn ret_submit(&mut self, seqnum: u32) -> WireReply {
        self.wait_reply(
            "RET_SUBMIT",
            |r| matches!(r, WireReply::RetSubmit { seqnum: s, .. } if *s == seqnum),
        )
    }

    /// The RET_UNLINK with this (the CMD_UNLINK's own) seqnum.
    pub fn ret_unlink(&mut self, seqnum: u32) -> WireReply {
        self.wait_reply(
            "RET_UNLINK",
            |r| matches!(r, WireReply::RetUnlink { seqnum: s, .. } if *s == seqnum),
        )
    }

    /// Reads for `d`, collecting whatever arrives.
    pub fn settle(&mut self, d: Duration) {
        let deadline = std::time::Instant::now() + d;
        while std::time::Instant::now() < deadline && self.vhci.is_connected() {
            self.vhci.pump(Duration::from_millis(10));
        }
    }

    /// Waits until the peer (our driver) closes the connection.
    pub fn wait_closed(&mut self) -> String {
        let deadline = std::time::Instant::now() + TIMEOUT;
        while self.vhci.is_connected() {
            assert!(
                std::time::Instant::now() < deadline,
                "the driver did not close the connection"
            );
            self.vhci.pump(Duration::from_millis(50));
        }
        self.vhci.error().unwrap_or_default().to_string()
    }
}

/// Every RET_SUBMIT seqnum in `replies`, in wire order.
pub fn ret_submit_seqnums(replies: &[WireReply]) -> Vec<u32> {
    replies
        .iter()
        .filter_map(|r| match r {
            WireReply::RetSubmit { seqnum, .. } => Some(*seqnum),
            _ => None,
        })
        .collect()
}
