//! Why bytes are not a valid USB/IP PDU, and why a reply cannot be encoded.

use crate::wire::{Command, OpCode};

/// Why bytes read from a USB/IP peer are not acceptable.
///
/// Every variant names the offending field and value, so the log line that closes the connection
/// says what the peer sent. After any of these a stream decoder is poisoned: USB/IP has no
/// resynchronisation point, so the only safe reaction is to close the connection (contract U25).
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum Error {
    /// A buffer handed to `parse` ends before the message does.
    #[error("truncated: need {need} bytes, have {have}")]
    Truncated { need: usize, have: usize },
    /// The command code is none of USBIP_CMD_SUBMIT/UNLINK, USBIP_RET_SUBMIT/UNLINK.
    #[error("unknown USB/IP command 0x{0:08x}")]
    UnknownCommand(u32),
    /// A valid command that this side never receives (a RET_* sent to the device, or a CMD_* sent
    /// to the host).
    #[error("{0} is not expected in this direction of the connection")]
    UnexpectedCommand(Command),
    /// `direction` is neither USBIP_DIR_OUT (0) nor USBIP_DIR_IN (1); framing depends on it (U12).
    #[error("direction {0} is neither USBIP_DIR_OUT (0) nor USBIP_DIR_IN (1)")]
    BadDirection(u32),
    /// `ep` is above 15 (`stub_rx.c:344` rejects the same).
    #[error("endpoint number {0} is above 15")]
    BadEndpoint(u32),
    /// A length field is negative when read as the kernel's `__s32`.
    #[error("{field} {value} is negative")]
    NegativeLength { field: &'static str, value: i32 },
    /// `transfer_buffer_length` is above the decoder's byte budget (contract U25).
    #[error("transfer_buffer_length {length} exceeds the byte budget of {max}")]
    TransferTooLong { length: u32, max: u32 },
    /// `number_of_packets` is neither 0xffffffff (the documented non-iso value) nor in
    /// `0..=max` (U15; `USBIP_MAX_ISO_PACKETS` is 1024).
    #[error("number_of_packets {value} is neither 0xffffffff nor in 0..={max}")]
    BadNumberOfPackets { value: u32, max: u32 },
    /// An iso packet descriptor reaches past the transfer buffer.
    #[error(
        "iso packet {index}: offset {offset} + length {length} ends past \
         transfer_buffer_length {transfer_buffer_length}"
    )]
    IsoPacketOutOfBounds {
        index: usize,
        offset: u32,
        length: u32,
        transfer_buffer_length: u32,
    },
    /// A reply's data length contradicts its URB (the checks of `usbip_recv_xbuff` and
    /// `usbip_recv_iso`, U13/U16); only the host-side decoder reports this.
    #[error("RET_SUBMIT {seqnum}: {why}")]
    BadReply { seqnum: u32, why: &'static str },
    /// A RET_SUBMIT for a seqnum the host-side decoder was not told about (U14).
    #[error("RET_SUBMIT for unknown seqnum {0}")]
    UnknownSeqnum(u32),
    /// The op header carries a version other than 0x0111 (`usbip_network.c:177-181`).
    #[error("USB/IP version 0x{0:04x}, expected 0x0111")]
    BadVersion(u16),
    /// An op code that this side does not serve (OP_REQ_DEVINFO, OP_REQ_CRYPKEY, a reply, ...);
    /// usbipd closes the connection on these too (`usbipd.c`, `recv_pdu`).
    #[error("op code {0} is not served here")]
    UnexpectedOpCode(OpCode),
    /// The op header's status is not ST_OK where it must be (a request; usbipd rejects those in
    /// `usbip_net_recv_op_common`).
    #[error("op status {0} where 0 (ST_OK) is required")]
    BadOpStatus(u32),
    /// A count in an op reply is not backed by the bytes that follow it.
    #[error("op reply: {0}")]
    BadOpReply(&'static str),
    /// Bytes arrived after an op request and before the device answered it.
    #[error("bytes after {0} before the reply was sent")]
    DataAfterRequest(OpCode),
}

/// Why a reply cannot be encoded: sending it would break a framing rule and make vhci drop the
/// device (contract §3.3). These are driver bugs, reported instead of sent.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum ReplyError {
    /// An IN answer to an OUT URB or the reverse.
    #[error("seqnum {seqnum}: {what} answer for a URB submitted with the other direction")]
    WrongDirection { seqnum: u32, what: &'static str },
    /// `actual_length` above the URB's `transfer_buffer_length` (U13, `usbip_common.c:801-803`).
    #[error(
        "seqnum {seqnum}: actual_length {actual_length} exceeds transfer_buffer_length \
         {transfer_buffer_length} (contract U13)"
    )]
    ActualLengthTooLong {
        seqnum: u32,
        actual_length: usize,
        transfer_buffer_length: u32,
    },
    /// An iso answer whose packet count differs from the submitted one (U15, U16).
    #[error(
        "seqnum {seqnum}: {given} iso results for {submitted} submitted packets (contract U16)"
    )]
    IsoCountMismatch {
        seqnum: u32,
        submitted: usize,
        given: usize,
    },
    /// An iso packet that carries more than its submitted `length`.
    #[error(
        "seqnum {seqnum}: iso packet {index} actual_length {actual_length} exceeds its length \
         {length} (contract U16)"
    )]
    IsoPacketTooLong {
        seqnum: u32,
        index: usize,
        actual_length: u32,
        length: u32,
    },
    /// Packed IN data whose size differs from Σ iso `actual_length` (U16, `usbip_common.c:708-726`).
    #[error(
        "seqnum {seqnum}: iso data is {data_len} bytes but the packets sum to {sum} (contract U16)"
    )]
    IsoDataMismatch {
        seqnum: u32,
        data_len: usize,
        sum: u64,
    },
    /// An OP_REP_DEVLIST entry whose `bNumInterfaces` differs from its interface records
    /// (the client would read the wrong number of records).
    #[error("device {index}: bNumInterfaces {declared} but {records} interface records")]
    InterfaceCountMismatch {
        index: usize,
        declared: u8,
        records: usize,
    },
    /// An `Errno` that has no negative form (0 would read as success).
    #[error("seqnum {seqnum}: errno {errno} cannot be sent as a status")]
    BadErrno { seqnum: u32, errno: i32 },
    /// OP_REP_IMPORT with status ST_OK must carry the device record; an error status must not.
    #[error("OP_REP_IMPORT status {status} contradicts the presence of a device record")]
    ImportStatusMismatch { status: u32 },
}
