//! Bus speeds and the packet sizes they allow (USB 2.0 §5.5–§5.8, §9.6.1; USB 3.2 §9.6.6).
//!
//! [`Speed`] is the UAPI's `enum usb_device_speed`, re-exported so that the value given to
//! INIT and the one used for descriptors are the same type.

pub use rawgadget_uapi::Speed;

use crate::descriptor::TransferType;

/// `bMaxPacketSize0` for a device descriptor at this speed: 8 at low speed, 64 at full and
/// high speed, 9 (meaning 2^9 = 512 bytes) at SuperSpeed (USB 3.2 §9.6.1).
pub const fn default_max_packet_size0(speed: Speed) -> u8 {
    match speed {
        Speed::Low => 8,
        Speed::Super | Speed::SuperPlus => 9,
        _ => 64,
    }
}

/// Actual ep0 packet size in bytes for a `bMaxPacketSize0` value at this speed (SuperSpeed
/// encodes an exponent).
pub const fn ep0_max_packet(speed: Speed, max_packet_size0: u8) -> u16 {
    match speed {
        Speed::Super | Speed::SuperPlus if max_packet_size0 < 16 => 1 << max_packet_size0,
        _ => max_packet_size0 as u16,
    }
}

/// `bcdUSB` a device should report at this speed: 0x0110 below high speed, 0x0200 at high
/// speed, 0x0320 at SuperSpeed (a SuperSpeed device also needs a BOS descriptor).
pub const fn default_usb_version(speed: Speed) -> u16 {
    match speed {
        Speed::Low | Speed::Full => 0x0110,
        Speed::Super | Speed::SuperPlus => 0x0320,
        _ => 0x0200,
    }
}

/// The largest `wMaxPacketSize` (bits 10..0) a transfer type allows at a speed, `None` where the
/// type is not allowed (no bulk or isochronous at low speed).
pub const fn max_packet_limit(speed: Speed, transfer: TransferType) -> Option<u16> {
    use TransferType::*;
    Some(match (speed, transfer) {
        (Speed::Low, Control) => 8,
        (Speed::Low, Interrupt) => 8,
        (Speed::Low, Bulk | Isochronous) => return None,
        (Speed::Full | Speed::Unknown, Control | Bulk | Interrupt) => 64,
        (Speed::Full | Speed::Unknown, Isochronous) => 1023,
        (Speed::High | Speed::Wireless, Control) => 64,
        (Speed::High | Speed::Wireless, Bulk) => 512,
        (Speed::High | Speed::Wireless, Interrupt | Isochronous) => 1024,
        (Speed::Super | Speed::SuperPlus, Control) => 512,
        (Speed::Super | Speed::SuperPlus, _) => 1024,
    })
}

/// The bulk `wMaxPacketSize` a device uses at a speed (the only legal value at high and
/// SuperSpeed; the maximum at full speed). `None` at low speed.
pub const fn bulk_max_packet(speed: Speed) -> Option<u16> {
    max_packet_limit(speed, TransferType::Bulk)
}

/// Units of `bMaxPower` in mA: 2 below SuperSpeed, 8 at SuperSpeed (USB 3.2 §9.6.3).
pub const fn max_power_unit_ma(speed: Speed) -> u16 {
    match speed {
        Speed::Super | Speed::SuperPlus => 8,
        _ => 2,
    }
}

/// The most current a configuration may draw at a speed, in mA: 500 below SuperSpeed (USB 2.0
/// §7.2.1), 900 at SuperSpeed (USB 3.2 §9.6.3). Linux's composite driver caps both `bMaxPower`
/// and its VBUS draw there (`composite.c`, `encode_bMaxPower` and `set_config`).
pub const fn max_power_limit_ma(speed: Speed) -> u16 {
    match speed {
        Speed::Super | Speed::SuperPlus => 900,
        _ => 500,
    }
}

/// `bMaxPower` for a draw of `ma` milliamperes at `speed`, as Linux's `encode_bMaxPower`
/// (`drivers/usb/gadget/composite.c`) computes it: capped at [`max_power_limit_ma`], then
/// counted in [`max_power_unit_ma`] units, rounding down (900 mA gives 112, that is 896 mA).
///
/// The same draw is a different byte per speed: 100 mA is 50 below SuperSpeed and 12 at
/// SuperSpeed. (composite's fallback to `CONFIG_USB_GADGET_VBUS_DRAW` for a bus-powered
/// configuration declaring 0 mA is a policy of that driver, not an encoding, and is left out.)
#[doc(alias = "encode_bMaxPower")]
pub const fn encode_max_power(speed: Speed, ma: u16) -> u8 {
    let limit = max_power_limit_ma(speed);
    let capped = if ma < limit { ma } else { limit };
    // capped / unit is at most 250 (500 / 2) or 112 (900 / 8): it fits a u8.
    (capped / max_power_unit_ma(speed)) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    /// USB 2.0 §5.5.3, §5.8.3, §9.6.1; USB 3.2 §9.6.1.
    #[test]
    fn packet_sizes_per_speed() {
        let rows = [
            (Speed::Low, 8, Some(8), None, None),
            (Speed::Full, 64, Some(64), Some(64), Some(1023)),
            (Speed::High, 64, Some(64), Some(512), Some(1024)),
            (Speed::Super, 9, Some(512), Some(1024), Some(1024)),
        ];
        for (speed, mps0, control, bulk, iso) in rows {
            assert_eq!(default_max_packet_size0(speed), mps0, "{speed:?}");
            assert_eq!(
                max_packet_limit(speed, TransferType::Control),
                control,
                "{speed:?}"
            );
            assert_eq!(bulk_max_packet(speed), bulk, "{speed:?}");
            assert_eq!(
                max_packet_limit(speed, TransferType::Isochronous),
                iso,
                "{speed:?}"
            );
        }
        assert_eq!(ep0_max_packet(Speed::Super, 9), 512);
        assert_eq!(ep0_max_packet(Speed::High, 64), 64);
        assert_eq!(ep0_max_packet(Speed::Super, 0xff), 0xff);
        assert_eq!(max_power_unit_ma(Speed::Super), 8);
        assert_eq!(default_usb_version(Speed::Full), 0x0110);
    }

    /// USB 3.2 §9.6.3 and Linux `composite.c` `encode_bMaxPower`: min(mA, 500) / 2 below
    /// SuperSpeed, min(mA, 900) / 8 at SuperSpeed and above, rounding down.
    #[test]
    fn max_power_encoding_per_speed() {
        let rows = [
            (Speed::Full, 100, 50),
            (Speed::High, 100, 50),
            (Speed::Super, 100, 12),
            (Speed::SuperPlus, 100, 12),
            (Speed::Low, 0, 0),
            (Speed::Super, 0, 0),
            (Speed::High, 1, 0),
            (Speed::High, 3, 1),
            (Speed::Super, 7, 0),
            (Speed::Super, 8, 1),
            (Speed::High, 500, 250),
            (Speed::High, 900, 250),
            (Speed::Wireless, 900, 250),
            (Speed::Super, 896, 112),
            (Speed::Super, 900, 112),
            (Speed::Super, u16::MAX, 112),
            (Speed::Full, u16::MAX, 250),
        ];
        for (speed, ma, want) in rows {
            assert_eq!(encode_max_power(speed, ma), want, "{speed:?} {ma} mA");
        }
    }
}
