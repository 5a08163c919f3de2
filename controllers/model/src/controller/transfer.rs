//! Packet-level matching of one URB against an endpoint's request queue: dummy's
//! `transfer()` (`dummy_hcd.c:1433-1565`), contract D8–D12.
//!
//! The model has no per-frame bandwidth budget: data moves as soon as both sides are ready
//! (dummy's `limit` only spreads the same moves over more 125 µs ticks).

use rawgadget_uapi::Errno;

use super::{Endpoint, GadgetOut, UrbState};

/// Moves data between `urb` and the requests queued on `ep` until the URB completes, the
/// queue runs dry (the device NAKs, D9) or a partly filled request stops the walk (D9).
/// Returns the URB's status once it completes.
pub(super) fn transfer(
    ep: &mut Endpoint,
    urb: &mut UrbState,
    out: &mut GadgetOut,
) -> Option<Result<(), Errno>> {
    // a maxpacket of 0 is refused at enable; ep0's is never 0
    let maxpacket = ep.maxpacket.max(1);
    let to_host = urb.is_in();
    let mut status: Option<Result<(), Errno>> = None;
    // list_for_each_entry over ep->queue, restarted from the head on `rescan` (goto top)
    let mut idx = 0;
    loop {
        let Some(req) = ep.queue.get_mut(idx) else {
            // contract D9: no request, no progress; the URB waits
            return status;
        };
        // contract D8: each step moves min(URB remaining, request remaining)
        let host_len = urb.length() - urb.actual;
        let dev_len = req.length - req.actual;
        let mut len = host_len.min(dev_len);
        let mut rescan = false;
        let mut req_status: Option<Result<(), Errno>> = None;
        let is_short;
        if len == 0 {
            // a zero-length packet
            is_short = true;
        } else {
            // whole packets first, then the remainder as a short packet
            if len >= maxpacket {
                is_short = false;
                if len % maxpacket != 0 {
                    rescan = true;
                }
                len -= len % maxpacket;
            } else {
                is_short = true;
            }
            move_bytes(urb, req, len, to_host);
        }

        if is_short {
            // contract D10: short packets terminate, maybe with overflow
            if host_len == dev_len {
                req_status = Some(Ok(()));
                status = Some(Ok(()));
            } else if to_host {
                req_status = Some(Ok(()));
                status = Some(if dev_len > host_len {
                    Err(Errno::EOVERFLOW)
                } else {
                    Ok(())
                });
            } else {
                status = Some(Ok(()));
                req_status = Some(if host_len > dev_len {
                    Err(Errno::EOVERFLOW)
                } else {
                    Ok(())
                });
            }
        } else {
            // contract D11: full requests/URBs end here unless a ZLP is owed
            if req.length == req.actual {
                if req.zero && to_host {
                    rescan = true; // req.zero on IN: the ZLP comes next
                } else {
                    req_status = Some(Ok(())); // req.zero on OUT is ignored
                }
            }
            if urb.length() == urb.actual {
                if urb.flags.zero_packet && !to_host {
                    rescan = true; // URB_ZERO_PACKET on OUT: the ZLP comes next
                } else {
                    status = Some(Ok(())); // URB_ZERO_PACKET on IN is ignored
                }
            }
        }

        // device side completion: continuable (contract D8: independent of the URB's)
        if let Some(s) = req_status {
            if let Some(req) = ep.queue.remove(idx) {
                out.giveback(ep.id, req, s);
            }
            rescan = true;
        }
        // host side completion: stop
        if status.is_some() {
            return status;
        }
        if rescan {
            idx = 0;
            continue;
        }
        // contract D9: a partly filled request keeps data in order across requests
        match ep.queue.get(idx) {
            Some(req) if req.actual < req.length => return None,
            _ => idx += 1,
        }
    }
}

/// `dummy_perform_transfer` for a linear buffer: `len` bytes at the two current offsets.
/// When one move covers both buffers whole, the buffers are swapped instead of copied: the
/// gadget gets the host's OUT data (or the host the gadget's IN data) without a copy, and the
/// other side gets a buffer whose contents are unspecified (`UrbCompletion::buffer`,
/// `Udc` completions of IN requests).
fn move_bytes(urb: &mut UrbState, req: &mut super::QueuedReq, len: u32, to_host: bool) {
    let n = len as usize;
    let (u, r) = (urb.actual as usize, req.actual as usize);
    let whole = u == 0 && r == 0 && urb.buffer.len() == n && req.buf.len() == n;
    if whole {
        core::mem::swap(&mut urb.buffer, &mut req.buf);
    } else if to_host {
        urb.buffer[u..u + n].copy_from_slice(&req.buf[r..r + n]);
    } else {
        req.buf[r..r + n].copy_from_slice(&urb.buffer[u..u + n]);
    }
    urb.actual += len;
    req.actual += len;
}
