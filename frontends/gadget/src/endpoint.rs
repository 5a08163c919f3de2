//! The choice of endpoint addresses from EPS_INFO.
//!
//! Endpoint descriptors themselves are rawgadget-usb's [`EndpointDescriptor`] (its
//! `to_ioctl_bytes` gives the 9 bytes EP_ENABLE copies, spec §1.3).
//!
//! A raw gadget program does not know its endpoint numbers in advance: the UDC decides which
//! endpoints exist (EPS_INFO). The usual way (xairy `examples/keyboard.c`, `tests/gadget.c`,
//! spec §1.5 EP_ENABLE) is to leave the number 0 in each descriptor, read EPS_INFO at CONNECT,
//! pick a suitable UDC endpoint for each descriptor and patch its number in, before the
//! descriptors are sent to the host. [`EndpointAllocator`] does that.

use rawgadget_usb::{Direction, EndpointAddress, EndpointDescriptor, TransferType};

use crate::backend::EpInfo;

/// Whether a UDC endpoint can serve a descriptor: the engine's `usb_gadget_ep_match_desc`
/// (direction, transfer type — interrupt also fits a bulk-capable endpoint, contract D5 —
/// and maxpacket limit), for a dual-speed controller. The UDC's own speed-dependent checks
/// (contract D6) are left to EP_ENABLE.
pub fn ep_suits(info: &EpInfo, desc: &EndpointDescriptor) -> bool {
    let udc = rawgadget_engine::UdcEndpoint {
        name: info.name.clone(),
        caps: info.caps,
        maxpacket_limit: info.maxpacket_limit,
        max_streams: info.max_streams,
    };
    let bytes = desc.to_ioctl_bytes();
    rawgadget_engine::ep_match::ep_match_desc(
        rawgadget_uapi::Speed::High,
        &udc,
        &rawgadget_engine::ep_match::ep_desc(&bytes),
    )
}

fn exact_type(info: &EpInfo, desc: &EndpointDescriptor) -> bool {
    match desc.transfer_type() {
        TransferType::Interrupt => info.caps.type_int(),
        _ => true,
    }
}

/// Assigns UDC endpoints to descriptors, one each, and patches their numbers in.
#[derive(Clone, Debug)]
pub struct EndpointAllocator {
    eps: Vec<EpInfo>,
    claimed: Vec<bool>,
    /// `(number, direction)` pairs already given out.
    used: Vec<(u8, Direction)>,
}

impl EndpointAllocator {
    /// Starts from the EPS_INFO list of the controller.
    pub fn new(eps: &[EpInfo]) -> EndpointAllocator {
        EndpointAllocator {
            eps: eps.to_vec(),
            claimed: vec![false; eps.len()],
            used: Vec::new(),
        }
    }

    /// Picks the first unclaimed endpoint in EPS_INFO order that suits `desc` (preferring one
    /// whose type matches exactly, so an interrupt endpoint does not take a bulk one needlessly),
    /// writes its number into `desc.address` and returns its EPS_INFO index. For endpoints that
    /// take any address it picks the lowest free number not used by a fixed-address endpoint of
    /// the same direction. `None` if nothing suits; `desc` is then unchanged.
    pub fn assign(&mut self, desc: &mut EndpointDescriptor) -> Option<usize> {
        let dir = desc.direction();
        let d = *desc;
        let this = &*self;
        let candidates = |exact: bool| {
            (0..this.eps.len()).filter(move |&i| {
                !this.claimed[i]
                    && ep_suits(&this.eps[i], &d)
                    && (!exact || exact_type(&this.eps[i], &d))
            })
        };
        let pick = candidates(true)
            .chain(candidates(false))
            .find(|&i| match this.eps[i].addr {
                Some(n) => (1..=15).contains(&n) && !this.used.contains(&(n, dir)),
                None => this.free_number(dir).is_some(),
            })?;
        let number = match self.eps[pick].addr {
            Some(n) => n,
            None => self.free_number(dir)?,
        };
        self.claimed[pick] = true;
        self.used.push((number, dir));
        desc.address = EndpointAddress::new(number, dir);
        Some(pick)
    }

    fn free_number(&self, dir: Direction) -> Option<u8> {
        let fixed = |n: u8| {
            self.eps.iter().any(|e| {
                e.addr == Some(n) && {
                    match dir {
                        Direction::In => e.caps.dir_in(),
                        Direction::Out => e.caps.dir_out(),
                    }
                }
            })
        };
        let free = |n: &u8| !self.used.contains(&(*n, dir));
        (1..=15u8)
            .filter(free)
            .find(|&n| !fixed(n))
            .or_else(|| (1..=15u8).find(free))
    }
}

/// One-shot form of [`EndpointAllocator::assign`], as the xairy examples' `assign_ep_address`:
/// patch `desc` with the first EPS_INFO endpoint that suits it.
pub fn assign_ep_address(eps: &[EpInfo], desc: &mut EndpointDescriptor) -> Option<usize> {
    EndpointAllocator::new(eps).assign(desc)
}

/// The endpoint list of `dummy_udc` (contract D1), as EPS_INFO reports it. Used to describe
/// devices without a kernel, and by the mock backend.
pub fn dummy_udc_eps() -> Vec<EpInfo> {
    use rawgadget_uapi::dummy_udc;
    dummy_udc::ENDPOINTS
        .iter()
        .map(|&(name, caps)| EpInfo {
            name: name.to_string(),
            // raw gadget's get_ep_addr: "ep12out-bulk" is fixed at 12, "ep-a" takes any
            addr: match rawgadget_engine::ep_addr_from_name(name.as_bytes()) {
                0xff => None,
                a => Some(a),
            },
            caps,
            maxpacket_limit: dummy_udc::MAXPACKET_LIMIT,
            max_streams: dummy_udc::MAX_STREAMS,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An endpoint with number 0, to be assigned.
    fn unassigned(dir: Direction, ty: TransferType, mp: u16, interval: u8) -> EndpointDescriptor {
        EndpointDescriptor::new(EndpointAddress::new(0, dir), ty, mp, interval)
    }

    fn bulk(dir: Direction, mp: u16) -> EndpointDescriptor {
        unassigned(dir, TransferType::Bulk, mp, 0)
    }

    /// spec §1.5 EP_ENABLE: numbers come from EPS_INFO; on dummy_udc (contract D1) the usual
    /// Gadget Zero set lands on ep1in-bulk, ep2out-bulk, ep5in-int and ep7out-bulk.
    #[test]
    fn dummy_udc_assignment() {
        let eps = dummy_udc_eps();
        let mut a = EndpointAllocator::new(&eps);
        let mut bin = bulk(Direction::In, 512);
        let mut bout = bulk(Direction::Out, 512);
        let mut iin = unassigned(Direction::In, TransferType::Interrupt, 1024, 1);
        let mut iout = unassigned(Direction::Out, TransferType::Interrupt, 1024, 1);
        assert_eq!(a.assign(&mut bin), Some(0));
        assert_eq!(a.assign(&mut bout), Some(1));
        assert_eq!(a.assign(&mut iin), Some(2));
        // No int-capable OUT endpoint with a fixed address: ep-aout (bulk+int, ANY) is the first
        // exact match; it gets the lowest number no fixed OUT endpoint uses (3).
        assert_eq!(a.assign(&mut iout), Some(11));
        assert_eq!(
            (bin.address.0, bout.address.0, iin.address.0, iout.address.0),
            (0x81, 0x02, 0x85, 0x03)
        );
    }

    #[test]
    fn iso_finds_nothing_on_dummy() {
        let mut d = unassigned(Direction::In, TransferType::Isochronous, 1024, 1);
        assert_eq!(assign_ep_address(&dummy_udc_eps(), &mut d), None);
        assert_eq!(d.address.0, 0x80, "unchanged when nothing suits");
    }

    #[test]
    fn maxpacket_limit_and_direction_are_checked() {
        let mut eps = dummy_udc_eps();
        for e in &mut eps {
            e.maxpacket_limit = 64;
        }
        let mut d = bulk(Direction::In, 512);
        assert_eq!(assign_ep_address(&eps, &mut d), None);
        let mut d = bulk(Direction::In, 64);
        assert_eq!(assign_ep_address(&eps, &mut d), Some(0));
    }

    /// Two descriptors never get the same number in the same direction, even from ANY
    /// endpoints.
    #[test]
    fn numbers_are_unique_per_direction() {
        let eps = dummy_udc_eps();
        let mut a = EndpointAllocator::new(&eps);
        let mut seen = Vec::new();
        loop {
            let mut d = bulk(Direction::Out, 512);
            match a.assign(&mut d) {
                Some(i) => seen.push((d.address.0, i)),
                None => break,
            }
        }
        let mut addrs: Vec<u8> = seen.iter().map(|s| s.0).collect();
        let n = addrs.len();
        addrs.sort();
        addrs.dedup();
        assert_eq!(addrs.len(), n);
        // dummy_udc has 12 bulk-capable OUT endpoints (4 fixed, 8 ANY), all usable: 15 numbers
        // are enough.
        let bulk_out = eps
            .iter()
            .filter(|e| e.caps.type_bulk() && e.caps.dir_out())
            .count();
        assert_eq!((n, bulk_out), (12, 12));
    }
}
