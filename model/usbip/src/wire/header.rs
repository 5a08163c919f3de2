//! `struct usbip_header`: the 48 bytes that start every URB PDU.
//!
//! Layout (`drivers/usb/usbip/usbip_common.h:139-217`, `usbip_protocol.rst` "usbip_header_basic"):
//! a 20-byte basic part (command, seqnum, devid, direction, ep), then a 28-byte union whose
//! meaning depends on the command. Fields of different union members share offsets (`status`
//! and `transfer_flags` are both at 0x14); the named ranges below keep them apart in the code.
//!
//! Deliberately not here: what follows the header (OUT/IN data, iso descriptors) — that is framed
//! by [`crate::decode`], which needs the byte budget and, for replies, the URB they answer.

use core::fmt;

use super::{check_len, read_u32, write_u32};
use crate::{Error, USBIP_HEADER_LEN};

mod field {
    use crate::wire::Field;

    // usbip_header_basic
    pub const COMMAND: Field = 0x00..0x04;
    pub const SEQNUM: Field = 0x04..0x08;
    pub const DEVID: Field = 0x08..0x0c;
    pub const DIRECTION: Field = 0x0c..0x10;
    pub const EP: Field = 0x10..0x14;

    // usbip_header_cmd_submit
    pub const TRANSFER_FLAGS: Field = 0x14..0x18;
    pub const TRANSFER_BUFFER_LENGTH: Field = 0x18..0x1c;
    pub const START_FRAME: Field = 0x1c..0x20;
    pub const NUMBER_OF_PACKETS: Field = 0x20..0x24;
    pub const INTERVAL: Field = 0x24..0x28;
    pub const SETUP: Field = 0x28..0x30;

    // usbip_header_ret_submit (START_FRAME and NUMBER_OF_PACKETS as above)
    pub const STATUS: Field = 0x14..0x18;
    pub const ACTUAL_LENGTH: Field = 0x18..0x1c;
    pub const ERROR_COUNT: Field = 0x24..0x28;

    // usbip_header_cmd_unlink (usbip_header_ret_unlink has STATUS at the same place)
    pub const UNLINK_SEQNUM: Field = 0x14..0x18;

    /// The union, for raw dumps: five 32-bit words and the 8 setup bytes.
    pub const UNION: Field = 0x14..0x30;
}

/// `number_of_packets` for a non-iso URB as `usbip_protocol.rst:357-358` documents it. vhci sends
/// 0 instead (`usbip_common.c:447`); both are accepted (contract U15).
pub const NUMBER_OF_PACKETS_NON_ISO: u32 = 0xffff_ffff;

/// The `command` field. Total over `u32`: an unknown code survives a parse/emit round trip.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum Command {
    /// `USBIP_CMD_SUBMIT` (1): host → device, one URB.
    CmdSubmit,
    /// `USBIP_CMD_UNLINK` (2): host → device, cancel a submitted URB.
    CmdUnlink,
    /// `USBIP_RET_SUBMIT` (3): device → host, a URB's result.
    RetSubmit,
    /// `USBIP_RET_UNLINK` (4): device → host, an unlink's result.
    RetUnlink,
    /// Anything else; vhci tears the connection down on these (`vhci_rx.c:247-251`, U14).
    Unknown(u32),
}

impl Command {
    pub const USBIP_CMD_SUBMIT: u32 = 0x0001;
    pub const USBIP_CMD_UNLINK: u32 = 0x0002;
    pub const USBIP_RET_SUBMIT: u32 = 0x0003;
    pub const USBIP_RET_UNLINK: u32 = 0x0004;
}

impl From<u32> for Command {
    fn from(v: u32) -> Command {
        match v {
            Command::USBIP_CMD_SUBMIT => Command::CmdSubmit,
            Command::USBIP_CMD_UNLINK => Command::CmdUnlink,
            Command::USBIP_RET_SUBMIT => Command::RetSubmit,
            Command::USBIP_RET_UNLINK => Command::RetUnlink,
            other => Command::Unknown(other),
        }
    }
}

impl From<Command> for u32 {
    fn from(c: Command) -> u32 {
        match c {
            Command::CmdSubmit => Command::USBIP_CMD_SUBMIT,
            Command::CmdUnlink => Command::USBIP_CMD_UNLINK,
            Command::RetSubmit => Command::USBIP_RET_SUBMIT,
            Command::RetUnlink => Command::USBIP_RET_UNLINK,
            Command::Unknown(v) => v,
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::CmdSubmit => f.write_str("USBIP_CMD_SUBMIT"),
            Command::CmdUnlink => f.write_str("USBIP_CMD_UNLINK"),
            Command::RetSubmit => f.write_str("USBIP_RET_SUBMIT"),
            Command::RetUnlink => f.write_str("USBIP_RET_UNLINK"),
            Command::Unknown(v) => write!(f, "command 0x{v:08x}"),
        }
    }
}

/// `direction` of a CMD_SUBMIT: whether data follows the header (OUT) or the reply (IN), U12.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum Direction {
    /// `USBIP_DIR_OUT` (0): `transfer_buffer_length` bytes follow the CMD_SUBMIT header.
    Out,
    /// `USBIP_DIR_IN` (1): `actual_length` bytes follow the RET_SUBMIT header.
    In,
}

impl Direction {
    pub const USBIP_DIR_OUT: u32 = 0;
    pub const USBIP_DIR_IN: u32 = 1;

    /// The direction for a wire value, `None` for anything but 0 and 1.
    pub const fn from_wire(v: u32) -> Option<Direction> {
        match v {
            Direction::USBIP_DIR_OUT => Some(Direction::Out),
            Direction::USBIP_DIR_IN => Some(Direction::In),
            _ => None,
        }
    }

    pub const fn to_wire(self) -> u32 {
        match self {
            Direction::Out => Direction::USBIP_DIR_OUT,
            Direction::In => Direction::USBIP_DIR_IN,
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Out => "OUT",
            Direction::In => "IN",
        })
    }
}

/// A view over a 48-byte `usbip_header`. Accessors are named after the kernel's fields; those of
/// the union read whatever is at their offset, whatever the command.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Header<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Header<T> {
    /// Wraps `buffer` without checking its length; accessors then read 0 past its end.
    pub const fn new_unchecked(buffer: T) -> Header<T> {
        Header { buffer }
    }

    /// Wraps `buffer` after checking that it holds a whole header.
    ///
    /// # Errors
    /// [`Error::Truncated`] if it is shorter than 48 bytes.
    pub fn new_checked(buffer: T) -> Result<Header<T>, Error> {
        let header = Header::new_unchecked(buffer);
        header.check_len()?;
        Ok(header)
    }

    /// # Errors
    /// [`Error::Truncated`] if the buffer is shorter than 48 bytes.
    pub fn check_len(&self) -> Result<(), Error> {
        check_len(self.buffer.as_ref(), USBIP_HEADER_LEN)
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn u32_at(&self, f: super::Field) -> u32 {
        read_u32(self.buffer.as_ref(), f)
    }

    pub fn command(&self) -> Command {
        Command::from(self.u32_at(field::COMMAND))
    }

    pub fn seqnum(&self) -> u32 {
        self.u32_at(field::SEQNUM)
    }

    /// `(busnum << 16) | devnum` from the host, 0 from the device (`vhci_tx.c:20-25`, U2).
    pub fn devid(&self) -> u32 {
        self.u32_at(field::DEVID)
    }

    /// The raw `direction`; see [`Direction::from_wire`].
    pub fn direction(&self) -> u32 {
        self.u32_at(field::DIRECTION)
    }

    /// The raw endpoint number (`usb_pipeendpoint`), without the direction bit.
    pub fn ep(&self) -> u32 {
        self.u32_at(field::EP)
    }

    /// CMD_SUBMIT: `USBIP_URB_*` flags (`include/uapi/linux/usbip.h`).
    pub fn transfer_flags(&self) -> u32 {
        self.u32_at(field::TRANSFER_FLAGS)
    }

    /// CMD_SUBMIT: the raw `__s32 transfer_buffer_length`.
    pub fn transfer_buffer_length(&self) -> u32 {
        self.u32_at(field::TRANSFER_BUFFER_LENGTH)
    }

    /// CMD_SUBMIT and RET_SUBMIT.
    pub fn start_frame(&self) -> i32 {
        self.u32_at(field::START_FRAME) as i32
    }

    /// CMD_SUBMIT and RET_SUBMIT: the raw `__s32 number_of_packets`.
    pub fn number_of_packets(&self) -> u32 {
        self.u32_at(field::NUMBER_OF_PACKETS)
    }

    /// CMD_SUBMIT.
    pub fn interval(&self) -> i32 {
        self.u32_at(field::INTERVAL) as i32
    }

    /// CMD_SUBMIT: the SETUP packet of a control URB, zeros otherwise.
    pub fn setup(&self) -> [u8; 8] {
        let mut setup = [0; 8];
        if let Some(bytes) = self.buffer.as_ref().get(field::SETUP) {
            setup.copy_from_slice(bytes);
        }
        setup
    }

    /// RET_SUBMIT and RET_UNLINK: 0 or a negative errno.
    pub fn status(&self) -> i32 {
        self.u32_at(field::STATUS) as i32
    }

    /// RET_SUBMIT: the raw `__s32 actual_length`.
    pub fn actual_length(&self) -> u32 {
        self.u32_at(field::ACTUAL_LENGTH)
    }

    /// RET_SUBMIT: iso packets with a non-zero status.
    pub fn error_count(&self) -> u32 {
        self.u32_at(field::ERROR_COUNT)
    }

    /// CMD_UNLINK: the seqnum of the CMD_SUBMIT to cancel (`u.cmd_unlink.seqnum`, U10).
    pub fn unlink_seqnum(&self) -> u32 {
        self.u32_at(field::UNLINK_SEQNUM)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Header<T> {
    fn set_u32(&mut self, f: super::Field, v: u32) {
        write_u32(self.buffer.as_mut(), f, v)
    }

    pub fn set_command(&mut self, v: Command) {
        self.set_u32(field::COMMAND, v.into())
    }
    pub fn set_seqnum(&mut self, v: u32) {
        self.set_u32(field::SEQNUM, v)
    }
    pub fn set_devid(&mut self, v: u32) {
        self.set_u32(field::DEVID, v)
    }
    pub fn set_direction(&mut self, v: u32) {
        self.set_u32(field::DIRECTION, v)
    }
    pub fn set_ep(&mut self, v: u32) {
        self.set_u32(field::EP, v)
    }
    pub fn set_transfer_flags(&mut self, v: u32) {
        self.set_u32(field::TRANSFER_FLAGS, v)
    }
    pub fn set_transfer_buffer_length(&mut self, v: u32) {
        self.set_u32(field::TRANSFER_BUFFER_LENGTH, v)
    }
    pub fn set_start_frame(&mut self, v: i32) {
        self.set_u32(field::START_FRAME, v as u32)
    }
    pub fn set_number_of_packets(&mut self, v: u32) {
        self.set_u32(field::NUMBER_OF_PACKETS, v)
    }
    pub fn set_interval(&mut self, v: i32) {
        self.set_u32(field::INTERVAL, v as u32)
    }
    pub fn set_setup(&mut self, v: [u8; 8]) {
        self.buffer.as_mut()[field::SETUP].copy_from_slice(&v)
    }
    pub fn set_status(&mut self, v: i32) {
        self.set_u32(field::STATUS, v as u32)
    }
    pub fn set_actual_length(&mut self, v: u32) {
        self.set_u32(field::ACTUAL_LENGTH, v)
    }
    pub fn set_error_count(&mut self, v: u32) {
        self.set_u32(field::ERROR_COUNT, v)
    }
    pub fn set_unlink_seqnum(&mut self, v: u32) {
        self.set_u32(field::UNLINK_SEQNUM, v)
    }
    /// Zeroes the union (the padding of RET_SUBMIT, CMD_UNLINK and RET_UNLINK).
    pub fn clear_union(&mut self) {
        self.buffer.as_mut()[field::UNION].fill(0)
    }
}

/// Reads `v` as the kernel's `__s32` and rejects negative values.
fn non_negative(field: &'static str, v: u32) -> Result<u32, Error> {
    if (v as i32) < 0 {
        Err(Error::NegativeLength {
            field,
            value: v as i32,
        })
    } else {
        Ok(v)
    }
}

/// USBIP_CMD_SUBMIT's header: one URB from the host (`vhci_tx.c:13-31`).
///
/// Carries no transfer type (contract U12): control, bulk, interrupt and iso URBs differ only in
/// what the device knows about endpoint `ep` and in `number_of_packets`.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub struct CmdSubmitRepr {
    pub seqnum: u32,
    pub devid: u32,
    pub direction: Direction,
    /// Endpoint number, 0..=15, without the direction bit.
    pub ep: u8,
    /// `USBIP_URB_*` flags, kept verbatim.
    pub transfer_flags: u32,
    /// Size of the host's buffer: the OUT data that follows, or the most an IN reply may carry.
    /// At most `i32::MAX` (the kernel's `__s32`).
    pub transfer_buffer_length: u32,
    pub start_frame: i32,
    /// As sent: 0 or [`NUMBER_OF_PACKETS_NON_ISO`] for non-iso URBs, the iso packet count
    /// otherwise. Kept raw so that a round trip is exact; use [`Self::iso_packet_count`].
    pub number_of_packets: u32,
    pub interval: i32,
    pub setup: [u8; 8],
}

impl CmdSubmitRepr {
    /// Parses a CMD_SUBMIT header. Budgets (byte and packet limits) are the decoder's job
    /// ([`crate::Limits`]); this checks only what the protocol itself forbids.
    ///
    /// # Errors
    /// [`Error::Truncated`], [`Error::UnknownCommand`] / [`Error::UnexpectedCommand`] for another
    /// command, [`Error::BadDirection`], [`Error::BadEndpoint`], [`Error::NegativeLength`] for
    /// `transfer_buffer_length`, [`Error::BadNumberOfPackets`] for a negative count other than
    /// 0xffffffff.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(header: &Header<&T>) -> Result<CmdSubmitRepr, Error> {
        header.check_len()?;
        expect_command(header.command(), Command::CmdSubmit)?;
        let direction = Direction::from_wire(header.direction())
            .ok_or(Error::BadDirection(header.direction()))?;
        let ep = header.ep();
        if ep > 15 {
            return Err(Error::BadEndpoint(ep));
        }
        let transfer_buffer_length =
            non_negative("transfer_buffer_length", header.transfer_buffer_length())?;
        let number_of_packets = header.number_of_packets();
        if number_of_packets != NUMBER_OF_PACKETS_NON_ISO && (number_of_packets as i32) < 0 {
            return Err(Error::BadNumberOfPackets {
                value: number_of_packets,
                max: i32::MAX as u32,
            });
        }
        Ok(CmdSubmitRepr {
            seqnum: header.seqnum(),
            devid: header.devid(),
            direction,
            ep: ep as u8,
            transfer_flags: header.transfer_flags(),
            transfer_buffer_length,
            start_frame: header.start_frame(),
            number_of_packets,
            interval: header.interval(),
            setup: header.setup(),
        })
    }

    pub const fn buffer_len(&self) -> usize {
        USBIP_HEADER_LEN
    }

    /// Writes the 48 header bytes. Panics if `header`'s buffer is shorter.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]> + ?Sized>(&self, header: &mut Header<&mut T>) {
        header.set_command(Command::CmdSubmit);
        header.set_seqnum(self.seqnum);
        header.set_devid(self.devid);
        header.set_direction(self.direction.to_wire());
        header.set_ep(self.ep.into());
        header.set_transfer_flags(self.transfer_flags);
        header.set_transfer_buffer_length(self.transfer_buffer_length);
        header.set_start_frame(self.start_frame);
        header.set_number_of_packets(self.number_of_packets);
        header.set_interval(self.interval);
        header.set_setup(self.setup);
    }

    /// Iso descriptors that follow the data: `number_of_packets`, or 0 for the non-iso marker
    /// 0xffffffff (contract U12, U15).
    pub const fn iso_packet_count(&self) -> u32 {
        if self.number_of_packets == NUMBER_OF_PACKETS_NON_ISO {
            0
        } else {
            self.number_of_packets
        }
    }

    /// Data bytes that follow this header: `transfer_buffer_length` for OUT, none for IN (U12).
    pub const fn out_data_len(&self) -> usize {
        match self.direction {
            Direction::Out => self.transfer_buffer_length as usize,
            Direction::In => 0,
        }
    }

    /// Everything that follows the header: OUT data, then the iso descriptors.
    pub const fn payload_len(&self) -> usize {
        self.out_data_len() + self.iso_packet_count() as usize * crate::USBIP_ISO_PACKET_LEN
    }

    /// The USB endpoint address: `ep`, with bit 7 set for IN (`vudc_rx.c:103-105`).
    pub const fn endpoint_address(&self) -> u8 {
        match self.direction {
            Direction::Out => self.ep,
            Direction::In => self.ep | 0x80,
        }
    }
}

impl fmt::Display for CmdSubmitRepr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "USBIP_CMD_SUBMIT seqnum={} devid=0x{:08x} ep={} {} transfer_flags=0x{:x} \
             transfer_buffer_length={} start_frame={} number_of_packets={} interval={} setup=",
            self.seqnum,
            self.devid,
            self.ep,
            self.direction,
            self.transfer_flags,
            self.transfer_buffer_length,
            self.start_frame,
            self.number_of_packets as i32,
            self.interval,
        )?;
        hex(f, &self.setup)
    }
}

/// USBIP_RET_SUBMIT's header: a URB's result. Build replies with [`crate::RetSubmit`], which
/// enforces the framing rules; this repr is the unchecked wire form (used to parse captures).
///
/// `devid`, `direction` and `ep` are 0 from a device (`stub_tx.c:107-115`) and are neither kept
/// nor checked.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub struct RetSubmitRepr {
    pub seqnum: u32,
    /// 0 or a negative errno (contract U9).
    pub status: i32,
    /// At most `i32::MAX`.
    pub actual_length: u32,
    pub start_frame: i32,
    /// Raw: 0 for non-iso (U15), the submitted count for iso.
    pub number_of_packets: u32,
    pub error_count: u32,
}

impl RetSubmitRepr {
    /// # Errors
    /// [`Error::Truncated`], another command, a negative `actual_length`.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(header: &Header<&T>) -> Result<RetSubmitRepr, Error> {
        header.check_len()?;
        expect_command(header.command(), Command::RetSubmit)?;
        Ok(RetSubmitRepr {
            seqnum: header.seqnum(),
            status: header.status(),
            actual_length: non_negative("actual_length", header.actual_length())?,
            start_frame: header.start_frame(),
            number_of_packets: header.number_of_packets(),
            error_count: header.error_count(),
        })
    }

    pub const fn buffer_len(&self) -> usize {
        USBIP_HEADER_LEN
    }

    /// Writes the header with `devid`, `direction`, `ep` and the padding zeroed.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]> + ?Sized>(&self, header: &mut Header<&mut T>) {
        emit_basic(header, Command::RetSubmit, self.seqnum);
        header.set_status(self.status);
        header.set_actual_length(self.actual_length);
        header.set_start_frame(self.start_frame);
        header.set_number_of_packets(self.number_of_packets);
        header.set_error_count(self.error_count);
    }

    /// Iso descriptors that follow the data (0xffffffff counts as none, as for CMD_SUBMIT).
    pub const fn iso_packet_count(&self) -> u32 {
        if self.number_of_packets == NUMBER_OF_PACKETS_NON_ISO {
            0
        } else {
            self.number_of_packets
        }
    }
}

impl fmt::Display for RetSubmitRepr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "USBIP_RET_SUBMIT seqnum={} status={} actual_length={} start_frame={} \
             number_of_packets={} error_count={}",
            self.seqnum,
            self.status,
            self.actual_length,
            self.start_frame,
            self.number_of_packets as i32,
            self.error_count,
        )
    }
}

/// USBIP_CMD_UNLINK's header: cancel the CMD_SUBMIT whose seqnum is `unlink_seqnum`
/// (`vhci_tx.c:204-211`, contract U10). `direction` and `ep` "shall be 0" and are ignored.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub struct CmdUnlinkRepr {
    /// This unlink's own seqnum; the RET_UNLINK echoes it.
    pub seqnum: u32,
    pub devid: u32,
    /// The target URB's seqnum.
    pub unlink_seqnum: u32,
}

impl CmdUnlinkRepr {
    /// # Errors
    /// [`Error::Truncated`] or another command.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(header: &Header<&T>) -> Result<CmdUnlinkRepr, Error> {
        header.check_len()?;
        expect_command(header.command(), Command::CmdUnlink)?;
        Ok(CmdUnlinkRepr {
            seqnum: header.seqnum(),
            devid: header.devid(),
            unlink_seqnum: header.unlink_seqnum(),
        })
    }

    pub const fn buffer_len(&self) -> usize {
        USBIP_HEADER_LEN
    }

    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]> + ?Sized>(&self, header: &mut Header<&mut T>) {
        emit_basic(header, Command::CmdUnlink, self.seqnum);
        header.set_devid(self.devid);
        header.set_unlink_seqnum(self.unlink_seqnum);
    }
}

impl fmt::Display for CmdUnlinkRepr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "USBIP_CMD_UNLINK seqnum={} devid=0x{:08x} unlink_seqnum={}",
            self.seqnum, self.devid, self.unlink_seqnum
        )
    }
}

/// USBIP_RET_UNLINK's header: -ECONNRESET when the URB was cancelled, 0 when it had already
/// completed (contract U10).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub struct RetUnlinkRepr {
    /// The CMD_UNLINK's seqnum (not the target's).
    pub seqnum: u32,
    pub status: i32,
}

impl RetUnlinkRepr {
    /// # Errors
    /// [`Error::Truncated`] or another command.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(header: &Header<&T>) -> Result<RetUnlinkRepr, Error> {
        header.check_len()?;
        expect_command(header.command(), Command::RetUnlink)?;
        Ok(RetUnlinkRepr {
            seqnum: header.seqnum(),
            status: header.status(),
        })
    }

    pub const fn buffer_len(&self) -> usize {
        USBIP_HEADER_LEN
    }

    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]> + ?Sized>(&self, header: &mut Header<&mut T>) {
        emit_basic(header, Command::RetUnlink, self.seqnum);
        header.set_status(self.status);
    }
}

impl fmt::Display for RetUnlinkRepr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "USBIP_RET_UNLINK seqnum={} status={}",
            self.seqnum, self.status
        )
    }
}

/// Any of the four headers.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum HeaderRepr {
    CmdSubmit(CmdSubmitRepr),
    CmdUnlink(CmdUnlinkRepr),
    RetSubmit(RetSubmitRepr),
    RetUnlink(RetUnlinkRepr),
}

impl HeaderRepr {
    /// Parses whichever of the four commands the header carries.
    ///
    /// # Errors
    /// [`Error::Truncated`], [`Error::UnknownCommand`], or the command's own parse error.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(header: &Header<&T>) -> Result<HeaderRepr, Error> {
        header.check_len()?;
        match header.command() {
            Command::CmdSubmit => CmdSubmitRepr::parse(header).map(HeaderRepr::CmdSubmit),
            Command::CmdUnlink => CmdUnlinkRepr::parse(header).map(HeaderRepr::CmdUnlink),
            Command::RetSubmit => RetSubmitRepr::parse(header).map(HeaderRepr::RetSubmit),
            Command::RetUnlink => RetUnlinkRepr::parse(header).map(HeaderRepr::RetUnlink),
            Command::Unknown(v) => Err(Error::UnknownCommand(v)),
        }
    }

    pub const fn buffer_len(&self) -> usize {
        USBIP_HEADER_LEN
    }

    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]> + ?Sized>(&self, header: &mut Header<&mut T>) {
        match self {
            HeaderRepr::CmdSubmit(r) => r.emit(header),
            HeaderRepr::CmdUnlink(r) => r.emit(header),
            HeaderRepr::RetSubmit(r) => r.emit(header),
            HeaderRepr::RetUnlink(r) => r.emit(header),
        }
    }
}

impl fmt::Display for HeaderRepr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderRepr::CmdSubmit(r) => r.fmt(f),
            HeaderRepr::CmdUnlink(r) => r.fmt(f),
            HeaderRepr::RetSubmit(r) => r.fmt(f),
            HeaderRepr::RetUnlink(r) => r.fmt(f),
        }
    }
}

/// Prints the parsed header, or, when it does not parse, every raw field and the reason: a
/// capture of a hostile or broken peer stays readable.
impl<T: AsRef<[u8]>> fmt::Display for Header<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = self.buffer.as_ref();
        let view = Header::new_unchecked(bytes);
        match HeaderRepr::parse(&view) {
            Ok(repr) => repr.fmt(f),
            Err(Error::Truncated { have, .. }) => {
                write!(
                    f,
                    "USBIP header (truncated, {have} of {USBIP_HEADER_LEN} bytes) "
                )?;
                hex(f, bytes)
            }
            Err(err) => {
                write!(
                    f,
                    "USBIP header ({err}) command=0x{:08x} seqnum={} devid=0x{:08x} \
                     direction={} ep={} u=",
                    u32::from(view.command()),
                    view.seqnum(),
                    view.devid(),
                    view.direction(),
                    view.ep(),
                )?;
                hex(f, &bytes[field::UNION])
            }
        }
    }
}

/// Writes `bytes` as contiguous lowercase hex.
pub(crate) fn hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    bytes.iter().try_for_each(|b| write!(f, "{b:02x}"))
}

fn expect_command(found: Command, expected: Command) -> Result<(), Error> {
    match found {
        c if c == expected => Ok(()),
        Command::Unknown(v) => Err(Error::UnknownCommand(v)),
        other => Err(Error::UnexpectedCommand(other)),
    }
}

/// The basic part of a header the device sends: devid, direction and ep are 0
/// (`stub_tx.c:107-115`), the union is cleared first so padding is zero.
fn emit_basic<T: AsRef<[u8]> + AsMut<[u8]> + ?Sized>(
    header: &mut Header<&mut T>,
    command: Command,
    seqnum: u32,
) {
    header.set_command(command);
    header.set_seqnum(seqnum);
    header.set_devid(0);
    header.set_direction(0);
    header.set_ep(0);
    header.clear_union();
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;
    use alloc::string::ToString;

    /// `CmdIntrIN` from `usbip_protocol.rst` (the HID capture at the end of the document).
    #[rustfmt::skip]
    const CMD_INTR_IN: [u8; 48] = [
        0x00, 0x00, 0x00, 0x01, // command: USBIP_CMD_SUBMIT
        0x00, 0x00, 0x0d, 0x05, // seqnum: 3333
        0x00, 0x01, 0x00, 0x0f, // devid: busnum 1 << 16 | devnum 15
        0x00, 0x00, 0x00, 0x01, // direction: USBIP_DIR_IN
        0x00, 0x00, 0x00, 0x01, // ep: 1
        0x00, 0x00, 0x02, 0x00, // transfer_flags: USBIP_URB_DIR_IN
        0x00, 0x00, 0x00, 0x40, // transfer_buffer_length: 64
        0xff, 0xff, 0xff, 0xff, // start_frame: -1
        0x00, 0x00, 0x00, 0x00, // number_of_packets: 0 (non-iso, as vhci sends it)
        0x00, 0x00, 0x00, 0x04, // interval: 4
        0x00, 0x00, 0x00, 0x00, // setup[0..4]: unused
        0x00, 0x00, 0x00, 0x00, // setup[4..8]: unused
    ];

    /// `RetIntrIn` from `usbip_protocol.rst`.
    #[rustfmt::skip]
    const RET_INTR_IN: [u8; 48] = [
        0x00, 0x00, 0x00, 0x03, // command: USBIP_RET_SUBMIT
        0x00, 0x00, 0x0d, 0x05, // seqnum: 3333
        0x00, 0x00, 0x00, 0x00, // devid: 0 from the device
        0x00, 0x00, 0x00, 0x00, // direction: 0 from the device
        0x00, 0x00, 0x00, 0x00, // ep: 0 from the device
        0x00, 0x00, 0x00, 0x00, // status: 0
        0x00, 0x00, 0x00, 0x40, // actual_length: 64
        0xff, 0xff, 0xff, 0xff, // start_frame: -1
        0x00, 0x00, 0x00, 0x00, // number_of_packets: 0
        0x00, 0x00, 0x00, 0x00, // error_count: 0
        0x00, 0x00, 0x00, 0x00, // padding
        0x00, 0x00, 0x00, 0x00, // padding
    ];

    /// A GET_DESCRIPTOR(DEVICE, 18) control URB on ep0 as vhci sends it.
    #[rustfmt::skip]
    const CMD_GET_DESCRIPTOR: [u8; 48] = [
        0x00, 0x00, 0x00, 0x01, // command: USBIP_CMD_SUBMIT
        0x00, 0x00, 0x00, 0x02, // seqnum: 2
        0x00, 0x03, 0x00, 0x02, // devid: busnum 3, devnum 2
        0x00, 0x00, 0x00, 0x01, // direction: IN
        0x00, 0x00, 0x00, 0x00, // ep: 0
        0x00, 0x00, 0x02, 0x01, // transfer_flags: DIR_IN | SHORT_NOT_OK
        0x00, 0x00, 0x00, 0x12, // transfer_buffer_length: 18
        0x00, 0x00, 0x00, 0x00, // start_frame: 0
        0x00, 0x00, 0x00, 0x00, // number_of_packets: 0
        0x00, 0x00, 0x00, 0x00, // interval: 0
        0x80, 0x06, 0x00, 0x01, // setup: bmRequestType 0x80, GET_DESCRIPTOR, wValue 0x0100
        0x00, 0x00, 0x12, 0x00, // setup: wIndex 0, wLength 18
    ];

    /// A CMD_UNLINK as `vhci_send_cmd_unlink` builds it.
    #[rustfmt::skip]
    const CMD_UNLINK: [u8; 48] = [
        0x00, 0x00, 0x00, 0x02, // command: USBIP_CMD_UNLINK
        0x00, 0x00, 0x00, 0x08, // seqnum: 8 (the unlink's own)
        0x00, 0x03, 0x00, 0x02, // devid
        0x00, 0x00, 0x00, 0x00, // direction: 0
        0x00, 0x00, 0x00, 0x00, // ep: 0
        0x00, 0x00, 0x00, 0x07, // u.cmd_unlink.seqnum: 7 (the target)
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // padding
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // padding
    ];

    /// A RET_UNLINK with -ECONNRESET (-104 = 0xffffff98).
    #[rustfmt::skip]
    const RET_UNLINK: [u8; 48] = [
        0x00, 0x00, 0x00, 0x04, // command: USBIP_RET_UNLINK
        0x00, 0x00, 0x00, 0x08, // seqnum: the CMD_UNLINK's
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // devid, direction, ep: 0
        0xff, 0xff, 0xff, 0x98, // status: -ECONNRESET
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // padding
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // padding
    ];

    fn cmd_intr_in_repr() -> CmdSubmitRepr {
        CmdSubmitRepr {
            seqnum: 3333,
            devid: 0x0001_000f,
            direction: Direction::In,
            ep: 1,
            transfer_flags: 0x200,
            transfer_buffer_length: 64,
            start_frame: -1,
            number_of_packets: 0,
            interval: 4,
            setup: [0; 8],
        }
    }

    fn emit_to_array(repr: &HeaderRepr) -> [u8; 48] {
        let mut bytes = [0xa5u8; 48];
        repr.emit(&mut Header::new_unchecked(&mut bytes[..]));
        bytes
    }

    #[test]
    fn test_deconstruct_cmd_submit() {
        let h = Header::new_checked(&CMD_INTR_IN[..]).unwrap();
        assert_eq!(h.command(), Command::CmdSubmit);
        assert_eq!(h.seqnum(), 3333);
        assert_eq!(h.devid(), 0x0001_000f);
        assert_eq!(h.direction(), 1);
        assert_eq!(h.ep(), 1);
        assert_eq!(h.transfer_flags(), 0x200);
        assert_eq!(h.transfer_buffer_length(), 64);
        assert_eq!(h.start_frame(), -1);
        assert_eq!(h.number_of_packets(), 0);
        assert_eq!(h.interval(), 4);
        assert_eq!(h.setup(), [0; 8]);
    }

    #[test]
    fn test_parse_and_emit_cmd_submit() {
        let repr = CmdSubmitRepr::parse(&Header::new_unchecked(&CMD_INTR_IN[..])).unwrap();
        assert_eq!(repr, cmd_intr_in_repr());
        assert_eq!(repr.endpoint_address(), 0x81);
        assert_eq!(repr.payload_len(), 0, "IN data travels in the reply");
        assert_eq!(emit_to_array(&HeaderRepr::CmdSubmit(repr)), CMD_INTR_IN);
    }

    #[test]
    fn test_parse_control_setup() {
        let repr = CmdSubmitRepr::parse(&Header::new_unchecked(&CMD_GET_DESCRIPTOR[..])).unwrap();
        assert_eq!(repr.setup, [0x80, 0x06, 0x00, 0x01, 0x00, 0x00, 0x12, 0x00]);
        assert_eq!(repr.ep, 0);
        assert_eq!(repr.endpoint_address(), 0x80);
        assert_eq!(
            emit_to_array(&HeaderRepr::CmdSubmit(repr)),
            CMD_GET_DESCRIPTOR
        );
    }

    #[test]
    fn test_parse_and_emit_ret_submit() {
        let repr = RetSubmitRepr::parse(&Header::new_unchecked(&RET_INTR_IN[..])).unwrap();
        assert_eq!(
            repr,
            RetSubmitRepr {
                seqnum: 3333,
                status: 0,
                actual_length: 64,
                start_frame: -1,
                number_of_packets: 0,
                error_count: 0
            }
        );
        assert_eq!(emit_to_array(&HeaderRepr::RetSubmit(repr)), RET_INTR_IN);
    }

    #[test]
    fn test_parse_and_emit_unlink_pair() {
        let cmd = CmdUnlinkRepr::parse(&Header::new_unchecked(&CMD_UNLINK[..])).unwrap();
        assert_eq!(
            cmd,
            CmdUnlinkRepr {
                seqnum: 8,
                devid: 0x0003_0002,
                unlink_seqnum: 7
            }
        );
        assert_eq!(emit_to_array(&HeaderRepr::CmdUnlink(cmd)), CMD_UNLINK);
        let ret = RetUnlinkRepr::parse(&Header::new_unchecked(&RET_UNLINK[..])).unwrap();
        assert_eq!(
            ret,
            RetUnlinkRepr {
                seqnum: 8,
                status: -104
            }
        );
        assert_eq!(emit_to_array(&HeaderRepr::RetUnlink(ret)), RET_UNLINK);
    }

    #[test]
    fn emit_zeroes_padding_and_basic_fields_of_replies() {
        let ret = HeaderRepr::RetUnlink(RetUnlinkRepr {
            seqnum: 8,
            status: -104,
        });
        // emit_to_array starts from 0xa5 garbage: every byte must be overwritten.
        assert_eq!(emit_to_array(&ret), RET_UNLINK);
    }

    #[test]
    fn truncated_header_at_every_length() {
        for len in 0..USBIP_HEADER_LEN {
            let view = Header::new_unchecked(&CMD_INTR_IN[..len]);
            assert_eq!(
                HeaderRepr::parse(&view),
                Err(Error::Truncated {
                    need: 48,
                    have: len
                }),
                "length {len}"
            );
            assert!(Header::new_checked(&CMD_INTR_IN[..len]).is_err());
            // Accessors on a short buffer answer 0 instead of panicking.
            let _ = (
                view.seqnum(),
                view.setup(),
                view.error_count(),
                view.to_string(),
            );
        }
    }

    #[test]
    fn unknown_command_is_rejected_and_survives_as_value() {
        let mut bytes = CMD_INTR_IN;
        bytes[3] = 0x09;
        let view = Header::new_unchecked(&bytes[..]);
        assert_eq!(view.command(), Command::Unknown(9));
        assert_eq!(HeaderRepr::parse(&view), Err(Error::UnknownCommand(9)));
        assert_eq!(u32::from(Command::from(0xdead_beef)), 0xdead_beef);
    }

    /// contract U12: framing depends on direction, so a third value cannot be framed.
    #[test]
    fn u12_direction_other_than_0_or_1_is_malformed() {
        let mut bytes = CMD_INTR_IN;
        bytes[15] = 2;
        assert_eq!(
            CmdSubmitRepr::parse(&Header::new_unchecked(&bytes[..])),
            Err(Error::BadDirection(2))
        );
    }

    #[test]
    fn endpoint_above_15_is_malformed() {
        let mut bytes = CMD_INTR_IN;
        bytes[19] = 16;
        assert_eq!(
            CmdSubmitRepr::parse(&Header::new_unchecked(&bytes[..])),
            Err(Error::BadEndpoint(16))
        );
    }

    #[test]
    fn negative_transfer_buffer_length_is_malformed() {
        let mut bytes = CMD_INTR_IN;
        bytes[24..28].copy_from_slice(&0x8000_0000u32.to_be_bytes());
        assert_eq!(
            CmdSubmitRepr::parse(&Header::new_unchecked(&bytes[..])),
            Err(Error::NegativeLength {
                field: "transfer_buffer_length",
                value: i32::MIN
            })
        );
    }

    /// contract U15: vhci sends 0, the protocol text 0xffffffff; both frame as non-iso.
    #[test]
    fn u15_number_of_packets_0_and_all_ones_mean_no_iso_descriptors() {
        for (raw, count) in [(0u32, 0u32), (0xffff_ffff, 0), (3, 3)] {
            let mut bytes = CMD_INTR_IN;
            bytes[32..36].copy_from_slice(&raw.to_be_bytes());
            let repr = CmdSubmitRepr::parse(&Header::new_unchecked(&bytes[..])).unwrap();
            assert_eq!(repr.number_of_packets, raw, "kept raw for the round trip");
            assert_eq!(repr.iso_packet_count(), count);
            assert_eq!(emit_to_array(&HeaderRepr::CmdSubmit(repr)), bytes);
        }
        let mut bytes = CMD_INTR_IN;
        bytes[32..36].copy_from_slice(&(-2i32).to_be_bytes());
        assert!(matches!(
            CmdSubmitRepr::parse(&Header::new_unchecked(&bytes[..])),
            Err(Error::BadNumberOfPackets {
                value: 0xffff_fffe,
                ..
            })
        ));
    }

    #[test]
    fn parse_of_the_wrong_command_names_it() {
        let view = Header::new_unchecked(&RET_INTR_IN[..]);
        assert_eq!(
            CmdSubmitRepr::parse(&view),
            Err(Error::UnexpectedCommand(Command::RetSubmit))
        );
    }

    #[test]
    fn display_parsed_header() {
        let text = Header::new_unchecked(&CMD_GET_DESCRIPTOR[..]).to_string();
        assert_eq!(
            text,
            "USBIP_CMD_SUBMIT seqnum=2 devid=0x00030002 ep=0 IN transfer_flags=0x201 \
             transfer_buffer_length=18 start_frame=0 number_of_packets=0 interval=0 \
             setup=8006000100001200"
        );
        assert_eq!(
            Header::new_unchecked(&RET_UNLINK[..]).to_string(),
            "USBIP_RET_UNLINK seqnum=8 status=-104"
        );
    }

    #[test]
    fn display_falls_back_to_raw_fields() {
        let mut bytes = CMD_INTR_IN;
        bytes[15] = 7; // direction 7
        let text = format!("{}", Header::new_unchecked(&bytes[..]));
        assert_eq!(
            text,
            "USBIP header (direction 7 is neither USBIP_DIR_OUT (0) nor USBIP_DIR_IN (1)) \
             command=0x00000001 seqnum=3333 devid=0x0001000f direction=7 ep=1 \
             u=0000020000000040ffffffff00000000000000040000000000000000"
        );
        let short = Header::new_unchecked(&CMD_INTR_IN[..5]).to_string();
        assert_eq!(short, "USBIP header (truncated, 5 of 48 bytes) 0000000100");
    }
}
