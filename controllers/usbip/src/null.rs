//! The null-device floor (contract P4, P5): an inline responder that speaks USB/IP to vhci and
//! answers every URB itself, with no engine, no controller model and no client thread.
//!
//! It measures what vhci costs per URB: the bench runs usbtest against it in the same boot as
//! (c), our engine over USB/IP, and reports (c) as a ratio of this floor ("Report ratios against
//! a null-device floor", P5). Everything our stack adds on top of vhci is what the ratio shows.
//!
//! The device is Gadget-Zero shaped: it is given the descriptors of our Gadget Zero (the CLI
//! builds them with `rawgadget-devices`, so the host enumerates the same device, 0525:a4a0) and
//! takes its endpoints from the configuration descriptor. It then behaves as Gadget Zero on
//! dummy_udc's personality does, as far as usbtest can see:
//!
//! - IN URBs on bulk and interrupt endpoints get the usbtest `pattern=1` data
//!   (`(i % maxpacket) % 63`, contract T8), as long as the URB asks, from a buffer computed once:
//!   an IN answer is one copy. OUT URBs are consumed whole and not checked;
//! - the requests dummy_udc answers itself (D19–D22: SET_ADDRESS, GET_STATUS, SET/CLEAR_FEATURE
//!   to the device and to endpoints, with halts that fail URBs with EPIPE, D25);
//! - the ones Gadget Zero answers (GET_DESCRIPTOR, SET/GET_CONFIGURATION, SET/GET_INTERFACE,
//!   the vendor requests 0x5b/0x5c on a 4096-byte buffer); anything else stalls (EPIPE);
//! - URBs to an endpoint that is not enabled (before SET_CONFIGURATION) fail with EPROTO (D24).
//!
//! Every URB is answered when it arrives, so nothing is ever pending: a CMD_UNLINK names a URB
//! already answered (RET_UNLINK 0, U10), or one whose CMD_SUBMIT it overtook on the wire, which
//! is held and answered RET_UNLINK `-ECONNRESET` when the submit arrives (the real-kernel
//! addition to U10/U14 in docs/contract-coverage.md, as [`crate::Link`] does).
//!
//! [`NullDevice`] is sans-IO (bytes in, replies out); [`serve`] runs it on a socket in the
//! calling thread, and [`attach_local`] attaches it to the local vhci-hcd (U17–U19) and serves it
//! on one thread.

use std::collections::HashMap;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::thread;

use rawgadget_uapi::{Errno, Speed};
use rawgadget_usbip::wire::{CmdUnlinkRepr, Direction};
use rawgadget_usbip::{
    CmdSubmit, CmdSubmitRepr, DeviceDecoder, DeviceEvent, DevicePdu, Limits, RetSubmit, RetUnlink,
};

use crate::driver::Stream;
use crate::vhci::{attach_first_free, AttachError, AttachOptions, Hub};

/// Gadget Zero's vendor request: control write into the buffer (usbtest `ctrl_out`).
const REQ_CONTROL_WRITE: u8 = 0x5b;
/// Gadget Zero's vendor request: control read of the buffer.
const REQ_CONTROL_READ: u8 = 0x5c;
/// `USB_COMP_EP0_BUFSIZ`: Gadget Zero's vendor buffer.
const VENDOR_BUF_SIZE: usize = 4096;
/// Bytes of precomputed pattern per maxpacket: a multiple of every bulk and interrupt
/// maxpacket, and more than any usbtest URB (64 KiB sg cases included).
const PATTERN_LEN: usize = 1 << 20;
/// CMD_UNLINKs held for a CMD_SUBMIT that has not arrived yet; more closes the connection (U25).
const MAX_EARLY_UNLINKS: usize = 4096;

// ch9 request codes and descriptor types (USB 2.0 §9.4, table 9-4 and 9-5).
const GET_STATUS: u8 = 0;
const CLEAR_FEATURE: u8 = 1;
const SET_FEATURE: u8 = 3;
const SET_ADDRESS: u8 = 5;
const GET_DESCRIPTOR: u8 = 6;
const GET_CONFIGURATION: u8 = 8;
const SET_CONFIGURATION: u8 = 9;
const GET_INTERFACE: u8 = 10;
const SET_INTERFACE: u8 = 11;
const DT_DEVICE: u8 = 1;
const DT_CONFIG: u8 = 2;
const DT_STRING: u8 = 3;
const DT_INTERFACE: u8 = 4;
const DT_ENDPOINT: u8 = 5;
const DT_DEVICE_QUALIFIER: u8 = 6;
const DT_OTHER_SPEED_CONFIG: u8 = 7;
const DT_BOS: u8 = 15;
/// US English, the one language of Gadget Zero's string table.
const LANG_EN_US: u16 = 0x0409;

/// The descriptors the device answers GET_DESCRIPTOR with, as bytes (our Gadget Zero's
/// `DescriptorSet` at one speed, endpoint numbers as on dummy_udc).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NullDescriptors {
    /// The speed vhci attaches the device at.
    pub speed: Option<Speed>,
    /// The 18-byte device descriptor.
    pub device: Vec<u8>,
    /// Configuration 1's whole bundle (configuration, interfaces, endpoints).
    pub config: Vec<u8>,
    pub qualifier: Option<Vec<u8>>,
    pub other_speed_config: Option<Vec<u8>>,
    pub bos: Option<Vec<u8>>,
    /// `(index, text)` of every string but the language table (index 0).
    pub strings: Vec<(u8, String)>,
}

/// Why the descriptors or a connection were refused.
#[derive(Debug, thiserror::Error)]
pub enum NullError {
    #[error("the null device's descriptors are unusable: {0}")]
    Descriptors(&'static str),
    /// The host broke the framing or a budget; the connection closes.
    #[error("USB/IP protocol error: {0}")]
    Protocol(#[from] rawgadget_usbip::Error),
    /// A reply the codec refused to encode (a bug here, never sent).
    #[error("refused reply: {0}")]
    Reply(#[from] rawgadget_usbip::ReplyError),
    #[error("more than {MAX_EARLY_UNLINKS} CMD_UNLINKs ahead of their CMD_SUBMITs")]
    TooManyEarlyUnlinks,
    #[error("socket: {0}")]
    Io(#[from] io::Error),
}

/// One endpoint of the configuration, from its descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct EndpointInfo {
    address: u8,
    /// `bmAttributes & 3`: 1 iso, 2 bulk, 3 interrupt.
    transfer_type: u8,
    max_packet: u16,
}

/// Interface 0's altsettings, each with its endpoints, from a configuration bundle.
fn parse_config(config: &[u8]) -> Result<Vec<Vec<EndpointInfo>>, NullError> {
    if config.len() < 9 || config[1] != DT_CONFIG {
        return Err(NullError::Descriptors("no configuration descriptor"));
    }
    let mut alts: Vec<Vec<EndpointInfo>> = Vec::new();
    let mut current: Option<usize> = None;
    let mut i = 0;
    while i + 2 <= config.len() {
        let len = usize::from(config[i]);
        if len < 2 || i + len > config.len() {
            return Err(NullError::Descriptors(
                "a descriptor's bLength overruns the bundle",
            ));
        }
        let d = &config[i..i + len];
        match d[1] {
            DT_INTERFACE if len >= 9 => {
                current = (d[2] == 0).then(|| {
                    let alt = usize::from(d[3]);
                    if alts.len() <= alt {
                        alts.resize(alt + 1, Vec::new());
                    }
                    alt
                });
            }
            DT_ENDPOINT if len >= 7 => {
                if let Some(alt) = current {
                    alts[alt].push(EndpointInfo {
                        address: d[2],
                        transfer_type: d[3] & 3,
                        max_packet: u16::from_le_bytes([d[4], d[5]]) & 0x7ff,
                    });
                }
            }
            _ => {}
        }
        i += len;
    }
    if alts.is_empty() {
        return Err(NullError::Descriptors("interface 0 is missing"));
    }
    Ok(alts)
}

/// The usbtest `pattern=1` data (contract T8) for `max_packet`, `len` bytes from offset 0.
fn mod63(max_packet: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| ((i % max_packet.max(1)) % 63) as u8)
        .collect()
}

/// A string descriptor: the language table for index 0, else UTF-16LE text.
fn string_descriptor(index: u8, language: u16, strings: &[(u8, String)]) -> Option<Vec<u8>> {
    if index == 0 {
        let [lo, hi] = LANG_EN_US.to_le_bytes();
        return Some(vec![4, DT_STRING, lo, hi]);
    }
    if language != LANG_EN_US {
        return None;
    }
    let text = &strings.iter().find(|(i, _)| *i == index)?.1;
    let mut d = vec![0, DT_STRING];
    for unit in text.encode_utf16().take(126) {
        d.extend_from_slice(&unit.to_le_bytes());
    }
    d[0] = d.len() as u8;
    Some(d)
}

/// Counters of one connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NullStats {
    pub submits: u64,
    pub unlinks: u64,
    /// Control URBs (ep0) answered, stalls included.
    pub control: u64,
    /// Data bytes sent in IN replies.
    pub bytes_in: u64,
    /// OUT data bytes consumed.
    pub bytes_out: u64,
}

/// The state of one endpoint the host may use.
#[derive(Clone, Copy, Debug)]
struct Endpoint {
    info: EndpointInfo,
    halted: bool,
}

/// See the module doc. One per connection.
pub struct NullDevice {
    descriptors: NullDescriptors,
    speed: Speed,
    /// Interface 0's altsettings.
    alts: Vec<Vec<EndpointInfo>>,
    configuration: u8,
    alt: u8,
    /// Enabled endpoints (those of the current altsetting once configured).
    endpoints: Vec<Endpoint>,
    /// `maxpacket → pattern`, one per distinct maxpacket of the IN endpoints.
    patterns: Vec<(u16, Vec<u8>)>,
    /// D21's device-status byte (remote wakeup, U1/U2/LTM at SS).
    device_status: u8,
    vendor_buf: Vec<u8>,
    decoder: DeviceDecoder,
    newest_seqnum: Option<u32>,
    /// CMD_UNLINKs that overtook their CMD_SUBMIT, by target seqnum.
    early_unlinks: HashMap<u32, CmdUnlinkRepr>,
    out: Vec<u8>,
    stats: NullStats,
}

impl std::fmt::Debug for NullDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NullDevice")
            .field("speed", &self.speed)
            .field("configuration", &self.configuration)
            .field("alt", &self.alt)
            .field("stats", &self.stats)
            .finish()
    }
}

/// Whether seqnum `a` was sent after `b` (vhci's seqnums only grow, wrapping).
fn is_newer(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

impl NullDevice {
    /// A device attached through vhci's sysfs: URBs from the first byte (U17).
    ///
    /// # Errors
    /// [`NullError::Descriptors`] when the device descriptor is not 18 bytes or the
    /// configuration has no interface 0.
    pub fn new(descriptors: NullDescriptors) -> Result<NullDevice, NullError> {
        if descriptors.device.len() != 18 || descriptors.device[1] != DT_DEVICE {
            return Err(NullError::Descriptors(
                "the device descriptor is not 18 bytes",
            ));
        }
        let alts = parse_config(&descriptors.config)?;
        let mut patterns: Vec<(u16, Vec<u8>)> = Vec::new();
        for ep in alts.iter().flatten() {
            if ep.address & 0x80 != 0 && !patterns.iter().any(|(mp, _)| *mp == ep.max_packet) {
                patterns.push((ep.max_packet, mod63(ep.max_packet.into(), PATTERN_LEN)));
            }
        }
        Ok(NullDevice {
            speed: descriptors.speed.unwrap_or(Speed::High),
            descriptors,
            alts,
            configuration: 0,
            alt: 0,
            endpoints: Vec::new(),
            patterns,
            device_status: 0,
            vendor_buf: vec![0; VENDOR_BUF_SIZE],
            decoder: DeviceDecoder::attached(Limits::LOCAL_VHCI),
            newest_seqnum: None,
            early_unlinks: HashMap::new(),
            out: Vec::with_capacity(128 << 10),
            stats: NullStats::default(),
        })
    }

    pub fn speed(&self) -> Speed {
        self.speed
    }

    pub fn stats(&self) -> NullStats {
        self.stats
    }

    /// The current configuration value (0 = not configured).
    pub fn configuration(&self) -> u8 {
        self.configuration
    }

    /// Bytes read from the socket, in order: every whole PDU is answered at once.
    ///
    /// # Errors
    /// A framing error or a budget: the connection must close.
    pub fn handle_input(&mut self, mut input: &[u8]) -> Result<(), NullError> {
        loop {
            let (used, event) = self.decoder.decode(input)?;
            input = &input[used..];
            match event {
                DeviceEvent::NeedMore(_) => return Ok(()),
                // attached mode never yields a handshake request
                DeviceEvent::Request(_) => {}
                DeviceEvent::Pdu(DevicePdu::Submit(submit)) => self.handle_submit(submit)?,
                DeviceEvent::Pdu(DevicePdu::Unlink(unlink)) => self.handle_unlink(unlink)?,
            }
        }
    }

    /// Whether replies wait to be written.
    pub fn has_output(&self) -> bool {
        !self.out.is_empty()
    }

    /// The replies to write, in order; the buffer is kept for the next ones.
    pub fn output(&self) -> &[u8] {
        &self.out
    }

    /// Forgets the replies written.
    pub fn clear_output(&mut self) {
        self.out.clear();
    }

    fn handle_submit(&mut self, submit: CmdSubmit) -> Result<(), NullError> {
        let cmd = submit.header;
        self.stats.submits += 1;
        if self.newest_seqnum.map_or(true, |n| is_newer(cmd.seqnum, n)) {
            self.newest_seqnum = Some(cmd.seqnum);
        }
        // its CMD_UNLINK came first: pending without progress (U10), no RET_SUBMIT ever
        if let Some(unlink) = self.early_unlinks.remove(&cmd.seqnum) {
            self.push(&RetUnlink::unlinked(&unlink).to_vec());
            return Ok(());
        }
        if cmd.ep == 0 {
            self.stats.control += 1;
            return self.control(&cmd, &submit.data);
        }
        let address = cmd.endpoint_address();
        let Some(ep) = self.endpoints.iter().find(|e| e.info.address == address) else {
            // contract D24, U12: parsed in full, answered EPROTO
            return self.reply(RetSubmit::status_only(&cmd, Err(Errno::EPROTO))?);
        };
        if ep.halted {
            // contract D25
            return self.reply(RetSubmit::status_only(&cmd, Err(Errno::EPIPE))?);
        }
        let max_packet = ep.info.max_packet;
        match cmd.direction {
            Direction::In => {
                let len = cmd.transfer_buffer_length as usize;
                self.stats.bytes_in += len as u64;
                let pattern = self
                    .patterns
                    .iter()
                    .find(|(mp, _)| *mp == max_packet)
                    .map(|(_, p)| p.as_slice())
                    .filter(|p| p.len() >= len);
                match pattern {
                    Some(p) => {
                        let reply = RetSubmit::in_data(&cmd, Ok(()), &p[..len])?;
                        let start = self.out.len();
                        self.out.resize(start + reply.buffer_len(), 0);
                        reply.emit(&mut self.out[start..]);
                        Ok(())
                    }
                    // longer than the precomputed buffer: built for this URB
                    None => {
                        let data = mod63(max_packet.into(), len);
                        self.reply(RetSubmit::in_data(&cmd, Ok(()), &data)?)
                    }
                }
            }
            Direction::Out => {
                self.stats.bytes_out += u64::from(cmd.transfer_buffer_length);
                self.reply(RetSubmit::out_done(
                    &cmd,
                    Ok(()),
                    cmd.transfer_buffer_length,
                )?)
            }
        }
    }

    fn handle_unlink(&mut self, unlink: CmdUnlinkRepr) -> Result<(), NullError> {
        self.stats.unlinks += 1;
        let target = unlink.unlink_seqnum;
        let ahead = self.newest_seqnum.map_or(true, |n| is_newer(target, n));
        if ahead {
            // it overtook its CMD_SUBMIT (vhci_tx.c sends submits, then unlinks): held
            if self.early_unlinks.len() >= MAX_EARLY_UNLINKS {
                return Err(NullError::TooManyEarlyUnlinks);
            }
            self.early_unlinks.insert(target, unlink);
            return Ok(());
        }
        // contract U10: already answered
        self.push(&RetUnlink::already_answered(&unlink).to_vec());
        Ok(())
    }

    fn push(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }

    fn reply(&mut self, reply: RetSubmit<'_>) -> Result<(), NullError> {
        let start = self.out.len();
        self.out.resize(start + reply.buffer_len(), 0);
        reply.emit(&mut self.out[start..]);
        Ok(())
    }

    /// A control URB: the request's answer (IN data, or nothing) or a stall.
    fn control(&mut self, cmd: &CmdSubmitRepr, out_data: &[u8]) -> Result<(), NullError> {
        let setup = cmd.setup;
        let w_length = usize::from(u16::from_le_bytes([setup[6], setup[7]]));
        let result = self.request(setup, &out_data[..out_data.len().min(w_length)]);
        match (result, cmd.direction) {
            (Ok(mut data), Direction::In) => {
                data.truncate(w_length.min(cmd.transfer_buffer_length as usize));
                self.stats.bytes_in += data.len() as u64;
                self.reply(RetSubmit::in_data(cmd, Ok(()), &data)?)
            }
            (Ok(_), Direction::Out) => {
                self.stats.bytes_out += out_data.len() as u64;
                self.reply(RetSubmit::out_done(cmd, Ok(()), out_data.len() as u32)?)
            }
            (Err(errno), _) => self.reply(RetSubmit::status_only(cmd, Err(errno))?),
        }
    }

    /// Enables the endpoints of altsetting `alt` (a fresh enable clears halts, D6/D25).
    fn enable_alt(&mut self, alt: u8) {
        self.alt = alt;
        self.endpoints = self.alts[usize::from(alt)]
            .iter()
            .map(|&info| Endpoint {
                info,
                halted: false,
            })
            .collect();
    }

    fn endpoint_mut(&mut self, address: u8) -> Option<&mut Endpoint> {
        self.endpoints
            .iter_mut()
            .find(|e| e.info.address == address)
    }

    /// One ch9 or vendor request (see the module doc). `Ok` carries the IN data.
    fn request(&mut self, setup: [u8; 8], out_data: &[u8]) -> Result<Vec<u8>, Errno> {
        let stall = Err(Errno::EPIPE);
        let [request_type, request, v_lo, v_hi, i_lo, i_hi, l_lo, l_hi] = setup;
        let value = u16::from_le_bytes([v_lo, v_hi]);
        let index = u16::from_le_bytes([i_lo, i_hi]);
        let length = u16::from_le_bytes([l_lo, l_hi]);
        let ss = self.speed >= Speed::Super;
        match (request_type, request) {
            // contract D19 (U2: vhci answers it itself; a non-Linux importer may send it)
            (0x00, SET_ADDRESS) => Ok(Vec::new()),
            // contract D20
            (0x80, GET_STATUS) => Ok(vec![self.device_status, 0]),
            (0x81, GET_STATUS) => Ok(vec![0, 0]),
            (0x82, GET_STATUS) => {
                let address = index as u8;
                if address & 0x7f == 0 {
                    return Ok(vec![0, 0]);
                }
                match self.endpoint_mut(address) {
                    Some(ep) => Ok(vec![u8::from(ep.halted), 0]),
                    None => stall,
                }
            }
            // contract D21: the device-status bits
            (0x00, SET_FEATURE) | (0x00, CLEAR_FEATURE) => {
                let bit: u8 = match value {
                    1 => 1,                                         // REMOTE_WAKEUP
                    3..=5 if request == SET_FEATURE => value as u8, // HNP: set only
                    48 if ss => 2,                                  // U1_ENABLE
                    49 if ss => 3,                                  // U2_ENABLE
                    50 if ss => 4,                                  // LTM_ENABLE
                    _ => return stall,
                };
                let mask = 1u8 << bit;
                if request == SET_FEATURE {
                    self.device_status |= mask;
                } else {
                    self.device_status &= !mask;
                }
                Ok(Vec::new())
            }
            // contract D22: endpoint halt; wValue not checked
            (0x02, SET_FEATURE) => match self.endpoint_mut(index as u8) {
                Some(ep) => {
                    ep.halted = true;
                    Ok(Vec::new())
                }
                None => stall,
            },
            (0x02, CLEAR_FEATURE) => {
                if index as u8 & 0x7f == 0 {
                    return Ok(Vec::new());
                }
                match self.endpoint_mut(index as u8) {
                    Some(ep) => {
                        ep.halted = false;
                        Ok(Vec::new())
                    }
                    None => stall,
                }
            }
            (0x80, GET_DESCRIPTOR) => self.descriptor(value, index).ok_or(Errno::EPIPE),
            (0x00, SET_CONFIGURATION) => match value {
                0 => {
                    self.configuration = 0;
                    self.endpoints.clear();
                    Ok(Vec::new())
                }
                1 => {
                    self.configuration = 1;
                    self.enable_alt(0);
                    Ok(Vec::new())
                }
                // composite's set_config: an invalid value stalls, the old one stays
                _ => stall,
            },
            (0x80, GET_CONFIGURATION) => Ok(vec![self.configuration]),
            (0x01, SET_INTERFACE) => {
                // Gadget Zero restarts the endpoints even for the same altsetting
                if self.configuration == 0 || index != 0 || usize::from(value) >= self.alts.len() {
                    return stall;
                }
                self.enable_alt(value as u8);
                Ok(Vec::new())
            }
            (0x81, GET_INTERFACE) if self.configuration != 0 && index == 0 => Ok(vec![self.alt]),
            // Gadget Zero's vendor requests (f_sourcesink's `sourcesink_setup` checks)
            (0x40, REQ_CONTROL_WRITE)
                if value == 0 && index == 0 && usize::from(length) <= VENDOR_BUF_SIZE =>
            {
                self.vendor_buf[..out_data.len()].copy_from_slice(out_data);
                Ok(Vec::new())
            }
            (0xc0, REQ_CONTROL_READ)
                if value == 0 && index == 0 && usize::from(length) <= VENDOR_BUF_SIZE =>
            {
                Ok(self.vendor_buf[..usize::from(length)].to_vec())
            }
            _ => stall,
        }
    }

    /// GET_DESCRIPTOR to the device: the bytes, or `None` to stall (INTERFACE, ENDPOINT,
    /// unknown types and indexes, as Gadget Zero does).
    fn descriptor(&self, value: u16, language: u16) -> Option<Vec<u8>> {
        let d = &self.descriptors;
        let [index, kind] = value.to_le_bytes();
        match kind {
            DT_DEVICE => Some(d.device.clone()),
            DT_CONFIG if index == 0 => Some(d.config.clone()),
            DT_STRING => string_descriptor(index, language, &d.strings),
            DT_DEVICE_QUALIFIER => d.qualifier.clone(),
            DT_OTHER_SPEED_CONFIG if index == 0 => d.other_speed_config.clone(),
            DT_BOS => d.bos.clone(),
            _ => None,
        }
    }
}

/// Why a served connection ended.
#[derive(Debug, thiserror::Error)]
pub enum NullEnd {
    /// vhci closed its end (a detach, or it dropped the device), or our closer shut it.
    #[error("the connection closed")]
    Closed,
    #[error("{0}")]
    Error(#[from] NullError),
}

/// Serves `device` on `stream` in the calling thread until the peer closes or errs: read,
/// answer, write. vhci reads replies on its own thread (`vhci_rx`), so a blocked write never
/// waits for our reads.
pub fn serve<S: Stream>(device: &mut NullDevice, stream: &mut S) -> NullEnd {
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) => return NullEnd::Closed,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return NullEnd::Error(e.into()),
        };
        if let Err(e) = device.handle_input(&buf[..n]) {
            return NullEnd::Error(e);
        }
        if device.has_output() {
            let written = stream.write_all(device.output());
            device.clear_output();
            if let Err(e) = written {
                return NullEnd::Error(e.into());
            }
        }
    }
}

/// A null device attached to a local vhci port, served by its own thread. Dropping it, or
/// [`NullAttachment::detach`], shuts our end down and vhci detaches the port (U20).
pub struct NullAttachment {
    pub port: u32,
    pub hub: Hub,
    pub speed: Speed,
    pub devid: u32,
    closer: UnixStream,
    stats: Arc<Mutex<NullStats>>,
    thread: Option<thread::JoinHandle<NullEnd>>,
}

impl std::fmt::Debug for NullAttachment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")
    }
}

impl std::fmt::Display for NullAttachment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "vhci port {} ({} hub), {}, devid 0x{:08x}",
            self.port,
            self.hub,
            self.speed.as_str(),
            self.devid
        )
    }
}

impl NullAttachment {
    /// Whether the connection still runs.
    pub fn is_attached(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// The counters when the connection ended (zeros while it runs).
    pub fn stats(&self) -> NullStats {
        *self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Shuts our end down (vhci detaches the port) and waits for the serving thread.
    pub fn detach(mut self) -> NullEnd {
        self.closer.shutdown_both();
        self.join()
    }

    /// Waits until the connection ends.
    pub fn wait(mut self) -> NullEnd {
        self.join()
    }

    fn join(&mut self) -> NullEnd {
        match self.thread.take().map(thread::JoinHandle::join) {
            Some(Ok(end)) => end,
            Some(Err(_)) => NullEnd::Error(NullError::Io(io::Error::other(
                "the null device's thread panicked",
            ))),
            None => NullEnd::Closed,
        }
    }
}

impl Drop for NullAttachment {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.closer.shutdown_both();
            let _ = self.join();
        }
    }
}

/// Attaches a null device with `descriptors` to a free local vhci port of its speed's hub
/// (U17–U19, as [`crate::vhci::attach_local`] does) and serves it on a thread.
///
/// # Errors
/// [`AttachError`] (vhci missing, not root, no free port), or the descriptors unusable
/// ([`AttachError::Io`] with the reason).
pub fn attach_local(
    descriptors: NullDescriptors,
    opts: &AttachOptions,
) -> Result<NullAttachment, AttachError> {
    opts.sysfs.check()?;
    let mut device = NullDevice::new(descriptors).map_err(|e| io::Error::other(e.to_string()))?;
    let speed = device.speed();
    let (ours, theirs) = UnixStream::pair()?;
    let port = attach_first_free(
        || opts.sysfs.ports(),
        |port| {
            opts.sysfs
                .write_attach(port, theirs.as_raw_fd(), opts.devid, speed)
        },
        speed,
        opts.attempts,
        opts.retry_delay,
        &opts.sysfs.root().join("attach"),
    )?;
    // contract U17: the kernel holds its own reference to that end now
    drop(theirs);
    let closer = ours.try_clone()?;
    let stats = Arc::new(Mutex::new(NullStats::default()));
    let thread = {
        let stats = stats.clone();
        let mut stream = ours;
        thread::Builder::new()
            .name("usbip-null".into())
            .spawn(move || {
                let end = serve(&mut device, &mut stream);
                *stats.lock().unwrap_or_else(|e| e.into_inner()) = device.stats();
                tracing::info!(%end, stats = ?device.stats(), "null device connection ended");
                end
            })?
    };
    let hub = Hub::for_speed(speed);
    tracing::info!(port, %hub, speed = speed.as_str(), "null device attached to vhci");
    Ok(NullAttachment {
        port,
        hub,
        speed,
        devid: opts.devid,
        closer,
        stats,
        thread: Some(thread),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mod63_restarts_every_packet() {
        let p = mod63(512, 1024);
        assert_eq!(p[62], 62);
        assert_eq!(p[63], 0);
        assert_eq!(p[511], (511 % 63) as u8);
        assert_eq!(p[512], 0);
        assert_eq!(mod63(64, 65)[64], 0);
    }

    #[test]
    fn string_zero_is_the_language_table_and_others_utf16() {
        let strings = vec![(2, "Gadget Zero".to_string())];
        assert_eq!(
            string_descriptor(0, 0, &strings),
            Some(vec![4, 3, 0x09, 0x04])
        );
        let d = string_descriptor(2, 0x0409, &strings).unwrap();
        assert_eq!(d.len(), 2 + 2 * 11);
        assert_eq!((d[0], d[1], d[2], d[3]), (24, 3, b'G', 0));
        assert_eq!(string_descriptor(2, 0x0407, &strings), None);
        assert_eq!(string_descriptor(9, 0x0409, &strings), None);
    }

    #[test]
    fn bad_descriptors_are_refused() {
        let e = NullDevice::new(NullDescriptors::default()).unwrap_err();
        assert!(matches!(e, NullError::Descriptors(_)), "{e}");
        let mut d = NullDescriptors {
            device: vec![
                18, 1, 0, 2, 0, 0, 0, 64, 0x25, 5, 0xa0, 0xa4, 0, 1, 1, 2, 3, 1,
            ],
            config: vec![9, 2, 200, 0, 1, 1, 0, 0x80, 50],
            ..NullDescriptors::default()
        };
        // wTotalLength lies, and a bLength overruns: no interface 0
        assert!(NullDevice::new(d.clone()).is_err());
        d.config.extend_from_slice(&[9, 4, 0, 0, 0, 0xff, 0, 0, 0]);
        assert!(NullDevice::new(d.clone()).is_ok());
        d.config.extend_from_slice(&[7, 5, 0x81]);
        assert!(NullDevice::new(d).is_err());
    }
}
