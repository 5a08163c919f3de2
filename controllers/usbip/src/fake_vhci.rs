//! A fake vhci-hcd: the host side of a USB/IP connection, in userspace, for tests and tools.
//!
//! [`FakeVhci`] implements the loopback host's [`HostPort`], so the in-process
//! [`Host`](rawgadget_loopback::Host) (Linux-like enumeration, transfers, unlinks) runs over a
//! real socket against the real driver. It plays vhci's part (contract U1, `vhci_hcd.c`,
//! `vhci_tx.c`, `vhci_rx.c`):
//!
//! - SET_ADDRESS is completed locally and never sent (U1, U2); port reset, suspend and resume
//!   are root-hub bits only (U1, U3); power off closes the connection (a detach);
//! - every other URB is one CMD_SUBMIT with a fresh seqnum, `direction` and `number_of_packets`
//!   as vhci sends them (0 for non-iso, U15), the OUT data and iso descriptors after it;
//! - an unlink is a CMD_UNLINK with its own seqnum; a RET_UNLINK gives the URB back with the
//!   unlink status when it is still pending, and is ignored otherwise (`vhci_rx.c:130-175`);
//! - every reply is framed and checked by `rawgadget_usbip`'s [`HostDecoder`], which applies
//!   vhci's rules (U13, U14, U16): a reply vhci would drop the device for is recorded in
//!   [`FakeVhci::error`] and ends the connection, so tests can assert there is none.
//!
//! It also speaks the TCP handshake ([`FakeVhci::import`], [`devlist`]) as the stock `usbip`
//! tool does.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::time::{Duration, Instant as StdInstant};

use rawgadget_loopback::{HostPort, PortAction};
use rawgadget_uapi::{Errno, Speed};
use rawgadget_udc::{Instant, IsoPacket, PortStatus, Unlink, Urb, UrbCompletion, UrbId, UrbKind};
use rawgadget_usbip::wire::{CmdUnlinkRepr, Direction, IsoPacketDescriptor};
use rawgadget_usbip::{
    decode::pad_iso, BusId, CmdSubmit, CmdSubmitRepr, DevicePdu, HostDecoder, HostPdu, HostStep,
    OpRepDevlist, OpRepImport, OpRequest, UrbShape,
};

use crate::driver::Stream;
use crate::link::{USBIP_URB_SHORT_NOT_OK, USBIP_URB_ZERO_PACKET};

/// `USBIP_URB_DIR_IN`, set by vhci on IN URBs (`usbip_common.c`, `tweak_transfer_flags`).
const USBIP_URB_DIR_IN: u32 = 0x0200;

/// A URB the fake host submitted and has not been given back.
#[derive(Debug)]
struct Pending {
    endpoint: u8,
    length: u32,
    iso: Vec<IsoPacket>,
    /// `urb->unlinked`: set by an unlink, it overrides the reply's status (`hcd.c:1727-1729`).
    unlinked: Option<Errno>,
}

/// One reply as read, for tests that look at the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WireReply {
    RetSubmit {
        seqnum: u32,
        status: i32,
        actual_length: u32,
        number_of_packets: u32,
        error_count: u32,
    },
    RetUnlink {
        seqnum: u32,
        status: i32,
    },
}

/// See the module doc.
pub struct FakeVhci<S: Stream> {
    stream: S,
    decoder: HostDecoder,
    speed: Speed,
    devid: u32,
    next_seqnum: u32,
    pending: HashMap<u32, Pending>,
    /// CMD_UNLINK seqnum → target seqnum.
    unlinks: HashMap<u32, u32>,
    done: VecDeque<UrbCompletion>,
    epoch: StdInstant,
    connected: bool,
    /// The first reason the connection broke (a framing error of ours, EOF ...).
    error: Option<String>,
    /// Every reply read, in order.
    pub replies: Vec<WireReply>,
    /// Bytes read from the device.
    pub bytes_read: u64,
    /// The read buffer, allocated once: a fresh zeroed 256 KiB per read cost more than the
    /// device side's work per URB in the benches.
    read_buf: Vec<u8>,
}

impl<S: Stream> std::fmt::Debug for FakeVhci<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeVhci")
            .field("speed", &self.speed)
            .field("pending", &self.pending.len())
            .field("error", &self.error)
            .finish()
    }
}

impl<S: Stream> FakeVhci<S> {
    /// A host already attached on `stream` (the vhci end of a socketpair, or a TCP stream
    /// after [`FakeVhci::import`]) at `speed`.
    pub fn new(stream: S, speed: Speed, devid: u32) -> FakeVhci<S> {
        FakeVhci {
            stream,
            decoder: HostDecoder::new(),
            speed,
            devid,
            next_seqnum: 1,
            pending: HashMap::new(),
            unlinks: HashMap::new(),
            done: VecDeque::new(),
            epoch: StdInstant::now(),
            connected: true,
            error: None,
            replies: Vec::new(),
            bytes_read: 0,
            read_buf: vec![0u8; 256 << 10],
        }
    }

    /// The first thing that broke the connection, if anything did.
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    pub fn is_connected(&self) -> bool {
        self.connected
    }

    pub fn speed(&self) -> Speed {
        self.speed
    }

    pub fn stream(&self) -> &S {
        &self.stream
    }

    /// Sends raw bytes, as a hostile or buggy host would.
    ///
    /// # Errors
    /// As the socket write.
    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Submits a CMD_SUBMIT built by the test (its seqnum is used as is) and records its shape
    /// so the reply can be checked.
    ///
    /// # Errors
    /// As the socket write.
    pub fn submit_raw(&mut self, submit: &CmdSubmit, iso_pipe: bool) -> io::Result<()> {
        self.decoder
            .submitted(submit.header.seqnum, UrbShape::of(&submit.header, iso_pipe));
        self.pending.insert(
            submit.header.seqnum,
            Pending {
                endpoint: submit.header.endpoint_address(),
                length: submit.header.transfer_buffer_length,
                iso: submit
                    .iso_packets
                    .iter()
                    .map(|p| IsoPacket {
                        offset: p.offset,
                        length: p.length,
                        actual_length: 0,
                        status: 0,
                    })
                    .collect(),
                unlinked: None,
            },
        );
        self.next_seqnum = self.next_seqnum.max(submit.header.seqnum.wrapping_add(1));
        self.stream
            .write_all(&DevicePdu::Submit(submit.clone()).to_vec())
    }

    /// Sends a CMD_UNLINK for `target` with its own fresh seqnum; returns that seqnum.
    ///
    /// # Errors
    /// As the socket write.
    pub fn unlink_raw(&mut self, target: u32) -> io::Result<u32> {
        let seqnum = self.fresh_seqnum();
        self.unlinks.insert(seqnum, target);
        let pdu = DevicePdu::Unlink(CmdUnlinkRepr {
            seqnum,
            devid: self.devid,
            unlink_seqnum: target,
        });
        self.stream.write_all(&pdu.to_vec())?;
        Ok(seqnum)
    }

    fn fresh_seqnum(&mut self) -> u32 {
        let s = self.next_seqnum;
        self.next_seqnum = self.next_seqnum.wrapping_add(1).max(1);
        s
    }

    fn fail(&mut self, why: String) {
        if self.error.is_none() {
            tracing::debug!(%why, "fake vhci: connection broken");
            self.error = Some(why);
        }
        self.connected = false;
        self.stream.shutdown_both();
        // vhci gives every pending URB back with ESHUTDOWN-like errors when the port goes
        for (seqnum, p) in self.pending.drain() {
            self.done.push_back(UrbCompletion {
                id: UrbId(u64::from(seqnum)),
                endpoint: p.endpoint,
                status: Err(Errno::ESHUTDOWN),
                actual_length: 0,
                buffer: vec![0; p.length as usize],
                iso_packets: p.iso,
            });
        }
    }

    /// Reads what the device has sent, waiting up to `timeout` for the first byte.
    /// Returns whether anything was read.
    pub fn pump(&mut self, timeout: Duration) -> bool {
        if !self.connected {
            return false;
        }
        let _ = self
            .stream
            .set_read_timeout_to(Some(timeout.max(Duration::from_millis(1))));
        let mut buf = std::mem::take(&mut self.read_buf);
        let n = self.stream.read(&mut buf);
        let read = self.handle_read(n, &buf);
        self.read_buf = buf;
        read
    }

    /// What [`FakeVhci::pump`] read, or why it read nothing.
    fn handle_read(&mut self, n: io::Result<usize>, buf: &[u8]) -> bool {
        let n = match n {
            Ok(0) => {
                self.fail("EOF from the device".into());
                return false;
            }
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return false
            }
            Err(e) => {
                self.fail(format!("read: {e}"));
                return false;
            }
        };
        self.bytes_read += n as u64;
        let mut rest = &buf[..n];
        while !rest.is_empty() {
            match self.decoder.decode(rest) {
                Ok((used, step)) => {
                    rest = &rest[used..];
                    match step {
                        HostStep::NeedMore(_) => break,
                        HostStep::Pdu(pdu) => self.handle_reply(pdu),
                    }
                }
                Err(e) => {
                    // vhci tears the connection down (U13, U14, U16)
                    self.fail(format!("vhci would drop the device: {e}"));
                    return true;
                }
            }
        }
        true
    }

    fn handle_reply(&mut self, pdu: HostPdu) {
        match pdu {
            HostPdu::RetSubmit {
                header,
                data,
                iso_packets,
            } => {
                self.replies.push(WireReply::RetSubmit {
                    seqnum: header.seqnum,
                    status: header.status,
                    actual_length: header.actual_length,
                    number_of_packets: header.number_of_packets,
                    error_count: header.error_count,
                });
                let Some(p) = self.pending.remove(&header.seqnum) else {
                    return;
                };
                let buffer = if iso_packets.is_empty() {
                    let mut b = data;
                    b.resize((p.length as usize).max(b.len()), 0);
                    b
                } else {
                    pad_iso(&data, &iso_packets, p.length)
                };
                let status = match (p.unlinked, header.status) {
                    (Some(e), _) => Err(e),
                    (None, 0) => Ok(()),
                    (None, s) => Err(Errno(s.unsigned_abs() as i32)),
                };
                let iso = iso_packets
                    .iter()
                    .map(|d| IsoPacket {
                        offset: d.offset,
                        length: d.length,
                        actual_length: d.actual_length,
                        status: d.status,
                    })
                    .collect();
                self.done.push_back(UrbCompletion {
                    id: UrbId(u64::from(header.seqnum)),
                    endpoint: p.endpoint,
                    status,
                    actual_length: header.actual_length,
                    buffer,
                    iso_packets: iso,
                });
            }
            HostPdu::RetUnlink(ret) => {
                self.replies.push(WireReply::RetUnlink {
                    seqnum: ret.seqnum,
                    status: ret.status,
                });
                let Some(target) = self.unlinks.remove(&ret.seqnum) else {
                    return; // only logged by vhci (U14)
                };
                // vhci_recv_ret_unlink: still pending → given back now; else ignored
                let Some(p) = self.pending.remove(&target) else {
                    return;
                };
                self.decoder.forget(target);
                let status = p
                    .unlinked
                    .unwrap_or(Errno(ret.status.unsigned_abs() as i32));
                self.done.push_back(UrbCompletion {
                    id: UrbId(u64::from(target)),
                    endpoint: p.endpoint,
                    status: Err(status),
                    actual_length: 0,
                    buffer: vec![0; p.length as usize],
                    iso_packets: p.iso,
                });
            }
        }
    }

    /// Takes the completion of `id` if it has been read.
    pub fn take_done(&mut self, id: UrbId) -> Option<UrbCompletion> {
        let pos = self.done.iter().position(|c| c.id == id)?;
        self.done.remove(pos)
    }

    /// Seqnums still waiting for a reply.
    pub fn pending_seqnums(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.pending.keys().copied().collect();
        v.sort_unstable();
        v
    }

    /// Closes the connection as `detach` does.
    pub fn detach(&mut self) {
        self.connected = false;
        self.stream.shutdown_both();
    }
}

impl<S: Stream> HostPort for FakeVhci<S> {
    fn now(&mut self) -> Instant {
        Instant::from_nanos(u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX))
    }

    fn submit(&mut self, urb: Urb) -> UrbId {
        let seqnum = self.fresh_seqnum();
        let id = UrbId(u64::from(seqnum));
        let is_in = urb.is_in();
        let length = urb.buffer.len() as u32;
        let (setup, iso) = match &urb.kind {
            UrbKind::Control { setup } => (*setup, Vec::new()),
            UrbKind::Isochronous { packets } => ([0; 8], packets.clone()),
            _ => ([0; 8], Vec::new()),
        };
        // contract U1: SET_ADDRESS is answered by vhci's root hub and never forwarded
        if matches!(urb.kind, UrbKind::Control { .. }) && setup[0] == 0 && setup[1] == 5 {
            self.done.push_back(UrbCompletion {
                id,
                endpoint: urb.endpoint,
                status: Ok(()),
                actual_length: 0,
                buffer: urb.buffer,
                iso_packets: Vec::new(),
            });
            return id;
        }
        if !self.connected {
            self.done.push_back(UrbCompletion {
                id,
                endpoint: urb.endpoint,
                status: Err(Errno::ESHUTDOWN),
                actual_length: 0,
                buffer: urb.buffer,
                iso_packets: iso,
            });
            return id;
        }
        let is_iso = matches!(urb.kind, UrbKind::Isochronous { .. });
        let mut flags = 0;
        if is_in {
            flags |= USBIP_URB_DIR_IN;
        }
        if urb.flags.zero_packet {
            flags |= USBIP_URB_ZERO_PACKET;
        }
        if urb.flags.short_not_ok {
            flags |= USBIP_URB_SHORT_NOT_OK;
        }
        let header = CmdSubmitRepr {
            seqnum,
            devid: self.devid,
            direction: if is_in { Direction::In } else { Direction::Out },
            ep: urb.endpoint & 0x0f,
            transfer_flags: flags,
            transfer_buffer_length: length,
            start_frame: 0,
            // vhci sends urb->number_of_packets: 0 for non-iso (U15)
            number_of_packets: iso.len() as u32,
            interval: 0,
            setup,
        };
        let submit = CmdSubmit {
            header,
            data: if is_in { Vec::new() } else { urb.buffer },
            iso_packets: iso
                .iter()
                .map(|p| IsoPacketDescriptor {
                    offset: p.offset,
                    length: p.length,
                    actual_length: 0,
                    status: 0,
                })
                .collect(),
        };
        if let Err(e) = self.submit_raw(&submit, is_iso) {
            self.fail(format!("write: {e}"));
        }
        id
    }

    fn unlink(&mut self, id: UrbId, how: Unlink) -> Result<(), Errno> {
        let seqnum = id.0 as u32;
        let Some(p) = self.pending.get_mut(&seqnum) else {
            // usb_hcd_check_unlink_urb: not on the endpoint's list
            return Err(Errno(43)); // EIDRM
        };
        if p.unlinked.is_some() {
            return Err(Errno::EBUSY);
        }
        p.unlinked = Some(how.status());
        if let Err(e) = self.unlink_raw(seqnum) {
            self.fail(format!("write: {e}"));
        }
        Ok(())
    }

    fn port(&mut self, action: PortAction) -> Result<(), Errno> {
        match action {
            // contract U1, U3: root-hub bits only, nothing reaches the device
            PortAction::Reset | PortAction::Suspend | PortAction::Resume | PortAction::PowerOn => {
                Ok(())
            }
            PortAction::PowerOff => {
                self.detach();
                Ok(())
            }
        }
    }

    fn port_status(&mut self) -> PortStatus {
        PortStatus {
            powered: true,
            connected: self.connected,
            enabled: self.connected,
            suspended: false,
            resetting: false,
            resuming: false,
            connect_change: false,
            speed: self.connected.then_some(self.speed),
        }
    }

    fn clear_connect_change(&mut self) {}

    fn wait(&mut self, id: UrbId, timeout: Duration) -> Option<UrbCompletion> {
        let deadline = StdInstant::now() + timeout;
        loop {
            if let Some(c) = self.take_done(id) {
                return Some(c);
            }
            let left = deadline.checked_duration_since(StdInstant::now())?;
            if !self.connected && !self.pending.contains_key(&(id.0 as u32)) {
                return None;
            }
            self.pump(left.min(Duration::from_millis(100)));
        }
    }

    /// vhci's root-hub timing is local: nothing crosses the wire, so nothing waits.
    fn sleep(&mut self, _d: Duration) {}

    fn wait_connection(&mut self, _timeout: Duration) -> bool {
        self.connected
    }
}

/// What the stock client's OP_REQ_IMPORT got back.
pub fn import(stream: &mut impl Stream, busid: &str) -> io::Result<OpRepImport> {
    let busid = BusId::new(busid).ok_or_else(|| io::Error::other("busid too long"))?;
    stream.write_all(&OpRequest::Import { busid }.to_vec())?;
    let mut head = [0u8; 8];
    stream.read_exact(&mut head)?;
    let status = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
    let mut bytes = head.to_vec();
    if status == 0 {
        let mut record = vec![0u8; rawgadget_usbip::wire::DEVICE_RECORD_LEN];
        stream.read_exact(&mut record)?;
        bytes.extend(record);
    }
    OpRepImport::parse(&bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// `usbip list -r`: OP_REQ_DEVLIST and its reply (read to EOF, as the server closes).
pub fn devlist(stream: &mut impl Stream) -> io::Result<OpRepDevlist> {
    stream.write_all(&OpRequest::Devlist.to_vec())?;
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes)?;
    OpRepDevlist::parse(&bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}
