//! The scripted host: replays a [`script`](crate::script) against a device through usbfs and records
//! what the host saw, one [`HostStep`] per step, so that two substrates can be compared item by item
//! (contract O6). A step that fails records its errno and the script goes on; only a lost device
//! stops it.

use std::collections::VecDeque;
use std::time::Duration;

use rawgadget_uapi::Errno;

use crate::record::HostStep;
use crate::script::{mod63, Action, Cmp, EpRef, Payload, Step};
use crate::sysfs::UsbDevice;
use crate::usbfs::{Device, Reaped, UrbType};

/// An endpoint of interface 0, altsetting 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    pub address: u8,
    /// `bmAttributes & 3`: 2 bulk, 3 interrupt.
    pub kind: u8,
    pub max_packet: u16,
}

/// The endpoints of interface 0 altsetting 0, from a configuration descriptor set.
pub fn interface0_endpoints(config: &[u8]) -> Vec<Endpoint> {
    let mut eps = Vec::new();
    let mut i = 0;
    let mut in_target = false;
    while i + 2 <= config.len() {
        let len = config[i] as usize;
        if len < 2 || i + len > config.len() {
            break;
        }
        match config[i + 1] {
            4 if len >= 4 => in_target = config[i + 2] == 0 && config[i + 3] == 0,
            5 if len >= 7 && in_target => eps.push(Endpoint {
                address: config[i + 2],
                kind: config[i + 3] & 3,
                max_packet: u16::from_le_bytes([config[i + 4], config[i + 5]]) & 0x7ff,
            }),
            _ => {}
        }
        i += len;
    }
    eps
}

fn resolve(eps: &[Endpoint], r: EpRef) -> Option<Endpoint> {
    let pick = |kind: u8, dir_in: bool| {
        eps.iter()
            .copied()
            .find(|e| e.kind == kind && (e.address & 0x80 != 0) == dir_in)
    };
    match r {
        EpRef::Addr(a) => Some(
            eps.iter()
                .copied()
                .find(|e| e.address == a)
                .unwrap_or(Endpoint {
                    address: a,
                    kind: 2,
                    max_packet: 512,
                }),
        ),
        EpRef::BulkIn => pick(2, true),
        EpRef::BulkOut => pick(2, false),
        EpRef::IntIn => pick(3, true),
        EpRef::IntOut => pick(3, false),
    }
}

fn payload(p: &Payload, len: usize, max_packet: usize) -> Vec<u8> {
    match p {
        Payload::Zero => vec![0; len],
        Payload::Mod63 => mod63(len, max_packet),
        Payload::Bytes(b) => {
            let mut v = b.clone();
            v.resize(len, 0);
            v
        }
    }
}

fn status_of(r: Result<usize, Errno>) -> (String, usize) {
    match r {
        Ok(n) => ("ok".into(), n),
        Err(e) => (errno_name(e), 0),
    }
}

/// `EPIPE`, or `errno N` for numbers without a name.
pub fn errno_name(e: Errno) -> String {
    e.name()
        .map(str::to_string)
        .unwrap_or_else(|| format!("errno {}", e.raw()))
}

/// FNV-1a over the bytes: a short digest to compare big transfers.
fn digest(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

fn hex_summary(data: &[u8]) -> String {
    if data.is_empty() {
        return String::new();
    }
    let shown: String = data.iter().take(64).map(|b| format!("{b:02x}")).collect();
    if data.len() > 64 {
        format!("{shown}..(fnv {:016x})", digest(data))
    } else {
        shown
    }
}

/// Runs `steps` against `dev` (reopened after resets) and returns what the host saw.
pub fn run(
    substrate: &str,
    usb: &UsbDevice,
    steps: &[Step],
    mut emit: impl FnMut(&HostStep),
) -> anyhow::Result<Vec<HostStep>> {
    let mut dev = Device::open(&usb.devnode())?;
    let read_eps = || -> Vec<Endpoint> {
        usb.descriptors()
            .map(|d| interface0_endpoints(d.get(18..).unwrap_or(&[])))
            .unwrap_or_default()
    };
    let mut eps = read_eps();
    let mut reaped: VecDeque<Reaped> = VecDeque::new();
    let mut out = Vec::new();
    for step in steps {
        let timeout = Duration::from_millis(step.timeout_ms);
        let (status, actual, data): (String, usize, Vec<u8>) = match &step.action {
            Action::Ctrl {
                setup,
                payload: p,
                index_ep,
            } => {
                let mut setup = *setup;
                let mut missing = false;
                if let Some(r) = index_ep {
                    match resolve(&eps, *r) {
                        Some(e) => setup[4..6].copy_from_slice(&(e.address as u16).to_le_bytes()),
                        None => missing = true,
                    }
                }
                let len = u16::from_le_bytes([setup[6], setup[7]]) as usize;
                if missing {
                    ("no-endpoint".into(), 0, Vec::new())
                } else if setup[0] & 0x80 != 0 {
                    let mut buf = vec![0u8; len];
                    let r = dev.control(setup, &mut buf, timeout);
                    let (s, n) = status_of(r);
                    buf.truncate(n);
                    (s, n, buf)
                } else {
                    let mut buf = payload(p, len, 64);
                    let (s, n) = status_of(dev.control(setup, &mut buf, timeout));
                    (s, n, Vec::new())
                }
            }
            Action::Bulk {
                ep,
                len,
                payload: p,
            } => match resolve(&eps, *ep) {
                None => ("no-endpoint".into(), 0, Vec::new()),
                Some(e) => {
                    let mut buf = if e.address & 0x80 != 0 {
                        vec![0u8; *len]
                    } else {
                        payload(p, *len, e.max_packet as usize)
                    };
                    let (s, n) = status_of(dev.bulk(e.address, &mut buf, timeout));
                    if e.address & 0x80 != 0 {
                        buf.truncate(n);
                        (s, n, buf)
                    } else {
                        (s, n, Vec::new())
                    }
                }
            },
            Action::Submit {
                tag,
                interrupt,
                ep,
                len,
                payload: p,
                flags,
            } => match resolve(&eps, *ep) {
                None => ("no-endpoint".into(), 0, Vec::new()),
                Some(e) => {
                    let buf = if e.address & 0x80 != 0 {
                        vec![0u8; *len]
                    } else {
                        payload(p, *len, e.max_packet as usize)
                    };
                    let t = if *interrupt {
                        UrbType::Interrupt
                    } else {
                        UrbType::Bulk
                    };
                    let (s, _) = status_of(dev.submit(tag, t, e.address, buf, *flags).map(|()| 0));
                    (s, 0, Vec::new())
                }
            },
            Action::Discard { tag } => {
                let (s, _) = status_of(dev.discard(tag).map(|()| 0));
                (s, 0, Vec::new())
            }
            Action::Reap { tag } => {
                let found = match reaped.iter().position(|r| &r.tag == tag) {
                    Some(i) => reaped.remove(i),
                    None => loop {
                        match dev.reap(timeout) {
                            Ok(Some(r)) if &r.tag == tag => break Some(r),
                            Ok(Some(r)) => reaped.push_back(r),
                            Ok(None) | Err(_) => break None,
                        }
                    },
                };
                match found {
                    Some(r) => {
                        let s = if r.status == 0 {
                            "ok".to_string()
                        } else {
                            errno_name(Errno::from_raw(r.status))
                        };
                        (s, r.actual_length, r.data)
                    }
                    None if dev.pending().contains(tag) => {
                        // Not completed in time: unlink it so the script can go on, and say so.
                        let _ = dev.discard(tag);
                        let _ = dev.reap(Duration::from_secs(1));
                        ("timeout".into(), 0, Vec::new())
                    }
                    None => ("not-submitted".into(), 0, Vec::new()),
                }
            }
            Action::Claim(i) => {
                let (s, _) = status_of(dev.claim_interface(*i).map(|()| 0));
                (s, 0, Vec::new())
            }
            Action::Release(i) => {
                let (s, _) = status_of(dev.release_interface(*i).map(|()| 0));
                (s, 0, Vec::new())
            }
            Action::SetConfig(c) => {
                let (s, _) = status_of(dev.set_configuration(*c).map(|()| 0));
                (s, 0, Vec::new())
            }
            Action::SetAlt { ifno, alt } => {
                let (s, _) = status_of(dev.set_interface(*ifno, *alt).map(|()| 0));
                (s, 0, Vec::new())
            }
            Action::ClearHalt(r) => match resolve(&eps, *r) {
                None => ("no-endpoint".into(), 0, Vec::new()),
                Some(e) => {
                    let (s, _) = status_of(dev.clear_halt(e.address).map(|()| 0));
                    (s, 0, Vec::new())
                }
            },
            Action::Reset => {
                let (s, _) = status_of(dev.reset().map(|()| 0));
                // The kernel re-enumerates; give it a moment, then re-read the endpoints.
                std::thread::sleep(Duration::from_millis(200));
                eps = read_eps();
                if !usb.devnode().exists() {
                    anyhow::bail!("device node {} gone after reset", usb.devnode().display());
                }
                dev = Device::open(&usb.devnode())?;
                (s, 0, Vec::new())
            }
            Action::Sleep(ms) => {
                std::thread::sleep(Duration::from_millis(*ms));
                ("ok".into(), 0, Vec::new())
            }
        };
        let rec = HostStep {
            substrate: substrate.to_string(),
            line: step.line,
            text: step.text.clone(),
            status,
            actual,
            data: hex_summary(&data),
            cmp: step.cmp.as_str().to_string(),
        };
        emit(&rec);
        out.push(rec);
        if !usb.present() {
            anyhow::bail!("device disappeared after script line {}", step.line);
        }
    }
    Ok(out)
}

/// One difference between two substrates' records of the same script.
#[derive(Debug, Clone, PartialEq)]
pub struct Difference {
    pub line: usize,
    pub text: String,
    pub left: String,
    pub right: String,
}

fn describe(s: &HostStep, with_data: bool) -> String {
    if with_data && !s.data.is_empty() {
        format!("{} len {} data {}", s.status, s.actual, s.data)
    } else {
        format!("{} len {}", s.status, s.actual)
    }
}

/// Compares two recordings step by step, as each step's `cmp` asks. Steps present on one side only
/// (the script stopped early on the other) are differences too.
pub fn compare(left: &[HostStep], right: &[HostStep]) -> Vec<Difference> {
    let mut diffs = Vec::new();
    let n = left.len().max(right.len());
    for i in 0..n {
        match (left.get(i), right.get(i)) {
            (Some(l), Some(r)) => {
                let cmp = match l.cmp.as_str() {
                    "none" => Cmp::None,
                    "data" => Cmp::Data,
                    _ => Cmp::Status,
                };
                let same = match cmp {
                    Cmp::None => true,
                    Cmp::Status => l.status == r.status && l.actual == r.actual,
                    Cmp::Data => l.status == r.status && l.actual == r.actual && l.data == r.data,
                };
                if !same || l.line != r.line {
                    diffs.push(Difference {
                        line: l.line,
                        text: l.text.clone(),
                        left: describe(l, cmp == Cmp::Data),
                        right: describe(r, cmp == Cmp::Data),
                    });
                }
            }
            (Some(l), None) => diffs.push(Difference {
                line: l.line,
                text: l.text.clone(),
                left: describe(l, false),
                right: "(not reached)".into(),
            }),
            (None, Some(r)) => diffs.push(Difference {
                line: r.line,
                text: r.text.clone(),
                left: "(not reached)".into(),
                right: describe(r, false),
            }),
            (None, None) => {}
        }
    }
    diffs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(line: usize, status: &str, actual: usize, data: &str, cmp: &str) -> HostStep {
        HostStep {
            substrate: "x".into(),
            line,
            text: format!("line {line}"),
            status: status.into(),
            actual,
            data: data.into(),
            cmp: cmp.into(),
        }
    }

    #[test]
    fn compare_honours_each_steps_cmp() {
        let a = vec![
            step(1, "ok", 18, "12010002", "none"),
            step(2, "ok", 2, "0000", "data"),
            step(3, "EPIPE", 0, "", "status"),
            step(4, "ok", 512, "00", "status"),
        ];
        let mut b = a.clone();
        b[0].data = "1201000200".into(); // ignored: cmp=none
        b[3].data = "01".into(); // ignored: cmp=status
        assert!(compare(&a, &b).is_empty());
        b[1].data = "0100".into();
        b[2].status = "ok".into();
        let d = compare(&a, &b);
        assert_eq!(d.iter().map(|d| d.line).collect::<Vec<_>>(), vec![2, 3]);
    }

    #[test]
    fn a_shorter_recording_differs() {
        let a = vec![
            step(1, "ok", 0, "", "status"),
            step(2, "ok", 0, "", "status"),
        ];
        let d = compare(&a, &a[..1]);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].right, "(not reached)");
    }

    #[test]
    fn endpoints_of_interface0_alt0_only() {
        let config = [
            9, 2, 39, 0, 1, 1, 0, 0x80, 50, //
            9, 4, 0, 0, 2, 0xff, 0, 0, 0, //
            7, 5, 0x81, 2, 0x00, 0x02, 0, //
            7, 5, 0x02, 2, 0x00, 0x02, 0, //
            9, 4, 0, 1, 1, 0xff, 0, 0, 0, //
            7, 5, 0x83, 3, 0x40, 0x00, 1,
        ];
        let eps = interface0_endpoints(&config);
        assert_eq!(eps.len(), 2);
        assert_eq!(resolve(&eps, EpRef::BulkIn).map(|e| e.address), Some(0x81));
        assert_eq!(
            resolve(&eps, EpRef::BulkOut).map(|e| e.max_packet),
            Some(512)
        );
        assert_eq!(resolve(&eps, EpRef::IntIn), None);
    }
}
