//! The Linux Raw Gadget UAPI (`include/uapi/linux/usb/raw_gadget.h`) in Rust.
//!
//! Everything here is byte-identical to the C header: struct layouts, the 16 ioctl numbers, event
//! types, flags and limits (spec §1.2–§1.4). `tests/c_header.rs` compiles a C program against the
//! system header with gcc and compares every size, offset, number and constant with these
//! definitions.
//!
//! This crate only *describes* the ABI. It performs no system calls: issuing the ioctls is the
//! job of the device-node backend (`rawgadget::sys`), decoding them is the job of the engine.
//!
//! Two argument conventions hide in the ioctl table (spec §1.4) and are kept visible here by
//! [`IoctlArg`]: `_IO` ioctls (RUN, CONFIGURE, EP0_STALL) take the value 0, and the `__u32` ones
//! (EP_DISABLE, VBUS_DRAW, EP_SET_HALT, EP_CLEAR_HALT, EP_SET_WEDGE) take the value itself, not a
//! pointer to it.
#![no_std]
#![forbid(unsafe_code)]

pub mod dummy_udc;
mod errno;
pub use errno::Errno;

/// Size of the `driver_name` and `device_name` arrays of [`UsbRawInit`].
pub const UDC_NAME_LENGTH_MAX: usize = 128;
/// Maximum number of non-control endpoints reported by EPS_INFO; also the bound on
/// `usb_raw_ep_io.ep`.
pub const USB_RAW_EPS_NUM_MAX: usize = 30;
/// Size of [`UsbRawEpInfo::name`].
pub const USB_RAW_EP_NAME_MAX: usize = 16;
/// [`UsbRawEpInfo::addr`] of endpoints that accept any address.
pub const USB_RAW_EP_ADDR_ANY: u32 = 0xff;
/// Set `usb_request.zero`: end an IN transfer whose length is a multiple of maxpacket with a ZLP.
pub const USB_RAW_IO_FLAGS_ZERO: u16 = 0x0001;
/// Every valid `usb_raw_ep_io.flags` bit; any other bit gives EINVAL.
pub const USB_RAW_IO_FLAGS_MASK: u16 = 0x0001;

/// Driver-private constants of `raw_gadget.c` that shape observable behaviour.
pub mod driver {
    /// Maximum number of queued, unfetched events; one more moves the instance to FAILED.
    pub const RAW_EVENT_QUEUE_SIZE: usize = 16;
    /// `USB_RAW_IO_LENGTH_MAX` = `KMALLOC_MAX_SIZE` on x86_64 with 4 KiB pages
    /// (2^(MAX_PAGE_ORDER + PAGE_SHIFT) = 2^22). Longer EP0/EP I/O gives EINVAL.
    pub const USB_RAW_IO_LENGTH_MAX: u32 = 1 << 22;
    /// Buffer size for the per-instance driver name `raw-gadget.N`.
    pub const DRIVER_DRIVER_NAME_LENGTH_MAX: usize = 32;
    /// Misc device name: the node is `/dev/raw-gadget`.
    pub const DRIVER_NAME: &str = "raw-gadget";
}

/// `usb_raw_io_flags_valid()` from the header.
pub const fn usb_raw_io_flags_valid(flags: u16) -> bool {
    flags & !USB_RAW_IO_FLAGS_MASK == 0
}

/// `usb_raw_io_flags_zero()` from the header.
pub const fn usb_raw_io_flags_zero(flags: u16) -> bool {
    flags & USB_RAW_IO_FLAGS_ZERO != 0
}

/// `enum usb_raw_event_type`.
#[doc(alias = "usb_raw_event_type")]
pub mod event_type {
    pub const USB_RAW_EVENT_INVALID: u32 = 0;
    /// Queued while binding, inside RUN (not when a host plugs in).
    pub const USB_RAW_EVENT_CONNECT: u32 = 1;
    /// A SETUP packet; payload is the 8-byte `usb_ctrlrequest`.
    pub const USB_RAW_EVENT_CONTROL: u32 = 2;
    pub const USB_RAW_EVENT_SUSPEND: u32 = 3;
    pub const USB_RAW_EVENT_RESUME: u32 = 4;
    pub const USB_RAW_EVENT_RESET: u32 = 5;
    pub const USB_RAW_EVENT_DISCONNECT: u32 = 6;
}

/// `enum usb_device_speed` (`linux/usb/ch9.h`), typed. INIT accepts UNKNOWN (as HIGH), LOW, FULL,
/// HIGH and SUPER; the raw `u8` values are in [`speed`].
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug, Hash)]
#[repr(u8)]
pub enum Speed {
    Unknown = 0,
    Low = 1,
    Full = 2,
    High = 3,
    Wireless = 4,
    Super = 5,
    SuperPlus = 6,
}

impl Speed {
    /// The speed for a raw value, `None` above SUPER_PLUS.
    pub const fn from_u8(v: u8) -> Option<Speed> {
        Some(match v {
            0 => Speed::Unknown,
            1 => Speed::Low,
            2 => Speed::Full,
            3 => Speed::High,
            4 => Speed::Wireless,
            5 => Speed::Super,
            6 => Speed::SuperPlus,
            _ => return None,
        })
    }

    /// The name Linux prints (`usb_speed_string`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Speed::Unknown => "UNKNOWN",
            Speed::Low => "low-speed",
            Speed::Full => "full-speed",
            Speed::High => "high-speed",
            Speed::Wireless => "wireless",
            Speed::Super => "super-speed",
            Speed::SuperPlus => "super-speed-plus",
        }
    }
}

/// `enum usb_device_speed` values accepted by INIT (`linux/usb/ch9.h`).
pub mod speed {
    /// Silently replaced by HIGH.
    pub const USB_SPEED_UNKNOWN: u8 = 0;
    pub const USB_SPEED_LOW: u8 = 1;
    pub const USB_SPEED_FULL: u8 = 2;
    pub const USB_SPEED_HIGH: u8 = 3;
    /// Rejected by INIT (EINVAL).
    pub const USB_SPEED_WIRELESS: u8 = 4;
    pub const USB_SPEED_SUPER: u8 = 5;
    /// Rejected by INIT (EINVAL).
    pub const USB_SPEED_SUPER_PLUS: u8 = 6;
}

/// `struct usb_raw_init` (257 bytes, alignment 1).
#[doc(alias = "usb_raw_init")]
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct UsbRawInit {
    /// UDC *driver* name, e.g. `dummy_udc`. NUL-terminated within 128 bytes or INIT gives E2BIG.
    pub driver_name: [u8; UDC_NAME_LENGTH_MAX],
    /// UDC *device* name, e.g. `dummy_udc.0`.
    pub device_name: [u8; UDC_NAME_LENGTH_MAX],
    /// An `enum usb_device_speed` value.
    pub speed: u8,
}

impl UsbRawInit {
    pub const SIZE: usize = 257;

    /// Builds the struct from names; names longer than 127 bytes are truncated so that the
    /// result is always NUL-terminated (use the fields directly to build an invalid one).
    pub fn new(driver_name: &str, device_name: &str, speed: u8) -> Self {
        let mut init = UsbRawInit {
            driver_name: [0; UDC_NAME_LENGTH_MAX],
            device_name: [0; UDC_NAME_LENGTH_MAX],
            speed,
        };
        copy_name(&mut init.driver_name, driver_name.as_bytes());
        copy_name(&mut init.device_name, device_name.as_bytes());
        init
    }

    /// The struct as the kernel reads it.
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        b[..128].copy_from_slice(&self.driver_name);
        b[128..256].copy_from_slice(&self.device_name);
        b[256] = self.speed;
        b
    }

    /// Reads the struct from exactly [`Self::SIZE`] bytes.
    pub fn from_bytes(b: &[u8; Self::SIZE]) -> Self {
        let mut init = UsbRawInit {
            driver_name: [0; UDC_NAME_LENGTH_MAX],
            device_name: [0; UDC_NAME_LENGTH_MAX],
            speed: b[256],
        };
        init.driver_name.copy_from_slice(&b[..128]);
        init.device_name.copy_from_slice(&b[128..256]);
        init
    }
}

fn copy_name(dst: &mut [u8; UDC_NAME_LENGTH_MAX], src: &[u8]) {
    let n = src.len().min(UDC_NAME_LENGTH_MAX - 1);
    dst[..n].copy_from_slice(&src[..n]);
}

/// Header of `struct usb_raw_event` (8 bytes); the payload follows it in memory.
#[doc(alias = "usb_raw_event")]
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct UsbRawEvent {
    /// An [`event_type`] value (out).
    pub type_: u32,
    /// In: capacity of the payload buffer. Out: the event's *full* payload length, even when
    /// fewer bytes were copied.
    pub length: u32,
}

impl UsbRawEvent {
    pub const SIZE: usize = 8;

    pub fn to_bytes(&self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[..4].copy_from_slice(&self.type_.to_ne_bytes());
        b[4..].copy_from_slice(&self.length.to_ne_bytes());
        b
    }

    pub fn from_bytes(b: &[u8; 8]) -> Self {
        UsbRawEvent {
            type_: u32::from_ne_bytes([b[0], b[1], b[2], b[3]]),
            length: u32::from_ne_bytes([b[4], b[5], b[6], b[7]]),
        }
    }
}

/// Header of `struct usb_raw_ep_io` (8 bytes); the payload follows it in memory.
#[doc(alias = "usb_raw_ep_io")]
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct UsbRawEpIo {
    /// Endpoint handle for EP_READ/EP_WRITE; must be < 30 but is otherwise ignored by EP0_*.
    pub ep: u16,
    /// `USB_RAW_IO_FLAGS_*`.
    pub flags: u16,
    /// Bytes to send, or capacity to receive.
    pub length: u32,
}

impl UsbRawEpIo {
    pub const SIZE: usize = 8;

    pub fn to_bytes(&self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[..2].copy_from_slice(&self.ep.to_ne_bytes());
        b[2..4].copy_from_slice(&self.flags.to_ne_bytes());
        b[4..].copy_from_slice(&self.length.to_ne_bytes());
        b
    }

    pub fn from_bytes(b: &[u8; 8]) -> Self {
        UsbRawEpIo {
            ep: u16::from_ne_bytes([b[0], b[1]]),
            flags: u16::from_ne_bytes([b[2], b[3]]),
            length: u32::from_ne_bytes([b[4], b[5], b[6], b[7]]),
        }
    }
}

/// `struct usb_raw_ep_caps`: six one-bit `__u32` bitfields, allocated from bit 0 on
/// little-endian GCC/Clang targets (checked against gcc by `tests/c_header.rs`).
#[doc(alias = "usb_raw_ep_caps")]
#[repr(transparent)]
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct UsbRawEpCaps(pub u32);

impl UsbRawEpCaps {
    pub const TYPE_CONTROL: u32 = 1 << 0;
    pub const TYPE_ISO: u32 = 1 << 1;
    pub const TYPE_BULK: u32 = 1 << 2;
    pub const TYPE_INT: u32 = 1 << 3;
    pub const DIR_IN: u32 = 1 << 4;
    pub const DIR_OUT: u32 = 1 << 5;

    pub const fn new(
        type_control: bool,
        type_iso: bool,
        type_bulk: bool,
        type_int: bool,
        dir_in: bool,
        dir_out: bool,
    ) -> Self {
        UsbRawEpCaps(
            (type_control as u32)
                | (type_iso as u32) << 1
                | (type_bulk as u32) << 2
                | (type_int as u32) << 3
                | (dir_in as u32) << 4
                | (dir_out as u32) << 5,
        )
    }
    pub const fn type_control(self) -> bool {
        self.0 & Self::TYPE_CONTROL != 0
    }
    pub const fn type_iso(self) -> bool {
        self.0 & Self::TYPE_ISO != 0
    }
    pub const fn type_bulk(self) -> bool {
        self.0 & Self::TYPE_BULK != 0
    }
    pub const fn type_int(self) -> bool {
        self.0 & Self::TYPE_INT != 0
    }
    pub const fn dir_in(self) -> bool {
        self.0 & Self::DIR_IN != 0
    }
    pub const fn dir_out(self) -> bool {
        self.0 & Self::DIR_OUT != 0
    }
}

impl core::fmt::Debug for UsbRawEpCaps {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let names = [
            (self.type_control(), "control"),
            (self.type_iso(), "iso"),
            (self.type_bulk(), "bulk"),
            (self.type_int(), "int"),
            (self.dir_in(), "in"),
            (self.dir_out(), "out"),
        ];
        let mut first = true;
        for (set, name) in names {
            if set {
                if !first {
                    f.write_str("+")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        if first {
            f.write_str("none")?;
        }
        Ok(())
    }
}

/// `struct usb_raw_ep_limits` (8 bytes).
#[doc(alias = "usb_raw_ep_limits")]
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct UsbRawEpLimits {
    pub maxpacket_limit: u16,
    pub max_streams: u16,
    /// Always 0.
    pub reserved: u32,
}

/// `struct usb_raw_ep_info` (32 bytes).
#[doc(alias = "usb_raw_ep_info")]
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct UsbRawEpInfo {
    /// UDC endpoint name, NUL-terminated, truncated to 15 characters.
    pub name: [u8; USB_RAW_EP_NAME_MAX],
    /// Fixed endpoint number or [`USB_RAW_EP_ADDR_ANY`].
    pub addr: u32,
    pub caps: UsbRawEpCaps,
    pub limits: UsbRawEpLimits,
}

impl UsbRawEpInfo {
    pub const SIZE: usize = 32;

    /// The name up to its NUL.
    pub fn name_bytes(&self) -> &[u8] {
        let end = self
            .name
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.name.len());
        &self.name[..end]
    }

    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        b[..16].copy_from_slice(&self.name);
        b[16..20].copy_from_slice(&self.addr.to_ne_bytes());
        b[20..24].copy_from_slice(&self.caps.0.to_ne_bytes());
        b[24..26].copy_from_slice(&self.limits.maxpacket_limit.to_ne_bytes());
        b[26..28].copy_from_slice(&self.limits.max_streams.to_ne_bytes());
        b[28..32].copy_from_slice(&self.limits.reserved.to_ne_bytes());
        b
    }

    pub fn from_bytes(b: &[u8; Self::SIZE]) -> Self {
        let u32_at = |o: usize| u32::from_ne_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let u16_at = |o: usize| u16::from_ne_bytes([b[o], b[o + 1]]);
        let mut name = [0u8; USB_RAW_EP_NAME_MAX];
        name.copy_from_slice(&b[..16]);
        UsbRawEpInfo {
            name,
            addr: u32_at(16),
            caps: UsbRawEpCaps(u32_at(20)),
            limits: UsbRawEpLimits {
                maxpacket_limit: u16_at(24),
                max_streams: u16_at(26),
                reserved: u32_at(28),
            },
        }
    }
}

/// `struct usb_raw_eps_info` (960 bytes).
#[doc(alias = "usb_raw_eps_info")]
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct UsbRawEpsInfo {
    pub eps: [UsbRawEpInfo; USB_RAW_EPS_NUM_MAX],
}

impl Default for UsbRawEpsInfo {
    fn default() -> Self {
        UsbRawEpsInfo {
            eps: [UsbRawEpInfo::default(); USB_RAW_EPS_NUM_MAX],
        }
    }
}

impl UsbRawEpsInfo {
    pub const SIZE: usize = 960;

    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        for (i, ep) in self.eps.iter().enumerate() {
            b[i * 32..(i + 1) * 32].copy_from_slice(&ep.to_bytes());
        }
        b
    }

    pub fn from_bytes(b: &[u8; Self::SIZE]) -> Self {
        let mut info = UsbRawEpsInfo::default();
        for (i, ep) in info.eps.iter_mut().enumerate() {
            let mut one = [0u8; 32];
            one.copy_from_slice(&b[i * 32..(i + 1) * 32]);
            *ep = UsbRawEpInfo::from_bytes(&one);
        }
        info
    }
}

/// Size of `struct usb_endpoint_descriptor` as EP_ENABLE copies it: the 7-byte descriptor plus
/// the audio-only `bRefresh` and `bSynchAddress` (spec §1.3).
pub const USB_ENDPOINT_DESCRIPTOR_IOCTL_SIZE: usize = 9;

// ---------------------------------------------------------------------------------------------
// Ioctl numbers (asm-generic/ioctl.h encoding: dir << 30 | size << 16 | type << 8 | nr).

const IOC_NRBITS: u32 = 8;
const IOC_TYPEBITS: u32 = 8;
const IOC_SIZEBITS: u32 = 14;
const IOC_NRSHIFT: u32 = 0;
const IOC_TYPESHIFT: u32 = IOC_NRSHIFT + IOC_NRBITS;
const IOC_SIZESHIFT: u32 = IOC_TYPESHIFT + IOC_TYPEBITS;
const IOC_DIRSHIFT: u32 = IOC_SIZESHIFT + IOC_SIZEBITS;
/// `_IOC_NONE`.
pub const IOC_NONE: u32 = 0;
/// `_IOC_WRITE`: userspace writes, the kernel reads.
pub const IOC_WRITE: u32 = 1;
/// `_IOC_READ`: the kernel writes, userspace reads.
pub const IOC_READ: u32 = 2;

/// `_IOC(dir, type, nr, size)`.
pub const fn ioc(dir: u32, ty: u8, nr: u8, size: usize) -> u32 {
    (dir << IOC_DIRSHIFT)
        | ((ty as u32) << IOC_TYPESHIFT)
        | ((nr as u32) << IOC_NRSHIFT)
        | ((size as u32) << IOC_SIZESHIFT)
}
/// `_IOC_SIZE(cmd)`.
pub const fn ioc_size(cmd: u32) -> usize {
    ((cmd >> IOC_SIZESHIFT) & ((1 << IOC_SIZEBITS) - 1)) as usize
}
/// `_IOC_DIR(cmd)`.
pub const fn ioc_dir(cmd: u32) -> u32 {
    cmd >> IOC_DIRSHIFT
}
/// `_IOC_NR(cmd)`.
pub const fn ioc_nr(cmd: u32) -> u8 {
    (cmd & 0xff) as u8
}

const U: u8 = b'U';

pub const USB_RAW_IOCTL_INIT: u32 = ioc(IOC_WRITE, U, 0, UsbRawInit::SIZE);
pub const USB_RAW_IOCTL_RUN: u32 = ioc(IOC_NONE, U, 1, 0);
pub const USB_RAW_IOCTL_EVENT_FETCH: u32 = ioc(IOC_READ, U, 2, UsbRawEvent::SIZE);
pub const USB_RAW_IOCTL_EP0_WRITE: u32 = ioc(IOC_WRITE, U, 3, UsbRawEpIo::SIZE);
pub const USB_RAW_IOCTL_EP0_READ: u32 = ioc(IOC_READ | IOC_WRITE, U, 4, UsbRawEpIo::SIZE);
pub const USB_RAW_IOCTL_EP_ENABLE: u32 = ioc(IOC_WRITE, U, 5, USB_ENDPOINT_DESCRIPTOR_IOCTL_SIZE);
pub const USB_RAW_IOCTL_EP_DISABLE: u32 = ioc(IOC_WRITE, U, 6, 4);
pub const USB_RAW_IOCTL_EP_WRITE: u32 = ioc(IOC_WRITE, U, 7, UsbRawEpIo::SIZE);
pub const USB_RAW_IOCTL_EP_READ: u32 = ioc(IOC_READ | IOC_WRITE, U, 8, UsbRawEpIo::SIZE);
pub const USB_RAW_IOCTL_CONFIGURE: u32 = ioc(IOC_NONE, U, 9, 0);
pub const USB_RAW_IOCTL_VBUS_DRAW: u32 = ioc(IOC_WRITE, U, 10, 4);
pub const USB_RAW_IOCTL_EPS_INFO: u32 = ioc(IOC_READ, U, 11, UsbRawEpsInfo::SIZE);
pub const USB_RAW_IOCTL_EP0_STALL: u32 = ioc(IOC_NONE, U, 12, 0);
pub const USB_RAW_IOCTL_EP_SET_HALT: u32 = ioc(IOC_WRITE, U, 13, 4);
pub const USB_RAW_IOCTL_EP_CLEAR_HALT: u32 = ioc(IOC_WRITE, U, 14, 4);
pub const USB_RAW_IOCTL_EP_SET_WEDGE: u32 = ioc(IOC_WRITE, U, 15, 4);

/// How the third `ioctl()` argument is interpreted (spec §1.4).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum IoctlArg {
    /// `_IO`: must be 0, else EINVAL.
    Zero,
    /// `_IOW(.., __u32)`: the value itself (an endpoint handle or a current in 2 mA units).
    Value,
    /// A user pointer to a struct of the given fixed size (plus a payload for the I/O ioctls).
    Pointer,
}

/// One row of the ioctl table.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct IoctlDef {
    pub name: &'static str,
    pub cmd: u32,
    pub arg: IoctlArg,
}

/// All 16 ioctls in number order (index = `_IOC_NR`).
pub const IOCTLS: [IoctlDef; 16] = [
    IoctlDef {
        name: "USB_RAW_IOCTL_INIT",
        cmd: USB_RAW_IOCTL_INIT,
        arg: IoctlArg::Pointer,
    },
    IoctlDef {
        name: "USB_RAW_IOCTL_RUN",
        cmd: USB_RAW_IOCTL_RUN,
        arg: IoctlArg::Zero,
    },
    IoctlDef {
        name: "USB_RAW_IOCTL_EVENT_FETCH",
        cmd: USB_RAW_IOCTL_EVENT_FETCH,
        arg: IoctlArg::Pointer,
    },
    IoctlDef {
        name: "USB_RAW_IOCTL_EP0_WRITE",
        cmd: USB_RAW_IOCTL_EP0_WRITE,
        arg: IoctlArg::Pointer,
    },
    IoctlDef {
        name: "USB_RAW_IOCTL_EP0_READ",
        cmd: USB_RAW_IOCTL_EP0_READ,
        arg: IoctlArg::Pointer,
    },
    IoctlDef {
        name: "USB_RAW_IOCTL_EP_ENABLE",
        cmd: USB_RAW_IOCTL_EP_ENABLE,
        arg: IoctlArg::Pointer,
    },
    IoctlDef {
        name: "USB_RAW_IOCTL_EP_DISABLE",
        cmd: USB_RAW_IOCTL_EP_DISABLE,
        arg: IoctlArg::Value,
    },
    IoctlDef {
        name: "USB_RAW_IOCTL_EP_WRITE",
        cmd: USB_RAW_IOCTL_EP_WRITE,
        arg: IoctlArg::Pointer,
    },
    IoctlDef {
        name: "USB_RAW_IOCTL_EP_READ",
        cmd: USB_RAW_IOCTL_EP_READ,
        arg: IoctlArg::Pointer,
    },
    IoctlDef {
        name: "USB_RAW_IOCTL_CONFIGURE",
        cmd: USB_RAW_IOCTL_CONFIGURE,
        arg: IoctlArg::Zero,
    },
    IoctlDef {
        name: "USB_RAW_IOCTL_VBUS_DRAW",
        cmd: USB_RAW_IOCTL_VBUS_DRAW,
        arg: IoctlArg::Value,
    },
    IoctlDef {
        name: "USB_RAW_IOCTL_EPS_INFO",
        cmd: USB_RAW_IOCTL_EPS_INFO,
        arg: IoctlArg::Pointer,
    },
    IoctlDef {
        name: "USB_RAW_IOCTL_EP0_STALL",
        cmd: USB_RAW_IOCTL_EP0_STALL,
        arg: IoctlArg::Zero,
    },
    IoctlDef {
        name: "USB_RAW_IOCTL_EP_SET_HALT",
        cmd: USB_RAW_IOCTL_EP_SET_HALT,
        arg: IoctlArg::Value,
    },
    IoctlDef {
        name: "USB_RAW_IOCTL_EP_CLEAR_HALT",
        cmd: USB_RAW_IOCTL_EP_CLEAR_HALT,
        arg: IoctlArg::Value,
    },
    IoctlDef {
        name: "USB_RAW_IOCTL_EP_SET_WEDGE",
        cmd: USB_RAW_IOCTL_EP_SET_WEDGE,
        arg: IoctlArg::Value,
    },
];

/// The table row for an ioctl number, if it is one of the 16.
pub fn ioctl_def(cmd: u32) -> Option<&'static IoctlDef> {
    IOCTLS.iter().find(|d| d.cmd == cmd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{align_of, size_of};

    /// spec §1.4: the numeric values of the table.
    #[test]
    fn ioctl_numbers_match_spec_table() {
        let expected: [(u32, u32); 16] = [
            (USB_RAW_IOCTL_INIT, 0x4101_5500),
            (USB_RAW_IOCTL_RUN, 0x0000_5501),
            (USB_RAW_IOCTL_EVENT_FETCH, 0x8008_5502),
            (USB_RAW_IOCTL_EP0_WRITE, 0x4008_5503),
            (USB_RAW_IOCTL_EP0_READ, 0xC008_5504),
            (USB_RAW_IOCTL_EP_ENABLE, 0x4009_5505),
            (USB_RAW_IOCTL_EP_DISABLE, 0x4004_5506),
            (USB_RAW_IOCTL_EP_WRITE, 0x4008_5507),
            (USB_RAW_IOCTL_EP_READ, 0xC008_5508),
            (USB_RAW_IOCTL_CONFIGURE, 0x0000_5509),
            (USB_RAW_IOCTL_VBUS_DRAW, 0x4004_550A),
            (USB_RAW_IOCTL_EPS_INFO, 0x83C0_550B),
            (USB_RAW_IOCTL_EP0_STALL, 0x0000_550C),
            (USB_RAW_IOCTL_EP_SET_HALT, 0x4004_550D),
            (USB_RAW_IOCTL_EP_CLEAR_HALT, 0x4004_550E),
            (USB_RAW_IOCTL_EP_SET_WEDGE, 0x4004_550F),
        ];
        for (i, (got, want)) in expected.iter().enumerate() {
            assert_eq!(*got, *want, "ioctl nr {i}");
            assert_eq!(IOCTLS[i].cmd, *want);
            assert_eq!(ioc_nr(*got) as usize, i);
        }
    }

    /// spec §1.3: struct sizes.
    #[test]
    fn struct_sizes_match_spec() {
        assert_eq!(size_of::<UsbRawInit>(), 257);
        assert_eq!(align_of::<UsbRawInit>(), 1);
        assert_eq!(size_of::<UsbRawEvent>(), 8);
        assert_eq!(size_of::<UsbRawEpIo>(), 8);
        assert_eq!(size_of::<UsbRawEpCaps>(), 4);
        assert_eq!(size_of::<UsbRawEpLimits>(), 8);
        assert_eq!(size_of::<UsbRawEpInfo>(), 32);
        assert_eq!(size_of::<UsbRawEpsInfo>(), 960);
    }

    /// spec §1.4: the `_IO` ones take 0, the `__u32` ones a value.
    #[test]
    fn argument_conventions() {
        for d in IOCTLS {
            let expect = match ioc_dir(d.cmd) {
                IOC_NONE => IoctlArg::Zero,
                IOC_WRITE if ioc_size(d.cmd) == 4 => IoctlArg::Value,
                _ => IoctlArg::Pointer,
            };
            assert_eq!(d.arg, expect, "{}", d.name);
        }
    }

    #[test]
    fn byte_round_trips() {
        let init = UsbRawInit::new("dummy_udc", "dummy_udc.0", speed::USB_SPEED_HIGH);
        assert_eq!(UsbRawInit::from_bytes(&init.to_bytes()), init);
        let caps = UsbRawEpCaps::new(false, true, true, false, true, false);
        let mut info = UsbRawEpInfo {
            addr: 7,
            caps,
            ..Default::default()
        };
        info.name[..5].copy_from_slice(b"ep7in");
        info.limits.maxpacket_limit = 1024;
        assert_eq!(UsbRawEpInfo::from_bytes(&info.to_bytes()), info);
        assert_eq!(info.name_bytes(), b"ep7in");
        let mut all = UsbRawEpsInfo::default();
        all.eps[29] = info;
        assert_eq!(UsbRawEpsInfo::from_bytes(&all.to_bytes()), all);
        let io = UsbRawEpIo {
            ep: 3,
            flags: 1,
            length: 0x1234_5678,
        };
        assert_eq!(UsbRawEpIo::from_bytes(&io.to_bytes()), io);
    }
}
