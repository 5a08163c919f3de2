//! The host and the device program in different threads, as with a real raw-gadget program:
//! the device answers control requests while the host blocks on its URBs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use rawgadget_loopback::scripted::{DeviceOp, DeviceScript, ScriptedDevice};
use rawgadget_loopback::{Bus, Host, HostConfig, SharedBus, Threaded};
use rawgadget_uapi::speed::USB_SPEED_HIGH;
use rawgadget_udc::UrbFlags;

#[test]
fn threaded_host_enumerates_and_transfers() {
    let shared = SharedBus::new(Bus::new());
    let stop = Arc::new(AtomicBool::new(false));
    let mut dev = ScriptedDevice::new(DeviceScript::vendor_loopback(USB_SPEED_HIGH));
    let payload: Vec<u8> = (0..2000u32).map(|i| (i * 7) as u8).collect();
    dev.push_op(DeviceOp::Write {
        address: 0x81,
        data: payload.clone(),
        zero: false,
    });
    dev.push_op(DeviceOp::Read {
        address: 0x02,
        length: 4096,
    });
    let device_thread = {
        let shared = Arc::clone(&shared);
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            let done = |d: &ScriptedDevice| d.io_results.len() == 2 || stop.load(Ordering::Relaxed);
            shared.drive_device(&mut dev, done, Duration::from_millis(20));
            dev
        })
    };
    let mut port = Threaded::new(Arc::clone(&shared));
    let mut host = Host::new(HostConfig::default());
    host.enumerate(&mut port).expect("enumeration");
    assert_eq!(host.recording().configuration, Some(1));
    let t = Duration::from_secs(10);
    let got = host.bulk_in(&mut port, 1, 4096, UrbFlags::default(), t);
    assert_eq!(got.status, Ok(()));
    assert_eq!(
        got.data, payload,
        "a 2000-byte write ends with a short packet"
    );
    let sent: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
    let out = host.bulk_out(&mut port, 2, sent.clone(), UrbFlags::default(), t);
    assert_eq!((out.status, out.actual), (Ok(()), 3000));
    // the device stops by itself once both transfers are recorded
    let dev = device_thread.join().unwrap();
    assert!(!stop.load(Ordering::Relaxed));
    let reads: Vec<&Vec<u8>> = dev
        .io_results
        .iter()
        .filter(|(op, _, _)| matches!(op, DeviceOp::Read { .. }))
        .map(|(_, _, d)| d)
        .collect();
    assert_eq!(reads, vec![&sent]);
}
