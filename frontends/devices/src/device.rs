//! A device built from functions, and the ep0 loop that runs it on a [`Gadget`].
//!
//! The split follows embassy-usb: [`Device`] answers the standard requests every device has
//! (descriptors, configuration, status), and each [`Function`] owns some interfaces and answers
//! the requests meant for it, returning `None` for "not mine", so several functions share ep0.
//! A request nobody claims is stalled.
//!
//! Descriptors are built with rawgadget-usb's builders (through `rawgadget::usb`), which
//! compute every length and count: [`DeviceDescriptor`], one [`ConfigurationBuilder`] per
//! speed that each function adds its interfaces to, [`BosBuilder`], [`StringTable`].

use std::fmt;

use rawgadget::usb::descriptor::attributes::USB_CONFIG_ATT_SELFPOWER;
use rawgadget::usb::descriptor::capability::*;
use rawgadget::usb::descriptor::types::*;
use rawgadget::usb::setup::request::*;
use rawgadget::usb::speed::{
    default_max_packet_size0, default_usb_version, encode_max_power, max_power_limit_ma,
};
use rawgadget::usb::{
    AltSettingBuilder, BosBuilder, ConfigurationBuilder, DeviceDescriptor, Repr, RequestType,
    SsEndpointCompanionDescriptor, StringTable, SuperSpeedUsbCapability,
};
use rawgadget::{
    has_in_data_stage, ControlRequest, Direction, EndpointAddress, EndpointAllocator,
    EndpointDescriptor, EpInfo, Event, Gadget, Speed, TransferType,
};
use tracing::{debug, info, warn};

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
    /// A function's descriptors do not fit their fields (more than 255 interfaces or
    /// endpoints, a bundle over 65535 bytes).
    #[error("descriptors at {speed:?}: {error}")]
    Descriptor {
        speed: Speed,
        error: rawgadget::usb::Error,
    },
}

/// A part of a device that owns interfaces. See the module doc.
pub trait Function: Send {
    /// A short name for logs.
    fn name(&self) -> &'static str;

    /// At CONNECT (and for describing without a kernel): pick endpoint numbers from the
    /// controller's EPS_INFO.
    fn assign_endpoints(&mut self, alloc: &mut EndpointAllocator) -> Result<(), DeviceError>;

    /// Adds this function's interfaces (with their class and endpoint descriptors) at `speed`.
    /// Interfaces are numbered in the order they are added, from 0 for the first function:
    /// a function built with interface number `n` finds it in `InterfaceBuilder::number`.
    fn descriptors(&self, config: &mut ConfigurationBuilder, speed: Speed);

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

/// Picks a controller endpoint for an endpoint of this kind ([`EndpointAllocator::assign`]) and
/// returns the address it gets; `what` names it in the error.
pub fn assign_endpoint(
    alloc: &mut EndpointAllocator,
    direction: Direction,
    transfer: TransferType,
    max_packet_size: u16,
    what: &str,
) -> Result<EndpointAddress, DeviceError> {
    let mut d = EndpointDescriptor::new(
        EndpointAddress::new(0, direction),
        transfer,
        max_packet_size,
        0,
    );
    alloc
        .assign(&mut d)
        .map(|_| d.address)
        .ok_or_else(|| DeviceError::NoEndpoint { what: what.into() })
}

/// Adds an endpoint, followed at SuperSpeed by its companion (USB 3.2 §9.6.7): no bursts, and
/// for periodic endpoints one packet per service interval.
pub fn add_endpoint(setting: &mut AltSettingBuilder<'_>, ep: &EndpointDescriptor, speed: Speed) {
    setting.endpoint_descriptor(ep);
    if speed >= Speed::Super {
        let bytes_per_interval = match ep.transfer_type() {
            TransferType::Bulk | TransferType::Control => 0,
            TransferType::Interrupt | TransferType::Isochronous => ep.max_packet(),
        };
        setting.ss_companion(&SsEndpointCompanionDescriptor {
            max_burst: 0,
            attributes: 0,
            bytes_per_interval,
        });
    }
}

/// `bInterval` of an interrupt endpoint polled every `period_ms` milliseconds (USB 2.0
/// §9.6.6): in frames at full and low speed, as 2^(bInterval-1) microframes at high speed and
/// above (a period that is not a power of two rounds down).
pub fn interrupt_interval(speed: Speed, period_ms: u8) -> u8 {
    let ms = period_ms.max(1);
    if matches!(speed, Speed::Low | Speed::Full) {
        ms
    } else {
        (u16::from(ms) * 8).ilog2() as u8 + 1
    }
}

/// A string table with `texts` at indexes 1, 2, ... in order, and those indexes.
///
/// For the built-in devices' fixed texts, all far below the 126 UTF-16 units a string
/// descriptor holds: a failure here is a bug in this crate, hence the panic.
pub(crate) fn fixed_strings<const N: usize>(texts: [&str; N]) -> (StringTable, [u8; N]) {
    let mut table = StringTable::new();
    let indexes = texts.map(|t| table.add(t).expect("a built-in string fits its descriptor"));
    (table, indexes)
}

/// A device: descriptors every device has, plus its functions.
pub struct Device {
    /// The device descriptor; [`Device::device_descriptor`] adapts `bMaxPacketSize0` and, at
    /// SuperSpeed, `bcdUSB` to the speed.
    pub descriptor: DeviceDescriptor,
    /// `iConfiguration`.
    pub config_string: u8,
    /// `bmAttributes` of the configuration (bit 7 set; 0x40 self-powered, 0x20 remote wakeup).
    pub config_attributes: u8,
    /// The most current the configuration draws from VBUS, in mA. `bMaxPower` is encoded
    /// from it per speed ([`encode_max_power`]: 2 mA units below SuperSpeed, 8 mA at
    /// SuperSpeed, capped at 500 or 900 mA) and VBUS_DRAW is told the same capped current.
    pub max_power_ma: u16,
    /// String descriptors (US English); index 0 is the language list.
    pub strings: StringTable,
    pub functions: Vec<Box<dyn Function>>,
}

impl fmt::Debug for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Device")
            .field("descriptor", &self.descriptor)
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

/// The speeds INIT accepts, whose configurations [`Device::assign_endpoints`] checks.
const SPEEDS: [Speed; 4] = [Speed::Low, Speed::Full, Speed::High, Speed::Super];

impl Device {
    /// The device descriptor at `speed`: `bMaxPacketSize0` for the speed (8, 64, or 9 meaning
    /// 512 at SuperSpeed), and at SuperSpeed `bcdUSB` at least 3.20.
    pub fn device_descriptor(&self, speed: Speed) -> DeviceDescriptor {
        let mut d = self.descriptor;
        d.max_packet_size0 = default_max_packet_size0(speed);
        if speed >= Speed::Super {
            d.usb_version = d.usb_version.max(default_usb_version(speed));
        }
        d
    }

    /// The configuration bundle at `speed`, typed OTHER_SPEED_CONFIGURATION when
    /// `other_speed` (USB 2.0 §9.6.4: the same layout, another type).
    ///
    /// # Errors
    /// [`DeviceError::Descriptor`] when a function's descriptors do not fit their fields.
    pub fn config_descriptor(
        &self,
        speed: Speed,
        other_speed: bool,
    ) -> Result<Vec<u8>, DeviceError> {
        let mut config = ConfigurationBuilder::new(1)
            .string(self.config_string)
            .attributes(self.config_attributes)
            .max_power(encode_max_power(speed, self.max_power_ma));
        for f in &self.functions {
            f.descriptors(&mut config, speed);
        }
        let mut bundle = config
            .build()
            .map_err(|error| DeviceError::Descriptor { speed, error })?;
        if other_speed {
            bundle[1] = USB_DT_OTHER_SPEED_CONFIG;
        }
        Ok(bundle)
    }

    /// The device qualifier: only a high-speed device has another speed to describe.
    pub fn qualifier(&self, speed: Speed) -> Option<Vec<u8>> {
        (speed == Speed::High && self.descriptor.usb_version >= 0x0200)
            .then(|| self.device_descriptor(Speed::Full).qualifier().to_vec())
    }

    /// The full-speed configuration as OTHER_SPEED_CONFIGURATION, where there is a qualifier.
    fn other_speed_config(&self, speed: Speed) -> Option<Result<Vec<u8>, DeviceError>> {
        self.qualifier(speed)
            .map(|_| self.config_descriptor(Speed::Full, true))
    }

    /// BOS: only when `bcdUSB >= 0x0201` (usbtest case 10 subcase 15 expects a stall below).
    /// At SuperSpeed a USB 2.0 extension (LPM) and the SuperSpeed USB capability.
    pub fn bos(&self, speed: Speed) -> Option<Vec<u8>> {
        let bos = if speed >= Speed::Super {
            BosBuilder::new()
                .usb20_extension(USB_LPM_SUPPORT)
                .superspeed(SuperSpeedUsbCapability {
                    attributes: 0,
                    speeds_supported: USB_FULL_SPEED_OPERATION
                        | USB_HIGH_SPEED_OPERATION
                        | USB_5GBPS_OPERATION,
                    functionality_support: 1,
                    u1_exit_latency: 0x0a,
                    u2_exit_latency: 0x07ff,
                })
        } else if self.descriptor.usb_version >= 0x0201 {
            BosBuilder::new().usb20_extension(0)
        } else {
            return None;
        };
        // Fails only beyond 255 capabilities.
        bos.build().ok()
    }

    /// Assigns endpoint numbers for every function from an EPS_INFO list, then checks that
    /// the configuration builds at every speed INIT accepts.
    pub fn assign_endpoints(&mut self, eps: &[EpInfo]) -> Result<(), DeviceError> {
        let mut alloc = EndpointAllocator::new(eps);
        for f in &mut self.functions {
            f.assign_endpoints(&mut alloc)?;
        }
        for speed in SPEEDS {
            self.config_descriptor(speed, false)?;
        }
        Ok(())
    }

    /// Every descriptor at `speed`, after a successful
    /// [`assign_endpoints`](Self::assign_endpoints) (which checks that the configurations
    /// build; should one not, it is logged and left empty here).
    pub fn descriptor_set(&self, speed: Speed) -> DescriptorSet {
        let logged = |r: Result<Vec<u8>, DeviceError>| {
            r.unwrap_or_else(|error| {
                warn!(%error, "configuration left out");
                Vec::new()
            })
        };
        DescriptorSet {
            speed,
            device: self.device_descriptor(speed).to_vec(),
            config: logged(self.config_descriptor(speed, false)),
            qualifier: self.qualifier(speed),
            other_speed_config: self.other_speed_config(speed).map(logged),
            bos: self.bos(speed),
            strings: (1..=u8::MAX)
                .filter_map(|i| self.strings.get(i).map(|s| (i, s.to_owned())))
                .collect(),
            extra: self
                .functions
                .iter()
                .flat_map(|f| f.extra_descriptors())
                .collect(),
        }
    }
}

impl DescriptorSet {
    /// GET_DESCRIPTOR to the device: `Some(bytes)` or `None` (stall); other recipients and
    /// types go to the functions. Answered from this set, built once per connection, so a
    /// request costs a copy rather than a rebuild.
    fn get_descriptor(
        &self,
        strings: &StringTable,
        setup: &ControlRequest,
    ) -> Option<Option<Vec<u8>>> {
        if setup.request_type != 0x80 {
            return None;
        }
        let index = setup.value_low();
        // An empty configuration is one that did not build (logged by `descriptor_set`).
        let non_empty = |d: &Vec<u8>| (!d.is_empty()).then(|| d.clone());
        Some(match setup.value_high() {
            USB_DT_DEVICE => Some(self.device.clone()),
            USB_DT_CONFIG if index == 0 => non_empty(&self.config),
            USB_DT_CONFIG => None,
            // An unknown index or language stalls, as Linux's composite driver does.
            USB_DT_STRING => strings.descriptor(index, setup.index),
            USB_DT_DEVICE_QUALIFIER => self.qualifier.clone(),
            USB_DT_OTHER_SPEED_CONFIG if index == 0 => {
                self.other_speed_config.as_ref().and_then(non_empty)
            }
            USB_DT_OTHER_SPEED_CONFIG => None,
            USB_DT_BOS => self.bos.clone(),
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
    /// The descriptors at the gadget's speed, built at CONNECT once endpoints are assigned.
    descriptors: Option<DescriptorSet>,
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
            descriptors: None,
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
                self.descriptors = Some(self.device.descriptor_set(self.gadget.speed()));
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
            //
            // Note for dummy_udc: EP0_STALL reaches `dummy_set_halt_and_wedge`, which sets the
            // `halted` bitfield of ep0 without `dum->lock` while `dummy_timer` rewrites the same
            // word (`already_seen`, `setup_stage`) under it. A lost update there can hang the
            // stalled URB or let a later one overtake it (usbtest case 10, seen under TCG).
            // In-kernel gadgets never hit it: composite stalls by failing ->setup().
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
        let r = match (setup.request_type, setup.request) {
            (_, USB_REQ_GET_DESCRIPTOR) => {
                // Before CONNECT nothing is assigned yet: build (and log) on demand.
                let built;
                let set = match &self.descriptors {
                    Some(set) => set,
                    None => {
                        built = self.device.descriptor_set(self.gadget.speed());
                        &built
                    }
                };
                match set.get_descriptor(&self.device.strings, setup)? {
                    Some(d) => ControlReply::In(d),
                    None => ControlReply::Stall,
                }
            }
            (0x00, USB_REQ_SET_CONFIGURATION) => {
                // Before the status stage: enable endpoints, VBUS_DRAW, CONFIGURE (spec
                // Appendix step 5). A repeated SET_CONFIGURATION re-enables cleanly. An
                // invalid value stalls and keeps the current configuration and its endpoints,
                // as Linux composite.c `set_config` (it disables the old one only for a valid
                // value).
                match setup.value {
                    0 => {
                        self.deconfigure();
                        ControlReply::Accept
                    }
                    1 => {
                        self.deconfigure();
                        match self.configure() {
                            Ok(()) => ControlReply::Accept,
                            Err(e) => {
                                warn!(error = %e, "SET_CONFIGURATION failed");
                                self.deconfigure();
                                ControlReply::Stall
                            }
                        }
                    }
                    _ => ControlReply::Stall,
                }
            }
            (0x80, USB_REQ_GET_CONFIGURATION) => ControlReply::In(vec![self.configuration]),
            // Usually answered by the UDC (contract D20); some UDCs forward it.
            (0x80, USB_REQ_GET_STATUS) => {
                let self_powered = self.device.config_attributes & USB_CONFIG_ATT_SELFPOWER != 0;
                ControlReply::In(vec![u8::from(self_powered), 0])
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
        // VBUS_DRAW counts 2 mA units at every speed (raw_gadget.c passes 2 * value to
        // usb_gadget_vbus_draw); the cap is composite.c set_config's.
        let speed = self.gadget.speed();
        let ma = self.device.max_power_ma.min(max_power_limit_ma(speed));
        self.gadget.vbus_draw(u32::from(ma / 2))?;
        self.gadget.configure()?;
        self.configuration = 1;
        info!("configured");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// USB 2.0 §9.6.6: 1 ms is one frame or 2^(4-1) microframes, 8 ms eight frames or
    /// 2^(7-1) microframes.
    #[test]
    fn interrupt_interval_per_speed() {
        let rows = [
            (Speed::Full, 1, 1),
            (Speed::High, 1, 4),
            (Speed::Super, 1, 4),
            (Speed::Low, 8, 8),
            (Speed::High, 8, 7),
            (Speed::High, 10, 7),
            (Speed::High, 255, 11),
            (Speed::Full, 0, 1),
        ];
        for (speed, ms, want) in rows {
            assert_eq!(interrupt_interval(speed, ms), want, "{speed:?} {ms} ms");
        }
    }
}
