//! Gadgets over USB/IP: the in-process engine with a USB/IP host instead of the loopback host.
//!
//! [`InProcess::usbip`] gives a backend (build the [`Gadget`](crate::Gadget) on it as usual)
//! and the [`UsbipDevice`] whose host side a USB/IP importer drives. Once the gadget has
//! called RUN, attach it to this machine's vhci-hcd ([`UsbipDevice::attach_local`]: root and
//! `modprobe vhci-hcd`, no gadget module) or export it over TCP for `usbip attach`
//! ([`UsbipDevice::export_tcp`]).
//!
//! ```no_run
//! use std::sync::Arc;
//! use rawgadget::usbip::{AttachOptions, UsbipConfig};
//! use rawgadget::{Gadget, InProcess};
//!
//! let (backend, device) = InProcess::usbip(UsbipConfig::default());
//! let gadget = Gadget::builder().build(Arc::new(backend))?;
//! let attach = std::thread::spawn(move || device.attach_local(AttachOptions::default()));
//! gadget.run()?; // then answer events as any raw gadget program does
//! let attachment = attach.join().unwrap().expect("attached");
//! println!("{attachment}");
//! # Ok::<(), rawgadget::Error>(())
//! ```

pub use rawgadget_usbip_udc::{
    usbip_iso_personality, usbip_personality, AttachError, AttachOptions, Attachment, Budget,
    ConnectionEnd, Export, ExportError, ExportOptions, Hub, UsbipConfig, UsbipDevice, VhciSysfs,
    NO_AUTH_WARNING,
};

use crate::InProcess;

impl InProcess {
    /// A backend on a fresh bus whose host is a USB/IP importer (see the module doc).
    ///
    /// Its calls write the USB/IP replies they produce themselves when the device is attached
    /// to the local vhci (an EP_WRITE that completes the host's IN URB sends its RET_SUBMIT
    /// before returning), which saves a thread switch per URB (contract P4).
    pub fn usbip(config: UsbipConfig) -> (InProcess, UsbipDevice) {
        let device = UsbipDevice::new(config);
        let backend =
            InProcess::with_usbip_flush(device.bus().clone(), device.client_flush().clone());
        (backend, device)
    }
}
