//! `bench-guest`: the bench's programs inside the VM (see the library docs). `/init` runs
//! `bench-guest scenario`; the other subcommands are the same pieces for use by hand in a guest shell.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use rawgadget_bench_guest::record::{Record, Reporter};
use rawgadget_bench_guest::{gadget, host, scenario, script, sysfs, usbtest};

#[derive(Parser)]
#[command(name = "bench-guest", about = "rawgadget bench programs inside the VM")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the scenario named by rgbench.* words on the kernel command line.
    Scenario {
        /// Where the JSON result lines go.
        #[arg(long, default_value = "/dev/ttyS1")]
        results: String,
        /// Read the words from this file instead of /proc/cmdline.
        #[arg(long, default_value = "/proc/cmdline")]
        cmdline: PathBuf,
    },
    /// List the scenarios this binary knows.
    List,
    /// Run usbtest cases against an enumerated Gadget Zero (usbtest loaded with pattern=1).
    Usbtest {
        #[arg(long, value_delimiter = ',', default_values_t = usbtest::MATRIX_CASES.to_vec())]
        cases: Vec<u32>,
        #[arg(long, default_value_t = 100)]
        count: u32,
        #[arg(long, default_value_t = 5)]
        runs: u32,
    },
    /// Replay a host script against an enumerated Gadget Zero and print what the host saw.
    Host {
        /// Script file; the built-in default script when absent.
        #[arg(long)]
        script: Option<PathBuf>,
        #[arg(long, default_value = "x")]
        substrate: String,
    },
    /// Attach usbip-vudc.N to vhci_hcd.0 through a socketpair and stay alive until killed.
    VudcAttach {
        #[arg(long, default_value = "usbip-vudc.0")]
        vudc: String,
        /// USB speed for vhci's attach (3 = high).
        #[arg(long, default_value_t = 3)]
        speed: u32,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Scenario { results, cmdline } => {
            let text = std::fs::read_to_string(&cmdline)
                .with_context(|| format!("reading {}", cmdline.display()))?;
            let rep = Reporter::open(&results)
                .with_context(|| format!("opening result channel {results}"))?;
            let params = match scenario::Params::from_cmdline(&text) {
                Ok(p) => p,
                Err(e) => {
                    rep.emit(&Record::End {
                        status: 2,
                        detail: format!("{e:#}"),
                    });
                    return Err(e);
                }
            };
            std::process::exit(scenario::run(&params, &rep));
        }
        Cmd::List => {
            for (name, what) in scenario::SCENARIOS {
                println!("{name:<18} {what}");
            }
            Ok(())
        }
        Cmd::Usbtest { cases, count, runs } => {
            let dev = sysfs::wait_for(
                gadget::GZERO_VID,
                gadget::GZERO_PID,
                0,
                Some("usbtest"),
                Duration::from_secs(10),
            )?;
            let usb = rawgadget_bench_guest::usbfs::Device::open(&dev.devnode())?;
            for case in cases {
                let p = usbtest::case_params(case, count);
                for _ in 0..runs {
                    match usbtest::run_case(&usb, 0, p) {
                        Ok(d) => println!("test {case}, {:.6} secs", d.as_secs_f64()),
                        Err(e) => {
                            println!("test {case} --> {e}");
                            break;
                        }
                    }
                }
            }
            Ok(())
        }
        Cmd::Host {
            script: path,
            substrate,
        } => {
            let text = match path {
                Some(p) => std::fs::read_to_string(&p)
                    .with_context(|| format!("reading {}", p.display()))?,
                None => script::DEFAULT_SCRIPT.to_string(),
            };
            let steps = script::parse(&text)?;
            let dev = sysfs::wait_for(
                gadget::GZERO_VID,
                gadget::GZERO_PID,
                0,
                None,
                Duration::from_secs(10),
            )?;
            host::run(&substrate, &dev, &steps, |s| {
                println!("{}", serde_json::to_string(s).unwrap_or_default());
            })?;
            Ok(())
        }
        Cmd::VudcAttach { vudc, speed } => {
            let _ends = gadget::vudc_attach(&vudc, speed, Duration::from_secs(30))?;
            println!("attached {vudc} to vhci_hcd.0; keeping the socketpair open");
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
    }
}
