//! The device side of USB/IP as a pure codec.
//!
//! Read `Documentation/usb/usbip_protocol.rst` (Linux 6.12) and the contract's §3 (rules U9–U16,
//! U22, U25) before editing. The kernel files that define the bytes are
//! `drivers/usb/usbip/usbip_common.{c,h}` (the 48-byte `usbip_header`, iso descriptors,
//! `usbip_recv_xbuff`, `usbip_recv_iso`, `usbip_pad_iso`), `vhci_tx.c` / `vhci_rx.c` (what the host
//! sends and what makes it drop the device) and `tools/usb/usbip/src/usbip_network.{c,h}` (the
//! handshake).
//!
//! # Layers
//!
//! - [`wire`]: one view over the bytes and one repr per PDU, smoltcp style. Views
//!   ([`wire::Header`], [`wire::IsoPacket`], [`wire::OpHeader`], [`wire::UsbDeviceRecord`]) read
//!   big-endian fields at named offsets and never panic; reprs ([`wire::CmdSubmitRepr`],
//!   [`wire::RetSubmitRepr`], [`wire::CmdUnlinkRepr`], [`wire::RetUnlinkRepr`], the `Op*` messages)
//!   are the validated meaning, built by `parse`, written by `emit`, sized by `buffer_len`.
//! - [`decode`]: streaming decoders for the bytes a device reads from its socket: the handshake
//!   (OP_REQ_DEVLIST / OP_REQ_IMPORT), then URBs (CMD_SUBMIT with its OUT data and iso
//!   descriptors, CMD_UNLINK), under a byte budget ([`Limits`]). A host-side decoder for the
//!   replies ([`HostDecoder`]) checks them the way vhci does; it exists for tests and fake hosts.
//! - [`reply`]: encoders for what the device sends ([`RetSubmit`], [`RetUnlink`], the op replies in
//!   [`wire`]). They refuse to build a reply that would make vhci drop the device (U13, U15, U16).
//!
//! # What this crate is not
//!
//! No I/O, no clocks, no tracing, no URB bookkeeping: which seqnums are pending, whether an unlink
//! wins against a completion (U10, U14) and every other decision belongs to the USB/IP driver and
//! the engine. Everything here is `no_std` + `alloc` and deterministic.
//!
//! # A device-side connection in one loop
//!
//! ```
//! use rawgadget_usbip::wire::{BusId, CmdSubmitRepr, Direction};
//! use rawgadget_usbip::{
//!     DeviceDecoder, DeviceEvent, DevicePdu, Limits, OpRepImport, OpRequest, RetSubmit, RetUnlink,
//!     UsbDevice,
//! };
//!
//! // What the host sends: an import, then a 4-byte interrupt IN URB on ep1.
//! let busid = BusId::new("1-1").unwrap();
//! let urb = CmdSubmitRepr {
//!     seqnum: 1, devid: 0x0001_0002, direction: Direction::In, ep: 1, transfer_flags: 0x200,
//!     transfer_buffer_length: 4, start_frame: 0, number_of_packets: 0, interval: 8, setup: [0; 8],
//! };
//! let mut socket_bytes = OpRequest::Import { busid }.to_vec();
//! socket_bytes.extend(DevicePdu::Submit(rawgadget_usbip::CmdSubmit {
//!     header: urb, data: vec![], iso_packets: vec![],
//! }).to_vec());
//!
//! let mut decoder = DeviceDecoder::with_handshake(Limits::REMOTE);
//! let mut sent: Vec<Vec<u8>> = Vec::new();
//! let mut rest = &socket_bytes[..];
//! while !rest.is_empty() {
//!     let (used, event) = decoder.decode(rest).expect("close the connection on error");
//!     rest = &rest[used..];
//!     match event {
//!         DeviceEvent::NeedMore(_) => break, // read more from the socket
//!         DeviceEvent::Request(OpRequest::Import { busid }) => {
//!             let device = UsbDevice { busnum: 1, devnum: 2, speed: 3, ..UsbDevice::default() };
//!             sent.push(OpRepImport::accept(&busid, device).to_vec());
//!             assert!(decoder.import_accepted());
//!         }
//!         DeviceEvent::Request(OpRequest::Devlist) => break, // answer, then close
//!         DeviceEvent::Pdu(DevicePdu::Submit(submit)) => {
//!             // The engine decides; the codec only refuses replies vhci would choke on.
//!             let reply = RetSubmit::in_data(&submit.header, Ok(()), b"\x01\x02").unwrap();
//!             sent.push(reply.to_vec());
//!         }
//!         DeviceEvent::Pdu(DevicePdu::Unlink(unlink)) => {
//!             sent.push(RetUnlink::unlinked(&unlink).to_vec());
//!         }
//!     }
//! }
//! assert_eq!(sent.len(), 2);
//! assert_eq!(sent[1].len(), 48 + 2);
//! ```
//!
//! # Never panics on input
//!
//! Accessors, `parse` and the decoders return errors for any bytes; `emit` panics only when handed
//! a buffer shorter than `buffer_len()` (the smoltcp contract). A value that cannot be understood
//! is still printable: every view's `Display` falls back to the raw fields.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod decode;
mod error;
pub mod reply;
pub mod wire;

pub use decode::{
    DeviceDecoder, DeviceEvent, HandshakeDecoder, HandshakeStep, HostDecoder, HostPdu, HostStep,
    Limits, UrbDecoder, UrbShape, UrbStep,
};
pub use error::{Error, ReplyError};
pub use reply::{IsoPacketResult, RetSubmit, RetUnlink, UrbStatus};
pub use wire::{
    BusId, CmdSubmit, CmdSubmitRepr, CmdUnlinkRepr, Command, DevicePdu, Direction,
    IsoPacketDescriptor, OpCode, OpRepDevlist, OpRepImport, OpRequest, OpStatus, RetSubmitRepr,
    RetUnlinkRepr, UsbDevice, UsbInterface,
};

/// USB/IP protocol version 1.1.1 as carried in every op header (`configure.ac`,
/// `usbip_network.c:177-181`). The stock tools refuse anything else (contract U22).
pub const USBIP_VERSION: u16 = 0x0111;

/// `USBIP_MAX_ISO_PACKETS` (`usbip_common.h`): the most iso packets the kernel's stub accepts in one
/// URB (`stub_rx.c:379-386`).
pub const USBIP_MAX_ISO_PACKETS: u32 = 1024;

/// Size of `struct usbip_header` on the wire: every URB PDU starts with exactly this many bytes.
pub const USBIP_HEADER_LEN: usize = 48;

/// Size of `struct usbip_iso_packet_descriptor` on the wire.
pub const USBIP_ISO_PACKET_LEN: usize = 16;

/// TCP port of the USB/IP service (`usbip_network.c`, `usbip_port`).
pub const USBIP_PORT: u16 = 3240;
