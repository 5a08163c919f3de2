//! rawgadget's virtual controller over USB/IP: a raw gadget instance, on the dummy controller
//! model, becomes a USB/IP device that a real Linux host enumerates through vhci-hcd, on the
//! same machine without any gadget module, or on another one over TCP.
//!
//! Read `udc-contract.md` §3 (U1–U25) first; rules are cited where they are applied.
//!
//! # Layers
//!
//! - [`link`]: one connection, sans-IO. [`Link`] decodes the host's PDUs (`rawgadget-usbip`'s
//!   codec), drives the bus's controller model (`rawgadget-udc`) as vhci's URBs would, and
//!   encodes the replies. It holds the seqnum bookkeeping (U14), the unlink races (U10), the
//!   byte budgets (U25), the attach reset (U5) and the disconnect (U20). Fuzzed as
//!   `usbip_engine`.
//! - [`driver`]: the shell. One reader thread that never stops reading, one writer thread
//!   woken by the bus's condition variable, one tracing span per connection; decides nothing.
//! - [`UsbipDevice`] (`device`): a bus (engine instance + controller) whose client side is
//!   what `rawgadget::InProcess::with_bus` wraps, and whose host side a connection drives. Its
//!   controller is dummy_udc's personality ([`usbip_personality`], SuperSpeed available for
//!   vhci's SS hub) or the iso-capable one of contract §4 ([`usbip_iso_personality`]).
//! - [`vhci`]: attach to the local vhci-hcd through sysfs (U17–U21), no TCP, no `usbip` tool.
//! - [`export`]: a TCP export like `usbipd` (U22–U24) for the stock `usbip attach`.
//! - [`fake_vhci`]: the host side in userspace, with vhci's checks, for tests and tools.
//! - [`null`]: the null-device floor of the bench (contract P5): an inline USB/IP responder,
//!   Gadget-Zero shaped, with no engine and no client, that measures vhci's own cost per URB.
//!
//! # What it does not do
//!
//! Protocol decisions live in the controller model (packet matching, ep0, the requests the
//! controller answers itself, EPROTO) and in the codec (framing); this crate only maps one onto
//! the other. It needs no `unsafe`: the vhci attach is a text write of a file descriptor number.
//!
//! # Logs
//!
//! `RUST_LOG=rawgadget_usbip_udc=debug` shows attaches, resets, unlinks and why a connection
//! closed; `trace` shows every CMD_SUBMIT and RET_SUBMIT.
#![deny(unsafe_code)]

mod device;
pub mod driver;
pub mod export;
pub mod fake_vhci;
pub mod link;
pub mod null;
pub mod vhci;

pub use device::{
    usbip_iso_personality, usbip_personality, ConnectError, NotReady, UsbipConfig, UsbipDevice,
    USBIP_ISO_GRACE,
};
pub use driver::{
    ClientFlush, Clock, ConnectionEnd, ConnectionHandle, Flush, PendingWrite, Stream, Watch,
};
pub use export::{export_tcp, Export, ExportError, ExportOptions, NO_AUTH_WARNING};
pub use link::{Budget, Link, LinkConfig, LinkError, LinkStats};
pub use vhci::{attach_local, AttachError, AttachOptions, Attachment, Hub, VhciSysfs};

impl UsbipDevice {
    /// Attaches to a free local vhci port ([`vhci::attach_local`]).
    ///
    /// # Errors
    /// [`AttachError`].
    pub fn attach_local(&self, opts: AttachOptions) -> Result<Attachment, AttachError> {
        vhci::attach_local(self, opts)
    }

    /// Exports over TCP ([`export::export_tcp`]).
    ///
    /// # Errors
    /// [`ExportError`].
    pub fn export_tcp(&self, opts: ExportOptions) -> Result<Export, ExportError> {
        export::export_tcp(self, opts)
    }
}
