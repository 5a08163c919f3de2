//! A whole device-side connection: handshake, then URBs.
//!
//! Over TCP a connection starts with one op request. OP_REQ_DEVLIST is answered and the
//! connection closes; OP_REQ_IMPORT is answered, and after a successful OP_REP_IMPORT the same
//! stream carries URBs (`usbip_protocol.rst`, "Architecture"). A socket handed to vhci's `attach`
//! file skips the handshake (contract U17).

use super::{HandshakeDecoder, HandshakeStep, Limits, UrbDecoder, UrbStep};
use crate::wire::{DevicePdu, OpCode, OpRequest};
use crate::Error;

/// Where a [`DeviceDecoder`] is in the connection.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum Mode {
    /// Waiting for OP_REQ_DEVLIST or OP_REQ_IMPORT.
    Handshake,
    /// A request was decoded and the driver has not answered it yet; no bytes may arrive
    /// (the stock client waits for the reply).
    AwaitingReply(OpCode),
    /// Decoding CMD_SUBMIT / CMD_UNLINK.
    Urb,
}

/// What one [`DeviceDecoder::decode`] call produced.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum DeviceEvent {
    /// All input was consumed; at least this many more bytes are needed (0 while a request
    /// awaits its reply: nothing may arrive until then).
    NeedMore(usize),
    /// An op request: answer it, then call [`DeviceDecoder::import_accepted`] after a successful
    /// OP_REP_IMPORT, or close the connection.
    Request(OpRequest),
    /// A URB PDU.
    Pdu(DevicePdu),
}

/// Device-side decoder for one connection.
#[derive(Clone, Debug)]
pub struct DeviceDecoder {
    mode: Mode,
    handshake: HandshakeDecoder,
    urb: UrbDecoder,
    poisoned: Option<Error>,
}

impl DeviceDecoder {
    /// A TCP connection: handshake first.
    pub fn with_handshake(limits: Limits) -> DeviceDecoder {
        DeviceDecoder {
            mode: Mode::Handshake,
            handshake: HandshakeDecoder::new(),
            urb: UrbDecoder::new(limits),
            poisoned: None,
        }
    }

    /// A socket attached through vhci's sysfs: URBs from the first byte (U17).
    pub fn attached(limits: Limits) -> DeviceDecoder {
        DeviceDecoder {
            mode: Mode::Urb,
            ..DeviceDecoder::with_handshake(limits)
        }
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Switches to URB mode once the driver has sent a successful OP_REP_IMPORT. Returns false,
    /// changing nothing, unless an OP_REQ_IMPORT is awaiting its reply.
    pub fn import_accepted(&mut self) -> bool {
        if self.mode == Mode::AwaitingReply(OpCode::ReqImport) {
            self.mode = Mode::Urb;
            true
        } else {
            false
        }
    }

    /// Consumes bytes of `input` up to the end of the next request or PDU.
    ///
    /// # Errors
    /// The handshake or URB decoder's errors, and [`Error::DataAfterRequest`] for bytes that
    /// arrive while a request awaits its reply. Each is final.
    pub fn decode(&mut self, input: &[u8]) -> Result<(usize, DeviceEvent), Error> {
        if let Some(err) = self.poisoned {
            return Err(err);
        }
        let result = match self.mode {
            Mode::Handshake => self.handshake.decode(input).map(|(used, step)| match step {
                HandshakeStep::NeedMore(n) => (used, DeviceEvent::NeedMore(n)),
                HandshakeStep::Request(request) => {
                    self.mode = Mode::AwaitingReply(request.code());
                    (used, DeviceEvent::Request(request))
                }
            }),
            Mode::AwaitingReply(code) if !input.is_empty() => Err(Error::DataAfterRequest(code)),
            Mode::AwaitingReply(_) => Ok((0, DeviceEvent::NeedMore(0))),
            Mode::Urb => self.urb.decode(input).map(|(used, step)| match step {
                UrbStep::NeedMore(n) => (used, DeviceEvent::NeedMore(n)),
                UrbStep::Pdu(pdu) => (used, DeviceEvent::Pdu(pdu)),
            }),
        };
        if let Err(err) = result {
            self.poisoned = Some(err);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{BusId, CmdUnlinkRepr};
    use alloc::vec::Vec;

    fn unlink() -> Vec<u8> {
        DevicePdu::Unlink(CmdUnlinkRepr {
            seqnum: 2,
            devid: 0x0001_0002,
            unlink_seqnum: 1,
        })
        .to_vec()
    }

    #[test]
    fn import_then_urbs_on_one_stream() {
        let busid = BusId::new("1-1").unwrap();
        let mut stream = OpRequest::Import { busid }.to_vec();
        stream.extend_from_slice(&unlink());
        let mut dec = DeviceDecoder::with_handshake(Limits::REMOTE);
        let (used, event) = dec.decode(&stream).unwrap();
        assert_eq!(
            (used, event),
            (40, DeviceEvent::Request(OpRequest::Import { busid }))
        );
        assert_eq!(dec.mode(), Mode::AwaitingReply(OpCode::ReqImport));
        assert_eq!(dec.decode(&[]), Ok((0, DeviceEvent::NeedMore(0))));
        assert!(dec.import_accepted());
        assert_eq!(dec.mode(), Mode::Urb);
        let (used, event) = dec.decode(&stream[40..]).unwrap();
        assert_eq!(used, 48);
        assert!(matches!(event, DeviceEvent::Pdu(DevicePdu::Unlink(_))));
    }

    #[test]
    fn bytes_before_the_reply_are_a_protocol_error() {
        let mut stream = OpRequest::Devlist.to_vec();
        stream.push(0);
        let mut dec = DeviceDecoder::with_handshake(Limits::REMOTE);
        assert_eq!(
            dec.decode(&stream),
            Ok((8, DeviceEvent::Request(OpRequest::Devlist)))
        );
        assert_eq!(
            dec.decode(&stream[8..]),
            Err(Error::DataAfterRequest(OpCode::ReqDevlist))
        );
        assert!(
            !dec.import_accepted(),
            "poisoned, and a devlist is never accepted"
        );
    }

    #[test]
    fn devlist_cannot_switch_to_urb_mode() {
        let mut dec = DeviceDecoder::with_handshake(Limits::REMOTE);
        dec.decode(&OpRequest::Devlist.to_vec()).unwrap();
        assert!(!dec.import_accepted());
        assert_eq!(dec.mode(), Mode::AwaitingReply(OpCode::ReqDevlist));
    }

    /// contract U17: vhci's attach hands over a socket that carries URBs at once.
    #[test]
    fn u17_attached_socket_has_no_handshake() {
        let mut dec = DeviceDecoder::attached(Limits::LOCAL_VHCI);
        assert_eq!(dec.mode(), Mode::Urb);
        let (used, event) = dec.decode(&unlink()).unwrap();
        assert_eq!(used, 48);
        assert!(matches!(event, DeviceEvent::Pdu(_)));
        // An op request in URB mode is just an unknown command.
        let mut dec = DeviceDecoder::attached(Limits::LOCAL_VHCI);
        let mut devlist = OpRequest::Devlist.to_vec();
        devlist.resize(48, 0);
        assert_eq!(
            dec.decode(&devlist),
            Err(Error::UnknownCommand(0x0111_8005))
        );
    }
}
