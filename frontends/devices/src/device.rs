//! A device built from functions, and the ep0 loop that runs it on a [`Gadget`].
//!
//! The split follows embassy-usb: [`Device`] answers the standard requests every device has
//! (descriptors, configuration, status), and each [`Function`] owns some interfaces and answers
//! the requests meant for it, returning `None` for "not mine", so several functions share ep0.
//! A request nobody claims is stalled.

use std::fmt;

use rawgadget::usb::setup::request::*;
use rawgadget::usb::{Direction, RequestType};
use rawgadget::{
    has_in_data_stage, ControlRequest, EndpointAllocator, EpInfo, Event, Gadget, Speed,
};
use tracing::{debug, info, warn};

use crate::desc::{self, dt, DeviceInfo};

/// How a function answers a control request it claims.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum ControlReply {
    /// IN data stage (cut to `wLength` when sent). With `wLength == 0` it is an acknowledge.
    In(Vec<u8>),
    /// Accept an OUT request: the runner reads the `wLength` data bytes (none for a no-data
    /// request, which is then just acknowledged) and hands them to
    /// [`Function::control_out_data`].
    Accept,
    /// Reject: EP0_STALL.
    Stall,
}

/// Errors of a device's own making (not the gadget API's).
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("no free controller endpoint suits the {what} endpoint (see EPS_INFO)")]
    NoEndpoint { what: String },
    #[error(transparent)]
    Gadget(#[from] rawgadget::Error),
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// A part of a device that owns interfaces. See the module doc.
pub trait Function: Send {
    /// A short name for logs.
    fn name(&self) -> &'static str;

    /// Number of interfaces this function declares (numbered from the one it was built with).
    fn num_interfaces(&self) -> u8;

    /// At CONNECT (and for describing without a kernel): pick endpoint numbers from the
    /// controller's EPS_INFO.
    fn assign_endpoints(&mut self, alloc: &mut EndpointAllocator) -> Result<(), DeviceError>;

    /// Interface, class and endpoint descriptors of this function at `speed`.
    fn descriptors(&self, speed: Speed) -> Vec<u8>;

    /// Class descriptors a describer should show besides the configuration (for instance a
    /// HID report descriptor), with a name.
    fn extra_descriptors(&self) -> Vec<(&'static str, Vec<u8>)> {
        Vec::new()
    }

    /// A control request; `None` means "not mine".
    fn control(&mut self, gadget: &Gadget, setup: &ControlRequest) -> Option<ControlReply>;

    /// The OUT data of a request this function accepted.
    fn control_out_data(&mut self, _setup: &ControlRequest, _data: &[u8]) {}

    /// SET_CONFIGURATION with a non-zero value: enable endpoints, start endpoint threads.
    fn configure(&mut self, gadget: &Gadget) -> Result<(), DeviceError>;

    /// Leave the configured state: stop endpoint threads (cancel their transfers) and disable
    /// the endpoints. Called on SET_CONFIGURATION(0), before a new SET_CONFIGURATION, on bus
    /// reset and disconnect, and when the runner stops. Must be harmless when not configured.
    fn deconfigure(&mut self);
}

/// A device: descriptors every device has, plus its functions.
pub struct Device {
    /// Device descriptor fields.
    pub info: DeviceInfo,
    /// `iConfiguration`.
    pub config_string: u8,
    /// `bmAttributes` of the configuration (bit 7 set; 0x40 self-powered, 0x20 remote wakeup).
    pub config_attributes: u8,
    /// `bMaxPower` in 2 mA units; also passed to VBUS_DRAW.
    pub max_power: u8,
    /// String descriptors 1.. (index 0 is the language list).
    pub strings: Vec<String>,
    pub functions: Vec<Box<dyn Function>>,
}

impl fmt::Debug for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Device")
            .field("info", &self.info)
            .field(
                "functions",
                &self.functions.iter().map(|f| f.name()).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// The descriptors of a device at one speed, as data (for printing without a kernel).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DescriptorSet {
    pub speed: Speed,
    pub device: Vec<u8>,
    pub config: Vec<u8>,
    pub qualifier: Option<Vec<u8>>,
    pub other_speed_config: Option<Vec<u8>>,
    pub bos: Option<Vec<u8>>,
    /// `(index, string)` for every string descriptor, index 0 excluded.
    pub strings: Vec<(u8, String)>,
    pub extra: Vec<(&'static str, Vec<u8>)>,
}

impl Device {
    /// `bMaxPacketSize0` at `speed`: 64 up to HS; the exponent 9 (512 bytes) at SS.
    pub fn max_packet0(speed: Speed) -> u8 {
        match speed {
            Speed::Low => 8,
            Speed::Super | Speed::SuperPlus => 9,
            _ => 64,
        }
    }

    fn bcd_usb(&self, speed: Speed) -> u16 {
        match speed {
            Speed::Super | Speed::SuperPlus => self.info.bcd_usb.max(0x0320),
            _ => self.info.bcd_usb,
        }
    }

    /// The device descriptor at `speed`.
    pub fn device_descriptor(&self, speed: Speed) -> [u8; 18] {
        let info = DeviceInfo {
            bcd_usb: self.bcd_usb(speed),
            ..self.info.clone()
        };
        desc::device(&info, Device::max_packet0(speed))
    }

    /// The configuration descriptor bundle at `speed`, typed CONFIG or OTHER_SPEED_CONFIG.
    pub fn config_descriptor(&self, speed: Speed, other_speed: bool) -> Vec<u8> {
        let body: Vec<u8> = self
            .functions
            .iter()
            .flat_map(|f| f.descriptors(speed))
            .collect();
        let n: u8 = self.functions.iter().map(|f| f.num_interfaces()).sum();
        let ty = if other_speed {
            dt::OTHER_SPEED_CONFIG
        } else {
            dt::CONFIG
        };
        desc::config(
            ty,
            n,
            1,
            self.config_string,
            self.config_attributes,
            self.max_power,
            &body,
        )
    }

    /// The device qualifier: only a high-speed device has another speed to describe.
    pub fn qualifier(&self, speed: Speed) -> Option<[u8; 10]> {
        (speed == Speed::High && self.info.bcd_usb >= 0x0200)
            .then(|| desc::qualifier(&self.info, Device::max_packet0(Speed::Full)))
    }

    /// BOS: only when `bcdUSB >= 0x0201` (usbtest case 10 subcase 15 expects a stall below).
    pub fn bos(&self, speed: Speed) -> Option<Vec<u8>> {
        match speed {
            Speed::Super | Speed::SuperPlus => Some(desc::bos_superspeed().to_vec()),
            _ if self.info.bcd_usb >= 0x0201 => Some(desc::bos_usb2_ext().to_vec()),
            _ => None,
        }
    }

    /// String descriptor `index` (0 = language IDs).
    pub fn string(&self, index: u8) -> Option<Vec<u8>> {
        if index == 0 {
            return Some(desc::string_langids().to_vec());
        }
        self.strings
            .get(usize::from(index) - 1)
            .map(|s| desc::string(s))
    }

    /// Assigns endpoint numbers for every function from an EPS_INFO list.
    pub fn assign_endpoints(&mut self, eps: &[EpInfo]) -> Result<(), DeviceError> {
        let mut alloc = EndpointAllocator::new(eps);
        for f in &mut self.functions {
            f.assign_endpoints(&mut alloc)?;
        }
        Ok(())
    }

    /// Every descriptor at `speed` (after [`assign_endpoints`](Self::assign_endpoints)).
    pub fn descriptor_set(&self, speed: Speed) -> DescriptorSet {
        DescriptorSet {
            speed,
            device: self.device_descriptor(speed).to_vec(),
            config: self.config_descriptor(speed, false),
            qualifier: self.qualifier(speed).map(|q| q.to_vec()),
            other_speed_config: self
                .qualifier(speed)
                .map(|_| self.config_descriptor(Speed::Full, true)),
            bos: self.bos(speed),
            strings: (1..=self.strings.len() as u8)
                .map(|i| (i, self.strings[usize::from(i) - 1].clone()))
                .collect(),
            extra: self
                .functions
                .iter()
                .flat_map(|f| f.extra_descriptors())
                .collect(),
        }
    }

    /// GET_DESCRIPTOR to the device: `Some(bytes)` or `None` (stall); other recipients and
    /// types go to the functions.
    fn get_descriptor(&self, speed: Speed, setup: &ControlRequest) -> Option<Option<Vec<u8>>> {
        if setup.request_type != 0x80 {
            return None;
        }
        let index = setup.value_low();
        Some(match setup.value_high() {
            dt::DEVICE => Some(self.device_descriptor(speed).to_vec()),
            dt::CONFIG if index == 0 => Some(self.config_descriptor(speed, false)),
            dt::CONFIG => None,
            dt::STRING => self.string(index),
            dt::DEVICE_QUALIFIER => self.qualifier(speed).map(|q| q.to_vec()),
            dt::OTHER_SPEED_CONFIG if index == 0 => self
                .qualifier(speed)
                .map(|_| self.config_descriptor(Speed::Full, true)),
            dt::OTHER_SPEED_CONFIG => None,
            dt::BOS => self.bos(speed),
            // INTERFACE (must stall: usbtest case 10 subcase 7), ENDPOINT and class types.
            _ => return None,
        })
    }
}

/// Runs a [`Device`] on a [`Gadget`]: RUN, then the event loop of spec Appendix steps 3-6.
pub struct DeviceRunner {
    gadget: Gadget,
    device: Device,
    configuration: u8,
}

/// What [`DeviceRunner::handle_event`] wants the loop to do next.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Flow {
    Continue,
    Stop,
}

impl DeviceRunner {
    pub fn new(gadget: Gadget, device: Device) -> DeviceRunner {
        DeviceRunner {
            gadget,
            device,
            configuration: 0,
        }
    }

    pub fn gadget(&self) -> &Gadget {
        &self.gadget
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The current configuration value (0 = not configured).
    pub fn configuration(&self) -> u8 {
        self.configuration
    }

    /// RUN and handle events until [`Gadget::stop_events`] is called (returns `Ok`) or an
    /// error ends the instance. Endpoints are stopped and disabled before returning.
    pub fn run(&mut self) -> Result<(), DeviceError> {
        self.gadget.run()?;
        info!(udc = self.gadget.udc_device(), "running");
        let r = loop {
            let ev = match self.gadget.next_event() {
                Ok(ev) => ev,
                Err(e) if e.is_interrupted() => break Ok(()),
                Err(e) => break Err(e.into()),
            };
            match self.handle_event(ev) {
                Ok(Flow::Continue) => {}
                Ok(Flow::Stop) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        self.deconfigure();
        r
    }

    fn deconfigure(&mut self) {
        for f in &mut self.device.functions {
            f.deconfigure();
        }
        self.configuration = 0;
    }

    /// Handles one event.
    pub fn handle_event(&mut self, ev: Event) -> Result<Flow, DeviceError> {
        match ev {
            Event::Connect => {
                let eps = self.gadget.eps_info()?;
                debug!(count = eps.len(), "EPS_INFO");
                self.device.assign_endpoints(&eps)?;
            }
            Event::Reset | Event::Disconnect => {
                // spec Appendix step 6; on dummy_udc endpoints stay enabled (contract D27),
                // elsewhere the UDC disabled them: deconfigure covers both.
                debug!(event = ?ev, "bus reset or disconnect: deconfiguring");
                self.deconfigure();
            }
            Event::Suspend | Event::Resume => debug!(event = ?ev, "bus"),
            Event::Unknown { event_type, .. } => debug!(event_type, "unknown event ignored"),
            Event::Control(setup) => {
                if let Err(e) = self.handle_control(&setup) {
                    if e.is_interrupted() {
                        return Ok(Flow::Stop);
                    }
                    // The host may have given up on the request (reset, unlink): not fatal.
                    debug!(?setup, error = %e, "ep0 reply failed");
                }
            }
        }
        Ok(Flow::Continue)
    }

    fn handle_control(&mut self, setup: &ControlRequest) -> rawgadget::Result<()> {
        let reply = match self.standard(setup) {
            Some(r) => r,
            None => {
                let gadget = &self.gadget;
                let claimed = self
                    .device
                    .functions
                    .iter_mut()
                    .enumerate()
                    .find_map(|(i, f)| f.control(gadget, setup).map(|r| (i, r)));
                match claimed {
                    Some((i, ControlReply::Accept))
                        if setup.length > 0 && setup.direction() == Direction::Out =>
                    {
                        // Read the data stage, then hand it to the function that claimed it.
                        let data = self.gadget.ep0_read(usize::from(setup.length))?;
                        self.device.functions[i].control_out_data(setup, &data);
                        return Ok(());
                    }
                    Some((_, r)) => r,
                    None => ControlReply::Stall,
                }
            }
        };
        match reply {
            ControlReply::In(data) if has_in_data_stage(setup) => {
                self.gadget.ep0_reply(setup, &data).map(drop)
            }
            // IN with wLength 0, or an accepted request without data: the status stage.
            ControlReply::In(_) | ControlReply::Accept if !has_in_data_stage(setup) => {
                self.gadget.ep0_ack()
            }
            // Accept on an IN request with a data stage makes no sense: reject it.
            ControlReply::In(_) | ControlReply::Accept | ControlReply::Stall => {
                debug!(?setup, "stall");
                self.gadget.ep0_stall()
            }
        }
    }

    /// Standard requests the device answers itself; `None` passes the request on.
    fn standard(&mut self, setup: &ControlRequest) -> Option<ControlReply> {
        if setup.kind() != RequestType::Standard {
            return None;
        }
        let speed = self.gadget.speed();
        let r = match (setup.request_type, setup.request) {
            (_, USB_REQ_GET_DESCRIPTOR) => match self.device.get_descriptor(speed, setup)? {
                Some(d) => ControlReply::In(d),
                None => ControlReply::Stall,
            },
            (0x00, USB_REQ_SET_CONFIGURATION) => {
                // Before the status stage: enable endpoints, VBUS_DRAW, CONFIGURE (spec
                // Appendix step 5). A repeated SET_CONFIGURATION re-enables cleanly.
                self.deconfigure();
                match setup.value {
                    0 => ControlReply::Accept,
                    1 => match self.configure() {
                        Ok(()) => ControlReply::Accept,
                        Err(e) => {
                            warn!(error = %e, "SET_CONFIGURATION failed");
                            self.deconfigure();
                            ControlReply::Stall
                        }
                    },
                    _ => ControlReply::Stall,
                }
            }
            (0x80, USB_REQ_GET_CONFIGURATION) => ControlReply::In(vec![self.configuration]),
            // Usually answered by the UDC (contract D20); some UDCs forward it.
            (0x80, USB_REQ_GET_STATUS) => {
                ControlReply::In(vec![u8::from(self.device.config_attributes & 0x40 != 0), 0])
            }
            (0x81, USB_REQ_GET_STATUS) | (0x82, USB_REQ_GET_STATUS) => ControlReply::In(vec![0, 0]),
            _ => return None,
        };
        Some(r)
    }

    fn configure(&mut self) -> Result<(), DeviceError> {
        for f in &mut self.device.functions {
            f.configure(&self.gadget)?;
        }
        self.gadget.vbus_draw(u32::from(self.device.max_power))?;
        self.gadget.configure()?;
        self.configuration = 1;
        info!("configured");
        Ok(())
    }
}
