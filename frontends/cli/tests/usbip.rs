//! `rawgadget zero|keyboard --usbip-export|--usbip-attach`: the binary as a USB/IP device,
//! imported by a fake vhci host (vhci's checks) over TCP, and attached to a stand-in sysfs.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rawgadget_loopback::{Host, HostConfig};
use rawgadget_udc::UrbFlags;
use rawgadget_usbip_udc::fake_vhci::{import, FakeVhci};

const TIMEOUT: Duration = Duration::from_secs(5);

fn spawn(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_rawgadget"))
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run rawgadget")
}

/// The first stdout line that starts with `prefix`.
fn line_with(child: &mut Child, prefix: &str) -> String {
    let stdout = child.stdout.as_mut().unwrap();
    let mut reader = BufReader::new(stdout);
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "no line {prefix:?}"
        );
        if line.starts_with(prefix) {
            return line;
        }
    }
}

/// The address from `rawgadget: exporting busid 1-1 on ADDR (...)`.
fn export_addr(child: &mut Child) -> SocketAddr {
    let line = line_with(child, "rawgadget: exporting");
    line.split_whitespace().nth(5).unwrap().parse().unwrap()
}

fn import_host(addr: SocketAddr) -> FakeVhci<TcpStream> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    let reply = import(&mut s, "1-1").unwrap();
    let d = *reply.device().expect("import accepted");
    FakeVhci::new(s, d.speed().unwrap(), d.devid())
}

fn sigterm(child: &Child) {
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

/// Gadget Zero exported over TCP: imported, enumerated, source and sink move usbtest's pattern;
/// SIGTERM ends the program cleanly with its summary.
#[test]
fn zero_over_usbip_export() {
    let mut child = spawn(&[
        "zero",
        "--usbip-export",
        "127.0.0.1:0",
        "--req-size",
        "4096",
    ]);
    let addr = export_addr(&mut child);
    let mut vhci = import_host(addr);
    let mut host = Host::new(HostConfig::default());
    host.enumerate(&mut vhci)
        .expect("enumerate Gadget Zero over USB/IP");
    let dev = host.recording().device.clone().unwrap();
    assert_eq!(dev[8..12], [0x25, 0x05, 0xa0, 0xa4], "0525:a4a0");
    let pattern: Vec<u8> = (0..4096).map(|i| ((i % 512) % 63) as u8).collect();
    let out = host.bulk_out(
        &mut vhci,
        0x02,
        pattern.clone(),
        UrbFlags::default(),
        TIMEOUT,
    );
    assert_eq!((out.status, out.actual), (Ok(()), 4096));
    let inn = host.bulk_in(&mut vhci, 0x81, 4096, UrbFlags::default(), TIMEOUT);
    assert_eq!(inn.status, Ok(()));
    assert_eq!(inn.data, pattern);
    assert_eq!(vhci.error(), None);
    sigterm(&child);
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("0 pattern errors"), "{err}");
}

/// The keyboard exported over TCP types its text into interrupt reports, and
/// `--exit-when-done` ends the program once they are read.
#[test]
fn keyboard_over_usbip_export() {
    let mut child = spawn(&[
        "keyboard",
        "--text",
        "hi",
        "--exit-when-done",
        "--usbip-export",
        "127.0.0.1:0",
    ]);
    let addr = export_addr(&mut child);
    let mut vhci = import_host(addr);
    let mut host = Host::new(HostConfig::default());
    host.enumerate(&mut vhci)
        .expect("enumerate the keyboard over USB/IP");
    let config = host.recording().configs[0].clone();
    let ep = config
        .windows(7)
        .find(|w| w[0] == 7 && w[1] == 5 && w[2] & 0x80 != 0)
        .map(|w| w[2])
        .expect("an interrupt IN endpoint");
    let mut keys = Vec::new();
    for _ in 0..8 {
        let r = host.interrupt(&mut vhci, ep, vec![0; 8], Duration::from_secs(1));
        if r.status.is_err() {
            break;
        }
        if r.data.len() > 2 && r.data[2] != 0 {
            keys.push(r.data[2]);
        }
    }
    // HID usage IDs of 'h' and 'i'
    assert_eq!(keys, [0x0b, 0x0c]);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `--usbip-attach` prints the port and speed once attached. Here `attach` is a plain file,
/// so nobody reads the socket: the port goes away at once and the program stops by itself.
#[test]
fn zero_usbip_attach_prints_the_port() {
    let dir = tempfile::tempdir().unwrap();
    let mut status = String::from("hub port sta spd dev      sockfd local_busid\n");
    for p in 0..8 {
        status += &format!(
            "hs  {p:04} {:03} 000 00000000 000000 0-0\n",
            if p == 0 { 6 } else { 4 }
        );
    }
    for p in 8..16 {
        status += &format!("ss  {p:04} 004 000 00000000 000000 0-0\n");
    }
    std::fs::write(dir.path().join("status"), status).unwrap();
    std::fs::write(dir.path().join("attach"), "").unwrap();
    let sysfs = dir.path().to_str().unwrap();
    let mut child = spawn(&["zero", "--usbip-attach", "--usbip-vhci-sysfs", sysfs]);
    let line = line_with(&mut child, "rawgadget: attached");
    assert!(line.contains("vhci port 1 (hs hub), high-speed"), "{line}");
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let written = std::fs::read_to_string(dir.path().join("attach")).unwrap();
    assert!(
        written.starts_with("1 ") && written.ends_with(" 3"),
        "{written:?}"
    );
    let mut child = spawn(&[
        "zero",
        "--speed",
        "super",
        "--usbip-attach",
        "--usbip-vhci-sysfs",
        sysfs,
    ]);
    let line = line_with(&mut child, "rawgadget: attached");
    assert!(line.contains("vhci port 8 (ss hub), super-speed"), "{line}");
    assert!(child.wait().unwrap().success());
}

/// Without vhci-hcd the error says what to load and which package brings it.
#[test]
fn usbip_attach_without_vhci_says_modprobe() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("vhci_hcd.0");
    let out = spawn(&[
        "zero",
        "--usbip-attach",
        "--usbip-vhci-sysfs",
        missing.to_str().unwrap(),
    ])
    .wait_with_output()
    .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("modprobe vhci-hcd") && err.contains("linux-image"),
        "{err}"
    );
}

/// A non-loopback export needs the explicit flag, and then prints the no-authentication
/// warning.
#[test]
fn usbip_export_beyond_loopback_needs_the_flag() {
    let out = spawn(&["zero", "--usbip-export", "0.0.0.0:0"])
        .wait_with_output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no authentication"));
    let mut child = spawn(&[
        "zero",
        "--usbip-export",
        "0.0.0.0:0",
        "--usbip-allow-remote",
    ]);
    let _ = export_addr(&mut child);
    sigterm(&child);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("warning: USB/IP has no authentication"));
}

/// `--usbip-iso`: Gadget Zero on the iso-capable personality offers its iso altsetting; after
/// SET_INTERFACE(1) iso IN carries the source's data and iso OUT feeds the sink (contract §4).
#[test]
fn zero_iso_over_usbip_export() {
    use rawgadget_udc::{IsoPacket, Urb, UrbKind};
    let mut child = spawn(&[
        "zero",
        "--usbip-export",
        "127.0.0.1:0",
        "--usbip-iso",
        "--pattern",
        "0",
    ]);
    let addr = export_addr(&mut child);
    let mut vhci = import_host(addr);
    let mut host = Host::new(HostConfig::default());
    host.enumerate(&mut vhci)
        .expect("enumerate Gadget Zero over USB/IP");
    let config = host.recording().configs[0].clone();
    // the iso endpoints of altsetting 1
    let iso: Vec<(u8, u16)> = config
        .windows(7)
        .filter(|w| w[0] == 7 && w[1] == 5 && w[3] & 3 == 1)
        .map(|w| (w[2], u16::from_le_bytes([w[4], w[5]])))
        .collect();
    assert_eq!(
        iso.len(),
        2,
        "iso OUT and IN on altsetting 1: {config:02x?}"
    );
    host.control_out(&mut vhci, 0x01, 11, 1, 0, &[])
        .expect("SET_INTERFACE(0, 1)");
    let (in_ep, mp) = *iso.iter().find(|(a, _)| a & 0x80 != 0).unwrap();
    let (out_ep, _) = *iso.iter().find(|(a, _)| a & 0x80 == 0).unwrap();
    let mp = u32::from(mp & 0x7ff);
    let urb = |endpoint: u8, fill: u8| Urb {
        endpoint,
        kind: UrbKind::Isochronous {
            packets: (0..8)
                .map(|i| IsoPacket {
                    offset: i * mp,
                    length: mp,
                    ..Default::default()
                })
                .collect(),
        },
        buffer: vec![fill; (8 * mp) as usize],
        flags: UrbFlags::default(),
    };
    let mut got = 0;
    for _ in 0..4 {
        let id = host.submit(&mut vhci, urb(in_ep, 0xee));
        let r = host
            .wait(&mut vhci, id, TIMEOUT)
            .expect("iso IN completes on time");
        assert_eq!(r.status, Ok(()));
        got += r.actual;
    }
    assert!(got > 0, "the source filled iso packets");
    let id = host.submit(&mut vhci, urb(out_ep, 0));
    let r = host
        .wait(&mut vhci, id, TIMEOUT)
        .expect("iso OUT completes on time");
    assert_eq!((r.status, r.actual), (Ok(()), 8 * mp));
    assert_eq!(vhci.error(), None);
    sigterm(&child);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
