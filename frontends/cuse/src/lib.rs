//! `/dev/raw-gadget` without a kernel module: the Raw Gadget ioctl interface served from
//! userspace through CUSE, each instance's device attached to the local host through vhci-hcd
//! or exported over USB/IP.
//!
//! Read contract §7 (C1–C13, `udc-contract.md`) and spec §1 (`spec/raw-gadget.md`) first;
//! rules are cited where they are applied.
//!
//! # Layers
//!
//! - [`proto`]: the FUSE kernel protocol as CUSE speaks it (`include/uapi/linux/fuse.h`),
//!   sans-IO: requests parsed from the bytes of one read, replies built as the bytes of one
//!   write. Never panics on input.
//! - [`ioctl`]: the 16 ioctls over FUSE_IOCTL, sans-IO: the stateless retry protocol (C4, C5)
//!   and the fast path through the caller's memory (C11), down to a decoded
//!   [`ClientOp`](rawgadget_engine::ClientOp) and what its result writes back.
//! - [`server`]: the shell. One reader thread on `/dev/cuse`, one worker thread per instance
//!   with blocked ops; the engine instance and its controller model are a bus per open file
//!   ([`host`]). It decides nothing about raw gadget itself.
//! - [`host`]: where devices go: vhci-hcd (default), a USB/IP TCP export, or nowhere.
//! - [`node`]: the device node: refusing to shadow the real module's node, mode and group.
//! - [`sys`]: `/dev/cuse` and `process_vm_readv/writev`; the only `unsafe`.
//!
//! # Why our own protocol layer
//!
//! No Rust crate fits (checked 2026-11): `fuser` serves filesystems only (its CUSE issue,
//! cberner/fuser#269, is open); the older pure-Rust FUSE crates that know CUSE_INIT give no
//! control over the retry rounds, interrupts or the caller's pid, and are no longer
//! maintained; `cuse-lowlevel` binds libfuse's C code. Raw gadget needs exactly those controls
//! (EAGAIN for early interrupts, no state between retry rounds, a fast path keyed on
//! `fuse_in_header.pid`), and the part of the protocol CUSE uses is small: seven opcodes.
//!
//! # Limits (contract C2, C11, C12)
//!
//! - Through the retry protocol a transfer moves at most 128 KiB per direction: EP0_WRITE /
//!   EP_WRITE up to 128 KiB − 8 of payload, EP0_READ / EP_READ up to 128 KiB. Longer ones get
//!   ENOMEM where the module (6.12.117+) serves up to 4 MiB. The fast path (root, the default)
//!   lifts this; it falls back to retry for callers in another pid namespace (pid 0), under
//!   Yama `ptrace_scope=3`, or without CAP_SYS_PTRACE.
//! - `lseek` returns 0 instead of ESPIPE (CUSE's `noop_llseek`; FOPEN_NONSEEKABLE has no effect
//!   because CUSE's open never calls `fuse_finish_open`). The node's device number is a CUSE
//!   region, not misc major 10.
//! - If the daemon dies, calls in flight fail with ECONNABORTED and new ones with ENOTCONN; the
//!   node disappears; instances do not survive a restart (C13).
//!
//! # Logs
//!
//! `RUST_LOG=rawgadget_cuse=debug` shows opens, releases, refused ioctls and attaches;
//! `trace` every request.
#![deny(unsafe_code)]

pub mod host;
pub mod ioctl;
pub mod node;
pub mod proto;
pub mod server;
pub mod sys;

pub use host::{ExportHost, Host, HostDevice, NoHost, VhciHost};
pub use server::{serve, Channel, ProcessMemory, ServeConfig, ServeError, Server, Stats};
pub use sys::{CuseChannel, ProcessVm, CUSE_PATH};
