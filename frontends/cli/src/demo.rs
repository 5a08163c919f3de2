//! The embedded default: the built-in devices against the in-process host (engine + dummy
//! controller model + a host that enumerates like Linux), with no root and no kernel module.
//! Prints what the host saw, like `lsusb -v`, then the transfers it made, like usbmon.

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use rawgadget::{Gadget, InProcess, Speed};
use rawgadget_devices::keyboard::text_to_reports;
use rawgadget_devices::{gadget_zero, keyboard, Device, DeviceRunner, KeyboardConfig, ZeroConfig};
use rawgadget_loopback::{Host, HostConfig, Threaded};
use rawgadget_udc::UrbFlags;

const TIMEOUT: Duration = Duration::from_secs(5);

/// What the demo types on the keyboard.
pub const DEMO_TEXT: &str = "Hello from rawgadget!\n";

/// A device program on its own in-process bus, in its own thread, as a raw-gadget program runs.
struct Running {
    port: Threaded,
    runner: thread::JoinHandle<()>,
}

fn start(device: Device, speed: Speed) -> Result<Running> {
    let (backend, bus) = InProcess::new();
    let gadget = Gadget::builder()
        .speed(speed)
        .build(Arc::new(backend))
        .context("INIT on the in-process engine")?;
    let runner = thread::spawn(move || {
        let mut runner = DeviceRunner::new(gadget, device);
        if let Err(e) = runner.run() {
            tracing::debug!("device program ended: {e}");
        }
    });
    Ok(Running {
        port: Threaded::new(bus),
        runner,
    })
}

fn section(title: &str) {
    println!("\n===== {title} =====");
}

/// Enumerates the keyboard, reads every report it types and decodes them back to text.
pub fn keyboard_demo(speed: Speed) -> Result<String> {
    let (device, _state) = keyboard(KeyboardConfig {
        text: DEMO_TEXT.into(),
        ..KeyboardConfig::default()
    })?;
    let mut dev = start(device, speed)?;
    let mut host = Host::new(HostConfig {
        record_bytes: 16,
        ..HostConfig::default()
    });
    host.enumerate(&mut dev.port)
        .context("enumerating the HID keyboard")?;
    let config = host
        .recording()
        .configs
        .first()
        .context("no configuration read")?
        .clone();
    let ep = config
        .windows(7)
        .find(|w| w[0] == 7 && w[1] == 5 && w[2] & 0x80 != 0)
        .map(|w| w[2])
        .context("no interrupt IN endpoint")?;
    let reports = text_to_reports(DEMO_TEXT)?;
    let mut typed = Vec::new();
    for _ in 0..reports.len() {
        let r = host.interrupt(&mut dev.port, ep, vec![0; 8], TIMEOUT);
        if r.status.is_err() {
            bail!("interrupt IN 0x{ep:02x}: {:?}", r.status);
        }
        typed.push(r.data);
    }
    let text = decode_reports(&typed);
    section("HID keyboard: what the host saw");
    print!("{}", host.recording().lsusb());
    section("HID keyboard: transfers");
    print!("{}", host.recording().transfer_log());
    println!("typed: {text:?}");
    drop(dev.port);
    let _ = dev.runner;
    Ok(text)
}

/// Enumerates Gadget Zero, then runs source, sink and vendor control transfers.
pub fn zero_demo(speed: Speed) -> Result<()> {
    let (device, stats) = gadget_zero(ZeroConfig {
        speed,
        req_size: 4096,
        ..ZeroConfig::default()
    });
    let mut dev = start(device, speed)?;
    let mut host = Host::new(HostConfig {
        record_bytes: 16,
        ..HostConfig::default()
    });
    host.enumerate(&mut dev.port)
        .context("enumerating Gadget Zero")?;
    let mp = if speed == Speed::High { 512 } else { 64 };
    let pattern: Vec<u8> = (0..4096).map(|i| ((i % mp) % 63) as u8).collect();
    let out = host.bulk_out(
        &mut dev.port,
        0x02,
        pattern.clone(),
        UrbFlags::default(),
        TIMEOUT,
    );
    let inn = host.bulk_in(&mut dev.port, 0x81, 4096, UrbFlags::default(), TIMEOUT);
    let data: Vec<u8> = (0..64u8).collect();
    host.control_out(&mut dev.port, 0x40, 0x5b, 0, 0, &data)
        .map_err(|e| anyhow::anyhow!("vendor request 0x5b: {e:?}"))?;
    let back = host
        .control_in(&mut dev.port, 0xc0, 0x5c, 0, 0, 64)
        .map_err(|e| anyhow::anyhow!("vendor request 0x5c: {e:?}"))?;
    section("Gadget Zero: what the host saw");
    print!("{}", host.recording().lsusb());
    section("Gadget Zero: transfers");
    print!("{}", host.recording().transfer_log());
    println!(
        "bulk OUT {} bytes: {:?}; bulk IN {} bytes: pattern {}; vendor 0x5b/0x5c: {}; sink pattern errors: {}",
        out.actual,
        out.status,
        inn.actual,
        if inn.data == pattern { "ok" } else { "WRONG" },
        if back == data { "ok" } else { "WRONG" },
        stats.pattern_errors()
    );
    if out.status.is_err() || inn.data != pattern || back != data || stats.pattern_errors() != 0 {
        bail!("Gadget Zero did not behave");
    }
    Ok(())
}

/// Boot-protocol reports back to text (US layout), for the demo's check.
fn decode_reports(reports: &[Vec<u8>]) -> String {
    let mut text = String::new();
    for r in reports {
        if r.len() < 3 || r[2] == 0 {
            continue;
        }
        let shift = r[0] & 0x22 != 0;
        if let Some(c) = (' '..='~').chain(['\n', '\t']).find(|&c| {
            rawgadget_devices::keyboard::key_for(c) == Some((if shift { 0x02 } else { 0 }, r[2]))
        }) {
            text.push(c);
        }
    }
    text
}

/// The `demo` command.
pub fn run(speed: Speed) -> Result<()> {
    println!("rawgadget demo: the built-in devices on the in-process engine and host (no root, no kernel module)");
    let typed = keyboard_demo(speed)?;
    if typed != DEMO_TEXT {
        bail!("the keyboard typed {typed:?}, not {DEMO_TEXT:?}");
    }
    zero_demo(speed)?;
    println!("\nall good: both devices enumerated and transferred as expected");
    Ok(())
}
