//! Endpoint descriptors as EP_ENABLE takes them, and the choice of endpoint addresses.
//!
//! A raw gadget program does not know its endpoint numbers in advance: the UDC decides which
//! endpoints exist (EPS_INFO). The usual way (xairy `examples/keyboard.c`, `tests/gadget.c`,
//! spec §1.5 EP_ENABLE) is to leave the number 0 in each descriptor, read EPS_INFO at CONNECT,
//! pick a suitable UDC endpoint for each descriptor and patch its number in, before the
//! descriptors are sent to the host. [`EndpointAllocator`] does that.

use rawgadget_uapi::USB_ENDPOINT_DESCRIPTOR_IOCTL_SIZE;

use crate::backend::EpInfo;

/// USB descriptor type of an endpoint descriptor.
pub const DT_ENDPOINT: u8 = 0x05;
/// `USB_DT_ENDPOINT_SIZE`: the 7 bytes sent to the host.
pub const DT_ENDPOINT_SIZE: u8 = 7;

/// Transfer direction, from the host's point of view.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Direction {
    /// Device to host (`bEndpointAddress` bit 7 set); the gadget writes.
    In,
    /// Host to device; the gadget reads.
    Out,
}

/// `bmAttributes & 3`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum TransferType {
    Control,
    Isochronous,
    Bulk,
    Interrupt,
}

impl TransferType {
    pub fn from_attributes(bm_attributes: u8) -> TransferType {
        match bm_attributes & 3 {
            0 => TransferType::Control,
            1 => TransferType::Isochronous,
            2 => TransferType::Bulk,
            _ => TransferType::Interrupt,
        }
    }

    /// The two low bits of `bmAttributes`.
    pub fn bits(self) -> u8 {
        match self {
            TransferType::Control => 0,
            TransferType::Isochronous => 1,
            TransferType::Bulk => 2,
            TransferType::Interrupt => 3,
        }
    }
}

/// An endpoint descriptor (`struct usb_endpoint_descriptor`), typed.
#[doc(alias = "usb_endpoint_descriptor")]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct EndpointDesc {
    #[doc(alias = "bEndpointAddress")]
    pub address: u8,
    #[doc(alias = "bmAttributes")]
    pub attributes: u8,
    /// Bits 10..0 are the packet size, bits 12..11 the extra transactions per microframe.
    #[doc(alias = "wMaxPacketSize")]
    pub max_packet_size: u16,
    #[doc(alias = "bInterval")]
    pub interval: u8,
}

impl EndpointDesc {
    /// An endpoint with number 0 (to be assigned) in direction `dir`.
    pub fn new(dir: Direction, ty: TransferType, max_packet_size: u16, interval: u8) -> Self {
        EndpointDesc {
            address: if dir == Direction::In { 0x80 } else { 0 },
            attributes: ty.bits(),
            max_packet_size,
            interval,
        }
    }

    pub fn direction(&self) -> Direction {
        if self.address & 0x80 != 0 {
            Direction::In
        } else {
            Direction::Out
        }
    }

    /// The endpoint number (`bEndpointAddress & 0x0f`).
    pub fn number(&self) -> u8 {
        self.address & 0x0f
    }

    pub fn transfer_type(&self) -> TransferType {
        TransferType::from_attributes(self.attributes)
    }

    /// `usb_endpoint_maxp`: the packet size without the multiplier bits.
    pub fn max_packet(&self) -> u16 {
        self.max_packet_size & 0x7ff
    }

    /// The 7 bytes sent to the host in a configuration descriptor.
    pub fn to_bytes(&self) -> [u8; 7] {
        let [m0, m1] = self.max_packet_size.to_le_bytes();
        [
            DT_ENDPOINT_SIZE,
            DT_ENDPOINT,
            self.address,
            self.attributes,
            m0,
            m1,
            self.interval,
        ]
    }

    /// The 9 bytes EP_ENABLE copies (`bRefresh` and `bSynchAddress` zero, spec §1.3).
    pub fn to_ioctl_bytes(&self) -> [u8; USB_ENDPOINT_DESCRIPTOR_IOCTL_SIZE] {
        let mut b = [0u8; USB_ENDPOINT_DESCRIPTOR_IOCTL_SIZE];
        b[..7].copy_from_slice(&self.to_bytes());
        b
    }

    /// Reads an endpoint descriptor from at least 7 bytes; `None` if shorter or not of type
    /// ENDPOINT. `bLength` is not checked, so odd descriptors can still be read.
    pub fn parse(b: &[u8]) -> Option<EndpointDesc> {
        if b.len() < 7 || b[1] != DT_ENDPOINT {
            return None;
        }
        Some(EndpointDesc {
            address: b[2],
            attributes: b[3],
            max_packet_size: u16::from_le_bytes([b[4], b[5]]),
            interval: b[6],
        })
    }
}

/// Whether a UDC endpoint can serve a descriptor, by the rules of `usb_gadget_ep_match_desc`
/// (`drivers/usb/gadget/udc/core.c`): direction, transfer type (interrupt also fits a
/// bulk-capable endpoint, contract D5) and maxpacket limit. Speed-dependent limits are left to
/// the UDC.
pub fn ep_suits(info: &EpInfo, desc: &EndpointDesc) -> bool {
    let dir_ok = match desc.direction() {
        Direction::In => info.caps.dir_in(),
        Direction::Out => info.caps.dir_out(),
    };
    let type_ok = match desc.transfer_type() {
        TransferType::Control => false,
        TransferType::Isochronous => info.caps.type_iso(),
        TransferType::Bulk => info.caps.type_bulk(),
        TransferType::Interrupt => info.caps.type_int() || info.caps.type_bulk(),
    };
    dir_ok && type_ok && desc.max_packet() <= info.maxpacket_limit
}

fn exact_type(info: &EpInfo, desc: &EndpointDesc) -> bool {
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
    pub fn assign(&mut self, desc: &mut EndpointDesc) -> Option<usize> {
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
        desc.address = (desc.address & 0x80) | number;
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
pub fn assign_ep_address(eps: &[EpInfo], desc: &mut EndpointDesc) -> Option<usize> {
    EndpointAllocator::new(eps).assign(desc)
}

/// The endpoint list of `dummy_udc` (contract D1), as EPS_INFO reports it. Used to describe
/// devices without a kernel, and by the mock backend.
pub fn dummy_udc_eps() -> Vec<EpInfo> {
    use rawgadget_uapi::UsbRawEpCaps;
    type Row = (&'static str, Option<u8>, bool, bool, bool, bool);
    const LIST: [Row; 24] = [
        // (name, addr, bulk, int, in, out)
        ("ep1in-bulk", Some(1), true, false, true, false),
        ("ep2out-bulk", Some(2), true, false, false, true),
        ("ep5in-int", Some(5), false, true, true, false),
        ("ep6in-bulk", Some(6), true, false, true, false),
        ("ep7out-bulk", Some(7), true, false, false, true),
        ("ep10in-int", Some(10), false, true, true, false),
        ("ep11in-bulk", Some(11), true, false, true, false),
        ("ep12out-bulk", Some(12), true, false, false, true),
        ("ep15in-int", Some(15), false, true, true, false),
        ("ep1out-bulk", Some(1), true, false, false, true),
        ("ep2in-bulk", Some(2), true, false, true, false),
        ("ep-aout", None, true, true, false, true),
        ("ep-bin", None, true, true, true, false),
        ("ep-cout", None, true, true, false, true),
        ("ep-dout", None, true, true, false, true),
        ("ep-ein", None, true, true, true, false),
        ("ep-fout", None, true, true, false, true),
        ("ep-gin", None, true, true, true, false),
        ("ep-hout", None, true, true, false, true),
        ("ep-iout", None, true, true, false, true),
        ("ep-jin", None, true, true, true, false),
        ("ep-kout", None, true, true, false, true),
        ("ep-lin", None, true, true, true, false),
        ("ep-mout", None, true, true, false, true),
    ];
    LIST.iter()
        .map(|&(name, addr, bulk, int, din, dout)| EpInfo {
            name: name.to_string(),
            addr,
            caps: UsbRawEpCaps::new(false, false, bulk, int, din, dout),
            maxpacket_limit: 65535,
            max_streams: 16,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(dir: Direction, mp: u16) -> EndpointDesc {
        EndpointDesc::new(dir, TransferType::Bulk, mp, 0)
    }

    /// spec §1.5 EP_ENABLE: numbers come from EPS_INFO; on dummy_udc (contract D1) the usual
    /// Gadget Zero set lands on ep1in-bulk, ep2out-bulk, ep5in-int and ep7out-bulk.
    #[test]
    fn dummy_udc_assignment() {
        let eps = dummy_udc_eps();
        let mut a = EndpointAllocator::new(&eps);
        let mut bin = bulk(Direction::In, 512);
        let mut bout = bulk(Direction::Out, 512);
        let mut iin = EndpointDesc::new(Direction::In, TransferType::Interrupt, 1024, 1);
        let mut iout = EndpointDesc::new(Direction::Out, TransferType::Interrupt, 1024, 1);
        assert_eq!(a.assign(&mut bin), Some(0));
        assert_eq!(a.assign(&mut bout), Some(1));
        assert_eq!(a.assign(&mut iin), Some(2));
        // No int-capable OUT endpoint with a fixed address: ep-aout (bulk+int, ANY) is the first
        // exact match; it gets the lowest number no fixed OUT endpoint uses (3).
        assert_eq!(a.assign(&mut iout), Some(11));
        assert_eq!(
            (bin.address, bout.address, iin.address, iout.address),
            (0x81, 0x02, 0x85, 0x03)
        );
    }

    #[test]
    fn iso_finds_nothing_on_dummy() {
        let mut d = EndpointDesc::new(Direction::In, TransferType::Isochronous, 1024, 1);
        assert_eq!(assign_ep_address(&dummy_udc_eps(), &mut d), None);
        assert_eq!(d.address, 0x80, "unchanged when nothing suits");
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
                Some(i) => seen.push((d.address, i)),
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

    #[test]
    fn descriptor_bytes() {
        let d = EndpointDesc {
            address: 0x81,
            attributes: 2,
            max_packet_size: 512,
            interval: 0,
        };
        assert_eq!(d.to_bytes(), [7, 5, 0x81, 2, 0x00, 0x02, 0]);
        assert_eq!(d.to_ioctl_bytes(), [7, 5, 0x81, 2, 0x00, 0x02, 0, 0, 0]);
        assert_eq!(EndpointDesc::parse(&d.to_bytes()), Some(d));
        assert_eq!(EndpointDesc::parse(&[7, 4, 0, 0, 0, 0, 0]), None);
    }
}
