//! The in-process host: what it records and prints, and hostile traffic the stack must
//! survive with errnos, never panics or hangs.

use std::time::Duration;

use rawgadget_loopback::hostile::{self, Probe};
use rawgadget_loopback::scripted::{DeviceOp, DeviceScript, ScriptedDevice};
use rawgadget_loopback::{Bus, Host, HostConfig, Stepped};
use rawgadget_uapi::{speed::*, Errno};
use rawgadget_udc::UrbFlags;

fn enumerated(bus: &mut Bus, config: HostConfig) -> (Stepped<'_, ScriptedDevice>, Host) {
    let mut port = Stepped::new(
        bus,
        ScriptedDevice::new(DeviceScript::vendor_loopback(USB_SPEED_HIGH)),
    );
    let mut host = Host::new(config);
    host.enumerate(&mut port).expect("enumeration");
    (port, host)
}

fn assert_alive(host: &mut Host, port: &mut Stepped<'_, ScriptedDevice>) {
    let (status, desc) = hostile::alive(host, port);
    assert_eq!(status, Ok(0));
    assert_eq!(desc.map(|d| d.len()), Ok(18));
    port.bus.assert_invariants();
}

fn statuses(probes: &[Probe]) -> Vec<Result<(), Errno>> {
    probes.iter().map(|p| p.result.status).collect()
}

/// The recording prints like `lsusb -v` and the transfer log like usbmon.
#[test]
fn lsusb_and_transfer_log() {
    let mut bus = Bus::new();
    let (_port, host) = enumerated(&mut bus, HostConfig::default());
    let rec = host.recording();
    assert_eq!(rec.speed, Some(rawgadget_uapi::Speed::High));
    assert_eq!((rec.address, rec.ep0_maxpacket), (2, 64));
    assert_eq!(rec.string(2).as_deref(), Some("loopback test device"));
    let text = rec.lsusb();
    assert!(
        text.starts_with("Bus 001 Device 002: ID 1d6b:0104 rawgadget loopback test device"),
        "{text}"
    );
    for needle in [
        "bcdUSB               2.00",
        "idProduct          0x0104",
        "(active)",
        "bEndpointAddress     0x81  EP 1 IN",
        "Device Status: configured",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
    let log = rec.transfer_log();
    assert!(log.contains("SET_CONFIGURATION 1"), "{log}");
    assert_eq!(log.matches("port Reset").count(), 2);
}

/// Odd wLength values: every one answered, none fatal.
#[test]
fn hostile_wrong_wlength() {
    let mut bus = Bus::new();
    let (mut port, mut host) = enumerated(&mut bus, HostConfig::default());
    let probes = hostile::wrong_wlength(&mut host, &mut port);
    assert!(statuses(&probes).iter().all(|s| s.is_ok()), "{probes:#?}");
    let lens: Vec<u32> = probes[..9].iter().map(|p| p.result.actual).collect();
    assert_eq!(lens, vec![0, 1, 7, 8, 17, 18, 18, 18, 18]);
    assert_alive(&mut host, &mut port);
}

/// Requests nobody defines are stalled by the device; the controller answers none of them.
#[test]
fn hostile_unknown_requests() {
    let mut bus = Bus::new();
    let (mut port, mut host) = enumerated(&mut bus, HostConfig::default());
    let probes = hostile::unknown_requests(&mut host, &mut port);
    assert!(
        statuses(&probes).iter().all(|s| *s == Err(Errno::EPIPE)),
        "{probes:#?}"
    );
    assert_alive(&mut host, &mut port);
}

/// Oversize transfers: bounded by what the device queues; short IN with URB_SHORT_NOT_OK is
/// EREMOTEIO; nothing queued is a timeout.
#[test]
fn hostile_oversize_transfers() {
    let mut bus = Bus::new();
    let (mut port, mut host) = enumerated(&mut bus, HostConfig::default());
    let probes = hostile::oversize_transfers(&mut host, &mut port, 0x81, 0x02);
    assert_eq!(
        statuses(&probes),
        vec![
            Err(Errno::ETIMEDOUT),
            Err(Errno::ETIMEDOUT),
            Err(Errno::EPIPE)
        ]
    );
    port.device.push_op(DeviceOp::Write {
        address: 0x81,
        data: vec![9; 100],
        zero: false,
    });
    let flags = UrbFlags {
        zero_packet: false,
        short_not_ok: true,
    };
    let r = host.bulk_in(&mut port, 1, 1 << 20, flags, Duration::from_secs(1));
    assert_eq!((r.status, r.actual), (Err(Errno::EREMOTEIO), 100));
    assert_alive(&mut host, &mut port);
}

/// Before SET_CONFIGURATION no endpoint is enabled: EPROTO (contract D24).
#[test]
fn hostile_before_configuration() {
    let mut bus = Bus::new();
    let cfg = HostConfig {
        set_configuration: false,
        ..HostConfig::default()
    };
    let (mut port, mut host) = enumerated(&mut bus, cfg);
    let probes = hostile::before_configuration(&mut host, &mut port, &[0x81, 0x02, 0x83]);
    assert!(
        statuses(&probes).iter().all(|s| *s == Err(Errno::EPROTO)),
        "{probes:#?}"
    );
    host.control_out(&mut port, 0, 9, 1, 0, &[]).unwrap();
    port.device.push_op(DeviceOp::Write {
        address: 0x81,
        data: vec![1; 10],
        zero: false,
    });
    let r = host.bulk_in(
        &mut port,
        1,
        512,
        UrbFlags::default(),
        Duration::from_secs(1),
    );
    assert_eq!((r.status, r.actual), (Ok(()), 10));
}

/// Unlink storms on ep0 and on a bulk endpoint: every URB comes back once, with its data or
/// an unlink status; the device keeps answering.
#[test]
fn hostile_unlink_storm() {
    let mut bus = Bus::new();
    let (mut port, mut host) = enumerated(&mut bus, HostConfig::default());
    for ep in [0x80, 0x81, 0x02] {
        let probes = hostile::unlink_storm(&mut host, &mut port, ep, 20, 8);
        assert_eq!(probes.len(), 160);
        for p in &probes {
            assert!(
                matches!(
                    p.result.status,
                    Ok(()) | Err(Errno::ECONNRESET) | Err(Errno::ENOENT)
                ),
                "{p:?}"
            );
        }
        assert_alive(&mut host, &mut port);
    }
}

/// URBs that skip the host core's checks (a USB/IP peer can send them).
#[test]
fn hostile_bypassing_the_host_core() {
    let mut bus = Bus::new();
    let (mut port, mut host) = enumerated(&mut bus, HostConfig::default());
    let probes = hostile::bypass_host_core(&mut host, &mut port);
    let got: Vec<(Result<(), Errno>, u32)> = probes
        .iter()
        .map(|p| (p.result.status, p.result.actual))
        .collect();
    assert_eq!(
        got,
        vec![
            (Err(Errno::EOVERFLOW), 4), // the device's 18 bytes do not fit
            (Ok(()), 18),
            (Ok(()), 18), // IN SETUP on an OUT URB: bytes flow host to gadget
            (Err(Errno::ETIMEDOUT), 0), // bulk on ep0: nothing queued, killed
            (Err(Errno::EINVAL), 0), // iso on dummy
        ]
    );
    assert_alive(&mut host, &mut port);
}

/// Resetting an enumerated device as usb_reset_device does: the configuration is set again.
#[test]
fn reset_device_reconfigures() {
    let mut bus = Bus::new();
    let (mut port, mut host) = enumerated(&mut bus, HostConfig::default());
    host.reset_device(&mut port).unwrap();
    let setups = port.device.setups();
    assert_eq!(setups.iter().filter(|s| s.request == 9).count(), 2);
    assert_eq!(port.device.configured, Some(1));
    assert!(port.device.errors.is_empty(), "{:?}", port.device.errors);
    assert_alive(&mut host, &mut port);
}

/// A long-running host keeps at most `record_events` events and counts the rest, so its
/// memory stays bounded however many transfers it makes.
#[test]
fn recording_is_bounded() {
    let mut bus = Bus::new();
    let config = HostConfig {
        record_events: 20,
        ..HostConfig::default()
    };
    let (mut port, mut host) = enumerated(&mut bus, config);
    for _ in 0..50 {
        assert_alive(&mut host, &mut port);
    }
    let rec = host.recording();
    assert_eq!(rec.events.len(), 20);
    assert!(rec.events_dropped >= 50, "dropped {}", rec.events_dropped);
}
