//! The handshake: OP_REQ_DEVLIST / OP_REP_DEVLIST and OP_REQ_IMPORT / OP_REP_IMPORT.
//!
//! Every op message starts with `struct op_common` (version, code, status; 8 bytes,
//! `tools/usb/usbip/src/usbip_network.h`). Device records are `struct usbip_usb_device` (312
//! bytes) and interface records `struct usbip_usb_interface` (4 bytes), both packed
//! (`tools/usb/usbip/libsrc/usbip_common.h:104-129`). Note that `usbip_protocol.rst` misprints the
//! OP_REP_IMPORT offsets after `bcdDevice` (it gives 0x139 for `bDeviceClass`); the packed struct
//! is authoritative and is what the offsets below follow.
//!
//! Deliberately not here: which devices exist and whether an import succeeds (the driver), and the
//! op codes usbipd itself does not serve (DEVINFO, CRYPKEY, EXPORT, UNEXPORT), which decode as
//! [`OpCode::Unknown`].

use alloc::vec::Vec;
use core::fmt;

use rawgadget_uapi::Speed;

use super::{check_len, read_u16, read_u32, read_u8, write_u16, write_u32};
use crate::{Error, ReplyError, USBIP_VERSION};

/// `sizeof(struct op_common)`.
pub const OP_HEADER_LEN: usize = 8;
/// OP_REQ_IMPORT: the op header and a 32-byte busid.
pub const OP_REQ_IMPORT_LEN: usize = OP_HEADER_LEN + 32;
/// `sizeof(struct usbip_usb_device)`.
pub const DEVICE_RECORD_LEN: usize = 312;
/// `sizeof(struct usbip_usb_interface)`.
pub const INTERFACE_RECORD_LEN: usize = 4;

mod field {
    use crate::wire::Field;

    // struct op_common
    pub const VERSION: Field = 0..2;
    pub const CODE: Field = 2..4;
    pub const STATUS: Field = 4..8;

    // op_import_request, after op_common
    pub const IMPORT_BUSID: Field = 8..40;
    // op_devlist_reply, after op_common
    pub const DEVLIST_NDEV: Field = 8..12;

    // struct usbip_usb_device
    pub const PATH: Field = 0x000..0x100;
    pub const BUSID: Field = 0x100..0x120;
    pub const BUSNUM: Field = 0x120..0x124;
    pub const DEVNUM: Field = 0x124..0x128;
    pub const SPEED: Field = 0x128..0x12c;
    pub const ID_VENDOR: Field = 0x12c..0x12e;
    pub const ID_PRODUCT: Field = 0x12e..0x130;
    pub const BCD_DEVICE: Field = 0x130..0x132;
    pub const B_DEVICE_CLASS: usize = 0x132;
    pub const B_DEVICE_SUB_CLASS: usize = 0x133;
    pub const B_DEVICE_PROTOCOL: usize = 0x134;
    pub const B_CONFIGURATION_VALUE: usize = 0x135;
    pub const B_NUM_CONFIGURATIONS: usize = 0x136;
    pub const B_NUM_INTERFACES: usize = 0x137;

    // struct usbip_usb_interface
    pub const B_INTERFACE_CLASS: usize = 0;
    pub const B_INTERFACE_SUB_CLASS: usize = 1;
    pub const B_INTERFACE_PROTOCOL: usize = 2;
}

/// `op_common.code`. Total over `u16`.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum OpCode {
    /// `OP_REQ_DEVLIST` (0x8005).
    ReqDevlist,
    /// `OP_REP_DEVLIST` (0x0005).
    RepDevlist,
    /// `OP_REQ_IMPORT` (0x8003).
    ReqImport,
    /// `OP_REP_IMPORT` (0x0003).
    RepImport,
    Unknown(u16),
}

impl OpCode {
    pub const OP_REQ_DEVLIST: u16 = 0x8005;
    pub const OP_REP_DEVLIST: u16 = 0x0005;
    pub const OP_REQ_IMPORT: u16 = 0x8003;
    pub const OP_REP_IMPORT: u16 = 0x0003;
}

impl From<u16> for OpCode {
    fn from(v: u16) -> OpCode {
        match v {
            OpCode::OP_REQ_DEVLIST => OpCode::ReqDevlist,
            OpCode::OP_REP_DEVLIST => OpCode::RepDevlist,
            OpCode::OP_REQ_IMPORT => OpCode::ReqImport,
            OpCode::OP_REP_IMPORT => OpCode::RepImport,
            other => OpCode::Unknown(other),
        }
    }
}

impl From<OpCode> for u16 {
    fn from(c: OpCode) -> u16 {
        match c {
            OpCode::ReqDevlist => OpCode::OP_REQ_DEVLIST,
            OpCode::RepDevlist => OpCode::OP_REP_DEVLIST,
            OpCode::ReqImport => OpCode::OP_REQ_IMPORT,
            OpCode::RepImport => OpCode::OP_REP_IMPORT,
            OpCode::Unknown(v) => v,
        }
    }
}

impl fmt::Display for OpCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpCode::ReqDevlist => f.write_str("OP_REQ_DEVLIST"),
            OpCode::RepDevlist => f.write_str("OP_REP_DEVLIST"),
            OpCode::ReqImport => f.write_str("OP_REQ_IMPORT"),
            OpCode::RepImport => f.write_str("OP_REP_IMPORT"),
            OpCode::Unknown(v) => write!(f, "op 0x{v:04x}"),
        }
    }
}

/// `op_common.status` (`ST_*`, `tools/usb/usbip/libsrc/usbip_common.h:47-54`). Total over `u32`.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum OpStatus {
    /// `ST_OK` (0).
    Ok,
    /// `ST_NA` (1): the device is not available (usbipd's answer when export fails).
    Na,
    /// `ST_DEV_BUSY` (2).
    DevBusy,
    /// `ST_DEV_ERR` (3).
    DevErr,
    /// `ST_NODEV` (4): no device with the requested busid.
    NoDev,
    /// `ST_ERROR` (5).
    Error,
    Unknown(u32),
}

impl From<u32> for OpStatus {
    fn from(v: u32) -> OpStatus {
        match v {
            0 => OpStatus::Ok,
            1 => OpStatus::Na,
            2 => OpStatus::DevBusy,
            3 => OpStatus::DevErr,
            4 => OpStatus::NoDev,
            5 => OpStatus::Error,
            other => OpStatus::Unknown(other),
        }
    }
}

impl From<OpStatus> for u32 {
    fn from(s: OpStatus) -> u32 {
        match s {
            OpStatus::Ok => 0,
            OpStatus::Na => 1,
            OpStatus::DevBusy => 2,
            OpStatus::DevErr => 3,
            OpStatus::NoDev => 4,
            OpStatus::Error => 5,
            OpStatus::Unknown(v) => v,
        }
    }
}

impl fmt::Display for OpStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpStatus::Ok => f.write_str("ST_OK"),
            OpStatus::Na => f.write_str("ST_NA"),
            OpStatus::DevBusy => f.write_str("ST_DEV_BUSY"),
            OpStatus::DevErr => f.write_str("ST_DEV_ERR"),
            OpStatus::NoDev => f.write_str("ST_NODEV"),
            OpStatus::Error => f.write_str("ST_ERROR"),
            OpStatus::Unknown(v) => write!(f, "status {v}"),
        }
    }
}

/// A view over `struct op_common`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct OpHeader<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> OpHeader<T> {
    pub const fn new_unchecked(buffer: T) -> OpHeader<T> {
        OpHeader { buffer }
    }

    /// # Errors
    /// [`Error::Truncated`] below 8 bytes.
    pub fn new_checked(buffer: T) -> Result<OpHeader<T>, Error> {
        check_len(buffer.as_ref(), OP_HEADER_LEN)?;
        Ok(OpHeader { buffer })
    }

    pub fn version(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::VERSION)
    }
    pub fn code(&self) -> OpCode {
        OpCode::from(read_u16(self.buffer.as_ref(), field::CODE))
    }
    pub fn status(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::STATUS)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> OpHeader<T> {
    pub fn set_version(&mut self, v: u16) {
        write_u16(self.buffer.as_mut(), field::VERSION, v)
    }
    pub fn set_code(&mut self, v: OpCode) {
        write_u16(self.buffer.as_mut(), field::CODE, v.into())
    }
    pub fn set_status(&mut self, v: u32) {
        write_u32(self.buffer.as_mut(), field::STATUS, v)
    }
}

/// Prints every field, parsed or not: version and code are shown raw when they are wrong.
impl<T: AsRef<[u8]>> fmt::Display for OpHeader<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let len = self.buffer.as_ref().len();
        if len < OP_HEADER_LEN {
            write!(f, "op header (truncated, {len} of 8 bytes) ")?;
            return super::header::hex(f, self.buffer.as_ref());
        }
        write!(f, "{} version=0x{:04x}", self.code(), self.version())?;
        if self.version() != USBIP_VERSION {
            f.write_str(" (expected 0x0111)")?;
        }
        write!(f, " status={}", OpStatus::from(self.status()))
    }
}

fn emit_op_header(buf: &mut [u8], code: OpCode, status: u32) {
    let mut header = OpHeader::new_unchecked(buf);
    header.set_version(USBIP_VERSION);
    header.set_code(code);
    header.set_status(status);
}

/// Checks version and code of a message this side expects.
fn check_op_header(buf: &[u8], code: OpCode) -> Result<OpHeader<&[u8]>, Error> {
    let header = OpHeader::new_checked(buf)?;
    if header.version() != USBIP_VERSION {
        return Err(Error::BadVersion(header.version()));
    }
    if header.code() != code {
        return Err(Error::UnexpectedOpCode(header.code()));
    }
    Ok(header)
}

/// A NUL-padded fixed-size string field (`char busid[32]`, `char path[256]`).
///
/// Stored verbatim: a field without a NUL, or with bytes after it, round-trips unchanged.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct FixedStr<const N: usize>(pub [u8; N]);

/// `char busid[SYSFS_BUS_ID_SIZE]`, e.g. `"3-2"`.
pub type BusId = FixedStr<32>;
/// `char path[SYSFS_PATH_MAX]`, e.g. `"/sys/devices/pci0000:00/0000:00:1d.1/usb3/3-2"`.
pub type SysfsPath = FixedStr<256>;

impl<const N: usize> FixedStr<N> {
    /// `s` padded with NULs, or `None` if it does not fit with its terminating NUL or contains one.
    pub fn new(s: &str) -> Option<FixedStr<N>> {
        if s.len() >= N || s.as_bytes().contains(&0) {
            return None;
        }
        let mut bytes = [0; N];
        bytes[..s.len()].copy_from_slice(s.as_bytes());
        Some(FixedStr(bytes))
    }

    /// The bytes before the first NUL (all of them if there is none), as `strncmp` sees them.
    pub fn as_bytes(&self) -> &[u8] {
        let end = self.0.iter().position(|&b| b == 0).unwrap_or(N);
        &self.0[..end]
    }

    /// The string, if it is UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        core::str::from_utf8(self.as_bytes()).ok()
    }

    fn read(buf: &[u8], f: super::Field) -> FixedStr<N> {
        let mut bytes = [0; N];
        if let Some(src) = buf.get(f) {
            if src.len() == N {
                bytes.copy_from_slice(src);
            }
        }
        FixedStr(bytes)
    }
}

impl<const N: usize> Default for FixedStr<N> {
    fn default() -> FixedStr<N> {
        FixedStr([0; N])
    }
}

/// Printable ASCII as is, anything else escaped as `\xNN`.
impl<const N: usize> fmt::Display for FixedStr<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for &b in self.as_bytes() {
            if (0x20..0x7f).contains(&b) && b != b'\\' {
                write!(f, "{}", b as char)?;
            } else {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

impl<const N: usize> fmt::Debug for FixedStr<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

/// A view over `struct usbip_usb_device` (312 bytes).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct UsbDeviceRecord<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UsbDeviceRecord<T> {
    pub const fn new_unchecked(buffer: T) -> UsbDeviceRecord<T> {
        UsbDeviceRecord { buffer }
    }

    /// # Errors
    /// [`Error::Truncated`] below 312 bytes.
    pub fn new_checked(buffer: T) -> Result<UsbDeviceRecord<T>, Error> {
        check_len(buffer.as_ref(), DEVICE_RECORD_LEN)?;
        Ok(UsbDeviceRecord { buffer })
    }

    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }
    pub fn path(&self) -> SysfsPath {
        FixedStr::read(self.b(), field::PATH)
    }
    pub fn busid(&self) -> BusId {
        FixedStr::read(self.b(), field::BUSID)
    }
    pub fn busnum(&self) -> u32 {
        read_u32(self.b(), field::BUSNUM)
    }
    pub fn devnum(&self) -> u32 {
        read_u32(self.b(), field::DEVNUM)
    }
    pub fn speed(&self) -> u32 {
        read_u32(self.b(), field::SPEED)
    }
    #[doc(alias = "idVendor")]
    pub fn id_vendor(&self) -> u16 {
        read_u16(self.b(), field::ID_VENDOR)
    }
    #[doc(alias = "idProduct")]
    pub fn id_product(&self) -> u16 {
        read_u16(self.b(), field::ID_PRODUCT)
    }
    #[doc(alias = "bcdDevice")]
    pub fn bcd_device(&self) -> u16 {
        read_u16(self.b(), field::BCD_DEVICE)
    }
    #[doc(alias = "bDeviceClass")]
    pub fn device_class(&self) -> u8 {
        read_u8(self.b(), field::B_DEVICE_CLASS)
    }
    #[doc(alias = "bDeviceSubClass")]
    pub fn device_subclass(&self) -> u8 {
        read_u8(self.b(), field::B_DEVICE_SUB_CLASS)
    }
    #[doc(alias = "bDeviceProtocol")]
    pub fn device_protocol(&self) -> u8 {
        read_u8(self.b(), field::B_DEVICE_PROTOCOL)
    }
    #[doc(alias = "bConfigurationValue")]
    pub fn configuration_value(&self) -> u8 {
        read_u8(self.b(), field::B_CONFIGURATION_VALUE)
    }
    #[doc(alias = "bNumConfigurations")]
    pub fn num_configurations(&self) -> u8 {
        read_u8(self.b(), field::B_NUM_CONFIGURATIONS)
    }
    #[doc(alias = "bNumInterfaces")]
    pub fn num_interfaces(&self) -> u8 {
        read_u8(self.b(), field::B_NUM_INTERFACES)
    }
}

impl<T: AsRef<[u8]>> fmt::Display for UsbDeviceRecord<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let len = self.buffer.as_ref().len();
        if len < DEVICE_RECORD_LEN {
            write!(f, "(truncated, {len} of {DEVICE_RECORD_LEN} bytes) ")?;
        }
        UsbDevice::parse(self).fmt(f)
    }
}

/// `struct usbip_usb_device`: what OP_REP_DEVLIST and OP_REP_IMPORT say about a device.
///
/// The stock client uses only `speed` (to pick the vhci hub) and `busnum`/`devnum` (devid =
/// busnum << 16 | devnum); raw gadget learns descriptors only by answering the host, so the
/// descriptor fields are zero or cached from an earlier enumeration (contract U22).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash, Default)]
pub struct UsbDevice {
    pub path: SysfsPath,
    pub busid: BusId,
    pub busnum: u32,
    pub devnum: u32,
    /// `enum usb_device_speed` as `u32`; see [`UsbDevice::speed`].
    pub speed: u32,
    #[doc(alias = "idVendor")]
    pub id_vendor: u16,
    #[doc(alias = "idProduct")]
    pub id_product: u16,
    #[doc(alias = "bcdDevice")]
    pub bcd_device: u16,
    #[doc(alias = "bDeviceClass")]
    pub device_class: u8,
    #[doc(alias = "bDeviceSubClass")]
    pub device_subclass: u8,
    #[doc(alias = "bDeviceProtocol")]
    pub device_protocol: u8,
    #[doc(alias = "bConfigurationValue")]
    pub configuration_value: u8,
    #[doc(alias = "bNumConfigurations")]
    pub num_configurations: u8,
    /// In OP_REP_DEVLIST, the number of interface records that follow (checked on encode).
    #[doc(alias = "bNumInterfaces")]
    pub num_interfaces: u8,
}

impl UsbDevice {
    /// Reads every field; a short buffer reads as zeros past its end.
    pub fn parse<T: AsRef<[u8]>>(record: &UsbDeviceRecord<T>) -> UsbDevice {
        UsbDevice {
            path: record.path(),
            busid: record.busid(),
            busnum: record.busnum(),
            devnum: record.devnum(),
            speed: record.speed(),
            id_vendor: record.id_vendor(),
            id_product: record.id_product(),
            bcd_device: record.bcd_device(),
            device_class: record.device_class(),
            device_subclass: record.device_subclass(),
            device_protocol: record.device_protocol(),
            configuration_value: record.configuration_value(),
            num_configurations: record.num_configurations(),
            num_interfaces: record.num_interfaces(),
        }
    }

    pub const fn buffer_len(&self) -> usize {
        DEVICE_RECORD_LEN
    }

    /// Writes the 312-byte record. Panics if `buf` is shorter.
    pub fn emit(&self, buf: &mut [u8]) {
        let buf = &mut buf[..DEVICE_RECORD_LEN];
        buf[field::PATH].copy_from_slice(&self.path.0);
        buf[field::BUSID].copy_from_slice(&self.busid.0);
        write_u32(buf, field::BUSNUM, self.busnum);
        write_u32(buf, field::DEVNUM, self.devnum);
        write_u32(buf, field::SPEED, self.speed);
        write_u16(buf, field::ID_VENDOR, self.id_vendor);
        write_u16(buf, field::ID_PRODUCT, self.id_product);
        write_u16(buf, field::BCD_DEVICE, self.bcd_device);
        buf[field::B_DEVICE_CLASS] = self.device_class;
        buf[field::B_DEVICE_SUB_CLASS] = self.device_subclass;
        buf[field::B_DEVICE_PROTOCOL] = self.device_protocol;
        buf[field::B_CONFIGURATION_VALUE] = self.configuration_value;
        buf[field::B_NUM_CONFIGURATIONS] = self.num_configurations;
        buf[field::B_NUM_INTERFACES] = self.num_interfaces;
    }

    /// `(busnum << 16) | devnum`: what the host puts in every header's `devid` (U22).
    pub const fn devid(&self) -> u32 {
        (self.busnum << 16) | (self.devnum & 0xffff)
    }

    /// The speed, `None` for values above SUPER_PLUS.
    pub fn speed(&self) -> Option<Speed> {
        u8::try_from(self.speed).ok().and_then(Speed::from_u8)
    }
}

impl fmt::Display for UsbDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "busid={} busnum={} devnum={} speed={} id={:04x}:{:04x} bcdDevice={:04x} \
             class={:02x}/{:02x}/{:02x} bConfigurationValue={} bNumConfigurations={} \
             bNumInterfaces={} path={}",
            self.busid,
            self.busnum,
            self.devnum,
            self.speed,
            self.id_vendor,
            self.id_product,
            self.bcd_device,
            self.device_class,
            self.device_subclass,
            self.device_protocol,
            self.configuration_value,
            self.num_configurations,
            self.num_interfaces,
            self.path,
        )
    }
}

/// `struct usbip_usb_interface`: class triple plus a zero padding byte.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash, Default)]
pub struct UsbInterface {
    #[doc(alias = "bInterfaceClass")]
    pub class: u8,
    #[doc(alias = "bInterfaceSubClass")]
    pub subclass: u8,
    #[doc(alias = "bInterfaceProtocol")]
    pub protocol: u8,
}

impl UsbInterface {
    /// Reads a record; the padding byte is ignored.
    pub fn parse(buf: &[u8]) -> UsbInterface {
        UsbInterface {
            class: read_u8(buf, field::B_INTERFACE_CLASS),
            subclass: read_u8(buf, field::B_INTERFACE_SUB_CLASS),
            protocol: read_u8(buf, field::B_INTERFACE_PROTOCOL),
        }
    }

    /// Writes 4 bytes, padding zeroed. Panics if `buf` is shorter.
    pub fn emit(&self, buf: &mut [u8]) {
        buf[..INTERFACE_RECORD_LEN].copy_from_slice(&[self.class, self.subclass, self.protocol, 0]);
    }
}

/// A request the device side receives in handshake mode.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum OpRequest {
    /// OP_REQ_DEVLIST: 8 bytes, answered with [`OpRepDevlist`], then the connection closes.
    Devlist,
    /// OP_REQ_IMPORT with the busid to import (40 bytes), answered with [`OpRepImport`].
    Import { busid: BusId },
}

impl OpRequest {
    /// Parses a whole request; the decoder ([`crate::HandshakeDecoder`]) is the streaming form.
    ///
    /// # Errors
    /// [`Error::Truncated`], [`Error::BadVersion`], [`Error::BadOpStatus`] (requests carry 0,
    /// `usbip_net_recv_op_common` rejects anything else), [`Error::UnexpectedOpCode`].
    pub fn parse(buf: &[u8]) -> Result<OpRequest, Error> {
        let len = OpRequest::len_from_header(buf)?;
        check_len(buf, len)?;
        match len {
            OP_REQ_IMPORT_LEN => Ok(OpRequest::Import {
                busid: FixedStr::read(buf, field::IMPORT_BUSID),
            }),
            _ => Ok(OpRequest::Devlist),
        }
    }

    /// Checks the 8-byte op header of a request and returns the request's whole length.
    ///
    /// # Errors
    /// As [`OpRequest::parse`], but only for the header.
    pub fn len_from_header(buf: &[u8]) -> Result<usize, Error> {
        let header = OpHeader::new_checked(buf)?;
        if header.version() != USBIP_VERSION {
            return Err(Error::BadVersion(header.version()));
        }
        if header.status() != 0 {
            return Err(Error::BadOpStatus(header.status()));
        }
        match header.code() {
            OpCode::ReqDevlist => Ok(OP_HEADER_LEN),
            OpCode::ReqImport => Ok(OP_REQ_IMPORT_LEN),
            other => Err(Error::UnexpectedOpCode(other)),
        }
    }

    pub const fn code(&self) -> OpCode {
        match self {
            OpRequest::Devlist => OpCode::ReqDevlist,
            OpRequest::Import { .. } => OpCode::ReqImport,
        }
    }

    pub const fn buffer_len(&self) -> usize {
        match self {
            OpRequest::Devlist => OP_HEADER_LEN,
            OpRequest::Import { .. } => OP_REQ_IMPORT_LEN,
        }
    }

    /// Panics if `buf` is shorter than `buffer_len()`.
    pub fn emit(&self, buf: &mut [u8]) {
        emit_op_header(buf, self.code(), 0);
        if let OpRequest::Import { busid } = self {
            buf[field::IMPORT_BUSID].copy_from_slice(&busid.0);
        }
    }

    pub fn to_vec(&self) -> Vec<u8> {
        let mut buf = alloc::vec![0; self.buffer_len()];
        self.emit(&mut buf);
        buf
    }
}

impl fmt::Display for OpRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpRequest::Devlist => f.write_str("OP_REQ_DEVLIST"),
            OpRequest::Import { busid } => write!(f, "OP_REQ_IMPORT busid={busid}"),
        }
    }
}

/// One OP_REP_DEVLIST entry: a device record and its interface records.
#[derive(Clone, PartialEq, Eq, Debug, Hash, Default)]
pub struct ExportedDevice {
    pub device: UsbDevice,
    pub interfaces: Vec<UsbInterface>,
}

/// OP_REP_DEVLIST: status ST_OK, the device count, then each device with its interfaces
/// (`usbipd.c`, `send_reply_devlist`).
#[derive(Clone, PartialEq, Eq, Debug, Hash, Default)]
pub struct OpRepDevlist {
    devices: Vec<ExportedDevice>,
}

impl OpRepDevlist {
    /// # Errors
    /// [`ReplyError::InterfaceCountMismatch`] when a device's `num_interfaces` differs from its
    /// interface records: the client reads exactly `bNumInterfaces` records and would desync.
    pub fn new(devices: Vec<ExportedDevice>) -> Result<OpRepDevlist, ReplyError> {
        for (index, d) in devices.iter().enumerate() {
            if usize::from(d.device.num_interfaces) != d.interfaces.len() {
                return Err(ReplyError::InterfaceCountMismatch {
                    index,
                    declared: d.device.num_interfaces,
                    records: d.interfaces.len(),
                });
            }
        }
        Ok(OpRepDevlist { devices })
    }

    pub fn devices(&self) -> &[ExportedDevice] {
        &self.devices
    }

    /// Parses a whole reply (the host side; for tests and tools).
    ///
    /// # Errors
    /// [`Error::Truncated`] when the bytes end early, [`Error::BadVersion`],
    /// [`Error::UnexpectedOpCode`], [`Error::BadOpStatus`] for a non-OK status,
    /// [`Error::BadOpReply`] when the device count cannot fit the bytes (so a lying count never
    /// allocates).
    pub fn parse(buf: &[u8]) -> Result<OpRepDevlist, Error> {
        let header = check_op_header(buf, OpCode::RepDevlist)?;
        if header.status() != 0 {
            return Err(Error::BadOpStatus(header.status()));
        }
        check_len(buf, field::DEVLIST_NDEV.end)?;
        let ndev = read_u32(buf, field::DEVLIST_NDEV) as usize;
        let mut rest = &buf[field::DEVLIST_NDEV.end..];
        if ndev > rest.len() / DEVICE_RECORD_LEN {
            return Err(Error::BadOpReply(
                "device count exceeds the bytes that follow",
            ));
        }
        let mut devices = Vec::with_capacity(ndev);
        let mut offset = field::DEVLIST_NDEV.end;
        for _ in 0..ndev {
            let record = UsbDeviceRecord::new_checked(rest).map_err(|_| Error::Truncated {
                need: offset + DEVICE_RECORD_LEN,
                have: buf.len(),
            })?;
            let device = UsbDevice::parse(&record);
            let n = usize::from(device.num_interfaces);
            let len = DEVICE_RECORD_LEN + n * INTERFACE_RECORD_LEN;
            check_len(rest, len).map_err(|_| Error::Truncated {
                need: offset + len,
                have: buf.len(),
            })?;
            let interfaces = rest[DEVICE_RECORD_LEN..len]
                .chunks_exact(INTERFACE_RECORD_LEN)
                .map(UsbInterface::parse)
                .collect();
            devices.push(ExportedDevice { device, interfaces });
            rest = &rest[len..];
            offset += len;
        }
        Ok(OpRepDevlist { devices })
    }

    pub fn buffer_len(&self) -> usize {
        field::DEVLIST_NDEV.end
            + self
                .devices
                .iter()
                .map(|d| DEVICE_RECORD_LEN + d.interfaces.len() * INTERFACE_RECORD_LEN)
                .sum::<usize>()
    }

    /// Panics if `buf` is shorter than `buffer_len()`.
    pub fn emit(&self, buf: &mut [u8]) {
        assert!(
            buf.len() >= self.buffer_len(),
            "OP_REP_DEVLIST buffer too short"
        );
        emit_op_header(buf, OpCode::RepDevlist, OpStatus::Ok.into());
        write_u32(buf, field::DEVLIST_NDEV, self.devices.len() as u32);
        let mut at = field::DEVLIST_NDEV.end;
        for d in &self.devices {
            d.device.emit(&mut buf[at..]);
            at += DEVICE_RECORD_LEN;
            for i in &d.interfaces {
                i.emit(&mut buf[at..]);
                at += INTERFACE_RECORD_LEN;
            }
        }
    }

    pub fn to_vec(&self) -> Vec<u8> {
        let mut buf = alloc::vec![0; self.buffer_len()];
        self.emit(&mut buf);
        buf
    }
}

impl fmt::Display for OpRepDevlist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OP_REP_DEVLIST ndev={}", self.devices.len())?;
        for d in &self.devices {
            write!(f, " [{}]", d.device)?;
        }
        Ok(())
    }
}

/// OP_REP_IMPORT: ST_OK and the device record, or an error status alone (`usbipd.c`,
/// `recv_request_import`).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub struct OpRepImport {
    status: OpStatus,
    device: Option<UsbDevice>,
}

impl OpRepImport {
    /// Accepts the import of `device`, echoing the requested busid (the stock client compares
    /// them, `usbip_attach.c:165-168`, contract U22).
    pub fn accept(requested: &BusId, mut device: UsbDevice) -> OpRepImport {
        device.busid = *requested;
        OpRepImport {
            status: OpStatus::Ok,
            device: Some(device),
        }
    }

    /// Refuses the import (`ST_NODEV` for an unknown busid, `ST_NA` when the device cannot be
    /// exported, as usbipd answers).
    ///
    /// # Errors
    /// [`ReplyError::ImportStatusMismatch`] for `OpStatus::Ok`, which must carry a device.
    pub fn refuse(status: OpStatus) -> Result<OpRepImport, ReplyError> {
        if status == OpStatus::Ok {
            return Err(ReplyError::ImportStatusMismatch { status: 0 });
        }
        Ok(OpRepImport {
            status,
            device: None,
        })
    }

    pub fn status(&self) -> OpStatus {
        self.status
    }

    /// The imported device, `None` when refused.
    pub fn device(&self) -> Option<&UsbDevice> {
        self.device.as_ref()
    }

    /// Parses a whole reply (the host side; for tests and tools).
    ///
    /// # Errors
    /// [`Error::Truncated`], [`Error::BadVersion`], [`Error::UnexpectedOpCode`].
    pub fn parse(buf: &[u8]) -> Result<OpRepImport, Error> {
        let header = check_op_header(buf, OpCode::RepImport)?;
        let status = OpStatus::from(header.status());
        if status != OpStatus::Ok {
            return Ok(OpRepImport {
                status,
                device: None,
            });
        }
        let record =
            UsbDeviceRecord::new_checked(&buf[OP_HEADER_LEN..]).map_err(|_| Error::Truncated {
                need: OP_HEADER_LEN + DEVICE_RECORD_LEN,
                have: buf.len(),
            })?;
        Ok(OpRepImport {
            status,
            device: Some(UsbDevice::parse(&record)),
        })
    }

    pub fn buffer_len(&self) -> usize {
        OP_HEADER_LEN
            + if self.device.is_some() {
                DEVICE_RECORD_LEN
            } else {
                0
            }
    }

    /// Panics if `buf` is shorter than `buffer_len()`.
    pub fn emit(&self, buf: &mut [u8]) {
        emit_op_header(buf, OpCode::RepImport, self.status.into());
        if let Some(device) = &self.device {
            device.emit(&mut buf[OP_HEADER_LEN..]);
        }
    }

    pub fn to_vec(&self) -> Vec<u8> {
        let mut buf = alloc::vec![0; self.buffer_len()];
        self.emit(&mut buf);
        buf
    }
}

impl fmt::Display for OpRepImport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OP_REP_IMPORT status={}", self.status)?;
        if let Some(d) = &self.device {
            write!(f, " {d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec;

    /// OP_REQ_IMPORT for busid "1-1", as `usbip attach -b 1-1` sends it.
    fn req_import_bytes() -> Vec<u8> {
        let mut b = vec![
            0x01, 0x11, // version: 0x0111
            0x80, 0x03, // code: OP_REQ_IMPORT
            0x00, 0x00, 0x00, 0x00, // status: 0
        ];
        let mut busid = [0u8; 32]; // busid: "1-1", NUL padded
        busid[..3].copy_from_slice(b"1-1");
        b.extend_from_slice(&busid);
        b
    }

    /// A device record for a high-speed Gadget Zero at busid "1-1".
    fn gadget_zero_record() -> Vec<u8> {
        let mut b = vec![0u8; 256]; // path
        b[..22].copy_from_slice(b"/sys/devices/rawgadget");
        let mut busid = [0u8; 32]; // busid: "1-1"
        busid[..3].copy_from_slice(b"1-1");
        b.extend_from_slice(&busid);
        #[rustfmt::skip]
        b.extend_from_slice(&[
            0x00, 0x00, 0x00, 0x01, // busnum: 1
            0x00, 0x00, 0x00, 0x02, // devnum: 2
            0x00, 0x00, 0x00, 0x03, // speed: USB_SPEED_HIGH
            0x05, 0x25, // idVendor: 0x0525 (NetChip)
            0xa4, 0xa0, // idProduct: 0xa4a0 (Gadget Zero)
            0x01, 0x00, // bcdDevice: 0x0100
            0xff, // bDeviceClass: vendor specific
            0x00, // bDeviceSubClass
            0x00, // bDeviceProtocol
            0x01, // bConfigurationValue
            0x02, // bNumConfigurations
            0x01, // bNumInterfaces
        ]);
        assert_eq!(b.len(), DEVICE_RECORD_LEN);
        b
    }

    fn gadget_zero() -> UsbDevice {
        UsbDevice {
            path: FixedStr::new("/sys/devices/rawgadget").unwrap(),
            busid: FixedStr::new("1-1").unwrap(),
            busnum: 1,
            devnum: 2,
            speed: 3,
            id_vendor: 0x0525,
            id_product: 0xa4a0,
            bcd_device: 0x0100,
            device_class: 0xff,
            device_subclass: 0,
            device_protocol: 0,
            configuration_value: 1,
            num_configurations: 2,
            num_interfaces: 1,
        }
    }

    #[test]
    fn device_record_is_312_bytes_at_kernel_offsets() {
        let bytes = gadget_zero_record();
        let record = UsbDeviceRecord::new_checked(&bytes[..]).unwrap();
        assert_eq!(UsbDevice::parse(&record), gadget_zero());
        assert_eq!(gadget_zero().devid(), 0x0001_0002);
        assert_eq!(gadget_zero().speed(), Some(Speed::High));
        let mut out = vec![0u8; DEVICE_RECORD_LEN];
        gadget_zero().emit(&mut out);
        assert_eq!(out, bytes);
    }

    #[test]
    fn test_parse_and_emit_req_import() {
        let bytes = req_import_bytes();
        let req = OpRequest::parse(&bytes).unwrap();
        assert_eq!(
            req,
            OpRequest::Import {
                busid: FixedStr::new("1-1").unwrap()
            }
        );
        assert_eq!(req.to_vec(), bytes);
        assert_eq!(req.to_string(), "OP_REQ_IMPORT busid=1-1");
    }

    #[test]
    fn test_parse_and_emit_req_devlist() {
        let bytes = [0x01, 0x11, 0x80, 0x05, 0, 0, 0, 0];
        assert_eq!(OpRequest::parse(&bytes), Ok(OpRequest::Devlist));
        assert_eq!(OpRequest::Devlist.to_vec(), bytes);
    }

    /// contract U22
    #[test]
    fn u22_rep_import_carries_version_0111_and_echoes_busid() {
        let requested = FixedStr::new("1-1").unwrap();
        let mut device = gadget_zero();
        device.busid = FixedStr::new("other").unwrap();
        let rep = OpRepImport::accept(&requested, device);
        let bytes = rep.to_vec();
        let mut expected = vec![
            0x01, 0x11, // version: 0x0111
            0x00, 0x03, // code: OP_REP_IMPORT
            0x00, 0x00, 0x00, 0x00, // status: ST_OK
        ];
        expected.extend_from_slice(&gadget_zero_record());
        assert_eq!(bytes, expected);
        assert_eq!(OpRepImport::parse(&bytes), Ok(rep));
    }

    #[test]
    fn refused_import_is_the_header_alone() {
        let rep = OpRepImport::refuse(OpStatus::NoDev).unwrap();
        assert_eq!(rep.to_vec(), [0x01, 0x11, 0x00, 0x03, 0, 0, 0, 4]);
        assert_eq!(OpRepImport::parse(&rep.to_vec()), Ok(rep));
        assert_eq!(
            OpRepImport::refuse(OpStatus::Ok),
            Err(ReplyError::ImportStatusMismatch { status: 0 })
        );
    }

    /// contract U22: version 0x0111, device records, then bNumInterfaces records each.
    #[test]
    fn u22_rep_devlist_with_interfaces_round_trips() {
        let mut second = gadget_zero();
        second.busid = FixedStr::new("1-2").unwrap();
        second.num_interfaces = 0;
        let list = OpRepDevlist::new(vec![
            ExportedDevice {
                device: gadget_zero(),
                interfaces: vec![UsbInterface {
                    class: 0xff,
                    subclass: 0,
                    protocol: 0,
                }],
            },
            ExportedDevice {
                device: second,
                interfaces: vec![],
            },
        ])
        .unwrap();
        let bytes = list.to_vec();
        assert_eq!(bytes.len(), 12 + 312 + 4 + 312);
        assert_eq!(
            &bytes[..12],
            &[0x01, 0x11, 0x00, 0x05, 0, 0, 0, 0, 0, 0, 0, 2]
        );
        assert_eq!(&bytes[12..12 + 312], &gadget_zero_record()[..]);
        assert_eq!(&bytes[324..328], &[0xff, 0, 0, 0]); // interface: class ff, padding 0
        assert_eq!(OpRepDevlist::parse(&bytes), Ok(list));
    }

    #[test]
    fn devlist_refuses_a_lying_interface_count() {
        let err = OpRepDevlist::new(vec![ExportedDevice {
            device: gadget_zero(),
            interfaces: vec![],
        }]);
        assert_eq!(
            err,
            Err(ReplyError::InterfaceCountMismatch {
                index: 0,
                declared: 1,
                records: 0
            })
        );
    }

    #[test]
    fn devlist_parse_of_a_huge_count_does_not_allocate() {
        let bytes = [0x01, 0x11, 0x00, 0x05, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff];
        assert!(matches!(
            OpRepDevlist::parse(&bytes),
            Err(Error::BadOpReply(_))
        ));
    }

    #[test]
    fn truncated_op_messages_at_every_length() {
        let bytes = req_import_bytes();
        for len in 0..bytes.len() {
            assert!(
                matches!(
                    OpRequest::parse(&bytes[..len]),
                    Err(Error::Truncated { .. })
                ),
                "length {len}"
            );
        }
        let rep = OpRepImport::accept(&FixedStr::new("1-1").unwrap(), gadget_zero()).to_vec();
        for len in 0..rep.len() {
            assert!(matches!(
                OpRepImport::parse(&rep[..len]),
                Err(Error::Truncated { .. })
            ));
        }
    }

    /// contract U22: the stock tools compare the version exactly.
    #[test]
    fn u22_wrong_version_is_refused() {
        let mut bytes = req_import_bytes();
        bytes[1] = 0x10;
        assert_eq!(OpRequest::parse(&bytes), Err(Error::BadVersion(0x0110)));
    }

    #[test]
    fn unserved_op_codes_and_nonzero_request_status_are_refused() {
        let devinfo = [0x01, 0x11, 0x80, 0x02, 0, 0, 0, 0];
        assert_eq!(
            OpRequest::parse(&devinfo),
            Err(Error::UnexpectedOpCode(OpCode::Unknown(0x8002)))
        );
        let reply = [0x01, 0x11, 0x00, 0x05, 0, 0, 0, 0];
        assert_eq!(
            OpRequest::parse(&reply),
            Err(Error::UnexpectedOpCode(OpCode::RepDevlist))
        );
        let status = [0x01, 0x11, 0x80, 0x05, 0, 0, 0, 1];
        assert_eq!(OpRequest::parse(&status), Err(Error::BadOpStatus(1)));
    }

    #[test]
    fn fixed_str_keeps_odd_bytes_and_prints_them_escaped() {
        let mut raw = [b'x'; 32]; // no NUL at all
        raw[1] = 0xff;
        let busid = FixedStr(raw);
        assert_eq!(busid.as_bytes().len(), 32);
        assert!(busid.to_string().starts_with("x\\xffxx"));
        assert_eq!(BusId::new("a\0b"), None);
        assert_eq!(BusId::new(&"y".repeat(32)), None);
        assert!(BusId::new(&"y".repeat(31)).is_some());
    }

    #[test]
    fn op_header_display_shows_raw_fields() {
        let bytes = [0x01, 0x10, 0x80, 0x02, 0, 0, 0, 9];
        assert_eq!(
            OpHeader::new_unchecked(&bytes[..]).to_string(),
            "op 0x8002 version=0x0110 (expected 0x0111) status=status 9"
        );
        assert_eq!(
            OpHeader::new_unchecked(&bytes[..3]).to_string(),
            "op header (truncated, 3 of 8 bytes) 011080"
        );
    }
}
