//! The scripted host's language: one host action per line, replayed identically against every
//! substrate so that what the host saw can be compared item by item (contract O6).
//!
//! ```text
//! # comment
//! ctrl <bmRequestType> <bRequest> <wValue> <wIndex|ep> <wLength> [data=<hex>|mod63] [timeout=<ms>] [cmp=..]
//! bulk <ep> <len> [data=<hex>|mod63|zero] [timeout=<ms>] [cmp=..]     synchronous bulk/interrupt
//! submit <tag> bulk|int <ep> <len> [data=..] [zero_packet] [short_not_ok]
//! discard <tag>
//! reap <tag> [timeout=<ms>] [cmp=..]
//! claim <ifno> | release <ifno> | set_config <n> | set_alt <ifno> <alt>
//! clear_halt <ep> | reset | sleep <ms>
//! ```
//!
//! `<ep>` is a number (`0x81`) or a name resolved from interface 0, altsetting 0 of the device's
//! configuration: `bulk-in`, `bulk-out`, `int-in`, `int-out`. `cmp` says what must be equal across
//! substrates: `none` (record only: ids, strings, races), `status` (status and length, the default)
//! or `data` (also the bytes). `mod63` is Gadget Zero's pattern, `(i % maxpacket) % 63` (T8).

use std::fmt;

/// An endpoint reference in a script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpRef {
    Addr(u8),
    BulkIn,
    BulkOut,
    IntIn,
    IntOut,
}

/// Payload of an OUT step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    Zero,
    Mod63,
    Bytes(Vec<u8>),
}

/// What a step's result must share across substrates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    None,
    Status,
    Data,
}

impl Cmp {
    pub fn as_str(self) -> &'static str {
        match self {
            Cmp::None => "none",
            Cmp::Status => "status",
            Cmp::Data => "data",
        }
    }
}

/// One host action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `index_ep`: wIndex given as an endpoint name, filled in when the step runs.
    Ctrl {
        setup: [u8; 8],
        payload: Payload,
        index_ep: Option<EpRef>,
    },
    Bulk {
        ep: EpRef,
        len: usize,
        payload: Payload,
    },
    Submit {
        tag: String,
        interrupt: bool,
        ep: EpRef,
        len: usize,
        payload: Payload,
        flags: u32,
    },
    Discard {
        tag: String,
    },
    Reap {
        tag: String,
    },
    Claim(u32),
    Release(u32),
    SetConfig(u32),
    SetAlt {
        ifno: u32,
        alt: u32,
    },
    ClearHalt(EpRef),
    Reset,
    Sleep(u64),
}

/// A parsed line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub line: usize,
    pub text: String,
    pub action: Action,
    pub cmp: Cmp,
    pub timeout_ms: u64,
}

/// A parse error with its line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub msg: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "script line {}: {}", self.line, self.msg)
    }
}

impl std::error::Error for ParseError {}

/// `USBDEVFS_URB_SHORT_NOT_OK`.
pub const URB_SHORT_NOT_OK: u32 = 0x01;
/// `USBDEVFS_URB_ZERO_PACKET`.
pub const URB_ZERO_PACKET: u32 = 0x40;

const DEFAULT_TIMEOUT_MS: u64 = 2000;

fn num(s: &str) -> Result<u64, String> {
    let r = if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        u64::from_str_radix(h, 16)
    } else {
        s.parse::<u64>()
    };
    r.map_err(|_| format!("not a number: {s:?}"))
}

fn num_max(s: &str, max: u64) -> Result<u64, String> {
    let v = num(s)?;
    if v > max {
        return Err(format!("{s} is larger than {max}"));
    }
    Ok(v)
}

fn ep(s: &str) -> Result<EpRef, String> {
    Ok(match s {
        "bulk-in" => EpRef::BulkIn,
        "bulk-out" => EpRef::BulkOut,
        "int-in" => EpRef::IntIn,
        "int-out" => EpRef::IntOut,
        _ => EpRef::Addr(num_max(s, 0xff)? as u8),
    })
}

fn payload(s: &str) -> Result<Payload, String> {
    match s {
        "zero" => Ok(Payload::Zero),
        "mod63" => Ok(Payload::Mod63),
        hex => {
            if hex.len() % 2 != 0 {
                return Err(format!("odd-length hex data {hex:?}"));
            }
            (0..hex.len())
                .step_by(2)
                .map(|i| {
                    u8::from_str_radix(&hex[i..i + 2], 16)
                        .map_err(|_| format!("bad hex data {hex:?}"))
                })
                .collect::<Result<Vec<u8>, String>>()
                .map(Payload::Bytes)
        }
    }
}

/// Parses a whole script.
///
/// # Errors
/// The first line that does not parse.
pub fn parse(text: &str) -> Result<Vec<Step>, ParseError> {
    let mut steps = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let body = raw.split('#').next().unwrap_or("").trim();
        if body.is_empty() {
            continue;
        }
        let step = parse_line(body).map_err(|msg| ParseError { line, msg })?;
        let (action, cmp, timeout_ms) = step;
        steps.push(Step {
            line,
            text: body.to_string(),
            action,
            cmp,
            timeout_ms,
        });
    }
    Ok(steps)
}

fn parse_line(body: &str) -> Result<(Action, Cmp, u64), String> {
    let mut words: Vec<&str> = Vec::new();
    let mut cmp = None;
    let mut timeout_ms = DEFAULT_TIMEOUT_MS;
    let mut data = None;
    let mut flags = 0u32;
    for w in body.split_whitespace() {
        if let Some(v) = w.strip_prefix("cmp=") {
            cmp = Some(match v {
                "none" => Cmp::None,
                "status" => Cmp::Status,
                "data" => Cmp::Data,
                _ => return Err(format!("cmp must be none, status or data, not {v:?}")),
            });
        } else if let Some(v) = w.strip_prefix("timeout=") {
            timeout_ms = num_max(v, 600_000)?;
        } else if let Some(v) = w.strip_prefix("data=") {
            data = Some(payload(v)?);
        } else if w == "zero_packet" {
            flags |= URB_ZERO_PACKET;
        } else if w == "short_not_ok" {
            flags |= URB_SHORT_NOT_OK;
        } else {
            words.push(w);
        }
    }
    let args = &words[1..];
    let want = |n: usize| -> Result<(), String> {
        if args.len() != n {
            Err(format!(
                "{} takes {n} arguments, got {}",
                words[0],
                args.len()
            ))
        } else {
            Ok(())
        }
    };
    let action = match words[0] {
        "ctrl" => {
            want(5)?;
            let rt = num_max(args[0], 0xff)? as u8;
            let req = num_max(args[1], 0xff)? as u8;
            let v = (num_max(args[2], 0xffff)? as u16).to_le_bytes();
            let (ix, index_ep) = match args[3] {
                "bulk-in" | "bulk-out" | "int-in" | "int-out" => ([0, 0], Some(ep(args[3])?)),
                n => ((num_max(n, 0xffff)? as u16).to_le_bytes(), None),
            };
            let len = (num_max(args[4], 0xffff)? as u16).to_le_bytes();
            if rt & 0x80 != 0 && data.is_some() {
                return Err("an IN request takes no data=".into());
            }
            let payload = data.take().unwrap_or(Payload::Zero);
            Action::Ctrl {
                setup: [rt, req, v[0], v[1], ix[0], ix[1], len[0], len[1]],
                payload,
                index_ep,
            }
        }
        "bulk" => {
            want(2)?;
            let ep = ep(args[0])?;
            let len = num_max(args[1], 16 << 20)? as usize;
            Action::Bulk {
                ep,
                len,
                payload: data.take().unwrap_or(Payload::Zero),
            }
        }
        "submit" => {
            want(4)?;
            let interrupt = match args[1] {
                "bulk" => false,
                "int" => true,
                t => return Err(format!("submit type must be bulk or int, not {t:?}")),
            };
            Action::Submit {
                tag: args[0].to_string(),
                interrupt,
                ep: ep(args[2])?,
                len: num_max(args[3], 16 << 20)? as usize,
                payload: data.take().unwrap_or(Payload::Zero),
                flags,
            }
        }
        "discard" => {
            want(1)?;
            Action::Discard {
                tag: args[0].to_string(),
            }
        }
        "reap" => {
            want(1)?;
            Action::Reap {
                tag: args[0].to_string(),
            }
        }
        "claim" => {
            want(1)?;
            Action::Claim(num_max(args[0], 255)? as u32)
        }
        "release" => {
            want(1)?;
            Action::Release(num_max(args[0], 255)? as u32)
        }
        "set_config" => {
            want(1)?;
            Action::SetConfig(num_max(args[0], 255)? as u32)
        }
        "set_alt" => {
            want(2)?;
            Action::SetAlt {
                ifno: num_max(args[0], 255)? as u32,
                alt: num_max(args[1], 255)? as u32,
            }
        }
        "clear_halt" => {
            want(1)?;
            Action::ClearHalt(ep(args[0])?)
        }
        "reset" => {
            want(0)?;
            Action::Reset
        }
        "sleep" => {
            want(1)?;
            Action::Sleep(num_max(args[0], 60_000)?)
        }
        other => return Err(format!("unknown action {other:?}")),
    };
    if data.is_some() {
        return Err(format!("{} takes no data=", words[0]));
    }
    Ok((action, cmp.unwrap_or(Cmp::Status), timeout_ms))
}

/// The mod-63 pattern usbtest and Gadget Zero use with `pattern=1` (T8): `(i % maxpacket) % 63`.
pub fn mod63(len: usize, maxpacket: usize) -> Vec<u8> {
    let mp = maxpacket.max(1);
    (0..len).map(|i| ((i % mp) % 63) as u8).collect()
}

/// The default script: enumeration reads, standard, unknown and malformed control requests, Gadget
/// Zero's vendor requests, bulk and interrupt transfers of chosen sizes, an unlink, halts and a reset.
pub const DEFAULT_SCRIPT: &str = include_str!("default.script");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_script_parses() {
        let steps = parse(DEFAULT_SCRIPT).expect("default script");
        assert!(steps.len() > 30);
        assert!(steps.iter().any(|s| s.action == Action::Reset));
    }

    #[test]
    fn ctrl_line_becomes_a_setup_packet() {
        let s = parse("ctrl 0x80 6 0x0100 0 18 cmp=none").unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].cmp, Cmp::None);
        assert_eq!(
            s[0].action,
            Action::Ctrl {
                setup: [0x80, 6, 0, 1, 0, 0, 18, 0],
                payload: Payload::Zero,
                index_ep: None
            }
        );
        let s = parse("ctrl 0x82 0 0 bulk-in 2").unwrap();
        assert_eq!(
            s[0].action,
            Action::Ctrl {
                setup: [0x82, 0, 0, 0, 0, 0, 2, 0],
                payload: Payload::Zero,
                index_ep: Some(EpRef::BulkIn)
            }
        );
    }

    #[test]
    fn named_endpoints_and_flags() {
        let s = parse("submit u1 bulk bulk-in 4096 short_not_ok timeout=50\n").unwrap();
        assert_eq!(s[0].timeout_ms, 50);
        assert_eq!(
            s[0].action,
            Action::Submit {
                tag: "u1".into(),
                interrupt: false,
                ep: EpRef::BulkIn,
                len: 4096,
                payload: Payload::Zero,
                flags: URB_SHORT_NOT_OK
            }
        );
    }

    #[test]
    fn bad_lines_are_errors_with_their_line_number() {
        for (text, line) in [
            ("bulk 0x81", 1),
            ("\n\nctrl 0x80 6 0 0 70000", 3),
            ("ctrl 0x80 6 0 0 2 data=00", 1),
            ("frobnicate", 1),
            ("bulk 0x02 4 data=0", 1),
            ("claim 0 cmp=maybe", 1),
            ("reset data=00", 1),
        ] {
            let e = parse(text).unwrap_err();
            assert_eq!(e.line, line, "{text:?}: {e}");
        }
    }

    #[test]
    fn mod63_restarts_at_each_packet() {
        let p = mod63(130, 64);
        assert_eq!(p[62], 62);
        assert_eq!(p[63], 0);
        assert_eq!(p[64], 0);
        assert_eq!(p[65], 1);
    }
}
