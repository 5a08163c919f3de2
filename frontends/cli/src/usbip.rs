//! `--usbip-attach` and `--usbip-export`: the built-in devices on the in-process engine, with a
//! USB/IP host instead of a raw gadget node (crate `rawgadget-usbip-udc`).
//!
//! - `--usbip-attach` attaches to this machine's vhci-hcd through sysfs (root, `modprobe
//!   vhci-hcd`, no gadget module and no `usbip` tool) once the device runs, and prints
//!   `rawgadget: attached to vhci port N (hs hub), high-speed, devid 0x...`. Closing (SIGTERM,
//!   SIGINT, the end of the program) closes our end of the socket, and vhci detaches the port.
//! - `--usbip-export [ADDR]` listens like usbipd (default 127.0.0.1:3240) for `usbip attach -r
//!   HOST -b BUSID`; any other address needs `--usbip-allow-remote` and prints a warning.
//! - `--usbip-iso` uses the iso-capable controller personality (contract §4) instead of
//!   dummy_udc's, so Gadget Zero offers its iso altsetting.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use rawgadget::usbip::{
    usbip_iso_personality, AttachOptions, Export, ExportOptions, UsbipConfig, UsbipDevice,
    VhciSysfs, NO_AUTH_WARNING,
};
use rawgadget::Gadget;

/// USB/IP transport flags, shared by `zero` and `keyboard`.
#[derive(Args, Clone, Debug)]
pub struct UsbipArgs {
    /// Attach the device to this machine's vhci-hcd (needs root and `modprobe vhci-hcd`)
    /// instead of opening a raw gadget node.
    #[arg(long, conflicts_with = "usbip_export")]
    pub usbip_attach: bool,
    /// Export the device over USB/IP on ADDR (default 127.0.0.1:3240) for
    /// `usbip attach -r HOST -b BUSID`, instead of opening a raw gadget node.
    #[arg(
        long,
        value_name = "ADDR",
        num_args = 0..=1,
        default_missing_value = "127.0.0.1:3240"
    )]
    pub usbip_export: Option<SocketAddr>,
    /// Allow --usbip-export on an address that is not loopback. USB/IP has no
    /// authentication: anyone who can reach the address can import the device.
    #[arg(long)]
    pub usbip_allow_remote: bool,
    /// The busid the export lists and imports the device under.
    #[arg(long, default_value = "1-1", value_name = "BUSID")]
    pub usbip_busid: String,
    /// Use the iso-capable controller (usbip-vudc's endpoint list, iso transfers served on
    /// a clock, with up to 50 ms of grace for a streaming client's next request; high speed
    /// at most) instead of dummy_udc's, so Gadget Zero offers its iso
    /// altsetting (usbtest with alt=1). The UDC names become usbip-vudc / usbip-vudc.0 unless
    /// --driver / --device say otherwise.
    #[arg(long)]
    pub usbip_iso: bool,
    /// vhci_hcd.0's sysfs directory (for tests).
    #[arg(long, hide = true, default_value = rawgadget_usbip_udc::vhci::VHCI_SYSFS)]
    pub usbip_vhci_sysfs: PathBuf,
}

impl UsbipArgs {
    pub fn enabled(&self) -> bool {
        self.usbip_attach || self.usbip_export.is_some()
    }
}

/// A running transport; [`Transport::finish`] takes it down.
pub enum Transport {
    /// The attach thread: attaches once the device runs, then holds the attachment.
    Attach {
        stop: Arc<AtomicBool>,
        thread: thread::JoinHandle<Result<()>>,
    },
    Export(Export),
}

/// Starts the transport for `device` (whose gadget is `gadget`). Errors of an export come at
/// once; an attach waits for RUN in its own thread and stops the gadget's event loop if it
/// fails or when vhci drops the port.
///
/// # Errors
/// An export that cannot listen (address in use, non-loopback without the opt-in).
pub fn start(args: &UsbipArgs, device: UsbipDevice, gadget: &Gadget) -> Result<Transport> {
    if let Some(addr) = args.usbip_export {
        let export = device
            .export_tcp(ExportOptions {
                addr,
                allow_remote: args.usbip_allow_remote,
                busid: args.usbip_busid.clone(),
                ..ExportOptions::default()
            })
            .context("--usbip-export")?;
        if export.warning().is_some() {
            eprintln!("rawgadget: warning: {NO_AUTH_WARNING}");
        }
        let local = export.local_addr();
        println!(
            "rawgadget: exporting busid {} on {local} (import with: usbip --tcp-port {} attach -r {} -b {})",
            args.usbip_busid,
            local.port(),
            local.ip(),
            args.usbip_busid
        );
        return Ok(Transport::Export(export));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let opts = AttachOptions {
        sysfs: VhciSysfs::at(&args.usbip_vhci_sysfs),
        ..AttachOptions::default()
    };
    // fail before RUN when vhci is missing: the message names the fix
    opts.sysfs.check()?;
    let thread = {
        let (stop, gadget) = (stop.clone(), gadget.clone());
        thread::Builder::new()
            .name("usbip-attach".into())
            .spawn(move || attach_and_hold(device, opts, &stop, &gadget))?
    };
    Ok(Transport::Attach { stop, thread })
}

fn attach_and_hold(
    device: UsbipDevice,
    opts: AttachOptions,
    stop: &AtomicBool,
    gadget: &Gadget,
) -> Result<()> {
    let attachment = match device.attach_local(opts) {
        Ok(a) => a,
        Err(e) => {
            gadget.stop_events();
            return Err(e).context("--usbip-attach");
        }
    };
    println!("rawgadget: attached to {attachment}");
    while attachment.is_attached() && !stop.load(Ordering::SeqCst) {
        thread::sleep(Duration::from_millis(50));
    }
    if stop.load(Ordering::SeqCst) {
        let end = attachment.detach();
        tracing::debug!(%end, "detached");
    } else {
        let end = attachment.wait();
        eprintln!("rawgadget: the vhci port is gone ({end}); stopping");
        gadget.stop_events();
    }
    Ok(())
}

impl Transport {
    /// Detaches or stops exporting.
    ///
    /// # Errors
    /// The attach's error, if it failed.
    pub fn finish(self) -> Result<()> {
        match self {
            Transport::Attach { stop, thread } => {
                stop.store(true, Ordering::SeqCst);
                thread
                    .join()
                    .map_err(|_| anyhow::anyhow!("the usbip attach thread panicked"))?
            }
            Transport::Export(export) => {
                export.close();
                Ok(())
            }
        }
    }
}

/// The configuration of the USB/IP device: the dummy personality with SuperSpeed available
/// (vhci has a SuperSpeed hub; the gadget's `--speed` still decides), or the iso-capable one.
pub fn config(args: &UsbipArgs) -> UsbipConfig {
    if args.usbip_iso {
        UsbipConfig {
            personality: usbip_iso_personality(),
            ..UsbipConfig::default()
        }
    } else {
        UsbipConfig::default()
    }
}

/// The UDC names INIT uses: the iso personality's unless the user chose others.
pub fn udc_names<'a>(args: &UsbipArgs, driver: &'a str, device: &'a str) -> (&'a str, &'a str) {
    if args.usbip_iso && driver == "dummy_udc" && device == "dummy_udc.0" {
        ("usbip-vudc", "usbip-vudc.0")
    } else {
        (driver, device)
    }
}
