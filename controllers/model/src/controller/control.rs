//! The control requests the controller answers itself and the gadget never sees:
//! `handle_control_request` (`dummy_hcd.c:1650-1811`), contract D19–D22. Everything else goes
//! to the gadget driver (contract D23).

use rawgadget_uapi::{Errno, Speed};

use super::Controller;

/// `bRequestType` values dummy compares against, exactly (standard type).
const DEV_REQUEST: u8 = 0x00;
const DEV_IN_REQUEST: u8 = 0x80;
const INTF_IN_REQUEST: u8 = 0x81;
const EP_REQUEST: u8 = 0x02;
const EP_IN_REQUEST: u8 = 0x82;

const USB_REQ_GET_STATUS: u8 = 0;
const USB_REQ_CLEAR_FEATURE: u8 = 1;
const USB_REQ_SET_FEATURE: u8 = 3;
const USB_REQ_SET_ADDRESS: u8 = 5;

const USB_DEVICE_SELF_POWERED: u16 = 0;
const USB_DEVICE_REMOTE_WAKEUP: u16 = 1;
const USB_DEVICE_B_HNP_ENABLE: u16 = 3;
const USB_DEVICE_A_HNP_SUPPORT: u16 = 4;
const USB_DEVICE_A_ALT_HNP_SUPPORT: u16 = 5;
const USB_DEVICE_U1_ENABLE: u16 = 48;
const USB_DEVICE_U2_ENABLE: u16 = 49;
const USB_DEVICE_LTM_ENABLE: u16 = 50;
const USB_DEV_STAT_U1_ENABLED: u16 = 2;
const USB_DEV_STAT_U2_ENABLED: u16 = 3;
const USB_DEV_STAT_LTM_ENABLED: u16 = 4;

/// The device-status bits a port reset keeps (contract D21, `dummy_hcd.c:2350-2352`).
pub(super) const DEVSTATUS_KEPT_BY_RESET: u16 = 1 << USB_DEVICE_SELF_POWERED;

/// What dummy decided about a SETUP before the gadget driver is asked.
pub(super) enum Handled {
    /// Not one of ours: present it to the gadget (contract D23).
    ToGadget,
    /// Answered here: the URB completes with this status; a stall is EPIPE with
    /// `actual_length` 0.
    Done(Result<(), Errno>),
}

impl Controller {
    /// See the module doc. `self.urbs[i]` is the control URB whose SETUP stage this is; it is
    /// indexed rather than taken out so that the common case (`ToGadget`) moves nothing.
    pub(super) fn handle_control_request(&mut self, i: usize, setup: [u8; 8]) -> Handled {
        let request_type = setup[0];
        let w_value = u16::from_le_bytes([setup[2], setup[3]]);
        let w_index = u16::from_le_bytes([setup[4], setup[5]]);
        // HCD_USB3: the SuperSpeed root hub carries the port only at SUPER
        let ss = self.speed == Speed::Super;
        // "value < 0": a protocol stall, actual_length 0
        let stall = Handled::Done(Err(Errno::EPIPE));
        match setup[1] {
            // contract D19: SET_ADDRESS with bRequestType 0x00 is answered here
            USB_REQ_SET_ADDRESS if request_type == DEV_REQUEST => {
                self.address = w_value;
                tracing::trace!(address = w_value, "SET_ADDRESS answered by the controller");
                Handled::Done(Ok(()))
            }
            // contract D21: SET_FEATURE to the device
            USB_REQ_SET_FEATURE if request_type == DEV_REQUEST => {
                let bit = match w_value {
                    USB_DEVICE_REMOTE_WAKEUP
                    | USB_DEVICE_B_HNP_ENABLE
                    | USB_DEVICE_A_HNP_SUPPORT
                    | USB_DEVICE_A_ALT_HNP_SUPPORT => w_value,
                    USB_DEVICE_U1_ENABLE if ss => USB_DEV_STAT_U1_ENABLED,
                    USB_DEVICE_U2_ENABLE if ss => USB_DEV_STAT_U2_ENABLED,
                    USB_DEVICE_LTM_ENABLE if ss => USB_DEV_STAT_LTM_ENABLED,
                    _ => return stall,
                };
                self.devstatus |= 1 << bit;
                Handled::Done(Ok(()))
            }
            // contract D22: SET_FEATURE to an endpoint halts it; wValue is not checked
            USB_REQ_SET_FEATURE if request_type == EP_REQUEST => {
                // find_endpoint takes a u8: wIndex is truncated
                match self.find_endpoint(w_index as u8) {
                    Some(k) if k != 0 => {
                        self.eps[k].halted = true;
                        Handled::Done(Ok(()))
                    }
                    // ep0 or an unknown endpoint
                    _ => stall,
                }
            }
            // contract D21: CLEAR_FEATURE to the device
            USB_REQ_CLEAR_FEATURE if request_type == DEV_REQUEST => {
                let bit = match w_value {
                    USB_DEVICE_REMOTE_WAKEUP => USB_DEVICE_REMOTE_WAKEUP,
                    USB_DEVICE_U1_ENABLE if ss => USB_DEV_STAT_U1_ENABLED,
                    USB_DEVICE_U2_ENABLE if ss => USB_DEV_STAT_U2_ENABLED,
                    USB_DEVICE_LTM_ENABLE if ss => USB_DEV_STAT_LTM_ENABLED,
                    // the HNP features included
                    _ => return stall,
                };
                self.devstatus &= !(1 << bit);
                Handled::Done(Ok(()))
            }
            // contract D22: CLEAR_FEATURE to an endpoint clears its halt unless wedged, and
            // reports success either way; ep0 included
            USB_REQ_CLEAR_FEATURE if request_type == EP_REQUEST => {
                match self.find_endpoint(w_index as u8) {
                    Some(k) => {
                        if !self.eps[k].wedged {
                            self.eps[k].halted = false;
                        }
                        Handled::Done(Ok(()))
                    }
                    None => stall,
                }
            }
            // contract D20: GET_STATUS for device, interface, endpoint
            USB_REQ_GET_STATUS
                if matches!(
                    request_type,
                    DEV_IN_REQUEST | INTF_IN_REQUEST | EP_IN_REQUEST
                ) =>
            {
                let length = self.urbs[i].length() as usize;
                if length > 0 {
                    let byte0 = match request_type {
                        EP_IN_REQUEST => match self.find_endpoint(w_index as u8) {
                            Some(k) => u8::from(self.eps[k].halted),
                            None => return stall,
                        },
                        DEV_IN_REQUEST => self.devstatus as u8,
                        _ => 0,
                    };
                    self.urbs[i].buffer[0] = byte0;
                }
                if length > 1 {
                    self.urbs[i].buffer[1] = 0;
                }
                let urb = &mut self.urbs[i];
                urb.actual = urb.length().min(2);
                Handled::Done(Ok(()))
            }
            // contract D23
            _ => Handled::ToGadget,
        }
    }
}
