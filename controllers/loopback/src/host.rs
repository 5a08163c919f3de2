//! An in-process USB host that enumerates and drives a device the way Linux's hub driver and
//! usbcore do, and records what it saw.
//!
//! The sequence follows Linux 6.12 (`drivers/usb/core/hub.c` `hub_port_init`,
//! `hub_port_connect`, `usb_enumerate_device`; `config.c` `usb_get_configuration`;
//! `message.c` `usb_get_descriptor`, `usb_string`; `generic.c` `usb_choose_configuration`):
//!
//! - below SuperSpeed (the "new scheme"): port reset, GET_DESCRIPTOR(DEVICE, 64) at address
//!   0, a second port reset, SET_ADDRESS, GET_DESCRIPTOR(DEVICE, 18) (contract D28);
//! - at SuperSpeed (the "old scheme", one reset): SET_ADDRESS, GET_DESCRIPTOR(DEVICE, 8),
//!   SET_ISOCH_DELAY (failure ignored), GET_DESCRIPTOR(DEVICE, 18);
//! - BOS when bcdUSB ≥ 0x0201; DEVICE_QUALIFIER for a full-speed device with bcdUSB ≥ 0x0200;
//! - every configuration: 9 bytes, then wTotalLength;
//! - strings iProduct, iManufacturer, iSerialNumber (language table first, 255-byte reads);
//! - the generic driver's configuration choice, SET_CONFIGURATION, then the iConfiguration and
//!   iInterface strings.
//!
//! The host core's rules live here, not in the controller model: a control URB's direction
//! follows bRequestType and its buffer is wLength long (`usb_submit_urb`), a short transfer
//! with `URB_SHORT_NOT_OK` becomes EREMOTEIO (`usb_hcd_giveback_urb`, contract U9), a control
//! message that times out is killed and returns ETIMEDOUT (`usb_start_wait_urb`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use rawgadget_uapi::{Errno, Speed};
use rawgadget_udc::{Instant, Unlink, Urb, UrbCompletion, UrbFlags, UrbId, UrbKind};
use rawgadget_usb::{ControlRequest, Descriptors, Dump};

use crate::port::{HostPort, PortAction};

/// `GET_DESCRIPTOR_TRIES`, `GET_MAXPACKET0_TRIES`, `SET_ADDRESS_TRIES` (`hub.c:2901-2903`).
const GET_DESCRIPTOR_TRIES: usize = 2;
const GET_MAXPACKET0_TRIES: usize = 3;
const SET_ADDRESS_TRIES: usize = 2;
/// `HUB_ROOT_RESET_TIME`, `HUB_RESET_TIMEOUT` (`hub.c:2909-2913`).
const ROOT_RESET_TIME: Duration = Duration::from_millis(60);
const RESET_TIMEOUT: Duration = Duration::from_millis(800);
/// `HUB_DEBOUNCE_STEP`, `HUB_DEBOUNCE_STABLE`, `HUB_DEBOUNCE_TIMEOUT` (`hub.c:138-140`).
const DEBOUNCE_STEP: Duration = Duration::from_millis(25);
const DEBOUNCE_STABLE: Duration = Duration::from_millis(100);
const DEBOUNCE_TIMEOUT: Duration = Duration::from_millis(2000);
/// `USB_MAXCONFIG`.
const USB_MAXCONFIG: usize = 8;

const USB_DT_DEVICE: u8 = 1;
const USB_DT_CONFIG: u8 = 2;
const USB_DT_STRING: u8 = 3;
const USB_DT_INTERFACE: u8 = 4;
const USB_DT_DEVICE_QUALIFIER: u8 = 6;
const USB_DT_BOS: u8 = 0x0f;
const USB_CLASS_VENDOR_SPEC: u8 = 0xff;

/// Host policy knobs; the defaults are Linux's.
#[derive(Clone, Debug)]
pub struct HostConfig {
    /// `USB_CTRL_GET_TIMEOUT` / `USB_CTRL_SET_TIMEOUT`: 5 s.
    pub control_timeout: Duration,
    /// The address SET_ADDRESS gives the device. dummy_hcd's root hub is device 1, so Linux's
    /// first device there is 2.
    pub devnum: u8,
    /// Read iProduct/iManufacturer/iSerialNumber (and iConfiguration, iInterface).
    pub read_strings: bool,
    /// Choose a configuration and set it, as the generic USB device driver does.
    pub set_configuration: bool,
    /// How many data bytes of each transfer the recording keeps.
    pub record_bytes: usize,
    /// How many events the recording keeps (default 100 000); later ones are only counted in
    /// [`Recording::events_dropped`], so a long-running host's memory stays bounded.
    pub record_events: usize,
    /// How long [`Host::enumerate`] waits for a device to connect (a hub waits forever).
    pub connect_timeout: Duration,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            control_timeout: Duration::from_secs(5),
            devnum: 2,
            read_strings: true,
            set_configuration: true,
            record_bytes: 64,
            record_events: 100_000,
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// Why the host gave up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("no device connected")]
    NotConnected,
    #[error("port reset did not enable the port")]
    ResetFailed,
    #[error("{stage}: {errno:?} ({})", errno.description())]
    Transfer { stage: &'static str, errno: Errno },
    #[error("{stage}: {reason}")]
    Invalid { stage: &'static str, reason: String },
}

impl HostError {
    /// The errno Linux would log for this failure.
    pub fn errno(&self) -> Errno {
        match self {
            HostError::NotConnected => Errno::ENOTCONN,
            HostError::ResetFailed => Errno::ENOTCONN,
            HostError::Transfer { errno, .. } => *errno,
            HostError::Invalid { .. } => Errno::EINVAL,
        }
    }
}

/// A URB's final result as the host driver sees it (after the host core's mapping).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct UrbResult {
    pub status: Result<(), Errno>,
    pub actual: u32,
    /// IN: the bytes received. OUT: empty.
    pub data: Vec<u8>,
}

/// One URB as recorded.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct TransferRecord {
    pub submitted: Instant,
    pub completed: Instant,
    pub endpoint: u8,
    /// usbmon's letter: C, B, I, Z.
    pub kind: char,
    pub setup: Option<[u8; 8]>,
    pub length: u32,
    /// After the host core's mapping (EREMOTEIO); `None` if it was never given back.
    pub status: Result<(), Errno>,
    pub actual: u32,
    /// The first bytes of the data (IN: received; OUT: sent).
    pub data: Vec<u8>,
}

/// Something the host did, in order.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum HostEvent {
    Port(PortAction),
    Urb(TransferRecord),
}

/// Everything the host learned, for printing like `lsusb -v` and for tests.
#[derive(Clone, Debug, Default)]
pub struct Recording {
    pub speed: Option<Speed>,
    pub address: u8,
    pub ep0_maxpacket: u16,
    /// The device descriptor (18 bytes) once read.
    pub device: Option<Vec<u8>>,
    /// Each configuration as read (full length).
    pub configs: Vec<Vec<u8>>,
    pub bos: Option<Vec<u8>>,
    pub qualifier: Option<Vec<u8>>,
    /// The language table (string descriptor 0) as read.
    pub languages: Option<Vec<u8>>,
    /// String descriptors as read: index → bytes.
    pub strings: BTreeMap<u8, Vec<u8>>,
    /// The configuration value set, if any.
    pub configuration: Option<u8>,
    pub events: Vec<HostEvent>,
    /// Events not kept because [`HostConfig::record_events`] was reached.
    pub events_dropped: u64,
}

/// An in-flight URB's bookkeeping.
#[derive(Clone, Debug)]
struct Pending {
    submitted: Instant,
    endpoint: u8,
    kind: char,
    setup: Option<[u8; 8]>,
    length: u32,
    flags: UrbFlags,
    out_data: Vec<u8>,
}

/// See the module doc.
#[derive(Debug, Default)]
pub struct Host {
    pub config: HostConfig,
    rec: Recording,
    pending: BTreeMap<UrbId, Pending>,
    /// Language ID for strings, once known (`udev->string_langid`); `Err` = strings unusable.
    langid: Option<Result<u16, Errno>>,
}

impl Host {
    pub fn new(config: HostConfig) -> Host {
        Host {
            config,
            ..Host::default()
        }
    }

    fn record(&mut self, e: HostEvent) {
        if self.rec.events.len() < self.config.record_events {
            self.rec.events.push(e);
        } else {
            self.rec.events_dropped += 1;
        }
    }

    pub fn recording(&self) -> &Recording {
        &self.rec
    }

    /// Forgets everything learned (a new device).
    pub fn forget(&mut self) {
        self.rec = Recording::default();
        self.pending.clear();
        self.langid = None;
    }

    // ----------------------------------------------------------------------------------------
    // URB level

    /// Submits a URB, recording it.
    pub fn submit<P: HostPort + ?Sized>(&mut self, p: &mut P, urb: Urb) -> UrbId {
        let setup = match &urb.kind {
            UrbKind::Control { setup } => Some(*setup),
            _ => None,
        };
        let out_data = if urb.is_in() {
            Vec::new()
        } else {
            urb.buffer[..urb.buffer.len().min(self.config.record_bytes)].to_vec()
        };
        let info = Pending {
            submitted: p.now(),
            endpoint: urb.endpoint,
            kind: urb.kind.letter(),
            setup,
            length: urb.buffer.len() as u32,
            flags: urb.flags,
            out_data,
        };
        let id = p.submit(urb);
        self.pending.insert(id, info);
        id
    }

    /// Waits for a URB submitted with [`Host::submit`]; `None` on timeout (still pending).
    /// Applies the host core's EREMOTEIO rule (contract U9) and records the result.
    pub fn wait<P: HostPort + ?Sized>(
        &mut self,
        p: &mut P,
        id: UrbId,
        timeout: Duration,
    ) -> Option<UrbResult> {
        let c = p.wait(id, timeout)?;
        Some(self.finish(p.now(), c))
    }

    /// Unlinks a URB (contract D26).
    ///
    /// # Errors
    /// As [`Bus::unlink`](crate::Bus::unlink).
    pub fn unlink<P: HostPort + ?Sized>(
        &mut self,
        p: &mut P,
        id: UrbId,
        how: Unlink,
    ) -> Result<(), Errno> {
        p.unlink(id, how)
    }

    /// `usb_start_wait_urb`: submit, wait up to `timeout`, kill on timeout (ETIMEDOUT).
    pub fn transfer<P: HostPort + ?Sized>(
        &mut self,
        p: &mut P,
        urb: Urb,
        timeout: Duration,
    ) -> UrbResult {
        let id = self.submit(p, urb);
        if let Some(r) = self.wait(p, id, timeout) {
            return r;
        }
        let _ = p.unlink(id, Unlink::Kill);
        let mut r = match self.wait(p, id, Duration::from_secs(1)) {
            Some(r) => r,
            None => UrbResult {
                status: Err(Errno::ENOENT),
                actual: 0,
                data: Vec::new(),
            },
        };
        if r.status == Err(Errno::ENOENT) {
            r.status = Err(Errno::ETIMEDOUT);
        }
        r
    }

    fn finish(&mut self, now: Instant, c: UrbCompletion) -> UrbResult {
        let info = self.pending.remove(&c.id);
        let length = c.buffer.len() as u32;
        let mut status = c.status;
        // contract U9: the host core, not the controller, turns a short transfer into
        // EREMOTEIO (hcd.c:1628-1631)
        if let Some(i) = &info {
            if i.flags.short_not_ok && c.actual_length < length && status.is_ok() {
                status = Err(Errno::EREMOTEIO);
            }
        }
        let is_in = c.endpoint & 0x80 != 0;
        let data = if is_in { c.data().to_vec() } else { Vec::new() };
        if let Some(i) = info {
            let recorded = if is_in {
                data[..data.len().min(self.config.record_bytes)].to_vec()
            } else {
                i.out_data
            };
            self.record(HostEvent::Urb(TransferRecord {
                submitted: i.submitted,
                completed: now,
                endpoint: i.endpoint,
                kind: i.kind,
                setup: i.setup,
                length: i.length,
                status,
                actual: c.actual_length,
                data: recorded,
            }));
        }
        UrbResult {
            status,
            actual: c.actual_length,
            data,
        }
    }

    // ----------------------------------------------------------------------------------------
    // Transfer helpers

    /// `usb_control_msg`: the URB built as `usb_submit_urb` checks it (direction from
    /// bRequestType, buffer of wLength bytes; `data` is the OUT data stage). Returns the
    /// bytes received (IN) or an empty vector (OUT).
    ///
    /// # Errors
    /// The URB's status: EPIPE for a stall, ETIMEDOUT, EPROTO ...
    pub fn control<P: HostPort + ?Sized>(
        &mut self,
        p: &mut P,
        setup: [u8; 8],
        data: &[u8],
    ) -> Result<Vec<u8>, Errno> {
        let r = self.transfer(p, Urb::control(setup, data), self.config.control_timeout);
        r.status.map(|()| r.data)
    }

    /// A control IN request.
    ///
    /// # Errors
    /// As [`Host::control`].
    pub fn control_in<P: HostPort + ?Sized>(
        &mut self,
        p: &mut P,
        request_type: u8,
        request: u8,
        value: u16,
        index: u16,
        length: u16,
    ) -> Result<Vec<u8>, Errno> {
        self.control(
            p,
            setup(request_type | 0x80, request, value, index, length),
            &[],
        )
    }

    /// A control OUT request with an optional data stage.
    ///
    /// # Errors
    /// As [`Host::control`].
    pub fn control_out<P: HostPort + ?Sized>(
        &mut self,
        p: &mut P,
        request_type: u8,
        request: u8,
        value: u16,
        index: u16,
        data: &[u8],
    ) -> Result<(), Errno> {
        let len = u16::try_from(data.len()).map_err(|_| Errno::EINVAL)?;
        self.control(
            p,
            setup(request_type & 0x7f, request, value, index, len),
            data,
        )
        .map(|_| ())
    }

    /// `usb_bulk_msg` on an IN endpoint: a URB of `length` bytes.
    pub fn bulk_in<P: HostPort + ?Sized>(
        &mut self,
        p: &mut P,
        endpoint: u8,
        length: usize,
        flags: UrbFlags,
        timeout: Duration,
    ) -> UrbResult {
        let mut urb = Urb::bulk(endpoint | 0x80, vec![0; length]);
        urb.flags = flags;
        self.transfer(p, urb, timeout)
    }

    /// `usb_bulk_msg` on an OUT endpoint.
    pub fn bulk_out<P: HostPort + ?Sized>(
        &mut self,
        p: &mut P,
        endpoint: u8,
        data: Vec<u8>,
        flags: UrbFlags,
        timeout: Duration,
    ) -> UrbResult {
        let mut urb = Urb::bulk(endpoint & 0x7f, data);
        urb.flags = flags;
        self.transfer(p, urb, timeout)
    }

    /// `usb_interrupt_msg`: an interrupt URB (IN if `endpoint` has bit 7).
    pub fn interrupt<P: HostPort + ?Sized>(
        &mut self,
        p: &mut P,
        endpoint: u8,
        buffer: Vec<u8>,
        timeout: Duration,
    ) -> UrbResult {
        self.transfer(p, Urb::interrupt(endpoint, buffer), timeout)
    }

    /// `usb_get_std_status`: GET_STATUS for a device (0), interface (1) or endpoint (2).
    ///
    /// # Errors
    /// EPIPE when the device stalls it.
    pub fn get_status<P: HostPort + ?Sized>(
        &mut self,
        p: &mut P,
        recipient: u8,
        index: u16,
    ) -> Result<u16, Errno> {
        let d = self.control_in(p, recipient & 3, 0, 0, index, 2)?;
        let lo = d.first().copied().unwrap_or(0);
        let hi = d.get(1).copied().unwrap_or(0);
        Ok(u16::from_le_bytes([lo, hi]))
    }

    /// `usb_clear_halt`: CLEAR_FEATURE(ENDPOINT_HALT) on `endpoint`.
    ///
    /// # Errors
    /// The control transfer's errno.
    pub fn clear_halt<P: HostPort + ?Sized>(
        &mut self,
        p: &mut P,
        endpoint: u8,
    ) -> Result<(), Errno> {
        self.control_out(p, 0x02, 1, 0, u16::from(endpoint), &[])
    }

    /// SET_FEATURE(ENDPOINT_HALT) on `endpoint`.
    ///
    /// # Errors
    /// The control transfer's errno.
    pub fn set_halt<P: HostPort + ?Sized>(&mut self, p: &mut P, endpoint: u8) -> Result<(), Errno> {
        self.control_out(p, 0x02, 3, 0, u16::from(endpoint), &[])
    }

    /// `usb_get_descriptor`: up to three tries, retrying on errors other than ETIMEDOUT and
    /// on a wrong descriptor type (ENODATA). Returns what the last try read.
    ///
    /// # Errors
    /// The last try's errno.
    pub fn get_descriptor<P: HostPort + ?Sized>(
        &mut self,
        p: &mut P,
        descriptor_type: u8,
        index: u8,
        size: u16,
    ) -> Result<Vec<u8>, Errno> {
        let mut result = Err(Errno::EINVAL);
        for _ in 0..3 {
            let value = u16::from(descriptor_type) << 8 | u16::from(index);
            result = self.control_in(p, 0, 6, value, 0, size);
            match &result {
                Ok(d) if d.is_empty() => continue,
                Err(e) if *e != Errno::ETIMEDOUT => continue,
                Ok(d) if d.len() > 1 && d[1] != descriptor_type => {
                    result = Err(Errno::ENODATA);
                    continue;
                }
                _ => break,
            }
        }
        result
    }

    // ----------------------------------------------------------------------------------------
    // Port level

    fn port<P: HostPort + ?Sized>(&mut self, p: &mut P, action: PortAction) -> Result<(), Errno> {
        self.record(HostEvent::Port(action));
        p.port(action)
    }

    /// Waits for a connection (up to [`HostConfig::connect_timeout`]), then
    /// `hub_port_debounce`: until the connection has been stable for 100 ms.
    ///
    /// # Errors
    /// [`HostError::NotConnected`] without a device, or after 2 s without a stable
    /// connection.
    pub fn wait_connect<P: HostPort + ?Sized>(&mut self, p: &mut P) -> Result<Speed, HostError> {
        if !p.wait_connection(self.config.connect_timeout) {
            return Err(HostError::NotConnected);
        }
        let mut stable = Duration::ZERO;
        let mut total = Duration::ZERO;
        loop {
            let st = p.port_status();
            if st.connect_change {
                p.clear_connect_change();
                stable = Duration::ZERO;
            } else if st.connected {
                stable += DEBOUNCE_STEP;
                if stable >= DEBOUNCE_STABLE {
                    return st.speed.ok_or(HostError::NotConnected);
                }
            }
            if total >= DEBOUNCE_TIMEOUT {
                return Err(HostError::NotConnected);
            }
            p.sleep(DEBOUNCE_STEP);
            total += DEBOUNCE_STEP;
        }
    }

    /// `hub_port_reset` + `hub_port_wait_reset`: reset, then poll until the port is enabled;
    /// returns the speed.
    ///
    /// # Errors
    /// [`HostError::ResetFailed`] when the port is not enabled within 800 ms.
    pub fn port_reset<P: HostPort + ?Sized>(&mut self, p: &mut P) -> Result<Speed, HostError> {
        self.port(p, PortAction::Reset)
            .map_err(|_| HostError::ResetFailed)?;
        let mut waited = Duration::ZERO;
        while waited < RESET_TIMEOUT {
            p.sleep(ROOT_RESET_TIME);
            waited += ROOT_RESET_TIME;
            let st = p.port_status();
            if !st.connected {
                return Err(HostError::NotConnected);
            }
            if !st.resetting && st.enabled {
                // TRSTRCY: reset recovery
                p.sleep(Duration::from_millis(10));
                self.rec.address = 0;
                let speed = st.speed.unwrap_or(Speed::Unknown);
                self.rec.speed = Some(speed);
                return Ok(speed);
            }
        }
        Err(HostError::ResetFailed)
    }

    /// Port suspend (`usb_port_suspend`).
    ///
    /// # Errors
    /// EPIPE at SuperSpeed (dummy's USB 3 root hub).
    pub fn suspend<P: HostPort + ?Sized>(&mut self, p: &mut P) -> Result<(), Errno> {
        self.port(p, PortAction::Suspend)
    }

    /// Port resume: clears the suspend and waits out the 20 ms of resume signalling plus
    /// `USB_RESUME_TIMEOUT`-like slack.
    ///
    /// # Errors
    /// EPIPE at SuperSpeed.
    pub fn resume<P: HostPort + ?Sized>(&mut self, p: &mut P) -> Result<(), Errno> {
        self.port(p, PortAction::Resume)?;
        p.sleep(Duration::from_millis(40));
        Ok(())
    }

    /// Port power off (the device disconnects, contract D30).
    pub fn power_off<P: HostPort + ?Sized>(&mut self, p: &mut P) {
        let _ = self.port(p, PortAction::PowerOff);
    }

    /// Port power on.
    pub fn power_on<P: HostPort + ?Sized>(&mut self, p: &mut P) {
        let _ = self.port(p, PortAction::PowerOn);
    }

    // ----------------------------------------------------------------------------------------
    // Enumeration

    /// `get_bMaxPacketSize0`: reads the first `size` bytes of the device descriptor, up to
    /// three times; returns bMaxPacketSize0.
    fn get_maxpacket0<P: HostPort + ?Sized>(
        &mut self,
        p: &mut P,
        size: u16,
        first_time: bool,
        speed: Speed,
    ) -> Result<u8, Errno> {
        let mut rc = Err(Errno::EPROTO);
        for _ in 0..GET_MAXPACKET0_TRIES {
            let r = self.control_in(p, 0, 6, u16::from(USB_DT_DEVICE) << 8, 0, size);
            let (ty, mp) = match &r {
                Ok(d) => (
                    d.get(1).copied().unwrap_or(0),
                    d.get(7).copied().unwrap_or(0),
                ),
                Err(_) => (0, 0),
            };
            rc = match (r, mp) {
                (_, 8 | 16 | 32 | 64 | 9) if ty == USB_DT_DEVICE => Ok(mp),
                (Err(e), _) => Err(e),
                (Ok(_), _) => Err(Errno::EPROTO),
            };
            if rc.is_ok() || (rc == Err(Errno::ETIMEDOUT) && first_time && speed > Speed::Full) {
                break;
            }
        }
        rc
    }

    /// `hub_set_address`: SET_ADDRESS, up to twice with 200 ms between.
    fn set_address<P: HostPort + ?Sized>(&mut self, p: &mut P) -> Result<(), Errno> {
        let devnum = self.config.devnum;
        let mut r = Err(Errno::EINVAL);
        for i in 0..SET_ADDRESS_TRIES {
            if i > 0 {
                p.sleep(Duration::from_millis(200));
            }
            r = self.control_out(p, 0, 5, u16::from(devnum), 0, &[]);
            if r.is_ok() {
                self.rec.address = devnum;
                break;
            }
        }
        r
    }

    /// Enumerates the connected device as Linux does (see the module doc); what it learns is
    /// in [`Host::recording`].
    ///
    /// # Errors
    /// The first failure Linux would give up on.
    pub fn enumerate<P: HostPort + ?Sized>(&mut self, p: &mut P) -> Result<(), HostError> {
        self.forget();
        self.wait_connect(p)?;
        let speed = self.port_reset(p)?;
        // hub_port_init: the initial ep0 maxpacket guess
        let guess: u16 = match speed {
            Speed::Super | Speed::SuperPlus => 512,
            Speed::Low => 8,
            _ => 64,
        };
        self.rec.ep0_maxpacket = guess;
        let new_scheme = speed < Speed::Super;
        let mut maxp0: Result<u8, Errno> = Err(Errno::EPROTO);
        let mut result: Result<(), HostError> = Ok(());
        for retries in 0..GET_DESCRIPTOR_TRIES {
            if retries > 0 {
                p.sleep(Duration::from_millis(100));
            }
            if new_scheme {
                maxp0 = self.get_maxpacket0(p, 64, retries == 0, speed);
                // contract D28: the second reset of the new scheme
                self.port_reset(p)?;
                if let Err(e) = maxp0 {
                    result = Err(HostError::Transfer {
                        stage: "device descriptor read/64",
                        errno: e,
                    });
                    continue;
                }
            }
            if let Err(e) = self.set_address(p) {
                return Err(HostError::Transfer {
                    stage: "SET_ADDRESS",
                    errno: e,
                });
            }
            p.sleep(Duration::from_millis(10));
            if new_scheme {
                result = Ok(());
                break;
            }
            maxp0 = self.get_maxpacket0(p, 8, retries == 0, speed);
            match maxp0 {
                Err(e) => {
                    result = Err(HostError::Transfer {
                        stage: "device descriptor read/8",
                        errno: e,
                    })
                }
                Ok(_) => {
                    // usb_set_isoch_delay: SuperSpeed only, failure ignored
                    let _ = self.control_out(p, 0, 0x31, 0, 0, &[]);
                    result = Ok(());
                    break;
                }
            }
        }
        result?;
        let maxp0 = maxp0.map_err(|e| HostError::Transfer {
            stage: "device descriptor",
            errno: e,
        })?;
        // check the ep0 maxpacket guess against the descriptor
        let i: u16 = if speed >= Speed::Super {
            if maxp0 <= 16 {
                1 << maxp0
            } else {
                0
            }
        } else {
            u16::from(maxp0)
        };
        if i != guess {
            let ok = match speed {
                Speed::Full | Speed::High => matches!(i, 8 | 16 | 32 | 64),
                s => s >= Speed::Super && i > 0,
            };
            if !ok {
                return Err(HostError::Invalid {
                    stage: "ep0 maxpacket",
                    reason: format!("invalid bMaxPacketSize0 {maxp0}"),
                });
            }
            self.rec.ep0_maxpacket = i;
        }
        // usb_get_device_descriptor: exactly 18 bytes
        let dev =
            self.get_descriptor(p, USB_DT_DEVICE, 0, 18)
                .map_err(|e| HostError::Transfer {
                    stage: "device descriptor read/all",
                    errno: e,
                })?;
        if dev.len() != 18 {
            return Err(HostError::Transfer {
                stage: "device descriptor read/all",
                errno: Errno(90), // EMSGSIZE
            });
        }
        self.rec.device = Some(dev.clone());
        let bcd_usb = u16::from_le_bytes([dev[2], dev[3]]);
        if speed >= Speed::Super && bcd_usb < 0x0300 {
            return Err(HostError::Invalid {
                stage: "device descriptor",
                reason: format!("bcdUSB {bcd_usb:04x} at SuperSpeed (Linux warm-resets)"),
            });
        }
        if bcd_usb >= 0x0201 {
            self.read_bos(p);
        }
        // hub_port_connect: full-speed devices that could do better
        if bcd_usb >= 0x0200 && speed == Speed::Full {
            if let Ok(q) = self.get_descriptor(p, USB_DT_DEVICE_QUALIFIER, 0, 10) {
                if q.len() == 10 {
                    self.rec.qualifier = Some(q);
                }
            }
        }
        // usb_enumerate_device
        self.read_configurations(p, dev[17])?;
        if self.config.read_strings {
            for index in [dev[15], dev[14], dev[16]] {
                self.cache_string(p, index);
            }
        }
        if self.config.set_configuration {
            if let Some(value) = self.choose_configuration(&dev) {
                self.control_out(p, 0, 9, u16::from(value), 0, &[])
                    .map_err(|e| HostError::Transfer {
                        stage: "SET_CONFIGURATION",
                        errno: e,
                    })?;
                self.rec.configuration = Some(value);
                if self.config.read_strings {
                    self.read_config_strings(p, value);
                }
            }
        }
        Ok(())
    }

    /// `usb_get_bos_descriptor`: 5 bytes, then wTotalLength. Failures are not fatal.
    fn read_bos<P: HostPort + ?Sized>(&mut self, p: &mut P) {
        let Ok(head) = self.get_descriptor(p, USB_DT_BOS, 0, 5) else {
            return;
        };
        if head.len() < 5 || head[0] < 5 {
            return;
        }
        let total = u16::from_le_bytes([head[2], head[3]]);
        if total < 5 {
            return;
        }
        if let Ok(full) = self.get_descriptor(p, USB_DT_BOS, 0, total) {
            self.rec.bos = Some(full);
        }
    }

    /// `usb_get_configuration`: for each configuration, 9 bytes then the full length.
    fn read_configurations<P: HostPort + ?Sized>(
        &mut self,
        p: &mut P,
        num: u8,
    ) -> Result<(), HostError> {
        let ncfg = usize::from(num).min(USB_MAXCONFIG);
        if ncfg < 1 {
            return Err(HostError::Invalid {
                stage: "configurations",
                reason: "no configurations".into(),
            });
        }
        for cfgno in 0..ncfg {
            let head = self
                .get_descriptor(p, USB_DT_CONFIG, cfgno as u8, 9)
                .map_err(|e| HostError::Transfer {
                    stage: "config descriptor",
                    errno: e,
                })?;
            if head.len() < 4 {
                return Err(HostError::Invalid {
                    stage: "config descriptor",
                    reason: format!("{} bytes", head.len()),
                });
            }
            let total = u16::from_le_bytes([head[2], head[3]]).max(9);
            let full = self
                .get_descriptor(p, USB_DT_CONFIG, cfgno as u8, total)
                .map_err(|e| HostError::Transfer {
                    stage: "config descriptor (full)",
                    errno: e,
                })?;
            self.rec.configs.push(full);
        }
        Ok(())
    }

    /// `usb_choose_configuration` (power budget, then the first non-vendor one).
    fn choose_configuration(&self, dev: &[u8]) -> Option<u8> {
        let speed = self.rec.speed.unwrap_or(Speed::High);
        let (budget, unit) = if speed >= Speed::Super {
            (900, 8)
        } else {
            (500, 2)
        };
        let mut best = None;
        for cfg in &self.rec.configs {
            if cfg.len() < 9 {
                continue;
            }
            if u32::from(cfg[8]) * unit > budget {
                continue; // draws too much bus current
            }
            let first_intf = Descriptors::new(cfg)
                .find(|d| d.descriptor_type() == USB_DT_INTERFACE)
                .map(|d| d.as_bytes().to_vec());
            let vendor_intf = first_intf
                .as_ref()
                .and_then(|d| d.get(5).copied())
                .is_some_and(|c| c == USB_CLASS_VENDOR_SPEC);
            if dev[4] != USB_CLASS_VENDOR_SPEC && first_intf.is_some() && !vendor_intf {
                return Some(cfg[5]);
            }
            best = best.or(Some(cfg[5]));
        }
        best
    }

    /// iConfiguration of the chosen configuration, then iInterface of each interface's
    /// first altsetting (`usb_set_configuration`, `usb_create_sysfs_intf_files`).
    fn read_config_strings<P: HostPort + ?Sized>(&mut self, p: &mut P, value: u8) {
        let Some(cfg) = self
            .rec
            .configs
            .iter()
            .find(|c| c.len() >= 9 && c[5] == value)
            .cloned()
        else {
            return;
        };
        self.cache_string(p, cfg[6]);
        let mut seen = Vec::new();
        for d in Descriptors::new(&cfg) {
            let b = d.as_bytes();
            if d.descriptor_type() == USB_DT_INTERFACE
                && b.len() >= 9
                && b[3] == 0
                && !seen.contains(&b[2])
            {
                seen.push(b[2]);
                self.cache_string(p, b[8]);
            }
        }
    }

    /// `usb_cache_string` → `usb_string`: the language table once, then the string, each
    /// with a 255-byte read (then 2 bytes and bLength when that fails).
    fn cache_string<P: HostPort + ?Sized>(&mut self, p: &mut P, index: u8) {
        if index == 0 || self.rec.strings.contains_key(&index) {
            return;
        }
        let langid = match self.langid {
            Some(l) => l,
            None => {
                let l = match self.string_sub(p, 0, 0) {
                    Ok(d) if d.len() >= 4 => {
                        self.rec.languages = Some(d.clone());
                        Ok(u16::from_le_bytes([d[2], d[3]]))
                    }
                    // malformed but present: English (usb_get_langid)
                    Ok(_) | Err(Errno::ENODATA) => Ok(0x0409),
                    Err(e) => Err(e),
                };
                self.langid = Some(l);
                l
            }
        };
        let Ok(langid) = langid else {
            return;
        };
        if let Ok(d) = self.string_sub(p, langid, index) {
            self.rec.strings.insert(index, d);
        }
    }

    /// `usb_string_sub`.
    fn string_sub<P: HostPort + ?Sized>(
        &mut self,
        p: &mut P,
        langid: u16,
        index: u8,
    ) -> Result<Vec<u8>, Errno> {
        let mut r = self.get_string(p, langid, index, 255);
        if !matches!(&r, Ok(d) if d.len() >= 2) {
            r = self.get_string(p, langid, index, 2);
            if let Ok(d) = &r {
                if d.len() == 2 {
                    let len = u16::from(d[0]);
                    r = self.get_string(p, langid, index, len);
                }
            }
        }
        match r {
            Ok(mut d) if d.len() >= 2 => {
                // extra junk at the end: trust a smaller bLength; whole UTF-16 units only
                let mut n = d.len().min(usize::from(d[0]));
                n -= n & 1;
                d.truncate(n);
                if n < 2 {
                    Err(Errno::EINVAL)
                } else {
                    Ok(d)
                }
            }
            Ok(_) => Err(Errno::EINVAL),
            Err(e) => Err(e),
        }
    }

    /// `usb_get_string`: up to three tries, retrying on 0 bytes and stalls.
    fn get_string<P: HostPort + ?Sized>(
        &mut self,
        p: &mut P,
        langid: u16,
        index: u8,
        size: u16,
    ) -> Result<Vec<u8>, Errno> {
        if size == 0 {
            return Err(Errno::EINVAL);
        }
        let mut r = Err(Errno::EINVAL);
        for _ in 0..3 {
            r = self.control_in(
                p,
                0,
                6,
                u16::from(USB_DT_STRING) << 8 | u16::from(index),
                langid,
                size,
            );
            match &r {
                Ok(d) if d.is_empty() => continue,
                Err(Errno::EPIPE) => continue,
                Ok(d) if d.len() > 1 && d[1] != USB_DT_STRING => {
                    r = Err(Errno::ENODATA);
                    continue;
                }
                _ => break,
            }
        }
        r
    }

    /// A reset of an enumerated device as `usb_reset_and_verify_device` does it: the port
    /// reset(s) and address of [`Host::enumerate`], the device descriptor re-read and
    /// compared, then the configuration set again.
    ///
    /// # Errors
    /// As [`Host::enumerate`]; `Invalid` when the descriptors changed.
    pub fn reset_device<P: HostPort + ?Sized>(&mut self, p: &mut P) -> Result<(), HostError> {
        let before = self.rec.device.clone();
        let configuration = self.rec.configuration;
        let speed = self.port_reset(p)?;
        if speed < Speed::Super {
            let _ = self.get_maxpacket0(p, 64, true, speed);
            self.port_reset(p)?;
        }
        self.set_address(p).map_err(|e| HostError::Transfer {
            stage: "SET_ADDRESS",
            errno: e,
        })?;
        p.sleep(Duration::from_millis(10));
        let dev =
            self.get_descriptor(p, USB_DT_DEVICE, 0, 18)
                .map_err(|e| HostError::Transfer {
                    stage: "device descriptor read/all",
                    errno: e,
                })?;
        if Some(&dev) != before.as_ref() {
            return Err(HostError::Invalid {
                stage: "reset",
                reason: "device descriptor changed".into(),
            });
        }
        if let Some(value) = configuration {
            self.control_out(p, 0, 9, u16::from(value), 0, &[])
                .map_err(|e| HostError::Transfer {
                    stage: "SET_CONFIGURATION",
                    errno: e,
                })?;
        }
        Ok(())
    }
}

/// The 8 SETUP bytes.
pub fn setup(request_type: u8, request: u8, value: u16, index: u16, length: u16) -> [u8; 8] {
    ControlRequest {
        request_type,
        request,
        value,
        index,
        length,
    }
    .to_bytes()
}

impl Recording {
    /// The manufacturer, product and serial strings as text, if read.
    pub fn string(&self, index: u8) -> Option<String> {
        let d = self.strings.get(&index)?;
        let units: Vec<u16> = d[2..]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        Some(String::from_utf16_lossy(&units))
    }

    /// What the host saw, printed like `lsusb -v`.
    pub fn lsusb(&self) -> String {
        let mut out = String::new();
        let Some(dev) = &self.device else {
            out.push_str("(no device descriptor read)\n");
            return out;
        };
        let (vid, pid) = if dev.len() >= 12 {
            (
                u16::from_le_bytes([dev[8], dev[9]]),
                u16::from_le_bytes([dev[10], dev[11]]),
            )
        } else {
            (0, 0)
        };
        let name = |i: usize| {
            dev.get(i)
                .and_then(|&ix| self.string(ix))
                .unwrap_or_default()
        };
        let _ = writeln!(
            out,
            "Bus 001 Device {:03}: ID {vid:04x}:{pid:04x} {} {}",
            self.address,
            name(14),
            name(15)
        );
        if let Some(s) = self.speed {
            let _ = writeln!(
                out,
                "Negotiated speed: {} (ep0 maxpacket {})",
                s.as_str(),
                self.ep0_maxpacket
            );
        }
        let _ = write!(out, "{}", Dump(dev));
        for (i, cfg) in self.configs.iter().enumerate() {
            let mark = if self.configuration.is_some() && cfg.get(5).copied() == self.configuration
            {
                " (active)"
            } else {
                ""
            };
            let _ = writeln!(out, "  -- configuration index {i}{mark}");
            // MaxPower's unit depends on the device's bcdUSB (x8 at SuperSpeed), as in lsusb
            let bcd = dev
                .get(2..4)
                .map_or(0, |b| u16::from_le_bytes([b[0], b[1]]));
            let _ = write!(out, "{}", Dump::with_usb_version(cfg, bcd));
        }
        if let Some(b) = &self.bos {
            let _ = writeln!(out, "Binary Object Store Descriptor:");
            let _ = write!(out, "{}", Dump(b));
        }
        if let Some(q) = &self.qualifier {
            let _ = writeln!(out, "Device Qualifier (for other device speed):");
            let _ = write!(out, "{}", Dump(q));
        }
        for i in self.strings.keys() {
            let _ = writeln!(
                out,
                "  String {i}: {:?}",
                self.string(*i).unwrap_or_default()
            );
        }
        match self.configuration {
            Some(v) => {
                let _ = writeln!(out, "Device Status: configured (bConfigurationValue {v})");
            }
            None => {
                let _ = writeln!(out, "Device Status: not configured");
            }
        }
        out
    }

    /// Every URB and port action, one line each, like usbmon's text format.
    pub fn transfer_log(&self) -> String {
        let mut out = String::new();
        for e in &self.events {
            match e {
                HostEvent::Port(a) => {
                    let _ = writeln!(out, "port {a:?}");
                }
                HostEvent::Urb(t) => {
                    let dir = if t.endpoint & 0x80 != 0 { 'i' } else { 'o' };
                    let _ = write!(
                        out,
                        "{:>12} {}{}:{} ",
                        t.completed,
                        t.kind,
                        dir,
                        t.endpoint & 0x7f
                    );
                    match t.status {
                        Ok(()) => out.push('0'),
                        Err(e) => {
                            let _ = write!(out, "-{}", e.name().unwrap_or("E?"));
                        }
                    }
                    let _ = write!(out, " {}/{}", t.actual, t.length);
                    if let Some(s) = t.setup {
                        let _ = write!(out, " s [{}]", ControlRequest::from_bytes(s));
                    }
                    if !t.data.is_empty() {
                        out.push_str(" =");
                        for b in &t.data {
                            let _ = write!(out, " {b:02x}");
                        }
                    }
                    out.push('\n');
                }
            }
        }
        out
    }

    /// The control SETUPs the host sent, in order (for sequence checks such as D28).
    pub fn control_setups(&self) -> Vec<[u8; 8]> {
        self.events
            .iter()
            .filter_map(|e| match e {
                HostEvent::Urb(t) => t.setup,
                _ => None,
            })
            .collect()
    }
}
