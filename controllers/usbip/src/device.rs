//! [`UsbipDevice`]: one emulated device (an engine instance on a controller model) that a
//! USB/IP host can attach: locally through vhci's sysfs ([`crate::vhci`]), remotely through a
//! TCP export ([`crate::export`]), or on any stream a test hands it ([`UsbipDevice::connect`]).
//!
//! The gadget side is the same bus the in-process backend uses: give [`UsbipDevice::bus`] to
//! `rawgadget::InProcess::with_bus`, run the device program, and attach once it has called
//! RUN (the speed to announce is only known then, contract D3).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rawgadget_engine::State;
use rawgadget_loopback::{Bus, SharedBus};
use rawgadget_uapi::Speed;
use rawgadget_udc::Personality;

use crate::driver::{ClientFlush, Clock, ConnectionHandle, Stream};
use crate::link::{Budget, Link, LinkConfig};

/// How a [`UsbipDevice`] is set up.
#[derive(Clone, Debug)]
pub struct UsbipConfig {
    /// The controller personality. Default: [`usbip_personality`] with
    /// [`Speed::Super`].
    pub personality: Personality,
    /// Contract U5's optional second reset ([`LinkConfig::second_reset`]). Default off.
    pub second_reset: bool,
    /// How long an attach or import waits for the gadget's RUN. Default 10 s.
    pub run_timeout: Duration,
}

impl Default for UsbipConfig {
    fn default() -> UsbipConfig {
        UsbipConfig {
            personality: usbip_personality(Speed::Super),
            second_reset: false,
            run_timeout: Duration::from_secs(10),
        }
    }
}

/// dummy_udc's personality (contract §2) as a USB/IP device uses it:
///
/// - the maximum speed is `max_speed` (vhci has a SuperSpeed hub, contract S1; the negotiated
///   speed stays min(INIT speed, maximum), D3);
/// - a port reset takes no time: vhci's root hub did its reset before forwarding anything, so
///   the synthesized one (U5) must be over before the first URB.
pub fn usbip_personality(max_speed: Speed) -> Personality {
    Personality {
        max_speed,
        reset_time: Duration::ZERO,
        ..Personality::dummy()
    }
}

/// The iso-capable personality (contract §4: usbip-vudc's 30 endpoints, iso URBs served on
/// time, maximum speed HIGH) as a USB/IP device uses it: a port reset takes no time (see
/// [`usbip_personality`]), and a streaming iso endpoint waits up to [`USBIP_ISO_GRACE`] for
/// its client's next request ([`Personality::iso_grace`]). Its UDC names are `usbip-vudc` /
/// `usbip-vudc.0`.
pub fn usbip_iso_personality() -> Personality {
    Personality {
        reset_time: Duration::ZERO,
        iso_grace: USBIP_ISO_GRACE,
        ..Personality::vudc()
    }
}

/// How long a packet slot of a streaming iso endpoint waits for the client over USB/IP
/// ([`Personality::iso_grace`]). vhci shows the host no bus clock (its frame number is always
/// 0, contract I6), only when URBs come back, so a slot that waits is indistinguishable from
/// one on time; what the host does see is a packet lost to the client's round trip (one per
/// packet under raw gadget's one-request rule, contract P4), which usbtest counts as an error
/// (T9) and which at 1 ms periods under emulation was most of them. Generous, because it only
/// costs anything when a client stops streaming: one slot is late by it, once.
pub const USBIP_ISO_GRACE: Duration = Duration::from_millis(50);

/// Shared state of a device's connections.
#[derive(Debug, Default)]
struct Connections {
    /// A connection is attached or imported: one host at a time.
    busy: AtomicBool,
    /// The device descriptor the host last read, for OP_REP_DEVLIST (contract U22).
    device_descriptor: Mutex<Option<[u8; 18]>>,
}

/// Why a device cannot be attached right now.
#[derive(Debug, thiserror::Error)]
pub enum NotReady {
    /// The gadget has not called RUN within the timeout.
    #[error("the gadget did not call USB_RAW_IOCTL_RUN within {0:?}")]
    NotRunning(Duration),
    /// The gadget has closed.
    #[error("the gadget has closed")]
    Closed,
    /// Another host has the device attached or imported.
    #[error("the device is already attached")]
    Busy,
}

/// See the module doc. Cheap to clone.
#[derive(Clone, Debug)]
pub struct UsbipDevice {
    shared: Arc<SharedBus>,
    clock: Clock,
    config: Arc<UsbipConfig>,
    connections: Arc<Connections>,
    flush: ClientFlush,
}

impl UsbipDevice {
    /// A fresh bus (controller `dummy_udc.0` with `config.personality`, an instance as after
    /// `open("/dev/raw-gadget")`) and no connection.
    pub fn new(config: UsbipConfig) -> UsbipDevice {
        let bus = Bus::with_personality(config.personality.clone());
        UsbipDevice {
            shared: SharedBus::new(bus),
            clock: Clock::new(),
            config: Arc::new(config),
            connections: Arc::default(),
            flush: ClientFlush::default(),
        }
    }

    /// The bus whose client side the gadget runs on (`rawgadget::InProcess::with_bus`).
    pub fn bus(&self) -> &Arc<SharedBus> {
        &self.shared
    }

    /// What the in-process backend calls after each client operation so that its thread
    /// writes the replies it produced ([`ClientFlush`], contract P4).
    pub fn client_flush(&self) -> &ClientFlush {
        &self.flush
    }

    pub fn config(&self) -> &UsbipConfig {
        &self.config
    }

    /// Whether a host has the device attached or imported.
    pub fn is_attached(&self) -> bool {
        self.connections.busy.load(Ordering::SeqCst)
    }

    /// The device descriptor read by the last host, if any (contract U22).
    pub fn cached_device_descriptor(&self) -> Option<[u8; 18]> {
        *self
            .connections
            .device_descriptor
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until the gadget has called RUN; returns the negotiated speed (contract D3).
    ///
    /// # Errors
    /// [`NotReady::NotRunning`] after `timeout`, [`NotReady::Closed`] if the gadget closed.
    pub fn wait_running(&self, timeout: Duration) -> Result<Speed, NotReady> {
        self.shared
            .wait_for(timeout, |bus| {
                if bus.instance().state() == State::Closed {
                    return Some(Err(NotReady::Closed));
                }
                let udc = bus.controller();
                udc.is_bound().then(|| Ok(udc.speed()))
            })
            .unwrap_or(Err(NotReady::NotRunning(timeout)))
    }

    /// The negotiated speed, if the gadget runs.
    pub fn speed(&self) -> Option<Speed> {
        self.shared.with(|bus| {
            let udc = bus.controller();
            udc.is_bound().then(|| udc.speed())
        })
    }

    /// Takes the device for one host; released when the connection ends.
    pub(crate) fn claim(&self) -> Result<Claim, NotReady> {
        if self.connections.busy.swap(true, Ordering::SeqCst) {
            return Err(NotReady::Busy);
        }
        Ok(Claim {
            connections: Some(self.connections.clone()),
        })
    }

    pub(crate) fn clock(&self) -> Clock {
        self.clock
    }

    pub(crate) fn link_config(&self, budget: Budget) -> LinkConfig {
        LinkConfig {
            budget,
            second_reset: self.config.second_reset,
        }
    }

    /// Serves a stream that already carries URBs, as the socket handed to vhci's `attach`
    /// does (contract U17): the port is reset (U5) and the connection runs on its own thread
    /// until either side closes. The gadget must be running.
    ///
    /// # Errors
    /// [`NotReady`] when the gadget is not running or the device is attached elsewhere;
    /// an I/O error when the threads cannot start.
    pub fn connect<S: Stream>(
        &self,
        stream: S,
        budget: Budget,
        span: tracing::Span,
    ) -> Result<ConnectionHandle, ConnectError> {
        self.wait_running(Duration::ZERO)
            .map_err(ConnectError::NotReady)?;
        let claim = self.claim().map_err(ConnectError::NotReady)?;
        let link = Arc::new(Mutex::new(Link::attached(self.link_config(budget))));
        let now = self.clock.now();
        self.shared.with(|bus| {
            link.lock()
                .unwrap_or_else(|e| e.into_inner())
                .attach(bus, now)
        });
        self.spawn(link, stream, span, claim)
            .map_err(ConnectError::Io)
    }

    /// Runs `link` (attached or imported) on its own thread.
    pub(crate) fn spawn<S: Stream>(
        &self,
        link: Arc<Mutex<Link>>,
        stream: S,
        span: tracing::Span,
        claim: Claim,
    ) -> std::io::Result<ConnectionHandle> {
        let device = self.clone();
        let finished = link.clone();
        ConnectionHandle::spawn(
            self.shared.clone(),
            link,
            stream,
            self.clock,
            span,
            self.flush.clone(),
            move || {
                let descriptor = {
                    let _bus = device.shared.lock();
                    finished
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .device_descriptor()
                };
                if descriptor.is_some() {
                    *device
                        .connections
                        .device_descriptor
                        .lock()
                        .unwrap_or_else(|e| e.into_inner()) = descriptor;
                }
                drop(claim);
            },
        )
    }
}

/// Why [`UsbipDevice::connect`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    NotReady(NotReady),
    #[error("starting the connection: {0}")]
    Io(std::io::Error),
}

/// The device taken by one connection; dropping it frees the device.
#[derive(Debug)]
pub(crate) struct Claim {
    connections: Option<Arc<Connections>>,
}

impl Drop for Claim {
    fn drop(&mut self) {
        if let Some(c) = self.connections.take() {
            c.busy.store(false, Ordering::SeqCst);
        }
    }
}
