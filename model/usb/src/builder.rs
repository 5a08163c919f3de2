//! Builders that write descriptor bundles and compute the derived fields (embassy style):
//! `bLength`, `bNumInterfaces`, `bNumEndpoints`, `bInterfaceCount`, `wTotalLength`,
//! `bNumDeviceCaps`.
//!
//! Shape: [`ConfigurationBuilder`] → [`ConfigurationBuilder::function`] (an interface
//! association) or [`ConfigurationBuilder::interface`] → [`InterfaceBuilder::alt_setting`] →
//! endpoints and class descriptors. Descriptors are written in call order, so class
//! descriptors land where they are added (a HID descriptor before its endpoint, a companion
//! after its endpoint).
//!
//! The builders never refuse odd values (a reserved bit, an endpoint 0 in a bundle): checking
//! a device is the host's job, and Raw Gadget users test hosts. They only fail when a count
//! or length does not fit its field. For bytes no builder would produce, use
//! [`ConfigurationBuilder::raw`] or [`crate::RawDescriptor`].

use alloc::vec::Vec;

use crate::descriptor::attributes::*;
use crate::descriptor::sizes::*;
use crate::descriptor::types::*;
use crate::descriptor::{
    DeviceCapability, EndpointAddress, EndpointDescriptor, HidDescriptor,
    InterfaceAssociationDescriptor, InterfaceDescriptor, SsEndpointCompanionDescriptor,
    TransferType,
};
use crate::setup::Direction;
use crate::wire::{Error, Repr, Result};

/// Builds a configuration bundle. Defaults: `bmAttributes` 0x80 (bus powered, no remote
/// wakeup), `bMaxPower` 50 (100 mA at USB 2.0 speeds), no string.
#[derive(Clone, Debug)]
pub struct ConfigurationBuilder {
    buf: Vec<u8>,
    num_interfaces: u8,
    /// Endpoint numbers taken per direction (bit n = number n), for automatic allocation.
    used_in: u16,
    used_out: u16,
    error: Option<Error>,
}

impl ConfigurationBuilder {
    pub fn new(configuration_value: u8) -> ConfigurationBuilder {
        let mut buf = Vec::with_capacity(64);
        buf.extend_from_slice(&[
            USB_DT_CONFIG_SIZE,
            USB_DT_CONFIG,
            0,
            0, // wTotalLength: patched by build()
            0, // bNumInterfaces: patched by build()
            configuration_value,
            0,                  // iConfiguration
            USB_CONFIG_ATT_ONE, // bmAttributes
            50,                 // bMaxPower: 100 mA
        ]);
        ConfigurationBuilder {
            buf,
            num_interfaces: 0,
            used_in: 1,
            used_out: 1,
            error: None,
        }
    }
    /// `bmAttributes` as given (bit 7 is not forced).
    pub fn attributes(mut self, attributes: u8) -> Self {
        self.buf[7] = attributes;
        self
    }
    pub fn self_powered(mut self, yes: bool) -> Self {
        self.buf[7] = set_bit(self.buf[7], USB_CONFIG_ATT_SELFPOWER, yes);
        self
    }
    pub fn remote_wakeup(mut self, yes: bool) -> Self {
        self.buf[7] = set_bit(self.buf[7], USB_CONFIG_ATT_WAKEUP, yes);
        self
    }
    /// `bMaxPower` in its units (2 mA; 8 mA at SuperSpeed): a current in mA becomes units
    /// with [`crate::speed::encode_max_power`].
    pub fn max_power(mut self, units: u8) -> Self {
        self.buf[8] = units;
        self
    }
    /// `iConfiguration`.
    pub fn string(mut self, index: u8) -> Self {
        self.buf[6] = index;
        self
    }

    /// Starts a function: writes an interface association descriptor whose `bFirstInterface`
    /// and `bInterfaceCount` follow the interfaces added through it.
    pub fn function(&mut self, class: u8, subclass: u8, protocol: u8) -> FunctionBuilder<'_> {
        let pos = self.buf.len();
        let iad = InterfaceAssociationDescriptor {
            first_interface: self.num_interfaces,
            interface_count: 0,
            class,
            subclass,
            protocol,
            function_string: 0,
        };
        self.push(&iad.to_vec());
        FunctionBuilder {
            cfg: self,
            iad_pos: pos,
        }
    }

    /// Starts the next interface (numbers are given in order from 0).
    pub fn interface(&mut self) -> InterfaceBuilder<'_> {
        let number = self.num_interfaces;
        match self.num_interfaces.checked_add(1) {
            Some(n) => self.num_interfaces = n,
            None => self.fail(Error::TooLong("more than 255 interfaces")),
        }
        InterfaceBuilder {
            cfg: self,
            number,
            next_alt: 0,
        }
    }

    /// Adds a class or vendor descriptor at configuration level, `bLength` computed.
    pub fn descriptor(&mut self, descriptor_type: u8, body: &[u8]) {
        self.push_descriptor(descriptor_type, body);
    }

    /// Appends bytes verbatim, no length computed or checked (malformed on purpose, vendor
    /// junk, a descriptor built elsewhere).
    pub fn raw(&mut self, bytes: &[u8]) {
        self.push(bytes);
    }

    /// The bundle with `bNumInterfaces` and `wTotalLength` filled in.
    ///
    /// # Errors
    /// [`Error::TooLong`] when the bundle exceeds 65535 bytes or a count exceeded 255.
    pub fn build(mut self) -> Result<Vec<u8>> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let total = u16::try_from(self.buf.len())
            .map_err(|_| Error::TooLong("configuration bundle longer than 65535 bytes"))?;
        self.buf[2..4].copy_from_slice(&total.to_le_bytes());
        self.buf[4] = self.num_interfaces;
        Ok(self.buf)
    }

    fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }
    fn push_descriptor(&mut self, descriptor_type: u8, body: &[u8]) {
        match u8::try_from(body.len() + 2) {
            Ok(len) => {
                self.buf.push(len);
                self.buf.push(descriptor_type);
                self.buf.extend_from_slice(body);
            }
            Err(_) => self.fail(Error::TooLong("descriptor longer than 255 bytes")),
        }
    }
    fn fail(&mut self, e: Error) {
        self.error.get_or_insert(e);
    }
    /// Lowest endpoint number 1..=15 not yet used in that direction.
    fn allocate(&mut self, direction: Direction) -> Option<u8> {
        let used = match direction {
            Direction::In => self.used_in,
            Direction::Out => self.used_out,
        };
        (1..16u8).find(|n| used & (1 << n) == 0)
    }
    fn mark_used(&mut self, address: EndpointAddress) {
        let bit = 1u16 << address.number();
        match address.direction() {
            Direction::In => self.used_in |= bit,
            Direction::Out => self.used_out |= bit,
        }
    }
}

fn set_bit(byte: u8, bit: u8, on: bool) -> u8 {
    if on {
        byte | bit
    } else {
        byte & !bit
    }
}

/// Interfaces of one function (after its interface association descriptor).
#[derive(Debug)]
pub struct FunctionBuilder<'a> {
    cfg: &'a mut ConfigurationBuilder,
    iad_pos: usize,
}

impl FunctionBuilder<'_> {
    /// `iFunction`.
    pub fn string(&mut self, index: u8) -> &mut Self {
        self.cfg.buf[self.iad_pos + 7] = index;
        self
    }
    /// Starts the function's next interface.
    pub fn interface(&mut self) -> InterfaceBuilder<'_> {
        let count = &mut self.cfg.buf[self.iad_pos + 3];
        match count.checked_add(1) {
            Some(n) => *count = n,
            None => self
                .cfg
                .fail(Error::TooLong("more than 255 interfaces in a function")),
        }
        self.cfg.interface()
    }
}

/// One interface; each [`InterfaceBuilder::alt_setting`] writes one interface descriptor.
#[derive(Debug)]
pub struct InterfaceBuilder<'a> {
    cfg: &'a mut ConfigurationBuilder,
    number: u8,
    next_alt: u8,
}

impl InterfaceBuilder<'_> {
    /// `bInterfaceNumber` of this interface.
    pub fn number(&self) -> u8 {
        self.number
    }
    /// Writes the next alternate setting's interface descriptor (settings numbered from 0).
    pub fn alt_setting(&mut self, class: u8, subclass: u8, protocol: u8) -> AltSettingBuilder<'_> {
        let pos = self.cfg.buf.len();
        let d = InterfaceDescriptor {
            interface_number: self.number,
            alternate_setting: self.next_alt,
            num_endpoints: 0,
            class,
            subclass,
            protocol,
            interface_string: 0,
        };
        self.next_alt = self.next_alt.wrapping_add(1);
        self.cfg.push(&d.to_vec());
        AltSettingBuilder {
            cfg: self.cfg,
            desc_pos: pos,
        }
    }
}

/// One alternate setting: endpoints and class descriptors, written in call order.
#[derive(Debug)]
pub struct AltSettingBuilder<'a> {
    cfg: &'a mut ConfigurationBuilder,
    desc_pos: usize,
}

impl AltSettingBuilder<'_> {
    /// `iInterface`.
    pub fn string(&mut self, index: u8) -> &mut Self {
        self.cfg.buf[self.desc_pos + 8] = index;
        self
    }
    /// Adds a class or vendor descriptor, `bLength` computed.
    pub fn descriptor(&mut self, descriptor_type: u8, body: &[u8]) -> &mut Self {
        self.cfg.push_descriptor(descriptor_type, body);
        self
    }
    /// Adds a HID descriptor (goes before the endpoints, HID 1.11 §7.1).
    pub fn hid(&mut self, hid: &HidDescriptor) -> &mut Self {
        self.cfg.push(&hid.to_vec());
        self
    }
    /// Appends bytes verbatim.
    pub fn raw(&mut self, bytes: &[u8]) -> &mut Self {
        self.cfg.push(bytes);
        self
    }
    /// Adds an endpoint descriptor as given and counts it in `bNumEndpoints`.
    pub fn endpoint_descriptor(&mut self, ep: &EndpointDescriptor) -> EndpointAddress {
        self.cfg.mark_used(ep.address);
        self.cfg.push(&ep.to_vec());
        let n = &mut self.cfg.buf[self.desc_pos + 4];
        match n.checked_add(1) {
            Some(v) => *n = v,
            None => self
                .cfg
                .fail(Error::TooLong("more than 255 endpoints in an interface")),
        }
        ep.address
    }
    /// Adds an endpoint at a given address.
    pub fn endpoint(
        &mut self,
        address: EndpointAddress,
        transfer: TransferType,
        max_packet_size: u16,
        interval: u8,
    ) -> EndpointAddress {
        self.endpoint_descriptor(&EndpointDescriptor::new(
            address,
            transfer,
            max_packet_size,
            interval,
        ))
    }
    /// Adds an IN endpoint at the lowest number not yet used for IN in this configuration.
    ///
    /// # Errors
    /// [`Error::TooLong`] when numbers 1..=15 are all taken.
    pub fn endpoint_in(
        &mut self,
        transfer: TransferType,
        max_packet_size: u16,
        interval: u8,
    ) -> Result<EndpointAddress> {
        self.endpoint_auto(Direction::In, transfer, max_packet_size, interval)
    }
    /// Adds an OUT endpoint at the lowest number not yet used for OUT.
    pub fn endpoint_out(
        &mut self,
        transfer: TransferType,
        max_packet_size: u16,
        interval: u8,
    ) -> Result<EndpointAddress> {
        self.endpoint_auto(Direction::Out, transfer, max_packet_size, interval)
    }
    fn endpoint_auto(
        &mut self,
        direction: Direction,
        transfer: TransferType,
        max_packet_size: u16,
        interval: u8,
    ) -> Result<EndpointAddress> {
        let number = self.cfg.allocate(direction).ok_or(Error::TooLong(
            "all 15 endpoint numbers of this direction are used",
        ))?;
        let address = EndpointAddress::new(number, direction);
        Ok(self.endpoint(address, transfer, max_packet_size, interval))
    }
    /// Adds a SuperSpeed companion (call right after its endpoint).
    pub fn ss_companion(&mut self, companion: &SsEndpointCompanionDescriptor) -> &mut Self {
        self.cfg.push(&companion.to_vec());
        self
    }
}

/// Builds a BOS descriptor set, `wTotalLength` and `bNumDeviceCaps` computed.
#[derive(Clone, Debug, Default)]
pub struct BosBuilder {
    caps: Vec<u8>,
    count: u8,
    error: Option<Error>,
}

impl BosBuilder {
    pub fn new() -> BosBuilder {
        BosBuilder::default()
    }
    /// Adds any capability.
    pub fn capability(mut self, cap: &DeviceCapability) -> Self {
        self.caps.extend_from_slice(&cap.to_vec());
        match self.count.checked_add(1) {
            Some(n) => self.count = n,
            None => {
                self.error
                    .get_or_insert(Error::TooLong("more than 255 device capabilities"));
            }
        }
        self
    }
    /// Adds the USB 2.0 extension capability (`bmAttributes`, e.g. `USB_LPM_SUPPORT`).
    pub fn usb20_extension(self, attributes: u32) -> Self {
        self.capability(&DeviceCapability::Usb20Extension { attributes })
    }
    /// Adds the SuperSpeed USB capability.
    pub fn superspeed(self, cap: crate::descriptor::SuperSpeedUsbCapability) -> Self {
        self.capability(&DeviceCapability::SuperSpeedUsb(cap))
    }
    pub fn build(self) -> Result<Vec<u8>> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let total = u16::try_from(USB_DT_BOS_SIZE as usize + self.caps.len())
            .map_err(|_| Error::TooLong("BOS longer than 65535 bytes"))?;
        let mut out = Vec::with_capacity(total as usize);
        out.extend_from_slice(&[USB_DT_BOS_SIZE, USB_DT_BOS]);
        out.extend_from_slice(&total.to_le_bytes());
        out.push(self.count);
        out.extend_from_slice(&self.caps);
        Ok(out)
    }
}
