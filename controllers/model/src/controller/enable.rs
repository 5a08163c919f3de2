//! `usb_ep_enable` on the model: dummy's `dummy_enable` checks (contract D6,
//! `dummy_hcd.c:529-663`) and the iso personality's lack of them (contract I3).

use rawgadget_engine::ep_match::ep_desc;
use rawgadget_uapi::{Errno, Speed};
use rawgadget_usb::TransferType;

use crate::personality::EnableRules;

/// USB_DT_ENDPOINT: `dummy_enable` checks `bDescriptorType` before the port state.
pub(super) const USB_DT_ENDPOINT: u8 = 5;

/// The type, name and speed checks `dummy_enable` makes after the driver and port checks.
/// Returns the endpoint's maxpacket.
///
/// # Errors
/// EINVAL for a descriptor this endpoint or speed cannot take.
pub(super) fn check_descriptor(
    rules: EnableRules,
    ep_name: &str,
    speed: Speed,
    desc: &[u8; 9],
) -> Result<u32, Errno> {
    let desc = ep_desc(desc);
    // usb_endpoint_maxp: bits 10..0 (the multiplier does not count)
    let max = u32::from(desc.max_packet());
    if max == 0 {
        // dummy would accept an interrupt maxpacket of 0 and then divide by it in transfer();
        // raw gadget refuses 0 before reaching the controller, so this is never observable.
        return Err(Errno::EINVAL);
    }
    if rules == EnableRules::MatchOnly {
        // contract I3: vep_enable does no speed or name checks
        return match desc.transfer_type() {
            TransferType::Bulk | TransferType::Interrupt | TransferType::Isochronous => Ok(max),
            TransferType::Control => Err(Errno::EINVAL),
        };
    }
    let name_has = |s: &str| ep_name.contains(s);
    let ok = match desc.transfer_type() {
        // contract D6: bulk never on -iso/-int; exactly 1024 at SS, 512 at HS, 8..64 at FS,
        // never at LS
        TransferType::Bulk => {
            !name_has("-iso")
                && !name_has("-int")
                && match speed {
                    Speed::Super => max == 1024,
                    Speed::High => max == 512,
                    Speed::Full => matches!(max, 8 | 16 | 32 | 64),
                    _ => false,
                }
        }
        // contract D6: interrupt not on -iso (so -bulk names accept it); ≤1024 at HS/SS,
        // ≤64 at FS, ≤8 at LS
        TransferType::Interrupt => {
            !name_has("-iso")
                && match speed {
                    Speed::Super | Speed::High => max <= 1024,
                    Speed::Full => max <= 64,
                    _ => max <= 8,
                }
        }
        // unreachable on dummy's list (D5 never matches iso), kept for faithfulness
        TransferType::Isochronous => {
            !name_has("-bulk")
                && !name_has("-int")
                && match speed {
                    Speed::Super | Speed::High => max <= 1024,
                    Speed::Full => max <= 1023,
                    _ => false,
                }
        }
        // few chips support control except on ep0
        TransferType::Control => false,
    };
    if ok {
        Ok(max)
    } else {
        Err(Errno::EINVAL)
    }
}
