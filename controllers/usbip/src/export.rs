//! Exporting a device over TCP, as `usbipd` does, so that the stock `usbip attach -r HOST -b
//! BUSID` imports it (contract §3.5, U22–U24).
//!
//! Each accepted connection gets TCP_NODELAY (U23) and one op request:
//!
//! - OP_REQ_DEVLIST: one device record, version 0x0111, speed and numbers from the running
//!   gadget, descriptor fields cached from the last enumeration or zero, no interface records;
//!   the gadget is never probed with synthetic SETUPs (U22). Then the connection closes.
//! - OP_REQ_IMPORT: the busid must be ours (else ST_NODEV), the device free (else
//!   ST_DEV_BUSY) and the gadget running (else ST_NA). The reply echoes the requested busid
//!   (U22); then the same stream carries URBs, after a port reset (U5). A later import of the
//!   same running instance is a new connection with a new RESET and no new CONNECT (U24).
//!
//! USB/IP has no authentication: whoever reaches the port can import the device. The default
//! address is 127.0.0.1:3240; any other address needs [`ExportOptions::allow_remote`] and
//! logs a warning.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use rawgadget_usbip::wire::{ExportedDevice, SysfsPath};
use rawgadget_usbip::{BusId, OpRepDevlist, OpRequest, OpStatus, UsbDevice, USBIP_PORT};

use crate::device::UsbipDevice;
use crate::driver::{lock, Stream};
use crate::link::{Budget, Link};

/// The warning printed when the export listens beyond the loopback interface.
pub const NO_AUTH_WARNING: &str = "USB/IP has no authentication and no encryption: anyone who \
     can reach this address can import the device";

/// Options of a TCP export.
#[derive(Clone, Debug)]
pub struct ExportOptions {
    /// Where to listen. Default 127.0.0.1:3240 (`USBIP_PORT`).
    pub addr: SocketAddr,
    /// Required for an address that is not loopback (U22 has no authentication).
    pub allow_remote: bool,
    /// The busid the device is listed and imported under. Default `"1-1"`.
    pub busid: String,
    /// `busnum` and `devnum` of the device record; the importer sends
    /// `busnum << 16 | devnum` as `devid` (U22). Default 1 and 1.
    pub busnum: u32,
    pub devnum: u32,
    /// Byte budgets: [`Budget::REMOTE`] (U25).
    pub budget: Budget,
    /// How long a connection may take to send its op request.
    pub handshake_timeout: Duration,
    /// Connections served at once (handshakes and the import); more are closed at once.
    pub max_connections: usize,
}

impl Default for ExportOptions {
    fn default() -> ExportOptions {
        ExportOptions {
            addr: SocketAddr::from(([127, 0, 0, 1], USBIP_PORT)),
            allow_remote: false,
            busid: "1-1".into(),
            busnum: 1,
            devnum: 1,
            budget: Budget::REMOTE,
            handshake_timeout: Duration::from_secs(10),
            max_connections: 16,
        }
    }
}

/// Why an export cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(
        "refusing to export on {0}, which is not a loopback address, without an explicit \
         opt-in: {NO_AUTH_WARNING}"
    )]
    RemoteNotAllowed(SocketAddr),
    #[error("busid {0:?} does not fit USB/IP's 32-byte field")]
    BadBusId(String),
    #[error("listening on {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// A running export. Dropping it (or [`Export::close`]) stops listening and closes the
/// imported connection, if any.
#[derive(Debug)]
pub struct Export {
    local_addr: SocketAddr,
    warning: Option<&'static str>,
    shared: Arc<ExportShared>,
    accept_thread: Option<thread::JoinHandle<()>>,
}

struct ExportShared {
    stop: AtomicBool,
    connections: AtomicUsize,
    /// Closes the imported connection.
    current: Mutex<Option<Arc<dyn Fn() + Send + Sync>>>,
}

impl std::fmt::Debug for ExportShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExportShared")
            .field("connections", &self.connections.load(Ordering::Relaxed))
            .finish()
    }
}

impl Export {
    /// The address actually listened on (port 0 picks one).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// [`NO_AUTH_WARNING`] when listening beyond loopback.
    pub fn warning(&self) -> Option<&'static str> {
        self.warning
    }

    /// Stops listening and closes the imported connection.
    pub fn close(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(close) = self
            .shared
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            close();
        }
        if let Some(t) = self.accept_thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Export {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts exporting `device` (see the module doc).
///
/// # Errors
/// [`ExportError::RemoteNotAllowed`] for a non-loopback address without
/// [`ExportOptions::allow_remote`], [`ExportError::Bind`] when the address is taken.
pub fn export_tcp(device: &UsbipDevice, opts: ExportOptions) -> Result<Export, ExportError> {
    let remote = !opts.addr.ip().is_loopback();
    if remote && !opts.allow_remote {
        return Err(ExportError::RemoteNotAllowed(opts.addr));
    }
    BusId::new(&opts.busid).ok_or_else(|| ExportError::BadBusId(opts.busid.clone()))?;
    let listener = TcpListener::bind(opts.addr).map_err(|source| ExportError::Bind {
        addr: opts.addr,
        source,
    })?;
    listener.set_nonblocking(true)?;
    let local_addr = listener.local_addr()?;
    let warning = remote.then_some(NO_AUTH_WARNING);
    if remote {
        tracing::warn!(addr = %local_addr, "{NO_AUTH_WARNING}");
    }
    tracing::info!(addr = %local_addr, busid = %opts.busid, "exporting over USB/IP");
    let shared = Arc::new(ExportShared {
        stop: AtomicBool::new(false),
        connections: AtomicUsize::new(0),
        current: Mutex::new(None),
    });
    let accept_thread = {
        let (device, shared) = (device.clone(), shared.clone());
        thread::Builder::new()
            .name("usbip-listen".into())
            .spawn(move || accept_loop(&listener, &device, &opts, &shared))?
    };
    Ok(Export {
        local_addr,
        warning,
        shared,
        accept_thread: Some(accept_thread),
    })
}

fn accept_loop(
    listener: &TcpListener,
    device: &UsbipDevice,
    opts: &ExportOptions,
    shared: &Arc<ExportShared>,
) {
    while !shared.stop.load(Ordering::SeqCst) {
        let (stream, peer) = match listener.accept() {
            Ok(s) => s,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(20));
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        if shared.connections.load(Ordering::SeqCst) >= opts.max_connections {
            tracing::warn!(%peer, "too many USB/IP connections: closing this one");
            continue;
        }
        let Ok(stream) = prepare_accepted(stream) else {
            continue;
        };
        shared.connections.fetch_add(1, Ordering::SeqCst);
        let (dev, o, sh) = (device.clone(), opts.clone(), shared.clone());
        let spawned = thread::Builder::new()
            .name("usbip-conn".into())
            .spawn(move || {
                let span = tracing::info_span!("usbip", %peer);
                let _entered = span.enter();
                if let Err(e) = handle_connection(&dev, &o, &sh, stream, span.clone()) {
                    tracing::debug!(error = %e, "connection ended during the handshake");
                }
                sh.connections.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            shared.connections.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// An accepted socket as the export uses it: blocking, TCP_NODELAY on (contract U23: without
/// it Nagle's algorithm and delayed ACKs add tens of ms to small RET_SUBMITs).
///
/// # Errors
/// When the options cannot be set.
pub fn prepare_accepted(stream: TcpStream) -> io::Result<TcpStream> {
    stream.set_nonblocking(false)?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// The device record of OP_REP_DEVLIST and OP_REP_IMPORT (contract U22).
fn device_record(
    device: &UsbipDevice,
    opts: &ExportOptions,
    busid: BusId,
    speed: u32,
) -> UsbDevice {
    let mut record = UsbDevice {
        path: SysfsPath::new(&format!(
            "/sys/devices/platform/rawgadget/usbip/{}",
            opts.busid
        ))
        .unwrap_or_default(),
        busid,
        busnum: opts.busnum,
        devnum: opts.devnum,
        speed,
        ..UsbDevice::default()
    };
    if let Some(d) = device.cached_device_descriptor() {
        record.id_vendor = u16::from_le_bytes([d[8], d[9]]);
        record.id_product = u16::from_le_bytes([d[10], d[11]]);
        record.bcd_device = u16::from_le_bytes([d[12], d[13]]);
        record.device_class = d[4];
        record.device_subclass = d[5];
        record.device_protocol = d[6];
        record.num_configurations = d[17];
    }
    record
}

/// One connection: the handshake, then (after an import) the URB stream.
fn handle_connection(
    device: &UsbipDevice,
    opts: &ExportOptions,
    shared: &Arc<ExportShared>,
    mut stream: TcpStream,
    span: tracing::Span,
) -> io::Result<()> {
    stream.set_read_timeout_to(Some(opts.handshake_timeout))?;
    let bus = device.bus();
    let clock = device.clock();
    let link = Arc::new(Mutex::new(Link::with_handshake(
        device.link_config(opts.budget),
    )));
    // the op request: 8 or 40 bytes, read as they come
    let mut buf = [0u8; 64];
    let request = loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        let r = bus.with(|b| {
            let mut l = lock(&link);
            l.handle_input(b, clock.now(), &buf[..n])
                .map(|()| l.poll_request())
        });
        match r {
            Ok(Some(request)) => break request,
            Ok(None) => continue,
            Err(e) => {
                tracing::debug!(error = %e, "bad op request: closing");
                return Ok(());
            }
        }
    };
    tracing::debug!(%request, "op request");
    let ours = BusId::new(&opts.busid).unwrap_or_default();
    let speed = device.speed().map_or(0, |s| s as u32);
    match request {
        OpRequest::Devlist => {
            let reply = OpRepDevlist::new(vec![ExportedDevice {
                device: device_record(device, opts, ours, speed),
                interfaces: Vec::new(),
            }])
            .expect("no interface records, bNumInterfaces 0");
            lock(&link).answer_devlist(&reply);
            stream.write_all(&lock(&link).poll_transmit())?;
            Ok(())
        }
        OpRequest::Import { busid } => {
            // usbipd compares with strncmp over SYSFS_BUS_ID_SIZE
            let refuse = |status: OpStatus, stream: &mut TcpStream| -> io::Result<()> {
                tracing::info!(%busid, %status, "import refused");
                lock(&link).refuse_import(status);
                stream.write_all(&lock(&link).poll_transmit())
            };
            if busid.as_bytes() != ours.as_bytes() {
                return refuse(OpStatus::NoDev, &mut stream);
            }
            let claim = match device.claim() {
                Ok(c) => c,
                Err(_) => return refuse(OpStatus::DevBusy, &mut stream),
            };
            let speed = match device.wait_running(device.config().run_timeout) {
                Ok(s) => s,
                Err(e) => {
                    tracing::info!(error = %e, "import before the gadget runs");
                    return refuse(OpStatus::Na, &mut stream);
                }
            };
            let record = device_record(device, opts, busid, speed as u32);
            let now = clock.now();
            // contract U22 (busid echoed, 0x0111), U5 and U24 (a reset, no CONNECT)
            bus.with(|b| lock(&link).accept_import(b, now, &busid, record));
            stream.set_read_timeout_to(None)?;
            tracing::info!(%busid, speed = speed.as_str(), "imported");
            let handle = device.spawn(link, stream, span, claim)?;
            *shared.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle.closer());
            if shared.stop.load(Ordering::SeqCst) {
                handle.close();
            }
            let end = handle.join();
            tracing::debug!(%end, "import ended");
            shared
                .current
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            Ok(())
        }
    }
}
