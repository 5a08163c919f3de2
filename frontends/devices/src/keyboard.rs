//! A HID boot keyboard that types a given text.
//!
//! One interface (class HID, subclass boot, protocol keyboard) with one interrupt IN endpoint
//! of 8-byte packets. Each character becomes a key press report (modifier byte with Left Shift
//! when needed, usage code) followed by a release report (HID 1.11 appendix B.1, HID Usage
//! Tables §10). Typing starts at SET_CONFIGURATION; a bus reset stops it and the next
//! SET_CONFIGURATION continues from the first character not yet typed. Reports are written only
//! as fast as the host polls (an IN write blocks until the host reads it).
//!
//! Polling is not reading, though: Linux's usbhid polls as soon as the first reader opens the
//! input device (the VT keyboard handler, at connect) and drops the reports of its first 50 ms
//! (`usbhid_open`), so a program that opens evdev later may see nothing. With
//! [`KeyboardConfig::wait_for_led`] typing waits for a sign from the host side: the first
//! SET_REPORT (LED output report) with Num Lock set. The host's own SET_REPORT at connect
//! carries 0 and does not count; once given, the sign holds for later configurations.
//!
//! Answers GET_DESCRIPTOR(HID 0x21, REPORT 0x22) to the interface and the class requests
//! GET_REPORT, SET_REPORT (the LED byte), GET_IDLE, SET_IDLE, GET_PROTOCOL, SET_PROTOCOL.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use rawgadget::usb::class::hid::*;
use rawgadget::usb::class::USB_CLASS_HID;
use rawgadget::usb::descriptor::attributes::{USB_CONFIG_ATT_ONE, USB_CONFIG_ATT_WAKEUP};
use rawgadget::usb::setup::request::*;
use rawgadget::usb::{ConfigurationBuilder, DeviceDescriptor, HidDescriptor, Repr};
use rawgadget::{
    ControlRequest, Direction, Endpoint, EndpointAddress, EndpointAllocator, EndpointDescriptor,
    Gadget, Speed, TransferType,
};
use tracing::{debug, info, warn};

use crate::device::{
    add_endpoint, assign_endpoint, fixed_strings, interrupt_interval, ControlReply, Device,
    DeviceError, Function,
};

/// Left Shift in the modifier byte.
pub const MOD_LEFT_SHIFT: u8 = 0x02;

/// The boot keyboard report descriptor of HID 1.11 appendix E.6 (63 bytes): 8 modifier bits,
/// a reserved byte, 5 LED output bits plus 3 padding bits, six key codes.
pub const REPORT_DESCRIPTOR: [u8; 63] = [
    0x05, 0x01, // Usage Page (Generic Desktop)
    0x09, 0x06, // Usage (Keyboard)
    0xa1, 0x01, // Collection (Application)
    0x05, 0x07, //   Usage Page (Key Codes)
    0x19, 0xe0, //   Usage Minimum (224)
    0x29, 0xe7, //   Usage Maximum (231)
    0x15, 0x00, //   Logical Minimum (0)
    0x25, 0x01, //   Logical Maximum (1)
    0x75, 0x01, //   Report Size (1)
    0x95, 0x08, //   Report Count (8)
    0x81, 0x02, //   Input (Data, Variable, Absolute): modifier byte
    0x95, 0x01, //   Report Count (1)
    0x75, 0x08, //   Report Size (8)
    0x81, 0x01, //   Input (Constant): reserved byte
    0x95, 0x05, //   Report Count (5)
    0x75, 0x01, //   Report Size (1)
    0x05, 0x08, //   Usage Page (LEDs)
    0x19, 0x01, //   Usage Minimum (1)
    0x29, 0x05, //   Usage Maximum (5)
    0x91, 0x02, //   Output (Data, Variable, Absolute): LED report
    0x95, 0x01, //   Report Count (1)
    0x75, 0x03, //   Report Size (3)
    0x91, 0x01, //   Output (Constant): LED report padding
    0x95, 0x06, //   Report Count (6)
    0x75, 0x08, //   Report Size (8)
    0x15, 0x00, //   Logical Minimum (0)
    0x25, 0x65, //   Logical Maximum (101)
    0x05, 0x07, //   Usage Page (Key Codes)
    0x19, 0x00, //   Usage Minimum (0)
    0x29, 0x65, //   Usage Maximum (101)
    0x81, 0x00, //   Input (Data, Array): key array (6 bytes)
    0xc0, //       End Collection
];

/// The 8-byte boot report for one key: `[modifiers, reserved, key, 0, 0, 0, 0, 0]`.
pub type Report = [u8; 8];

/// The (modifier, usage) pair that types `c` on a US layout, `None` for characters a US
/// keyboard cannot type.
pub fn key_for(c: char) -> Option<(u8, u8)> {
    const SHIFT: u8 = MOD_LEFT_SHIFT;
    let plain = |u: u8| Some((0, u));
    let shifted = |u: u8| Some((SHIFT, u));
    match c {
        'a'..='z' => plain(0x04 + (c as u8 - b'a')),
        'A'..='Z' => shifted(0x04 + (c as u8 - b'A')),
        '1'..='9' => plain(0x1e + (c as u8 - b'1')),
        '0' => plain(0x27),
        '\n' => plain(0x28),
        '\x1b' => plain(0x29),
        '\x08' => plain(0x2a),
        '\t' => plain(0x2b),
        ' ' => plain(0x2c),
        '-' => plain(0x2d),
        '=' => plain(0x2e),
        '[' => plain(0x2f),
        ']' => plain(0x30),
        '\\' => plain(0x31),
        ';' => plain(0x33),
        '\'' => plain(0x34),
        '`' => plain(0x35),
        ',' => plain(0x36),
        '.' => plain(0x37),
        '/' => plain(0x38),
        '!' => shifted(0x1e),
        '@' => shifted(0x1f),
        '#' => shifted(0x20),
        '$' => shifted(0x21),
        '%' => shifted(0x22),
        '^' => shifted(0x23),
        '&' => shifted(0x24),
        '*' => shifted(0x25),
        '(' => shifted(0x26),
        ')' => shifted(0x27),
        '_' => shifted(0x2d),
        '+' => shifted(0x2e),
        '{' => shifted(0x2f),
        '}' => shifted(0x30),
        '|' => shifted(0x31),
        ':' => shifted(0x33),
        '"' => shifted(0x34),
        '~' => shifted(0x35),
        '<' => shifted(0x36),
        '>' => shifted(0x37),
        '?' => shifted(0x38),
        _ => None,
    }
}

/// The reports that type `text`: press then release for every character.
///
/// # Errors
/// The first character a US keyboard cannot type, with its position.
pub fn text_to_reports(text: &str) -> Result<Vec<Report>, DeviceError> {
    let mut v = Vec::with_capacity(text.len() * 2);
    for (i, c) in text.chars().enumerate() {
        let (m, u) = key_for(c).ok_or_else(|| {
            DeviceError::Config(format!("character {c:?} at position {i} has no US key"))
        })?;
        v.push([m, 0, u, 0, 0, 0, 0, 0]);
        v.push([0; 8]);
    }
    Ok(v)
}

/// State shared between the ep0 side, the typing thread and the program.
#[derive(Debug, Default)]
pub struct KeyboardState {
    /// Reports delivered so far (press and release count separately).
    pub reports_sent: AtomicUsize,
    /// Total reports to send.
    pub reports_total: usize,
    /// The LED byte of the last SET_REPORT (bit 0 Num Lock, 1 Caps Lock, 2 Scroll Lock).
    pub leds: AtomicU8,
    /// The last report sent (GET_REPORT answers it).
    pub last_report: Mutex<Report>,
    /// Set once every report has been delivered.
    pub done: AtomicBool,
    /// Set once typing may begin: at once without `wait_for_led`, else at the first
    /// SET_REPORT with Num Lock on.
    pub typing_allowed: AtomicBool,
}

impl KeyboardState {
    pub fn is_done(&self) -> bool {
        self.done.load(Ordering::SeqCst)
    }
}

/// Settings of the keyboard.
#[derive(Clone, Debug, Default)]
pub struct KeyboardConfig {
    /// What to type (US layout, ASCII).
    pub text: String,
    /// Start typing only at the first SET_REPORT (LEDs) with Num Lock (bit 0) set, instead of
    /// at SET_CONFIGURATION. See the module doc.
    pub wait_for_led: bool,
}

/// Num Lock in the LED output report (HID Usage Tables §11, LED usage 1 is bit 0).
pub const LED_NUM_LOCK: u8 = 0x01;

/// Builds the keyboard device and its shared state.
///
/// # Errors
/// A character of the text that a US keyboard cannot type.
pub fn keyboard(config: KeyboardConfig) -> Result<(Device, Arc<KeyboardState>), DeviceError> {
    let reports = text_to_reports(&config.text)?;
    let state = Arc::new(KeyboardState {
        reports_total: reports.len(),
        typing_allowed: AtomicBool::new(!config.wait_for_led),
        ..Default::default()
    });
    let f = HidKeyboard {
        interface: 0,
        reports: Arc::new(reports),
        state: state.clone(),
        ep_in: EndpointAddress::new(0, Direction::In),
        idle: 0,
        protocol: 1,
        enabled_in: None,
        worker: None,
    };
    let (strings, [manufacturer, product, serial]) =
        fixed_strings(["rawgadget", "Keyboard", "0001"]);
    let device = Device {
        // Class per interface. Linux Foundation "Multifunction Composite Gadget", the configfs
        // examples' IDs.
        descriptor: DeviceDescriptor::builder(0x1d6b, 0x0104)
            .strings(manufacturer, product, serial)
            .build(),
        config_string: 0,
        config_attributes: USB_CONFIG_ATT_ONE | USB_CONFIG_ATT_WAKEUP,
        max_power_ma: 100,
        strings,
        functions: vec![Box::new(f)],
    };
    Ok((device, state))
}

/// The HID function of the keyboard.
pub struct HidKeyboard {
    interface: u8,
    reports: Arc<Vec<Report>>,
    state: Arc<KeyboardState>,
    ep_in: EndpointAddress,
    /// SET_IDLE duration (4 ms units; 0 = only on change).
    idle: u8,
    /// 0 boot, 1 report (the default after reset, HID 1.11 §7.2.6).
    protocol: u8,
    /// The interrupt IN endpoint while configured.
    enabled_in: Option<Endpoint>,
    /// The typing thread, once started.
    worker: Option<JoinHandle<()>>,
}

impl HidKeyboard {
    fn endpoint(&self, speed: Speed) -> EndpointDescriptor {
        // Poll every 8 ms.
        let interval = interrupt_interval(speed, 8);
        EndpointDescriptor::new(self.ep_in, TransferType::Interrupt, 8, interval)
    }

    /// The HID descriptor, in the configuration and answered to GET_DESCRIPTOR(HID).
    fn hid_descriptor() -> HidDescriptor {
        HidDescriptor::with_report(REPORT_DESCRIPTOR.len() as u16)
    }

    /// Starts the typing thread if configured, allowed and not already started.
    fn start_typing(&mut self) -> Result<(), DeviceError> {
        let Some(ep) = &self.enabled_in else {
            return Ok(());
        };
        if self.worker.is_some() || !self.state.typing_allowed.load(Ordering::SeqCst) {
            return Ok(());
        }
        let (reports, state, ep) = (self.reports.clone(), self.state.clone(), ep.clone());
        let thread = std::thread::Builder::new()
            .name("keyboard".into())
            .spawn(move || type_reports(&ep, &reports, &state))
            .map_err(|e| DeviceError::Config(format!("cannot spawn the typing thread: {e}")))?;
        self.worker = Some(thread);
        Ok(())
    }

    fn stop(&mut self) {
        let Some(ep) = self.enabled_in.take() else {
            return;
        };
        ep.cancel();
        if let Some(thread) = self.worker.take() {
            if thread.join().is_err() {
                warn!("typing thread panicked");
            }
        }
        if let Err(e) = ep.disable() {
            debug!(error = %e, "disable");
        }
    }
}

fn type_reports(ep: &Endpoint, reports: &[Report], state: &KeyboardState) {
    loop {
        let i = state.reports_sent.load(Ordering::SeqCst);
        let Some(report) = reports.get(i) else {
            state.done.store(true, Ordering::SeqCst);
            info!(reports = reports.len(), "text typed");
            return;
        };
        match ep.write(report) {
            Ok(_) => {
                *state.last_report.lock().unwrap_or_else(|p| p.into_inner()) = *report;
                state.reports_sent.store(i + 1, Ordering::SeqCst);
            }
            Err(e) if e.is_interrupted() || e.is_shutdown() => {
                debug!(error = %e, sent = i, "typing paused");
                return;
            }
            Err(e) => {
                debug!(error = %e, "report write failed, retrying");
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
    }
}

impl Function for HidKeyboard {
    fn name(&self) -> &'static str {
        "hid keyboard"
    }

    fn assign_endpoints(&mut self, alloc: &mut EndpointAllocator) -> Result<(), DeviceError> {
        self.ep_in = assign_endpoint(
            alloc,
            Direction::In,
            TransferType::Interrupt,
            8,
            "interrupt IN",
        )?;
        Ok(())
    }

    fn descriptors(&self, config: &mut ConfigurationBuilder, speed: Speed) {
        let mut interface = config.interface();
        debug_assert_eq!(interface.number(), self.interface);
        let mut setting = interface.alt_setting(
            USB_CLASS_HID,
            USB_INTERFACE_SUBCLASS_BOOT,
            USB_INTERFACE_PROTOCOL_KEYBOARD,
        );
        // HID 1.11 §7.1: the HID descriptor goes between the interface and its endpoints.
        setting.hid(&Self::hid_descriptor());
        add_endpoint(&mut setting, &self.endpoint(speed), speed);
    }

    fn extra_descriptors(&self) -> Vec<(&'static str, Vec<u8>)> {
        vec![("HID report descriptor", REPORT_DESCRIPTOR.to_vec())]
    }

    fn control(&mut self, _gadget: &Gadget, setup: &ControlRequest) -> Option<ControlReply> {
        if setup.index != u16::from(self.interface) {
            return None;
        }
        let r = match (setup.request_type, setup.request) {
            (0x81, USB_REQ_GET_DESCRIPTOR) => match setup.value_high() {
                HID_DT_HID => ControlReply::In(Self::hid_descriptor().to_vec()),
                HID_DT_REPORT => ControlReply::In(REPORT_DESCRIPTOR.to_vec()),
                _ => return None,
            },
            (0x81, USB_REQ_GET_INTERFACE) => ControlReply::In(vec![0]),
            (0x01, USB_REQ_SET_INTERFACE) if setup.value == 0 => ControlReply::Accept,
            (0xa1, HID_REQ_GET_REPORT) => ControlReply::In(
                self.state
                    .last_report
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .to_vec(),
            ),
            (0xa1, HID_REQ_GET_IDLE) => ControlReply::In(vec![self.idle]),
            (0xa1, HID_REQ_GET_PROTOCOL) => ControlReply::In(vec![self.protocol]),
            (0x21, HID_REQ_SET_REPORT) => ControlReply::Accept,
            (0x21, HID_REQ_SET_IDLE) => {
                self.idle = setup.value_high();
                ControlReply::Accept
            }
            (0x21, HID_REQ_SET_PROTOCOL) if setup.value <= 1 => {
                self.protocol = setup.value as u8;
                ControlReply::Accept
            }
            _ => return None,
        };
        Some(r)
    }

    fn control_out_data(&mut self, setup: &ControlRequest, data: &[u8]) {
        if setup.request == HID_REQ_SET_REPORT {
            if let Some(&leds) = data.first() {
                self.state.leds.store(leds, Ordering::SeqCst);
                debug!(leds, "LEDs");
                if leds & LED_NUM_LOCK != 0
                    && !self.state.typing_allowed.swap(true, Ordering::SeqCst)
                {
                    info!("Num Lock on: typing starts");
                }
                if let Err(e) = self.start_typing() {
                    warn!(error = %e, "typing not started");
                }
            }
        }
    }

    fn configure(&mut self, gadget: &Gadget) -> Result<(), DeviceError> {
        self.enabled_in = Some(gadget.enable(&self.endpoint(gadget.speed()))?);
        self.start_typing()
    }

    fn deconfigure(&mut self) {
        self.stop();
        // HID 1.11 §7.2.6: the protocol returns to report protocol after reset.
        self.protocol = 1;
    }
}

impl Drop for HidKeyboard {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Text → boot reports: press (with Left Shift for capitals and symbols), then release.
    #[test]
    fn text_to_boot_reports() {
        let r = text_to_reports("aZ1!\n").unwrap();
        assert_eq!(
            r,
            vec![
                [0, 0, 0x04, 0, 0, 0, 0, 0],
                [0; 8],
                [MOD_LEFT_SHIFT, 0, 0x1d, 0, 0, 0, 0, 0],
                [0; 8],
                [0, 0, 0x1e, 0, 0, 0, 0, 0],
                [0; 8],
                [MOD_LEFT_SHIFT, 0, 0x1e, 0, 0, 0, 0, 0],
                [0; 8],
                [0, 0, 0x28, 0, 0, 0, 0, 0],
                [0; 8],
            ]
        );
        let e = text_to_reports("ok é").unwrap_err();
        assert!(e.to_string().contains("position 3"), "{e}");
    }

    /// Every printable ASCII character has a key, and distinct characters give distinct keys.
    #[test]
    fn printable_ascii_is_complete_and_unambiguous() {
        let mut seen = std::collections::HashMap::new();
        for c in (0x20u8..0x7f).map(char::from).chain(['\n', '\t']) {
            let k = key_for(c).unwrap_or_else(|| panic!("{c:?}"));
            assert!(
                seen.insert(k, c).is_none(),
                "{c:?} collides with {:?}",
                seen[&k]
            );
        }
    }

    #[test]
    fn report_descriptor_is_the_boot_keyboard() {
        assert_eq!(REPORT_DESCRIPTOR.len(), 63);
        assert_eq!(
            &REPORT_DESCRIPTOR[..6],
            &[0x05, 0x01, 0x09, 0x06, 0xa1, 0x01]
        );
        assert_eq!(REPORT_DESCRIPTOR[62], 0xc0);
    }
}
