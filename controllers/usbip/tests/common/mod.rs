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
