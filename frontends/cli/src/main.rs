//! `rawgadget`: run the built-in devices on a raw gadget node, or print their descriptors.
//!
//! - `rawgadget [demo]` (the default) runs the keyboard and Gadget Zero against the in-process
//!   host (no root, no kernel module) and prints what the host saw and the transfers;
//! - `rawgadget describe [zero|keyboard|all]` prints descriptors like `lsusb -v`, without a
//!   kernel;
//! - `rawgadget zero` runs Gadget Zero for Linux usbtest;
//! - `rawgadget keyboard --text ...` runs a HID keyboard that types the text.
//!
//! `zero` and `keyboard` open the raw gadget node by default; with `--usbip-attach` or
//! `--usbip-export [ADDR]` they run on the in-process engine and a USB/IP host instead (no
//! gadget module; see the `usbip` module).
//!
//! Logs go to stderr, filtered by `RUST_LOG` (default `info`).

mod demo;
mod null;
mod serve;
mod usbip;

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use rawgadget::usbip::UsbipDevice;
use rawgadget::{dummy_udc_eps, Gadget, InProcess, Speed};
use rawgadget_devices::{
    gadget_zero, keyboard, Device, DeviceRunner, KeyboardConfig, Pattern, ZeroConfig,
};

#[derive(Parser)]
#[command(
    name = "rawgadget",
    version,
    about = "USB Raw Gadget devices and tools"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve /dev/raw-gadget without the kernel module (CUSE; root, `modprobe cuse vhci-hcd`).
    Serve(serve::ServeArgs),
    /// Run the keyboard and Gadget Zero against the in-process host (the default command).
    Demo {
        /// The speed the devices ask for.
        #[arg(long, value_enum, default_value_t = SpeedArg::High)]
        speed: SpeedArg,
    },
    /// Print the built-in devices' descriptors like `lsusb -v` (no kernel needed).
    Describe {
        #[arg(value_enum, default_value_t = Which::All)]
        device: Which,
        /// The speed whose descriptors to print.
        #[arg(long, value_enum, default_value_t = SpeedArg::High)]
        speed: SpeedArg,
    },
    /// Run Gadget Zero (source/sink, vendor control requests) for Linux usbtest.
    Zero {
        #[command(flatten)]
        udc: UdcArgs,
        #[command(flatten)]
        usbip: usbip::UsbipArgs,
        /// Bytes per bulk request (rounded up to whole packets) [default: 32768 on a raw
        /// gadget node, 65536 with --usbip-*]
        #[arg(long)]
        req_size: Option<usize>,
        /// usbtest's `pattern` parameter: 0 zeros, 1 `(i % maxpacket) % 63`.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(0..=1))]
        pattern: u32,
    },
    /// The bench's null-device floor: a Gadget-Zero-shaped USB/IP responder attached to vhci-hcd
    /// that answers every URB itself, with no engine and no client (contract P5).
    #[command(hide = true)]
    Null(null::NullArgs),
    /// Run a HID boot keyboard that types TEXT once configured.
    Keyboard {
        #[command(flatten)]
        udc: UdcArgs,
        #[command(flatten)]
        usbip: usbip::UsbipArgs,
        /// What to type (US layout, printable ASCII, \n and \t).
        #[arg(long)]
        text: String,
        /// Exit (status 0) once the whole text has been read by the host.
        #[arg(long)]
        exit_when_done: bool,
        /// Start typing at the first HID SET_REPORT (LEDs) with Num Lock set, not at
        /// SET_CONFIGURATION: Linux's usbhid drops the reports of its first 50 ms after the
        /// first open, so a reader that opens the input device later should turn Num Lock on
        /// once it listens.
        #[arg(long)]
        wait_for_led: bool,
    },
}

#[derive(Args)]
struct UdcArgs {
    /// UDC driver name (`USB_UDC_NAME` in /sys/class/udc/<device>/uevent).
    #[arg(long, default_value = "dummy_udc")]
    driver: String,
    /// UDC device name (a directory of /sys/class/udc).
    #[arg(long, default_value = "dummy_udc.0")]
    device: String,
    /// The gadget's maximum speed.
    #[arg(long, value_enum, default_value_t = SpeedArg::High)]
    speed: SpeedArg,
    /// The raw gadget device node.
    #[arg(long, default_value = rawgadget::DEFAULT_NODE)]
    node: String,
}

#[derive(Clone, Copy, ValueEnum)]
enum Which {
    Zero,
    Keyboard,
    All,
}

#[derive(Clone, Copy, ValueEnum)]
enum SpeedArg {
    Low,
    Full,
    High,
    Super,
}

impl From<SpeedArg> for Speed {
    fn from(s: SpeedArg) -> Speed {
        match s {
            SpeedArg::Low => Speed::Low,
            SpeedArg::Full => Speed::Full,
            SpeedArg::High => Speed::High,
            SpeedArg::Super => Speed::Super,
        }
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Demo {
        speed: SpeedArg::High,
    });
    let result = match command {
        Command::Serve(args) => serve::run(args),
        Command::Null(args) => null::run(&args),
        Command::Demo { speed } => demo::run(speed.into()).map(|()| ExitCode::SUCCESS),
        Command::Describe { device, speed } => describe(device, speed.into()),
        Command::Zero {
            udc,
            usbip,
            req_size,
            pattern,
        } => run_zero(&udc, &usbip, req_size, pattern),
        Command::Keyboard {
            udc,
            usbip,
            text,
            exit_when_done,
            wait_for_led,
        } => run_keyboard(
            &udc,
            &usbip,
            KeyboardConfig { text, wait_for_led },
            exit_when_done,
        ),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("rawgadget: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

// ---- describe ----------------------------------------------------------------------------

fn describe(which: Which, speed: Speed) -> Result<ExitCode> {
    let mut devices: Vec<(&str, Device)> = Vec::new();
    if matches!(which, Which::Zero | Which::All) {
        devices.push((
            "Gadget Zero",
            gadget_zero(ZeroConfig {
                speed,
                ..ZeroConfig::default()
            })
            .0,
        ));
    }
    if matches!(which, Which::Keyboard | Which::All) {
        let text = KeyboardConfig::default();
        devices.push(("HID keyboard", keyboard(text)?.0));
    }
    let mut out = String::new();
    for (i, (name, mut dev)) in devices.into_iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        dev.assign_endpoints(&dummy_udc_eps())
            .with_context(|| format!("assigning endpoints of {name}"))?;
        print_device(&mut out, name, &dev, speed);
    }
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}

fn print_device(out: &mut String, name: &str, dev: &Device, speed: Speed) {
    use std::fmt::Write;
    let set = dev.descriptor_set(speed);
    let _ = writeln!(
        out,
        "=== {name} ({}, endpoint numbers as on dummy_udc) ===",
        speed.as_str()
    );
    let _ = write!(out, "{}", rawgadget_usb::Dump(&set.device));
    // MaxPower's unit follows the device's bcdUSB, as in lsusb.
    let bcd_usb = dev.device_descriptor(speed).usb_version;
    let config = rawgadget_usb::Dump::with_usb_version(&set.config, bcd_usb);
    let _ = write!(out, "{config}");
    if let Some(q) = &set.qualifier {
        let _ = write!(out, "{}", rawgadget_usb::Dump(q));
    }
    if let Some(o) = &set.other_speed_config {
        let _ = write!(out, "{}", rawgadget_usb::Dump(o));
    }
    if let Some(b) = &set.bos {
        let _ = write!(out, "{}", rawgadget_usb::Dump(b));
    }
    let _ = writeln!(out, "Strings:");
    for (index, s) in &set.strings {
        let _ = writeln!(out, "  {index:3} {s:?}");
    }
    for (what, bytes) in &set.extra {
        let _ = writeln!(out, "{what} ({} bytes):", bytes.len());
        for chunk in bytes.chunks(16) {
            let hex: Vec<String> = chunk.iter().map(|b| format!("{b:02x}")).collect();
            let _ = writeln!(out, "  {}", hex.join(" "));
        }
    }
}

// ---- running devices ---------------------------------------------------------------------

/// The gadget on the raw gadget node, or on the in-process engine with a USB/IP host.
fn open_gadget(udc: &UdcArgs, usbip: &usbip::UsbipArgs) -> Result<(Gadget, Option<UsbipDevice>)> {
    if usbip.enabled() {
        let (driver, device_name) = usbip::udc_names(usbip, &udc.driver, &udc.device);
        let builder = Gadget::builder()
            .driver(driver)
            .device(device_name)
            .speed(udc.speed.into());
        let (backend, device) = InProcess::usbip(usbip::config(usbip));
        let gadget = builder
            .build(Arc::new(backend))
            .context("INIT on the in-process engine")?;
        return Ok((gadget, Some(device)));
    }
    let gadget = Gadget::builder()
        .driver(&udc.driver)
        .device(&udc.device)
        .speed(udc.speed.into())
        .open(&udc.node)?;
    Ok((gadget, None))
}

/// Stops the event loop on SIGINT or SIGTERM, so the device shuts down cleanly.
fn stop_on_signals(gadget: &Gadget) -> Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .context("installing signal handlers")?;
    let g = gadget.clone();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                tracing::info!(signal = sig, "stopping");
                g.stop_events();
            }
        })?;
    Ok(())
}

fn run_device(
    udc: &UdcArgs,
    gadget: Gadget,
    device: Device,
    usbip: Option<(&usbip::UsbipArgs, UsbipDevice)>,
) -> Result<()> {
    stop_on_signals(&gadget)?;
    let transport = match usbip {
        Some((args, dev)) => Some(usbip::start(args, dev, &gadget)?),
        None => None,
    };
    let result = DeviceRunner::new(gadget, device).run();
    if let Some(t) = transport {
        t.finish()?;
    }
    result.map_err(|e| {
        let hint = match &e {
            rawgadget_devices::DeviceError::Gadget(rawgadget::Error::Op { op, errno })
                if *op == "USB_RAW_IOCTL_RUN" && (errno.0 == 16 || errno.0 == 19) =>
            {
                format!(
                    " (no free UDC named {} with driver {}: is dummy_hcd loaded and the UDC \
                     unused? see /sys/class/udc)",
                    udc.device, udc.driver
                )
            }
            _ => String::new(),
        };
        anyhow::anyhow!("{e}{hint}")
    })
}

fn run_zero(
    udc: &UdcArgs,
    usbip: &usbip::UsbipArgs,
    req_size: Option<usize>,
    pattern: u32,
) -> Result<ExitCode> {
    let pattern = Pattern::from_usbtest(pattern).context("pattern must be 0 or 1")?;
    let req_size = req_size.unwrap_or(if usbip.enabled() {
        rawgadget_devices::zero::IN_PROCESS_REQ_SIZE
    } else {
        rawgadget_devices::zero::DEFAULT_REQ_SIZE
    });
    if req_size == 0 || req_size > 4 << 20 {
        bail!("--req-size must be between 1 and 4194304 (raw gadget's transfer limit)");
    }
    let speed: Speed = udc.speed.into();
    let (device, stats) = gadget_zero(ZeroConfig {
        speed,
        req_size,
        pattern,
    });
    let (gadget, usbip_device) = open_gadget(udc, usbip)?;
    tracing::info!(udc = %udc.device, speed = speed.as_str(), req_size, ?pattern, "Gadget Zero");
    run_device(udc, gadget, device, usbip_device.map(|d| (usbip, d)))?;
    let errors = stats.pattern_errors();
    eprintln!(
        "rawgadget zero: {} bytes sent, {} bytes received, {} pattern errors, {} failed transfers",
        stats.bytes_in.load(Ordering::Relaxed),
        stats.bytes_out.load(Ordering::Relaxed),
        errors,
        stats.transfer_errors.load(Ordering::Relaxed)
    );
    Ok(if errors > 0 {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    })
}

fn run_keyboard(
    udc: &UdcArgs,
    usbip: &usbip::UsbipArgs,
    config: KeyboardConfig,
    exit_when_done: bool,
) -> Result<ExitCode> {
    let chars = config.text.chars().count();
    let wait_for_led = config.wait_for_led;
    let (device, state) = keyboard(config)?;
    let (gadget, usbip_device) = open_gadget(udc, usbip)?;
    tracing::info!(udc = %udc.device, chars, wait_for_led, "HID keyboard");
    if exit_when_done {
        let (g, st) = (gadget.clone(), Arc::clone(&state));
        std::thread::spawn(move || {
            while !st.is_done() {
                std::thread::sleep(Duration::from_millis(20));
            }
            g.stop_events();
        });
    }
    run_device(udc, gadget, device, usbip_device.map(|d| (usbip, d)))?;
    eprintln!(
        "rawgadget keyboard: {}/{} reports delivered",
        state.reports_sent.load(Ordering::SeqCst),
        state.reports_total
    );
    Ok(ExitCode::SUCCESS)
}
