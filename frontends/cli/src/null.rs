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

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixStream;

    use rawgadget_loopback::{Host, HostConfig};
    use rawgadget_usbip_udc::fake_vhci::FakeVhci;
    use rawgadget_usbip_udc::null::{serve, NullDevice, NullEnd};

    use super::*;

    /// contract P5: the floor enumerates with our Gadget Zero's own descriptors (ids, bulk and
    /// interrupt pairs, strings), at high speed and at SuperSpeed (BOS, companions), through the
    /// fake vhci, and serves the bulk pattern from them.
    #[test]
    fn p5_floor_presents_our_gadget_zero() {
        for speed in [Speed::High, Speed::Super] {
            let descriptors = gadget_zero_descriptors(speed).unwrap();
            let want = descriptors.clone();
            let (ours, theirs) = UnixStream::pair().unwrap();
            let mut device = NullDevice::new(descriptors).unwrap();
            let thread = std::thread::spawn(move || {
                let mut stream = ours;
                serve(&mut device, &mut stream)
            });
            let mut vhci = FakeVhci::new(theirs, speed, 0x0001_0002);
            let mut host = Host::new(HostConfig::default());
            host.enumerate(&mut vhci).unwrap();
            let rec = host.recording();
            assert_eq!(rec.device.as_deref(), Some(&want.device[..]), "{speed:?}");
            assert_eq!(rec.configs[0], want.config, "{speed:?}");
            assert_eq!(rec.configuration, Some(1));
            assert_eq!(rec.string(2).as_deref(), Some("Gadget Zero"));
            assert_eq!(rec.bos.is_some(), want.bos.is_some(), "{speed:?}");
            let mp = if speed == Speed::Super { 1024 } else { 512 };
            let r = host.bulk_in(
                &mut vhci,
                0x81,
                4 * mp,
                rawgadget_udc::UrbFlags::default(),
                Duration::from_secs(5),
            );
            let pattern: Vec<u8> = (0..4 * mp).map(|i| ((i % mp) % 63) as u8).collect();
            assert_eq!((r.status, r.data), (Ok(()), pattern), "{speed:?}");
            assert_eq!(vhci.error(), None);
            vhci.detach();
            assert!(matches!(thread.join().unwrap(), NullEnd::Closed));
        }
    }
}
