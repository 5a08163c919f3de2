//! `usb_gadget_ep_match_desc` (`drivers/usb/gadget/udc/core.c`): does a controller endpoint
//! suit an endpoint descriptor? Raw gadget's EP_ENABLE walk uses it (contract D5).
