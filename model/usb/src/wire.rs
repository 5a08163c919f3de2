//! Byte access shared by every view, and the parse error.
//!
//! Reads past the end of a buffer give 0 instead of panicking: views built with `new_unchecked`
//! over a short buffer still answer (the `new_checked` constructors guarantee that they never
//! need to).

use core::fmt;

/// Why bytes are not a valid descriptor or setup packet.
///
/// The bytes themselves are never lost: views keep them, [`crate::RawDescriptor`] stores them.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum Error {
    /// The buffer ends before the data it must hold: `need` bytes, `have` bytes.
    Truncated { need: usize, have: usize },
    /// `bLength` is impossible for this descriptor (too small, or not the fixed size).
    BadLength { length: u8 },
    /// `bDescriptorType` (or `bDevCapabilityType`) is not the one this parser reads.
    WrongType { expected: u8, found: u8 },
    /// A field contradicts the layout (odd string length, descriptor count vs `bLength`, ...).
    Malformed(&'static str),
    /// A builder input does not fit its field (`bLength` > 255, `wTotalLength` > 65535, more
    /// than 255 interfaces or endpoints, string longer than 126 UTF-16 units).
    TooLong(&'static str),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Error::Truncated { need, have } => {
                write!(f, "truncated: need {need} bytes, have {have}")
            }
            Error::BadLength { length } => write!(f, "invalid bLength {length}"),
            Error::WrongType { expected, found } => {
                write!(
                    f,
                    "wrong descriptor type 0x{found:02x}, expected 0x{expected:02x}"
                )
            }
            Error::Malformed(why) => write!(f, "malformed: {why}"),
            Error::TooLong(what) => write!(f, "too long: {what}"),
        }
    }
}

/// Lets `thiserror` users wrap it with `#[from]` / `#[source]`.
impl core::error::Error for Error {}

pub type Result<T> = core::result::Result<T, Error>;

/// A little-endian field of one, two or four bytes.
pub trait Field: Sized {
    /// The field at `offset`, 0 where the buffer is too short.
    fn read(buf: &[u8], offset: usize) -> Self;
}

impl Field for u8 {
    fn read(buf: &[u8], offset: usize) -> u8 {
        buf.get(offset).copied().unwrap_or(0)
    }
}

impl Field for u16 {
    fn read(buf: &[u8], offset: usize) -> u16 {
        u16::from_le_bytes([u8::read(buf, offset), u8::read(buf, offset + 1)])
    }
}

impl Field for u32 {
    fn read(buf: &[u8], offset: usize) -> u32 {
        u32::from_le_bytes([
            u8::read(buf, offset),
            u8::read(buf, offset + 1),
            u8::read(buf, offset + 2),
            u8::read(buf, offset + 3),
        ])
    }
}

/// Checks that `buf` holds at least `need` bytes.
pub fn check_len(buf: &[u8], need: usize) -> Result<()> {
    if buf.len() < need {
        Err(Error::Truncated {
            need,
            have: buf.len(),
        })
    } else {
        Ok(())
    }
}

/// Checks the two-byte header: `bLength` in `min..=max` and within `buf`, `bDescriptorType` as
/// expected. Returns `bLength`.
pub fn check_header(buf: &[u8], ty: u8, min: u8, max: u8) -> Result<usize> {
    check_len(buf, 2)?;
    let length = buf[0];
    if buf[1] != ty {
        return Err(Error::WrongType {
            expected: ty,
            found: buf[1],
        });
    }
    if length < min || length > max {
        return Err(Error::BadLength { length });
    }
    check_len(buf, length as usize)?;
    Ok(length as usize)
}

/// Declares a borrowed view: a wrapper over bytes with `new_unchecked`, `new_checked`,
/// `check_len`, `into_inner`, `as_bytes`, and field accessors read at named offsets.
macro_rules! view {
    (
        $(#[$meta:meta])*
        $view:ident, type = $ty:expr, min = $min:expr, max = $max:expr;
        $( $(#[$fmeta:meta])* $get:ident : $fty:ident = $off:expr ; )*
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Debug)]
        pub struct $view<T: AsRef<[u8]>> {
            buffer: T,
        }

        impl<T: AsRef<[u8]>> $view<T> {
            /// Wraps bytes without checking them; accessors still never panic (missing bytes
            /// read as 0).
            pub fn new_unchecked(buffer: T) -> Self {
                $view { buffer }
            }

            /// Wraps bytes after [`Self::check_len`].
            pub fn new_checked(buffer: T) -> $crate::wire::Result<Self> {
                let view = $view { buffer };
                view.check_len()?;
                Ok(view)
            }

            /// Checks `bDescriptorType`, that `bLength` is possible for this descriptor and
            /// that the buffer holds `bLength` bytes.
            pub fn check_len(&self) -> $crate::wire::Result<()> {
                $crate::wire::check_header(self.buffer.as_ref(), $ty, $min, $max).map(|_| ())
            }

            /// The wrapped buffer.
            pub fn into_inner(self) -> T {
                self.buffer
            }

            /// The descriptor's bytes: the first `bLength` of the buffer (all of it when
            /// shorter).
            pub fn as_bytes(&self) -> &[u8] {
                let buf = self.buffer.as_ref();
                let len = ($crate::wire::u8_field(buf, 0) as usize).min(buf.len());
                &buf[..len]
            }

            #[doc(alias = "bLength")]
            pub fn length(&self) -> u8 {
                $crate::wire::u8_field(self.buffer.as_ref(), 0)
            }

            #[doc(alias = "bDescriptorType")]
            pub fn descriptor_type(&self) -> u8 {
                $crate::wire::u8_field(self.buffer.as_ref(), 1)
            }

            $(
                $(#[$fmeta])*
                pub fn $get(&self) -> $fty {
                    <$fty as $crate::wire::Field>::read(self.buffer.as_ref(), $off)
                }
            )*
        }
    };
}

pub(crate) use view;

/// `u8` at an offset, 0 past the end (for code outside the `view!` macro).
pub fn u8_field(buf: &[u8], offset: usize) -> u8 {
    u8::read(buf, offset)
}

/// Lower-case hex of bytes, space separated, for raw dumps.
pub struct Hex<'a>(pub &'a [u8]);

impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// The validated meaning of a descriptor (smoltcp's `Repr`): `parse` reads it from bytes that
/// start with the descriptor, `emit` writes exactly `buffer_len` bytes back.
///
/// Contract (as smoltcp's `wire`): `parse` never panics on any input; `emit` panics only when
/// `buf` is shorter than `buffer_len()`; for every `x` that `parse` returns,
/// `parse(emit(x)) == x`.
pub trait Repr: Sized {
    /// Reads the descriptor at the start of `bytes` (bytes after its `bLength` are ignored).
    fn parse(bytes: &[u8]) -> Result<Self>;
    /// Bytes `emit` writes.
    fn buffer_len(&self) -> usize;
    /// Writes the descriptor into `buf[..buffer_len()]`.
    ///
    /// # Panics
    /// When `buf` is shorter than [`Repr::buffer_len`].
    fn emit(&self, buf: &mut [u8]);
    /// The emitted bytes in a new vector.
    fn to_vec(&self) -> alloc::vec::Vec<u8> {
        let mut v = alloc::vec![0; self.buffer_len()];
        self.emit(&mut v);
        v
    }
}
