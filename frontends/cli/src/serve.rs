//! `rawgadget serve`: `/dev/raw-gadget` without the kernel module, through CUSE
//! (`rawgadget-cuse`). Every open is an independent raw gadget instance; a device that calls
//! RUN is attached to the local vhci-hcd (default) or exported over USB/IP.
//!
//! Needs root, the `cuse` module, and for the default attach `vhci-hcd`:
//! `modprobe cuse vhci-hcd && rawgadget serve`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use rawgadget_cuse::node::{self, Permissions, Roots};
use rawgadget_cuse::{
    serve, CuseChannel, ExportHost, Host, NoHost, ProcessVm, ServeConfig, Server, VhciHost,
};
use rawgadget_uapi::Speed;

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// The node's name under /dev.
    #[arg(long, default_value = "raw-gadget")]
    name: String,
    /// The node's mode (octal), set by the daemon once the node appears.
    #[arg(long, default_value = "0600", value_parser = parse_mode)]
    mode: u32,
    /// The node's owner (name from /etc/passwd, or uid).
    #[arg(long, default_value = "0")]
    owner: String,
    /// The node's group (name from /etc/group, or gid); with --mode 0660 lets that group use
    /// raw gadget.
    #[arg(long, default_value = "0")]
    group: String,
    /// Leave mode, owner and group to udev (packaging/99-rawgadget.rules).
    #[arg(long)]
    no_chmod: bool,
    /// How many `dummy_udc.N` names exist, as `dummy_hcd.num` would make.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=256))]
    udcs: u32,
    /// The controllers' maximum speed (dummy_hcd's default is high; super mirrors
    /// `is_super_speed=1`).
    #[arg(long, value_enum, default_value_t = MaxSpeed::High)]
    max_speed: MaxSpeed,
    /// Where devices go once they RUN.
    #[arg(long, value_enum, default_value_t = AttachTo::Vhci)]
    attach: AttachTo,
    /// With --attach export: the address of dummy_udc.0; dummy_udc.N listens on port + N.
    #[arg(long, default_value = "127.0.0.1:3240")]
    export_addr: SocketAddr,
    /// With --attach export: allow a non-loopback address (USB/IP has no authentication).
    #[arg(long)]
    allow_remote: bool,
    /// Always use the retry protocol (128 KiB per transfer), never the callers' memory.
    #[arg(long)]
    no_fast_path: bool,
    /// Threads reading /dev/cuse at once: while one handles a request, the others take the
    /// next ones (blocked calls never hold a reader).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    readers: u32,
    /// The CUSE channel.
    #[arg(long, default_value = rawgadget_cuse::CUSE_PATH)]
    cuse: PathBuf,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum MaxSpeed {
    High,
    Super,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum AttachTo {
    /// The local vhci-hcd (modprobe vhci-hcd): this machine enumerates the devices.
    Vhci,
    /// USB/IP over TCP, for `usbip attach` on another machine.
    Export,
    /// Nowhere (for trying the node).
    None,
}

fn parse_mode(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| format!("{s:?} is not an octal mode"))
}

pub fn run(args: ServeArgs) -> Result<ExitCode> {
    let roots = Roots::default();
    node::check_free(&roots, &args.name, Duration::from_secs(2))?;
    let max_speed = match args.max_speed {
        MaxSpeed::High => Speed::High,
        MaxSpeed::Super => Speed::Super,
    };
    let host: Arc<dyn Host> = match args.attach {
        AttachTo::Vhci => {
            let h = VhciHost::new(max_speed);
            h.attach.sysfs.check().context(
                "the default --attach vhci needs vhci-hcd (or use --attach export / none)",
            )?;
            Arc::new(h)
        }
        AttachTo::Export => Arc::new(ExportHost {
            config: VhciHost::new(max_speed).config,
            base: args.export_addr,
            allow_remote: args.allow_remote,
        }),
        AttachTo::None => Arc::new(NoHost { max_speed }),
    };
    let perms = if args.no_chmod {
        None
    } else {
        let uid = node::lookup_id(Path::new("/etc/passwd"), &args.owner)
            .with_context(|| format!("unknown user {:?}", args.owner))?;
        let gid = node::lookup_id(Path::new("/etc/group"), &args.group)
            .with_context(|| format!("unknown group {:?}", args.group))?;
        Some(Permissions {
            mode: args.mode,
            uid,
            gid,
        })
    };
    let channel = CuseChannel::open(&args.cuse).with_context(|| {
        format!(
            "opening {} (run as root after `modprobe cuse`)",
            args.cuse.display()
        )
    })?;
    let config = ServeConfig {
        devname: args.name.clone(),
        udcs: args.udcs,
        fast_path: !args.no_fast_path,
        readers: args.readers as usize,
    };
    let server = Server::new(Arc::new(channel), Arc::new(ProcessVm), host, config);

    // SIGINT/SIGTERM: release every instance (devices detach), then exit; closing /dev/cuse
    // removes the node and fails the clients' calls (contract C13)
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])
    .context("installing signal handlers")?;
    {
        let server = server.clone();
        std::thread::spawn(move || {
            if let Some(sig) = signals.forever().next() {
                tracing::info!(sig, "stopping: releasing every instance");
                server.shutdown();
                std::process::exit(0);
            }
        });
    }
    if let Some(perms) = perms {
        let name = args.name.clone();
        std::thread::spawn(move || {
            match node::apply_permissions(&roots, &name, perms, Duration::from_secs(5)) {
                Ok(path) => tracing::info!(
                    "{} ready: mode {:o}, uid {}, gid {}",
                    path.display(),
                    perms.mode,
                    perms.uid,
                    perms.gid
                ),
                Err(e) => tracing::error!("setting up /dev/{name}: {e}"),
            }
        });
    }
    eprintln!(
        "rawgadget: serving /dev/{} ({} dummy_udc name{}, devices attach to {:?}, fast path {})",
        args.name,
        args.udcs,
        if args.udcs == 1 { "" } else { "s" },
        args.attach,
        if args.no_fast_path { "off" } else { "on" }
    );
    match serve(&server) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => bail!("{e}"),
    }
}
