//! `rawgadget null --usbip-attach`: the bench's null-device floor (contract P5).
//!
//! Attaches an inline USB/IP responder to this machine's vhci-hcd that enumerates as our Gadget
//! Zero (the same descriptors, built by `rawgadget-devices` with dummy_udc's endpoint list) and
//! answers every URB itself, with no engine and no client thread
//! (`rawgadget_usbip_udc::null`). usbtest's cases run on it; their times are what vhci alone
//! costs. Runs until SIGINT/SIGTERM or until vhci drops the port.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use rawgadget::{dummy_udc_eps, Speed};
use rawgadget_devices::{gadget_zero, ZeroConfig};
use rawgadget_usbip_udc::null::{attach_local, NullDescriptors};
use rawgadget_usbip_udc::vhci::{AttachOptions, VhciSysfs, VHCI_SYSFS};

use crate::SpeedArg;

#[derive(Args)]
pub struct NullArgs {
    /// Attach to this machine's vhci-hcd (root, `modprobe vhci-hcd`); the only transport.
    #[arg(long, required = true)]
    usbip_attach: bool,
    /// The speed whose descriptors the device presents and vhci attaches it at.
    #[arg(long, value_enum, default_value_t = SpeedArg::High)]
    speed: SpeedArg,
    /// vhci_hcd.0's sysfs directory (for tests).
    #[arg(long, hide = true, default_value = VHCI_SYSFS)]
    usbip_vhci_sysfs: std::path::PathBuf,
}

/// Our Gadget Zero's descriptors at `speed`, endpoint numbers as on dummy_udc (the USB/IP
/// controller's default personality), so the floor and (c) present the same device.
pub fn gadget_zero_descriptors(speed: Speed) -> Result<NullDescriptors> {
    let (mut device, _stats) = gadget_zero(ZeroConfig {
        speed,
        ..ZeroConfig::default()
    });
    device
        .assign_endpoints(&dummy_udc_eps())
        .context("assigning Gadget Zero's endpoints")?;
    let set = device.descriptor_set(speed);
    if set.config.is_empty() {
        bail!("Gadget Zero has no configuration at {}", speed.as_str());
    }
    Ok(NullDescriptors {
        speed: Some(speed),
        device: set.device,
        config: set.config,
        qualifier: set.qualifier,
        other_speed_config: set.other_speed_config,
        bos: set.bos,
        strings: set.strings,
    })
}

pub fn run(args: &NullArgs) -> Result<ExitCode> {
    if !args.usbip_attach {
        bail!("`rawgadget null` needs --usbip-attach");
    }
    let descriptors = gadget_zero_descriptors(args.speed.into())?;
    let opts = AttachOptions {
        sysfs: VhciSysfs::at(&args.usbip_vhci_sysfs),
        ..AttachOptions::default()
    };
    let attachment = attach_local(descriptors, &opts).context("--usbip-attach")?;
    println!("rawgadget: null device attached to {attachment}");
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).context("installing signal handlers")?;
    }
    while attachment.is_attached() && !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let end = if stop.load(Ordering::SeqCst) {
        attachment.detach()
    } else {
        attachment.wait()
    };
    eprintln!("rawgadget null: {end}");
    Ok(ExitCode::SUCCESS)
}
