//! Arbitrary bytes into every parser of rawgadget-usb: SETUP packets, each descriptor view and
//! repr, the blob iterator and the lsusb dump. Nothing may panic; whatever parses must emit
//! exactly the bytes it came from and parse again to the same value.
#![no_main]

use core::fmt::Debug;

use libfuzzer_sys::fuzz_target;
use rawgadget_usb::*;

/// parse → emit → parse: the emitted bytes are the input's first `bLength` bytes (parsing
/// never normalises) and re-parse gives the same repr.
fn round_trip<R: Repr + PartialEq + Debug>(data: &[u8]) {
    if let Ok(x) = R::parse(data) {
        let out = x.to_vec();
        assert_eq!(out.len(), x.buffer_len());
        assert_eq!(&out[..], &data[..out.len()], "emit(parse(b)) is not b");
        assert_eq!(R::parse(&out).as_ref(), Ok(&x), "parse(emit(x)) is not x");
    }
}

fuzz_target!(|data: &[u8]| {
    // SETUP packet: view, repr, standard request decode/encode.
    let view = SetupPacket::new_unchecked(data);
    let _ = (view.request_type(), view.request(), view.value(), view.index(), view.length());
    let _ = (view.direction(), view.kind(), view.recipient());
    if let Ok(r) = ControlRequest::parse(data) {
        assert_eq!(&r.to_bytes()[..], &data[..8]);
        assert_eq!(r.standard().to_control_request(), r);
        let _ = r.to_string();
    }

    // Each typed repr.
    round_trip::<ControlRequest>(data);
    round_trip::<DeviceDescriptor>(data);
    round_trip::<ConfigurationDescriptor>(data);
    round_trip::<OtherSpeedConfigurationDescriptor>(data);
    round_trip::<InterfaceDescriptor>(data);
    round_trip::<EndpointDescriptor>(data);
    round_trip::<StringDescriptor>(data);
    round_trip::<DeviceQualifierDescriptor>(data);
    round_trip::<BosDescriptor>(data);
    round_trip::<DeviceCapability>(data);
    round_trip::<SsEndpointCompanionDescriptor>(data);
    round_trip::<HidDescriptor>(data);
    round_trip::<InterfaceAssociationDescriptor>(data);
    round_trip::<RawDescriptor>(data);
    if let Ok(ep) = EndpointDescriptor::parse(data) {
        let io = ep.to_ioctl_bytes();
        assert_eq!(&io[..ep.buffer_len()], &data[..ep.buffer_len()]);
    }

    // Views over the raw bytes, checked or not.
    let d = DeviceView::new_unchecked(data);
    let _ = (d.vendor_id(), d.num_configurations(), d.check_len(), d.as_bytes());
    let c = ConfigurationView::new_unchecked(data);
    let _ = (c.total_length(), c.bundle().len(), c.descriptors().count());
    let e = EndpointView::new_unchecked(data);
    let _ = (e.address(), e.transfer_type(), e.max_packet(), e.mult(), e.synch_address());
    let _ = StringView::new_unchecked(data).to_string_lossy();
    let _ = HidView::new_unchecked(data).class_descriptors().count();
    let _ = BosView::new_unchecked(data).descriptors().count();
    let _ = InterfaceAssociationView::new_unchecked(data).function_string();
    let _ = DeviceQualifierView::new_unchecked(data).reserved();
    let _ = SsEndpointCompanionView::new_unchecked(data).bytes_per_interval();

    // Any descriptor: typed or raw, emitted back to its own bytes.
    let any = AnyDescriptor::parse_lenient(data);
    if let Ok(one) = Descriptor::new(data) {
        assert_eq!(any.to_vec(), one.as_bytes());
        let _ = one.to_string();
    }
    let _ = any.to_string();

    // The blob walk accounts for every byte; each yielded descriptor prints.
    let mut it = Descriptors::new(data);
    let mut walked = 0;
    for one in it.by_ref() {
        walked += one.as_bytes().len();
        let typed = one.parse();
        assert_eq!(typed.to_vec(), one.as_bytes());
    }
    assert_eq!(walked + it.remaining().len(), data.len());
    assert_eq!(it.offset(), walked);
    let _ = Dump(data).to_string();
});
