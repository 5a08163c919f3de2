//! Where each instance's device goes: which controller it runs on and which host sees it.
//!
//! Every open of the node is an engine instance on its own controller model (a [`SharedBus`]).
//! A [`Host`] makes that bus at open time and connects it to a host once the client's RUN has
//! succeeded: [`VhciHost`] attaches it to the local vhci-hcd (the default: the machine's own
//! USB stack enumerates it, as with dummy_hcd), [`ExportHost`] exports it over USB/IP TCP for
//! `usbip attach` elsewhere, [`NoHost`] leaves it unplugged. Tests plug in their own.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use rawgadget_loopback::{Bus, SharedBus};
use rawgadget_uapi::Speed;
use rawgadget_usbip_udc::{
    usbip_personality, AttachOptions, Attachment, ClientFlush, Export, ExportOptions, UsbipConfig,
    UsbipDevice,
};

/// A failed attach: logged, the client is not told (its RUN already succeeded, as the module's
/// does whether or not a host ever enumerates).
pub type AttachError = Box<dyn std::error::Error + Send + Sync>;

/// One instance's device.
pub trait HostDevice: Send + fmt::Debug {
    /// The bus the engine instance runs on: its client side serves the ioctls.
    fn bus(&self) -> Arc<SharedBus>;
    /// How a thread that ran an ioctl writes the host's replies it produced itself (contract
    /// P4), where the host's connection allows it; `None` leaves them to the host's writer.
    fn client_flush(&self) -> Option<ClientFlush> {
        None
    }
    /// The client's RUN succeeded on `dummy_udc.{udc}` (the name it asked for; our
    /// controller is private to the instance). Connect the device to the host; returns a
    /// description for the log.
    ///
    /// # Errors
    /// Why it could not be attached.
    fn attach(&mut self, udc: u32) -> Result<String, AttachError>;
    /// The instance was released: disconnect. Must not block for long.
    fn detach(&mut self);
}

/// Makes the devices.
pub trait Host: Send + Sync + fmt::Debug {
    /// A device for a new open: an instance as after `open("/dev/raw-gadget")` on a fresh
    /// controller named `dummy_udc.0`.
    fn new_device(&self) -> Box<dyn HostDevice>;
}

/// The controller personality every host uses: dummy_udc's endpoints (contract D1) and rules,
/// with `max_speed` as dummy_hcd's `is_super_speed` would set it (D3).
pub fn personality(max_speed: Speed) -> rawgadget_udc::Personality {
    usbip_personality(max_speed)
}

/// Attaches each running device to the local vhci-hcd through sysfs (contract §3.4).
#[derive(Clone, Debug)]
pub struct VhciHost {
    pub config: UsbipConfig,
    pub attach: AttachOptions,
}

impl VhciHost {
    pub fn new(max_speed: Speed) -> VhciHost {
        VhciHost {
            config: UsbipConfig {
                personality: personality(max_speed),
                ..UsbipConfig::default()
            },
            attach: AttachOptions::default(),
        }
    }
}

impl Host for VhciHost {
    fn new_device(&self) -> Box<dyn HostDevice> {
        Box::new(VhciDevice {
            device: UsbipDevice::new(self.config.clone()),
            options: self.attach.clone(),
            attachment: None,
        })
    }
}

#[derive(Debug)]
struct VhciDevice {
    device: UsbipDevice,
    options: AttachOptions,
    attachment: Option<Attachment>,
}

impl HostDevice for VhciDevice {
    fn bus(&self) -> Arc<SharedBus> {
        self.device.bus().clone()
    }

    /// The local vhci socketpair takes writes inline (`Stream::writes_inline`).
    fn client_flush(&self) -> Option<ClientFlush> {
        Some(self.device.client_flush().clone())
    }

    fn attach(&mut self, udc: u32) -> Result<String, AttachError> {
        let mut options = self.options.clone();
        // devid echoes in every USB/IP header (U2); give each device its own
        options.devid = (1 << 16) | (udc + 1);
        let a = self.device.attach_local(options)?;
        let text = a.to_string();
        self.attachment = Some(a);
        Ok(text)
    }

    fn detach(&mut self) {
        if let Some(a) = self.attachment.take() {
            let end = a.detach();
            tracing::debug!(%end, "vhci connection ended");
        }
    }
}

/// Exports each running device over USB/IP TCP: `dummy_udc.N` listens on `base` port + N
/// (contract §3.5). USB/IP has no authentication: loopback only unless `allow_remote`.
#[derive(Clone, Debug)]
pub struct ExportHost {
    pub config: UsbipConfig,
    pub base: SocketAddr,
    pub allow_remote: bool,
}

impl Host for ExportHost {
    fn new_device(&self) -> Box<dyn HostDevice> {
        Box::new(ExportDevice {
            device: UsbipDevice::new(self.config.clone()),
            base: self.base,
            allow_remote: self.allow_remote,
            export: None,
        })
    }
}

#[derive(Debug)]
struct ExportDevice {
    device: UsbipDevice,
    base: SocketAddr,
    allow_remote: bool,
    export: Option<Export>,
}

impl HostDevice for ExportDevice {
    fn bus(&self) -> Arc<SharedBus> {
        self.device.bus().clone()
    }

    fn attach(&mut self, udc: u32) -> Result<String, AttachError> {
        let mut addr = self.base;
        let port = u16::try_from(u32::from(addr.port()) + udc)
            .map_err(|_| format!("port {} + {udc} is out of range", addr.port()))?;
        addr.set_port(port);
        let export = self.device.export_tcp(ExportOptions {
            addr,
            allow_remote: self.allow_remote,
            ..ExportOptions::default()
        })?;
        let text = format!(
            "exported on {} as busid 1-1 (usbip attach -r HOST -b 1-1 --tcp-port {})",
            export.local_addr(),
            export.local_addr().port()
        );
        if let Some(w) = export.warning() {
            tracing::warn!("{w}");
        }
        self.export = Some(export);
        Ok(text)
    }

    fn detach(&mut self) {
        self.export.take();
    }
}

/// Devices that no host ever sees: INIT, RUN and EPS_INFO work, the port is never reset, so
/// endpoints cannot be enabled (contract D6). For trying the node without vhci.
#[derive(Clone, Debug)]
pub struct NoHost {
    pub max_speed: Speed,
}

impl Host for NoHost {
    fn new_device(&self) -> Box<dyn HostDevice> {
        Box::new(NoHostDevice(SharedBus::new(Bus::with_personality(
            personality(self.max_speed),
        ))))
    }
}

#[derive(Debug)]
struct NoHostDevice(Arc<SharedBus>);

impl HostDevice for NoHostDevice {
    fn bus(&self) -> Arc<SharedBus> {
        self.0.clone()
    }
    fn attach(&mut self, udc: u32) -> Result<String, AttachError> {
        Ok(format!("dummy_udc.{udc} running, not attached to any host"))
    }
    fn detach(&mut self) {}
}
