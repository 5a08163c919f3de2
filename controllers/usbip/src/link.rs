//! One USB/IP connection on a [`Bus`], sans-IO: bytes from the peer in, replies out.
//!
//! Read contract §3 (U1–U25) before editing; every rule is cited where it is applied.
//!
//! A [`Link`] is the device side of one connection. It decodes what the host sends
//! (`rawgadget_usbip`'s [`DeviceDecoder`]), turns each CMD_SUBMIT into a [`Urb`] on the bus's
//! controller model, turns each CMD_UNLINK into an unlink, and encodes what the controller gives
//! back as RET_SUBMIT / RET_UNLINK. It owns only the connection's bookkeeping:
//!
//! - which seqnum is which URB, so that every RET_SUBMIT answers a seqnum the host is waiting
//!   for, exactly once (U14);
//! - the unlink races of U10: RET_UNLINK `-ECONNRESET` for a URB that moved nothing (and then
//!   no RET_SUBMIT for it, ever), RET_SUBMIT with the partial data then RET_UNLINK 0 for one
//!   that made progress, RET_UNLINK 0 for one already answered;
//! - a CMD_UNLINK that overtook its own CMD_SUBMIT on the wire (see [`Link::handle_input`]):
//!   held until the CMD_SUBMIT arrives, which is then answered RET_UNLINK `-ECONNRESET` and
//!   never reaches the controller;
//! - the byte budgets of U25 (URBs in flight, replies not yet written), which close the
//!   connection when exceeded instead of stalling the reader;
//! - the synthesized bus reset of an attach or import (U5, U24) and the loss of the
//!   connection (U20).
//!
//! Everything else is the controller model's (`rawgadget-udc`): per-endpoint queues and one
//! SETUP at a time (U7, U8, D14), packet-level matching (D8–D13), the requests the controller
//! answers itself (U1, D19–D22), EPROTO for an endpoint that is not enabled (D24, U12). The
//! codec refuses replies that break the framing facts (U13, U15, U16).
//!
//! # Method families
//!
//! - `handle_*` take input: [`Link::handle_input`] (bytes read from the socket),
//!   [`Link::handle_timeout`]; the connection's life: [`Link::attach`], [`Link::accept_import`],
//!   [`Link::answer_devlist`], [`Link::refuse_import`], [`Link::connection_lost`].
//! - `poll_*` give output: [`Link::collect`] turns URBs the controller gave back into replies
//!   (call it whenever the bus may have changed, for example after a client ioctl);
//!   [`Link::poll_transmit`] takes the bytes to write; [`Link::poll_request`] the handshake
//!   request a TCP export must answer.
//!
//! Every method takes the bus by `&mut`: the shell holds the bus lock while it calls them. No
//! I/O, no threads, no clocks (time comes in as [`Instant`]).

use std::collections::HashMap;

use rawgadget_loopback::Bus;
use rawgadget_uapi::{Errno, Speed};
use rawgadget_udc::{Instant, IsoPacket, Unlink, Urb, UrbCompletion, UrbFlags, UrbId, UrbKind};
use rawgadget_usbip::wire::{CmdUnlinkRepr, Direction, IsoPacketDescriptor};
use rawgadget_usbip::{
    BusId, CmdSubmit, CmdSubmitRepr, DeviceDecoder, DeviceEvent, DevicePdu, IsoPacketResult,
    Limits, OpRepDevlist, OpRepImport, OpRequest, OpStatus, RetSubmit, RetUnlink, UsbDevice,
    USBIP_HEADER_LEN, USBIP_ISO_PACKET_LEN,
};

/// The link's maps are keyed by seqnums and URB ids, looked up twice per URB: SipHash (std's
/// default) was a fifth of the reader thread's instructions. foldhash is seeded per process,
/// and the maps are bounded by the byte and URB budgets, so a peer that picks colliding
/// seqnums slows only its own device.
type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// The largest written reply buffer [`Link::recycle_transmit`] keeps: a 64 KiB bulk IN
/// reply and its header fit, without holding on to what a burst made.
const RECYCLED_OUTPUT_MAX: usize = 128 * 1024;

/// `USBIP_URB_SHORT_NOT_OK` (`include/uapi/linux/usbip.h`).
pub const USBIP_URB_SHORT_NOT_OK: u32 = 0x0001;
/// `USBIP_URB_ZERO_PACKET`.
pub const USBIP_URB_ZERO_PACKET: u32 = 0x0040;

/// Byte budgets of one connection (contract U25).
///
/// The reader never stops reading: USB/IP is one ordered stream, and stopping would hide the
/// CMD_UNLINKs and SETUPs behind a bulk OUT flood (U25). So a budget is not back-pressure: a
/// peer that exceeds one has its connection closed, with a log line saying which.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Budget {
    /// Per-PDU limits of the decoder (`transfer_buffer_length`, iso packet count).
    pub limits: Limits,
    /// Most URBs in flight (submitted, not yet answered), CMD_UNLINKs waiting for their
    /// CMD_SUBMIT included.
    pub max_urbs: usize,
    /// Most bytes held for URBs in flight: for each, its 48-byte header, its OUT data or IN
    /// room (`transfer_buffer_length`) and its iso descriptors.
    pub max_in_flight_bytes: u64,
    /// Most bytes of encoded replies not yet written (a peer that does not read).
    pub max_output_bytes: u64,
}

impl Budget {
    /// A remote (TCP) peer: strict. 4 MiB per URB (raw gadget's own transfer limit), 1024 URBs
    /// and 32 MiB in flight, 32 MiB of unread replies.
    pub const REMOTE: Budget = Budget {
        limits: Limits::REMOTE,
        max_urbs: 1024,
        max_in_flight_bytes: 32 << 20,
        max_output_bytes: 32 << 20,
    };

    /// The local vhci, a trusted kernel peer that may queue many MB (usbfs alone allows
    /// 16 MiB, `drivers/usb/core/devio.c:134`; in-kernel drivers have no cap): 64 MiB per URB,
    /// 65536 URBs and 1 GiB in flight. IN room is allocated zeroed, so untouched pages cost
    /// nothing.
    pub const LOCAL_VHCI: Budget = Budget {
        limits: Limits::LOCAL_VHCI,
        max_urbs: 65536,
        max_in_flight_bytes: 1 << 30,
        max_output_bytes: 1 << 30,
    };
}

impl Default for Budget {
    fn default() -> Budget {
        Budget::REMOTE
    }
}

/// How a [`Link`] behaves.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct LinkConfig {
    pub budget: Budget,
    /// Contract U5, optional: synthesize a second RESET after the Linux "reset signature", a
    /// GET_DESCRIPTOR(DEVICE) with wLength 64 as the first SETUP after a reset, so that a
    /// client sees the two resets dummy gives at LS/FS/HS (D28). Off by default, and must stay
    /// off for usbtest runs: usbtest case 10 sends that very request (`usbtest.c:1338-1353`).
    /// Never applied at SuperSpeed, where Linux resets once (D28).
    pub second_reset: bool,
}

/// Why a connection must be closed. Each is final.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum LinkError {
    /// The peer sent bytes that are not USB/IP (the decoder is poisoned: no resync point).
    #[error("malformed input from the peer: {0}")]
    Decode(#[from] rawgadget_usbip::Error),
    /// A CMD_SUBMIT reused the seqnum of a URB still in flight: its replies could not be told
    /// apart (U14).
    #[error("CMD_SUBMIT seqnum {0} is already in flight (contract U14)")]
    DuplicateSeqnum(u32),
    /// A budget of [`Budget`] was exceeded (contract U25).
    #[error("{what}: {have} exceeds the budget of {max} (contract U25)")]
    Budget {
        what: &'static str,
        have: u64,
        max: u64,
    },
    /// Input after the connection was closed.
    #[error("the connection is closed")]
    Closed,
}

/// What happens when a URB under unlink is given back (contract U10).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Unlinking {
    No,
    /// RET_UNLINK `-ECONNRESET` was sent: the URB is forgotten, no RET_SUBMIT may follow.
    Swallow,
    /// It had made progress: RET_SUBMIT (`-ECONNRESET`, partial data), then this RET_UNLINK
    /// with status 0.
    ReplyThenRetUnlink(CmdUnlinkRepr),
}

/// A URB the host is waiting for.
#[derive(Debug)]
struct InFlight {
    urb: UrbId,
    cmd: CmdSubmitRepr,
    /// The submitted iso descriptors, echoed in the reply (U16).
    iso: Vec<IsoPacketDescriptor>,
    /// Submitted to the controller as an iso URB.
    iso_kind: bool,
    /// Bytes charged to the budget.
    cost: u64,
    unlinking: Unlinking,
}

/// The second-reset heuristic's state (contract U5, optional).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum ResetSignature {
    Off,
    /// Looking at the first control URB after a reset.
    Watching,
    /// That URB is the signature: reset once it is answered.
    Seen(u32),
}

/// Counters for logs and tests.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct LinkStats {
    pub submits: u64,
    pub unlinks: u64,
    pub ret_submits: u64,
    pub ret_unlinks: u64,
    /// URBs given back after a RET_UNLINK `-ECONNRESET` and therefore not answered (U10).
    pub swallowed: u64,
    /// CMD_SUBMITs whose CMD_UNLINK had arrived first: answered RET_UNLINK `-ECONNRESET`, never
    /// submitted.
    pub unlinked_before_submit: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// See the module doc.
#[derive(Debug)]
pub struct Link {
    config: LinkConfig,
    decoder: DeviceDecoder,
    in_flight: Map<u32, InFlight>,
    by_urb: Map<UrbId, u32>,
    in_flight_bytes: u64,
    /// The newest CMD_SUBMIT seqnum seen (vhci counts up, `vhci_hcd.c`, `atomic_inc_return`).
    newest_seqnum: Option<u32>,
    /// CMD_UNLINKs whose target has not arrived yet, by target seqnum.
    early_unlinks: Map<u32, CmdUnlinkRepr>,
    out: Vec<u8>,
    request: Option<OpRequest>,
    closed: bool,
    signature: ResetSignature,
    device_descriptor: Option<[u8; 18]>,
    stats: LinkStats,
}

impl Link {
    /// A TCP connection: OP_REQ_DEVLIST / OP_REQ_IMPORT first (contract U22).
    pub fn with_handshake(config: LinkConfig) -> Link {
        Link::new(config, DeviceDecoder::with_handshake(config.budget.limits))
    }

    /// A socket handed to vhci's `attach` file: URBs from the first byte (contract U17). Call
    /// [`Link::attach`] before feeding input.
    pub fn attached(config: LinkConfig) -> Link {
        Link::new(config, DeviceDecoder::attached(config.budget.limits))
    }

    fn new(config: LinkConfig, decoder: DeviceDecoder) -> Link {
        Link {
            config,
            decoder,
            in_flight: Map::default(),
            by_urb: Map::default(),
            in_flight_bytes: 0,
            newest_seqnum: None,
            early_unlinks: Map::default(),
            out: Vec::new(),
            request: None,
            closed: false,
            signature: ResetSignature::Off,
            device_descriptor: None,
            stats: LinkStats::default(),
        }
    }

    // ----------------------------------------------------------------------------------------
    // Getters

    pub fn config(&self) -> &LinkConfig {
        &self.config
    }
    pub fn stats(&self) -> LinkStats {
        self.stats
    }
    /// URBs the host is still waiting for.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }
    /// Bytes charged to the in-flight budget.
    pub fn in_flight_bytes(&self) -> u64 {
        self.in_flight_bytes
    }
    pub fn is_closed(&self) -> bool {
        self.closed
    }
    /// The 18-byte device descriptor the host last read through this connection, for
    /// OP_REP_DEVLIST (contract U22: cached from an enumeration, never probed).
    pub fn device_descriptor(&self) -> Option<[u8; 18]> {
        self.device_descriptor
    }

    // ----------------------------------------------------------------------------------------
    // The connection's life

    /// An attach or import enables the port: power, then a reset that is over before the
    /// first URB is looked at, as vhci's root hub finished its own reset before forwarding
    /// anything (contract U5: nuke with ESHUTDOWN, address 0, status bits cleared, RESET
    /// queued; U24: the same on a re-import, and no new CONNECT, which only RUN gives, U4).
    pub fn attach(&mut self, bus: &mut Bus, now: Instant) {
        bus.advance_to(now);
        if !bus.port_status().powered {
            bus.port_power(true);
        }
        reset_now(bus);
        if self.config.second_reset {
            self.signature = ResetSignature::Watching;
        }
        tracing::debug!(speed = ?bus.controller().speed(), "attached: port reset (contract U5)");
    }

    /// The handshake request to answer ([`Link::accept_import`], [`Link::refuse_import`],
    /// [`Link::answer_devlist`]).
    #[must_use]
    pub fn poll_request(&mut self) -> Option<OpRequest> {
        self.request.take()
    }

    /// Answers OP_REQ_IMPORT with ST_OK and `device` (busid echoed, version 0x0111, U22),
    /// switches to URB mode and attaches ([`Link::attach`], U5, U24).
    pub fn accept_import(&mut self, bus: &mut Bus, now: Instant, busid: &BusId, device: UsbDevice) {
        self.push_out(&OpRepImport::accept(busid, device).to_vec());
        if self.decoder.import_accepted() {
            self.attach(bus, now);
        }
    }

    /// Answers OP_REQ_IMPORT with an error status; the shell then closes the connection.
    pub fn refuse_import(&mut self, status: OpStatus) {
        if let Ok(reply) = OpRepImport::refuse(status) {
            self.push_out(&reply.to_vec());
        }
        self.closed = true;
    }

    /// Answers OP_REQ_DEVLIST; the shell then closes the connection.
    pub fn answer_devlist(&mut self, reply: &OpRepDevlist) {
        self.push_out(&reply.to_vec());
        self.closed = true;
    }

    /// The connection ended (EOF, error, `detach`, or vhci dropping the device): the port loses
    /// power, so the gadget gets DISCONNECT and every queued request ESHUTDOWN (contract U20,
    /// D30). URBs in flight are forgotten; nothing more is sent.
    pub fn connection_lost(&mut self, bus: &mut Bus, now: Instant) {
        self.closed = true;
        bus.advance_to(now);
        if self.decoder.mode() == rawgadget_usbip::decode::Mode::Urb {
            bus.port_power(false);
        }
        // give-backs of our URBs (EPROTO once the port is off) have nobody to go to
        while let Some(c) = bus.poll_urb_completion() {
            tracing::trace!(urb = c.id.0, "dropped: connection lost");
        }
        self.in_flight.clear();
        self.by_urb.clear();
        self.early_unlinks.clear();
        self.in_flight_bytes = 0;
        self.out.clear();
    }

    // ----------------------------------------------------------------------------------------
    // Input

    /// Bytes read from the socket, in order. Decodes and handles every whole PDU, then
    /// collects replies ([`Link::collect`]).
    ///
    /// A CMD_UNLINK may arrive before the CMD_SUBMIT it names: vhci queues submits and unlinks
    /// on two lists and its tx thread sends the submits first, then the unlinks, so an unlink
    /// queued while the thread is between the two lists overtakes a submit queued just before
    /// it (`vhci_tx.c:220-233`). Answering RET_UNLINK 0 at once, as the kernel's own stub does
    /// (`stub_rx.c:272-281`), makes vhci give the URB back, and the RET_SUBMIT that follows is
    /// for a seqnum it no longer knows, which tears the device down (U14; seen with usbtest
    /// case 12). So an unlink of a seqnum newer than any submit seen is held until that submit
    /// arrives; the submit is then answered RET_UNLINK `-ECONNRESET` (U10: pending, no
    /// progress) and never reaches the controller.
    ///
    /// # Errors
    /// Any [`LinkError`]: the shell closes the connection and calls
    /// [`Link::connection_lost`].
    pub fn handle_input(
        &mut self,
        bus: &mut Bus,
        now: Instant,
        mut input: &[u8],
    ) -> Result<(), LinkError> {
        if self.closed {
            return Err(LinkError::Closed);
        }
        bus.advance_to(now);
        self.stats.bytes_in += input.len() as u64;
        loop {
            let (used, event) = self.decoder.decode(input)?;
            input = &input[used..];
            match event {
                DeviceEvent::NeedMore(_) => break,
                DeviceEvent::Request(request) => {
                    tracing::debug!(%request, "handshake request");
                    self.request = Some(request);
                }
                DeviceEvent::Pdu(DevicePdu::Submit(submit)) => self.handle_submit(bus, submit)?,
                DeviceEvent::Pdu(DevicePdu::Unlink(unlink)) => self.handle_unlink(bus, unlink)?,
            }
        }
        debug_assert!(input.is_empty(), "the decoder consumes all input or fails");
        self.collect(bus)
    }

    /// Lets time pass (the controller's timers, contract I5).
    ///
    /// # Errors
    /// As [`Link::collect`].
    pub fn handle_timeout(&mut self, bus: &mut Bus, now: Instant) -> Result<(), LinkError> {
        bus.advance_to(now);
        self.collect(bus)
    }

    /// One CMD_SUBMIT, already parsed in full (contract U12), becomes a URB.
    fn handle_submit(&mut self, bus: &mut Bus, submit: CmdSubmit) -> Result<(), LinkError> {
        let CmdSubmit {
            header: cmd,
            data,
            iso_packets,
        } = submit;
        self.stats.submits += 1;
        // contract U14: two URBs with one seqnum could not be answered apart
        if self.in_flight.contains_key(&cmd.seqnum) {
            return Err(LinkError::DuplicateSeqnum(cmd.seqnum));
        }
        if self.newest_seqnum.map_or(true, |n| is_newer(cmd.seqnum, n)) {
            self.newest_seqnum = Some(cmd.seqnum);
        }
        // its CMD_UNLINK came first (see `handle_input`): pending, no progress (U10)
        if let Some(unlink) = self.early_unlinks.remove(&cmd.seqnum) {
            tracing::debug!(
                seqnum = cmd.seqnum,
                "CMD_SUBMIT after its CMD_UNLINK: RET_UNLINK -ECONNRESET"
            );
            self.stats.unlinked_before_submit += 1;
            self.push_ret_unlink(RetUnlink::unlinked(&unlink));
            return Ok(());
        }
        // contract U25: the budgets
        let cost = USBIP_HEADER_LEN as u64
            + u64::from(cmd.transfer_buffer_length)
            + iso_packets.len() as u64 * USBIP_ISO_PACKET_LEN as u64;
        if self.in_flight.len() + self.early_unlinks.len() >= self.config.budget.max_urbs {
            return Err(LinkError::Budget {
                what: "URBs in flight",
                have: self.in_flight.len() as u64 + 1,
                max: self.config.budget.max_urbs as u64,
            });
        }
        let bytes = self.in_flight_bytes + cost;
        if bytes > self.config.budget.max_in_flight_bytes {
            return Err(LinkError::Budget {
                what: "bytes in flight",
                have: bytes,
                max: self.config.budget.max_in_flight_bytes,
            });
        }
        let address = cmd.endpoint_address();
        // contract U12: no transfer type on the wire; the enabled endpoint's descriptor says
        // which. An endpoint that is not enabled gets EPROTO from the controller (D24).
        let iso_requested = cmd.iso_packet_count() > 0;
        let kind = if cmd.ep == 0 {
            UrbKind::Control { setup: cmd.setup }
        } else {
            match bus.controller().endpoint_type(address) {
                Some(1) => iso_kind(&iso_packets),
                Some(3) => UrbKind::Interrupt,
                Some(_) => UrbKind::Bulk,
                None if iso_requested => iso_kind(&iso_packets),
                None => UrbKind::Bulk,
            }
        };
        let is_iso = matches!(kind, UrbKind::Isochronous { .. });
        if let (UrbKind::Control { setup }, ResetSignature::Watching) = (&kind, self.signature) {
            self.signature = if is_reset_signature(setup, bus.controller().speed()) {
                ResetSignature::Seen(cmd.seqnum)
            } else {
                ResetSignature::Off
            };
        }
        let buffer = match cmd.direction {
            Direction::Out => data,
            // zeroed: large IN room costs nothing until the controller writes to it
            Direction::In => vec![0; cmd.transfer_buffer_length as usize],
        };
        let urb = Urb {
            endpoint: address,
            kind,
            buffer,
            flags: UrbFlags {
                zero_packet: cmd.transfer_flags & USBIP_URB_ZERO_PACKET != 0,
                short_not_ok: cmd.transfer_flags & USBIP_URB_SHORT_NOT_OK != 0,
            },
        };
        tracing::trace!(
            seqnum = cmd.seqnum,
            ep = address,
            len = cmd.transfer_buffer_length,
            "CMD_SUBMIT"
        );
        let id = bus.submit(urb);
        self.in_flight_bytes = bytes;
        self.by_urb.insert(id, cmd.seqnum);
        self.in_flight.insert(
            cmd.seqnum,
            InFlight {
                urb: id,
                cmd,
                iso: iso_packets,
                iso_kind: is_iso,
                cost,
                unlinking: Unlinking::No,
            },
        );
        Ok(())
    }

    /// One CMD_UNLINK (contract U10). Replies already due go first, so a target the
    /// controller has given back counts as answered.
    fn handle_unlink(&mut self, bus: &mut Bus, unlink: CmdUnlinkRepr) -> Result<(), LinkError> {
        self.stats.unlinks += 1;
        self.drain_completions(bus);
        let target = unlink.unlink_seqnum;
        let Some(f) = self.in_flight.get_mut(&target) else {
            let ahead = self.newest_seqnum.map_or(true, |n| is_newer(target, n));
            if ahead && !self.early_unlinks.contains_key(&target) {
                // it overtook its CMD_SUBMIT (see `handle_input`); counted as a URB (U25)
                let have = self.in_flight.len() + self.early_unlinks.len() + 1;
                if have > self.config.budget.max_urbs {
                    return Err(LinkError::Budget {
                        what: "URBs in flight",
                        have: have as u64,
                        max: self.config.budget.max_urbs as u64,
                    });
                }
                tracing::debug!(
                    seqnum = unlink.seqnum,
                    target,
                    "CMD_UNLINK before its CMD_SUBMIT: held"
                );
                self.early_unlinks.insert(target, unlink);
                return Ok(());
            }
            // already answered: vhci only logs an unknown RET_UNLINK (U14,
            // `vhci_rx.c:147-152`)
            tracing::debug!(
                seqnum = unlink.seqnum,
                target,
                "CMD_UNLINK of a URB not in flight"
            );
            self.push_ret_unlink(RetUnlink::already_answered(&unlink));
            return Ok(());
        };
        if f.unlinking != Unlinking::No {
            // a second unlink of one URB: the first one settles it
            tracing::debug!(
                seqnum = unlink.seqnum,
                target,
                "CMD_UNLINK of a URB already being unlinked"
            );
            self.push_ret_unlink(RetUnlink::already_answered(&unlink));
            return Ok(());
        }
        let progress = bus.controller().urb_progress(f.urb).unwrap_or(0);
        let urb = f.urb;
        f.unlinking = if progress == 0 {
            Unlinking::Swallow
        } else {
            Unlinking::ReplyThenRetUnlink(unlink)
        };
        // contract D26: the controller gives it back with ECONNRESET, requests untouched
        if let Err(errno) = bus.unlink(urb, Unlink::Async) {
            // not pending in the controller any more (drained above, so this is a model
            // inconsistency): answer as already answered
            tracing::warn!(target, ?errno, "controller refused the unlink");
        }
        if progress == 0 {
            tracing::debug!(
                seqnum = unlink.seqnum,
                target,
                "unlinked before any progress: RET_UNLINK -ECONNRESET"
            );
            self.push_ret_unlink(RetUnlink::unlinked(&unlink));
        } else {
            tracing::debug!(
                seqnum = unlink.seqnum,
                target,
                progress,
                "unlinked after progress: RET_SUBMIT then RET_UNLINK 0"
            );
        }
        Ok(())
    }

    // ----------------------------------------------------------------------------------------
    // Output

    /// Turns every URB the controller has given back into its reply. Call after anything that
    /// may have moved data (client ioctls included).
    ///
    /// # Errors
    /// [`LinkError::Budget`] when the unwritten replies exceed their budget.
    pub fn collect(&mut self, bus: &mut Bus) -> Result<(), LinkError> {
        if self.closed {
            return Ok(());
        }
        self.drain_completions(bus);
        let have = self.out.len() as u64;
        if have > self.config.budget.max_output_bytes {
            return Err(LinkError::Budget {
                what: "unwritten reply bytes",
                have,
                max: self.config.budget.max_output_bytes,
            });
        }
        Ok(())
    }

    /// The bytes to write next, in order; empty when there is nothing.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Vec<u8> {
        let out = std::mem::take(&mut self.out);
        self.stats.bytes_out += out.len() as u64;
        out
    }

    /// Gives back a buffer [`Link::poll_transmit`] returned, once written, for the next replies
    /// to be built in: without it every batch of replies starts from an empty `Vec` and grows
    /// it by reallocation, reply by reply. Buffers over [`RECYCLED_OUTPUT_MAX`] are dropped.
    pub fn recycle_transmit(&mut self, mut written: Vec<u8>) {
        if self.out.is_empty()
            && written.capacity() > self.out.capacity()
            && written.capacity() <= RECYCLED_OUTPUT_MAX
        {
            written.clear();
            self.out = written;
        }
    }

    /// Whether replies wait to be written.
    pub fn has_output(&self) -> bool {
        !self.out.is_empty()
    }

    fn drain_completions(&mut self, bus: &mut Bus) {
        while let Some(c) = bus.poll_urb_completion() {
            let Some(seqnum) = self.by_urb.remove(&c.id) else {
                tracing::trace!(
                    urb = c.id.0,
                    "give-back of a URB from an earlier connection"
                );
                continue;
            };
            let Some(f) = self.in_flight.remove(&seqnum) else {
                continue;
            };
            self.in_flight_bytes -= f.cost;
            match f.unlinking {
                // contract U10, U14: RET_UNLINK -ECONNRESET was sent; no RET_SUBMIT may follow
                Unlinking::Swallow => {
                    self.stats.swallowed += 1;
                    tracing::trace!(seqnum, "give-back after RET_UNLINK -ECONNRESET: not sent");
                }
                Unlinking::No => self.push_ret_submit(&f, &c),
                // contract U10: partial data first, then RET_UNLINK 0, which vhci ignores
                Unlinking::ReplyThenRetUnlink(unlink) => {
                    self.push_ret_submit(&f, &c);
                    self.push_ret_unlink(RetUnlink::already_answered(&unlink));
                }
            }
            if f.unlinking == Unlinking::No {
                self.note_reply(bus, &f, &c);
            }
        }
    }

    /// What a reply teaches: the device descriptor for DEVLIST (U22), the second reset (U5).
    fn note_reply(&mut self, bus: &mut Bus, f: &InFlight, c: &UrbCompletion) {
        let setup = f.cmd.setup;
        if f.cmd.ep == 0
            && c.status.is_ok()
            && setup[..4] == [0x80, 0x06, 0x00, 0x01]
            && c.data().len() >= 18
        {
            let mut d = [0; 18];
            d.copy_from_slice(&c.data()[..18]);
            self.device_descriptor = Some(d);
        }
        if self.signature == ResetSignature::Seen(f.cmd.seqnum) {
            self.signature = ResetSignature::Off;
            tracing::debug!("reset signature answered: second reset (contract U5, D28)");
            reset_now(bus);
        }
    }

    fn push_out(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }

    fn push_ret_unlink(&mut self, reply: RetUnlink) {
        tracing::trace!(%reply, "RET_UNLINK");
        self.stats.ret_unlinks += 1;
        self.push_out(&reply.header_bytes());
    }

    /// The RET_SUBMIT for `f`, built by the codec, which refuses what vhci would choke on
    /// (U13, U15, U16). A refusal is a model bug: it is logged and answered EPROTO instead,
    /// which vhci accepts.
    fn push_ret_submit(&mut self, f: &InFlight, c: &UrbCompletion) {
        self.stats.ret_submits += 1;
        let cmd = &f.cmd;
        let start = self.out.len();
        let built = if f.iso_kind && c.iso_packets.len() == f.iso.len() && !f.iso.is_empty() {
            self.emit_iso(f, c)
        } else {
            let reply = match cmd.direction {
                // contract U9: a short IN is status 0 with the short length; the host core,
                // not the device, makes EREMOTEIO of it
                Direction::In => RetSubmit::in_data(cmd, c.status, c.data()),
                Direction::Out => RetSubmit::out_done(cmd, c.status, c.actual_length),
            };
            reply.map(|r| self.emit(&r))
        };
        if let Err(e) = built {
            self.out.truncate(start);
            tracing::error!(seqnum = cmd.seqnum, error = %e, "reply refused by the codec; sending EPROTO");
            if let Ok(r) = RetSubmit::status_only(cmd, Err(Errno::EPROTO)) {
                self.emit(&r);
            }
        }
        tracing::trace!(seqnum = cmd.seqnum, status = ?c.status, actual = c.actual_length, "RET_SUBMIT");
    }

    /// Iso replies: descriptors echoed, IN data packed (contract U16, I6).
    fn emit_iso(
        &mut self,
        f: &InFlight,
        c: &UrbCompletion,
    ) -> Result<(), rawgadget_usbip::ReplyError> {
        let results: Vec<IsoPacketResult> = c
            .iso_packets
            .iter()
            .map(|p| IsoPacketResult {
                actual_length: p.actual_length,
                status: if p.status == 0 {
                    Ok(())
                } else {
                    Err(Errno(p.status.unsigned_abs() as i32))
                },
            })
            .collect();
        match f.cmd.direction {
            Direction::In => {
                let mut packed = Vec::with_capacity(c.actual_length as usize);
                for p in &c.iso_packets {
                    let start = p.offset as usize;
                    let end = start.saturating_add(p.actual_length as usize);
                    // a packet outside the buffer makes the sums disagree: the codec refuses
                    if let Some(bytes) = c.buffer.get(start..end) {
                        packed.extend_from_slice(bytes);
                    }
                }
                let r = RetSubmit::iso_in(&f.cmd, &f.iso, c.status, 0, &results, &packed)?;
                self.emit(&r);
            }
            Direction::Out => {
                let r = RetSubmit::iso_out(&f.cmd, &f.iso, c.status, 0, &results)?;
                self.emit(&r);
            }
        }
        Ok(())
    }

    fn emit(&mut self, r: &RetSubmit<'_>) {
        let start = self.out.len();
        self.out.resize(start + r.buffer_len(), 0);
        r.emit(&mut self.out[start..]);
    }
}

/// Whether seqnum `a` comes after `b` in vhci's counting (serial-number arithmetic, so that a
/// wrap at 2^32 keeps the order).
fn is_newer(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

/// The iso URB for these descriptors (contract I6).
fn iso_kind(packets: &[IsoPacketDescriptor]) -> UrbKind {
    UrbKind::Isochronous {
        packets: packets
            .iter()
            .map(|p| IsoPacket {
                offset: p.offset,
                length: p.length,
                actual_length: 0,
                status: 0,
            })
            .collect(),
    }
}

/// GET_DESCRIPTOR(DEVICE) with wLength 64: the first request of Linux's "new scheme"
/// enumeration, between its two resets (D28). Linux resets once at SuperSpeed.
fn is_reset_signature(setup: &[u8; 8], speed: Speed) -> bool {
    speed < Speed::Super && *setup == [0x80, 0x06, 0x00, 0x01, 0x00, 0x00, 64, 0]
}

/// A port reset whose end is applied at once: on vhci the reset happened in the host's root
/// hub before any URB was forwarded (contract U1, U5).
fn reset_now(bus: &mut Bus) {
    bus.port_reset();
    if let Some(end) = bus.poll_timeout() {
        bus.advance_to(end);
    }
}

#[cfg(test)]
mod tests {
    //! Deterministic tests of the sans-IO link: one thread, a bus stepped by hand, the scripted
    //! raw-gadget client stepped between inputs.
    use super::*;
    use rawgadget_loopback::scripted::{DeviceOp, DeviceScript, ScriptedDevice};
    use rawgadget_loopback::Device;
    use rawgadget_uapi::speed;
    use rawgadget_usbip::{HostDecoder, HostPdu, HostStep, UrbShape};

    struct Fixture {
        bus: Bus,
        dev: ScriptedDevice,
        link: Link,
        host: HostDecoder,
        now: Instant,
    }

    impl Fixture {
        /// A running, configured vendor loopback device on an attached link.
        fn new(budget: Budget) -> Fixture {
            let mut f = Fixture {
                bus: Bus::with_personality(crate::usbip_personality(Speed::Super)),
                dev: ScriptedDevice::new(DeviceScript::vendor_loopback(speed::USB_SPEED_HIGH)),
                link: Link::attached(LinkConfig {
                    budget,
                    second_reset: false,
                }),
                host: HostDecoder::new(),
                now: Instant::ZERO,
            };
            f.step();
            f.link.attach(&mut f.bus, f.now);
            f.step();
            let set_config = f.control(1, [0, 9, 1, 0, 0, 0, 0, 0]);
            f.input(&set_config).unwrap();
            f.step();
            f.link.collect(&mut f.bus).unwrap();
            let replies = f.replies();
            assert!(
                matches!(replies[..], [HostPdu::RetSubmit { ref header, .. }] if header.status == 0)
            );
            assert_eq!(f.dev.configured, Some(1));
            f
        }
        fn step(&mut self) {
            while self.dev.step(&mut self.bus) {}
        }
        fn control(&mut self, seqnum: u32, setup: [u8; 8]) -> Vec<u8> {
            self.submit(seqnum, 0, Direction::Out, 0, setup)
        }
        fn submit(
            &mut self,
            seqnum: u32,
            ep: u8,
            direction: Direction,
            tbl: u32,
            setup: [u8; 8],
        ) -> Vec<u8> {
            let header = CmdSubmitRepr {
                seqnum,
                devid: 0x0001_0002,
                direction,
                ep,
                transfer_flags: 0,
                transfer_buffer_length: tbl,
                start_frame: 0,
                number_of_packets: 0,
                interval: 0,
                setup,
            };
            self.host.submitted(seqnum, UrbShape::of(&header, false));
            let data = match direction {
                Direction::Out => vec![0x5a; tbl as usize],
                Direction::In => Vec::new(),
            };
            DevicePdu::Submit(CmdSubmit {
                header,
                data,
                iso_packets: Vec::new(),
            })
            .to_vec()
        }
        fn unlink(&mut self, seqnum: u32, target: u32) -> Vec<u8> {
            DevicePdu::Unlink(CmdUnlinkRepr {
                seqnum,
                devid: 0x0001_0002,
                unlink_seqnum: target,
            })
            .to_vec()
        }
        fn input(&mut self, bytes: &[u8]) -> Result<(), LinkError> {
            self.link.handle_input(&mut self.bus, self.now, bytes)
        }
        /// Everything sent so far, decoded as vhci would.
        fn replies(&mut self) -> Vec<HostPdu> {
            let bytes = self.link.poll_transmit();
            let mut rest = &bytes[..];
            let mut out = Vec::new();
            while !rest.is_empty() {
                let (used, step) = self.host.decode(rest).expect("vhci accepts every reply");
                rest = &rest[used..];
                match step {
                    HostStep::Pdu(p) => out.push(p),
                    HostStep::NeedMore(n) => panic!("a reply cut short, {n} bytes missing"),
                }
            }
            out
        }
    }

    /// A written reply buffer is built in again, empty (no regrowth from nothing per batch);
    /// one over `RECYCLED_OUTPUT_MAX` is not kept, and replies not yet taken stay as they are.
    #[test]
    fn written_reply_buffers_are_reused_within_a_bound() {
        let mut f = Fixture::new(Budget::LOCAL_VHCI);
        // GET_STATUS(device): answered by the controller itself (contract D20)
        let get_status = |f: &mut Fixture, seqnum| {
            let urb = f.submit(seqnum, 0, Direction::In, 2, [0x80, 0, 0, 0, 0, 0, 2, 0]);
            f.input(&urb).unwrap();
            f.step();
            f.link.collect(&mut f.bus).unwrap();
        };
        get_status(&mut f, 2);
        let written = f.link.poll_transmit();
        assert_eq!(written.len(), 48 + 2);
        let kept = written.as_ptr();
        f.link.recycle_transmit(written);
        assert!(!f.link.has_output(), "written bytes are not sent again");
        get_status(&mut f, 3);
        let next = f.link.poll_transmit();
        assert_eq!(
            next.as_ptr(),
            kept,
            "the replies are built in the written buffer"
        );
        assert_eq!(u32::from_be_bytes(next[4..8].try_into().unwrap()), 3);

        f.link
            .recycle_transmit(Vec::with_capacity(RECYCLED_OUTPUT_MAX + 1));
        assert!(f.link.out.capacity() <= RECYCLED_OUTPUT_MAX);

        get_status(&mut f, 4);
        let pending = f.link.out.clone();
        f.link.recycle_transmit(next);
        assert_eq!(f.link.out, pending, "replies not yet taken are kept");
    }

    /// contract U10: a URB the controller gave back but the link had not collected yet is
    /// answered first: RET_SUBMIT (status 0, its data), then RET_UNLINK 0.
    #[test]
    fn u10_unlink_racing_a_completion_answers_the_completion_first() {
        let mut f = Fixture::new(Budget::LOCAL_VHCI);
        let urb = f.submit(10, 1, Direction::In, 512, [0; 8]);
        f.input(&urb).unwrap();
        assert!(f.replies().is_empty());
        f.dev.push_op(DeviceOp::Write {
            address: 0x81,
            data: vec![1; 20],
            zero: false,
        });
        f.step(); // the controller gives the URB back; the link has not looked yet
        let unlink = f.unlink(11, 10);
        f.input(&unlink).unwrap();
        let replies = f.replies();
        match &replies[..] {
            [HostPdu::RetSubmit { header, data, .. }, HostPdu::RetUnlink(u)] => {
                assert_eq!((header.seqnum, header.status, data.len()), (10, 0, 20));
                assert_eq!((u.seqnum, u.status), (11, 0));
            }
            other => panic!("{other:?}"),
        }
    }

    /// contract U10, U14: after RET_UNLINK -ECONNRESET the link never answers that seqnum,
    /// whatever the controller does later.
    #[test]
    fn u14_no_ret_submit_after_ret_unlink_econnreset() {
        let mut f = Fixture::new(Budget::LOCAL_VHCI);
        let urb = f.submit(10, 1, Direction::In, 512, [0; 8]);
        f.input(&urb).unwrap();
        let unlink = f.unlink(11, 10);
        f.input(&unlink).unwrap();
        let replies = f.replies();
        assert!(matches!(&replies[..], [HostPdu::RetUnlink(u)] if u.status == -104));
        f.host.forget(10);
        f.dev.push_op(DeviceOp::Write {
            address: 0x81,
            data: vec![1; 20],
            zero: false,
        });
        f.step();
        f.link.collect(&mut f.bus).unwrap();
        assert!(f.replies().is_empty());
        assert_eq!(f.link.stats().swallowed, 1);
        assert_eq!(f.link.in_flight(), 0);
        assert_eq!(f.link.in_flight_bytes(), 0);
    }

    /// contract U25: replies the peer does not read are bounded too.
    #[test]
    fn u25_unwritten_replies_have_a_budget() {
        let mut f = Fixture::new(Budget {
            max_output_bytes: 100,
            ..Budget::REMOTE
        });
        let mut bytes = Vec::new();
        // targets already answered (the SET_CONFIGURATION was seqnum 1): RET_UNLINK 0 each
        for (i, target) in [0, 1, 1].into_iter().enumerate() {
            bytes.extend(f.unlink(100 + i as u32, target));
        }
        let e = f.input(&bytes).unwrap_err();
        assert!(
            matches!(
                e,
                LinkError::Budget {
                    what: "unwritten reply bytes",
                    have: 144,
                    max: 100
                }
            ),
            "{e}"
        );
    }

    /// contract U10, U14: a CMD_UNLINK that overtook its CMD_SUBMIT (vhci's tx thread sends
    /// its unlink list after its submit list) is held; the submit is then answered RET_UNLINK
    /// -ECONNRESET and never reaches the controller, so no RET_SUBMIT can follow for it.
    #[test]
    fn u10_unlink_overtaking_its_submit_is_held() {
        let mut f = Fixture::new(Budget::LOCAL_VHCI);
        let unlink = f.unlink(11, 10);
        f.input(&unlink).unwrap();
        assert!(f.replies().is_empty(), "held until the submit arrives");
        let urb = f.submit(10, 2, Direction::Out, 64, [0; 8]);
        f.dev.push_op(DeviceOp::Read {
            address: 0x02,
            length: 512,
        });
        f.step();
        f.input(&urb).unwrap();
        f.step();
        f.link.collect(&mut f.bus).unwrap();
        let replies = f.replies();
        assert!(
            matches!(&replies[..], [HostPdu::RetUnlink(u)] if u.seqnum == 11 && u.status == -104),
            "{replies:?}"
        );
        assert!(
            f.dev.io_results.is_empty(),
            "the client never saw the URB's data"
        );
        assert_eq!(f.link.stats().unlinked_before_submit, 1);
        assert_eq!(f.link.in_flight(), 0);
        // an unlink of an older, answered seqnum is answered at once
        let old = f.unlink(12, 1);
        f.input(&old).unwrap();
        assert!(
            matches!(&f.replies()[..], [HostPdu::RetUnlink(u)] if u.seqnum == 12 && u.status == 0)
        );
    }

    /// contract U25: held unlinks count against the URB budget.
    #[test]
    fn u25_held_unlinks_are_budgeted() {
        let mut f = Fixture::new(Budget {
            max_urbs: 4,
            ..Budget::REMOTE
        });
        let mut bytes = Vec::new();
        for i in 0..5 {
            bytes.extend(f.unlink(100 + i, 1000 + i));
        }
        let e = f.input(&bytes).unwrap_err();
        assert!(
            matches!(
                e,
                LinkError::Budget {
                    what: "URBs in flight",
                    have: 5,
                    max: 4
                }
            ),
            "{e}"
        );
    }

    /// Seqnum order survives the wrap at 2^32.
    #[test]
    fn seqnum_order_wraps() {
        assert!(is_newer(1, 0));
        assert!(!is_newer(0, 1));
        assert!(is_newer(3, u32::MAX - 2));
        assert!(!is_newer(u32::MAX, 30));
        assert!(!is_newer(7, 7));
    }

    /// contract U25: the in-flight budget is released when URBs are answered.
    #[test]
    fn u25_budget_is_released_by_replies() {
        let mut f = Fixture::new(Budget {
            max_urbs: 1,
            ..Budget::REMOTE
        });
        for seqnum in 10..20 {
            let urb = f.submit(seqnum, 0, Direction::In, 18, [0x80, 6, 0, 1, 0, 0, 18, 0]);
            f.input(&urb).unwrap();
            f.step();
            f.link.collect(&mut f.bus).unwrap();
            assert_eq!(f.replies().len(), 1);
            assert_eq!(f.link.in_flight(), 0);
        }
        // contract U22: the device descriptor read is cached
        assert_eq!(f.link.device_descriptor().unwrap()[8..10], [0x6b, 0x1d]);
    }

    /// contract U20, D30: a lost connection powers the port off: DISCONNECT for the client,
    /// nothing more on the wire, and no more input.
    #[test]
    fn u20_connection_lost_forgets_everything() {
        let mut f = Fixture::new(Budget::LOCAL_VHCI);
        let urb = f.submit(10, 1, Direction::In, 512, [0; 8]);
        f.input(&urb).unwrap();
        f.link.connection_lost(&mut f.bus, f.now);
        f.step();
        assert!(f
            .dev
            .event_types()
            .contains(&rawgadget_uapi::event_type::USB_RAW_EVENT_DISCONNECT));
        assert_eq!(f.link.in_flight(), 0);
        assert!(!f.link.has_output());
        assert_eq!(f.input(&urb), Err(LinkError::Closed));
    }
}
