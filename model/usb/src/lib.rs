//! The USB chapter 9 model of rawgadget: SETUP packets, standard requests and descriptors.
//!
//! Read USB 2.0 chapter 9 (and USB 3.2 §9.6 for BOS and SuperSpeed companions) before editing.
//!
//! # Layers
//! - [`setup`]: the 8-byte SETUP packet as a view ([`SetupPacket`]) and an owned
//!   [`ControlRequest`] (the payload of a Raw Gadget CONTROL event, spec §1.2), decoded into a
//!   [`StandardRequest`] when it is one.
//! - [`descriptor`]: for each descriptor a **view** (`DeviceView<T>`, ...) that reads fields in
//!   place and never panics, and a **repr** (`DeviceDescriptor`, ...) implementing [`Repr`]
//!   (`parse` / `emit` / `buffer_len`, `parse(emit(x)) == x`). [`Descriptors`] walks a blob
//!   and stops at a bad `bLength`; [`RawDescriptor`] keeps any bytes verbatim; [`AnyDescriptor`]
//!   is "typed if possible, raw otherwise"; [`Dump`] prints a blob like `lsusb -v` (MaxPower
//!   in the unit of the device's `bcdUSB`, as lsusb).
//! - [`builder`]: [`ConfigurationBuilder`] and [`BosBuilder`] compute lengths and counts;
//!   [`DeviceDescriptorBuilder`] fills defaults; [`StringTable`] answers string requests.
//! - [`speed`]: packet size and `bMaxPower` rules per [`Speed`] (the UAPI's
//!   `enum usb_device_speed`).
//! - [`class`]: class codes and HID constants with Linux's names.
//!
//! # What this crate does not do
//! No I/O and no policy: it does not decide whether a device is valid. Raw Gadget exists to let
//! a device say anything, so malformed descriptors are representable (raw bytes, builder
//! `raw()` calls) and printable (views, `Display` falls back to raw fields), never
//! "fixed". Parsing untrusted bytes never panics; `emit` panics only on a short buffer.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod builder;
pub mod class;
pub mod descriptor;
pub mod setup;
pub mod speed;
mod strings;
mod wire;

pub use builder::{
    AltSettingBuilder, BosBuilder, ConfigurationBuilder, FunctionBuilder, InterfaceBuilder,
};
pub use descriptor::*;
pub use setup::{
    ControlRequest, Direction, Recipient, RequestType, SetupPacket, StandardRequest,
    SETUP_PACKET_SIZE,
};
pub use speed::Speed;
pub use strings::StringTable;
pub use wire::{Error, Hex, Repr, Result};

#[cfg(test)]
pub(crate) mod testutil {
    /// xorshift64*: deterministic pseudo-random bytes for property tests without a crate.
    pub struct Rng(u64);

    impl Rng {
        pub fn new(seed: u64) -> Rng {
            Rng(seed | 1)
        }
        pub fn next_u64(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        pub fn byte(&mut self) -> u8 {
            (self.next_u64() >> 56) as u8
        }
        pub fn below(&mut self, n: usize) -> usize {
            (self.next_u64() % n as u64) as usize
        }
        pub fn fill(&mut self, buf: &mut [u8]) {
            for b in buf {
                *b = self.byte();
            }
        }
    }
}
