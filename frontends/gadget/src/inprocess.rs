//! The in-process backend: the raw gadget engine, the dummy controller model and an in-process
//! host, all in this process. No root, no kernel module.
//!
//! [`InProcess`] implements [`Backend`] over a [`SharedBus`] (engine instance + controller
//! model behind one mutex and condvar). Its other handle, the `Arc<SharedBus>`, is the host's
//! side: give it to a [`rawgadget_loopback::Threaded`] port and drive a
//! [`rawgadget_loopback::Host`] from another thread.
//!
//! A blocking call submits its operation; if the engine reports it pending, the call waits on
//! the bus's condvar for that operation's result. Cancelling it sets a flag and notifies the
//! condvar; the waiting thread itself then cancels the operation in the engine, which returns
//! EINTR only if the transfer was really still queued (contract D31).
//!
//! Unlike a device node, the engine could keep several requests per endpoint in flight; this
//! backend keeps raw gadget's depth of one so programs behave the same on both.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rawgadget_engine::{ClientOp, OpResult, Outcome, Payload};
use rawgadget_loopback::{Bus, SharedBus};
use rawgadget_uapi::{Errno, Speed, UsbRawEpIo, UsbRawInit, UDC_NAME_LENGTH_MAX};

use crate::backend::{Backend, EpHandle, EpInfo, IoFlags, RawEvent};
use crate::cancel::{CancelHandle, Wake};

/// See the module doc.
///
/// Dropping it is `close()` of the file: the instance unbinds and every blocked call ends.
#[derive(Debug)]
pub struct InProcess {
    shared: Arc<SharedBus>,
}

impl InProcess {
    /// A fresh bus with one `dummy_udc.0` controller (default `dummy_hcd` parameters) and an
    /// instance as after `open("/dev/raw-gadget")`. Returns the backend and the bus, whose
    /// host side the caller drives.
    pub fn new() -> (InProcess, Arc<SharedBus>) {
        let shared = SharedBus::new(Bus::new());
        (
            InProcess {
                shared: shared.clone(),
            },
            shared,
        )
    }

    /// A backend on an existing bus (for example one with another controller personality).
    pub fn with_bus(shared: Arc<SharedBus>) -> InProcess {
        InProcess { shared }
    }

    /// The bus this backend runs on.
    pub fn bus(&self) -> &Arc<SharedBus> {
        &self.shared
    }

    fn immediate(&self, op: ClientOp) -> OpResult {
        match self.shared.with(|b| b.client(op)) {
            Outcome::Done(r) => r,
            // only the five I/O ioctls block, and they go through `blocking`
            Outcome::Pending(id) => self.wait(id, None),
        }
    }

    fn blocking(&self, op: ClientOp, cancel: &CancelHandle) -> OpResult {
        let id = match self.shared.with(|b| b.client(op)) {
            Outcome::Done(r) => return r,
            Outcome::Pending(id) => id,
        };
        let flag = Arc::new(CancelFlag {
            requested: AtomicBool::new(false),
            shared: self.shared.clone(),
        });
        let guard = match cancel.enter(flag.clone()) {
            Ok(g) => Some(g),
            Err(_) => {
                flag.requested.store(true, Ordering::SeqCst);
                None
            }
        };
        let r = self.wait(id, Some(&flag));
        drop(guard);
        r
    }

    fn wait(&self, id: rawgadget_engine::OpId, flag: Option<&CancelFlag>) -> OpResult {
        let mut cancelled = false;
        self.shared
            .wait_for(Duration::MAX, |b| {
                if !cancelled && flag.is_some_and(|f| f.requested.load(Ordering::SeqCst)) {
                    cancelled = true;
                    b.cancel(id);
                }
                b.take_completion(id)
            })
            // wait_for only gives up at its deadline, which Duration::MAX never reaches
            .unwrap_or(OpResult {
                ret: Err(Errno::EINTR),
                payload: Payload::None,
            })
    }
}

/// Set by a [`CancelHandle`]; the waiting thread acts on it under the bus lock.
struct CancelFlag {
    requested: AtomicBool,
    shared: Arc<SharedBus>,
}

impl Wake for CancelFlag {
    fn wake(&self) {
        self.requested.store(true, Ordering::SeqCst);
        self.shared.notify();
    }
}

fn ret_u32(r: &OpResult) -> Result<u32, Errno> {
    r.ret
}

fn unit(r: OpResult) -> Result<(), Errno> {
    r.ret.map(|_| ())
}

fn io(ep: u16, flags: IoFlags, length: usize) -> Result<UsbRawEpIo, Errno> {
    // a length that does not fit `__u32` cannot be expressed through the ioctl either
    let length = u32::try_from(length).map_err(|_| Errno::EINVAL)?;
    Ok(UsbRawEpIo {
        ep,
        flags: flags.0,
        length,
    })
}

fn copy_read(r: OpResult, buf: &mut [u8]) -> Result<usize, Errno> {
    let n = r.ret? as usize;
    if let Payload::Data(data) = r.payload {
        let n = n.min(data.len()).min(buf.len());
        buf[..n].copy_from_slice(&data[..n]);
        return Ok(n);
    }
    Ok(0)
}

impl Backend for InProcess {
    fn init(&self, driver_name: &str, device_name: &str, speed: Speed) -> Result<(), Errno> {
        // strscpy(.., 128) in the module: names of 128 bytes or more are E2BIG
        if driver_name.len() >= UDC_NAME_LENGTH_MAX || device_name.len() >= UDC_NAME_LENGTH_MAX {
            return Err(Errno::E2BIG);
        }
        let init = UsbRawInit::new(driver_name, device_name, speed as u8);
        unit(self.immediate(ClientOp::Init(Box::new(init))))
    }

    fn run(&self) -> Result<(), Errno> {
        unit(self.immediate(ClientOp::Run { arg: 0 }))
    }

    fn event_fetch(&self, capacity: u32, cancel: &CancelHandle) -> Result<RawEvent, Errno> {
        let r = self.blocking(ClientOp::EventFetch { capacity }, cancel);
        r.ret?;
        match r.payload {
            Payload::Event { header, data } => Ok(RawEvent {
                event_type: header.type_,
                length: header.length,
                data,
            }),
            _ => Err(Errno::EIO),
        }
    }

    fn ep0_write(
        &self,
        data: &[u8],
        flags: IoFlags,
        cancel: &CancelHandle,
    ) -> Result<usize, Errno> {
        let io = io(0, flags, data.len())?;
        let r = self.blocking(
            ClientOp::Ep0Write {
                io,
                data: data.to_vec(),
            },
            cancel,
        );
        ret_u32(&r).map(|n| n as usize)
    }

    fn ep0_read(
        &self,
        buf: &mut [u8],
        flags: IoFlags,
        cancel: &CancelHandle,
    ) -> Result<usize, Errno> {
        let io = io(0, flags, buf.len())?;
        copy_read(
            self.blocking(
                ClientOp::Ep0Read {
                    io,
                    buf: Vec::new(),
                },
                cancel,
            ),
            buf,
        )
    }

    fn ep_enable(&self, desc: &[u8; 9]) -> Result<EpHandle, Errno> {
        let r = self.immediate(ClientOp::EpEnable { desc: *desc });
        r.ret.map(|h| EpHandle(h as u16))
    }

    fn ep_disable(&self, ep: EpHandle) -> Result<(), Errno> {
        unit(self.immediate(ClientOp::EpDisable {
            arg: u64::from(ep.0),
        }))
    }

    fn ep_write(
        &self,
        ep: EpHandle,
        data: &[u8],
        flags: IoFlags,
        cancel: &CancelHandle,
    ) -> Result<usize, Errno> {
        let io = io(ep.0, flags, data.len())?;
        let r = self.blocking(
            ClientOp::EpWrite {
                io,
                data: data.to_vec(),
            },
            cancel,
        );
        ret_u32(&r).map(|n| n as usize)
    }

    fn ep_read(
        &self,
        ep: EpHandle,
        buf: &mut [u8],
        flags: IoFlags,
        cancel: &CancelHandle,
    ) -> Result<usize, Errno> {
        let io = io(ep.0, flags, buf.len())?;
        copy_read(
            self.blocking(
                ClientOp::EpRead {
                    io,
                    buf: Vec::new(),
                },
                cancel,
            ),
            buf,
        )
    }

    fn configure(&self) -> Result<(), Errno> {
        unit(self.immediate(ClientOp::Configure { arg: 0 }))
    }

    fn vbus_draw(&self, units_2ma: u32) -> Result<(), Errno> {
        unit(self.immediate(ClientOp::VbusDraw {
            arg: u64::from(units_2ma),
        }))
    }

    fn eps_info(&self) -> Result<Vec<EpInfo>, Errno> {
        let r = self.immediate(ClientOp::EpsInfo);
        let n = r.ret? as usize;
        match r.payload {
            Payload::EpsInfo(info) => Ok(info.eps.iter().take(n).map(EpInfo::from_raw).collect()),
            _ => Err(Errno::EIO),
        }
    }

    fn ep0_stall(&self) -> Result<(), Errno> {
        unit(self.immediate(ClientOp::Ep0Stall { arg: 0 }))
    }

    fn set_halt(&self, ep: EpHandle) -> Result<(), Errno> {
        unit(self.immediate(ClientOp::EpSetHalt {
            arg: u64::from(ep.0),
        }))
    }

    fn clear_halt(&self, ep: EpHandle) -> Result<(), Errno> {
        unit(self.immediate(ClientOp::EpClearHalt {
            arg: u64::from(ep.0),
        }))
    }

    fn set_wedge(&self, ep: EpHandle) -> Result<(), Errno> {
        unit(self.immediate(ClientOp::EpSetWedge {
            arg: u64::from(ep.0),
        }))
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        // release(): the host keeps the bus, the instance goes away
        self.shared.with(|b| b.close());
    }
}
