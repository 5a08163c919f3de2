//! Key events from evdev (`/dev/input/eventN`) turned back into text, to check that a USB keyboard
//! on the gadget side typed what it was told, as the guest's HID stack (usbhid, hid-generic, evdev)
//! received it.

use std::fs;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};

/// `struct input_event` on 64-bit: a timeval, then type, code, value.
const EVENT_SIZE: usize = 24;
const EV_SYN: u16 = 0;
const EV_KEY: u16 = 1;
const EV_LED: u16 = 0x11;
const SYN_REPORT: u16 = 0;
const LED_NUML: u16 = 0;
const KEY_LEFTSHIFT: u16 = 42;
const KEY_RIGHTSHIFT: u16 = 54;

/// One `struct input_event` with a zero timestamp (the kernel stamps injected events itself).
fn input_event(ty: u16, code: u16, value: i32) -> [u8; EVENT_SIZE] {
    let mut ev = [0u8; EVENT_SIZE];
    ev[16..18].copy_from_slice(&ty.to_ne_bytes());
    ev[18..20].copy_from_slice(&code.to_ne_bytes());
    ev[20..24].copy_from_slice(&value.to_ne_bytes());
    ev
}

/// The US-layout character of a key code, unshifted and shifted (`linux/input-event-codes.h`).
pub fn key_char(code: u16) -> Option<(char, char)> {
    const ROW1: &str = "1!2@3#4$5%6^7&8*9(0)-_=+";
    const ROW2: &str = "qQwWeErRtTyYuUiIoOpP[{]}";
    const ROW3: &str = "aAsSdDfFgGhHjJkKlL;:'\"`~";
    const ROW4: &str = "zZxXcCvVbBnNmM,<.>/?";
    let pair = |row: &str, i: usize| {
        let v: Vec<char> = row.chars().collect();
        Some((v[2 * i], v[2 * i + 1]))
    };
    match code {
        2..=13 => pair(ROW1, (code - 2) as usize),
        15 => Some(('\t', '\t')),
        16..=27 => pair(ROW2, (code - 16) as usize),
        28 => Some(('\n', '\n')),
        30..=41 => pair(ROW3, (code - 30) as usize),
        43 => Some(('\\', '|')),
        44..=53 => pair(ROW4, (code - 44) as usize),
        57 => Some((' ', ' ')),
        _ => None,
    }
}

/// Turns a sequence of (code, value) key events into text: presses of printable keys, shifted while
/// a shift key is held. Autorepeat (value 2) is ignored.
#[derive(Debug, Default)]
pub struct KeyDecoder {
    shift: bool,
    pub text: String,
}

impl KeyDecoder {
    pub fn feed(&mut self, code: u16, value: i32) {
        if code == KEY_LEFTSHIFT || code == KEY_RIGHTSHIFT {
            self.shift = value != 0;
            return;
        }
        if value != 1 {
            return;
        }
        if let Some((lower, upper)) = key_char(code) {
            self.text.push(if self.shift { upper } else { lower });
        }
    }
}

/// The evdev node of the input device that sits under `usb_sysfs` (a USB device's sysfs directory).
pub fn event_node_under(usb_sysfs: &Path) -> Option<PathBuf> {
    for e in fs::read_dir("/sys/class/input").ok()?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("event") {
            continue;
        }
        if let Ok(real) = fs::canonicalize(e.path()) {
            if real.starts_with(usb_sysfs) {
                return Some(PathBuf::from("/dev/input").join(name));
            }
        }
    }
    None
}

/// Waits for the evdev node of the keyboard under `usb_sysfs`.
pub fn wait_event_node(usb_sysfs: &Path, timeout: Duration) -> Result<PathBuf> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(p) = event_node_under(usb_sysfs) {
            if p.exists() {
                return Ok(p);
            }
        }
        if Instant::now() >= deadline {
            return Err(anyhow!(
                "no /dev/input/event* under {} after {timeout:?}",
                usb_sysfs.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Reads key events from `node` until `expected_len` characters were typed, or nothing arrives for
/// `idle`, or `total` passes. Returns the text.
pub fn read_text(
    node: &Path,
    expected_len: usize,
    idle: Duration,
    total: Duration,
) -> Result<String> {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(node)?;
    // Turn Num Lock on: the first LED change reaches the keyboard as a SET_REPORT, which a keyboard
    // that waits for the host (rather than typing as soon as it is configured, when only the VT's
    // keyboard handler is listening) can take as its cue.
    {
        use std::io::Write;
        let mut events = Vec::with_capacity(2 * EVENT_SIZE);
        events.extend_from_slice(&input_event(EV_LED, LED_NUML, 1));
        events.extend_from_slice(&input_event(EV_SYN, SYN_REPORT, 0));
        f.write_all(&events)?;
    }
    let mut dec = KeyDecoder::default();
    let start = Instant::now();
    let mut last = Instant::now();
    let mut buf = [0u8; EVENT_SIZE * 64];
    while dec.text.chars().count() < expected_len {
        let now = Instant::now();
        if now.duration_since(start) >= total || now.duration_since(last) >= idle {
            break;
        }
        if !sys::poll_in(f.as_raw_fd(), 100)? {
            continue;
        }
        let n = f.read(&mut buf)?;
        last = Instant::now();
        for ev in buf[..n - n % EVENT_SIZE].chunks_exact(EVENT_SIZE) {
            let ty = u16::from_ne_bytes([ev[16], ev[17]]);
            let code = u16::from_ne_bytes([ev[18], ev[19]]);
            let value = i32::from_ne_bytes([ev[20], ev[21], ev[22], ev[23]]);
            if ty == EV_KEY {
                dec.feed(code, value);
            }
        }
    }
    Ok(dec.text)
}

#[allow(unsafe_code)]
mod sys {
    /// Waits up to `ms` for the fd to be readable.
    pub fn poll_in(fd: i32, ms: i32) -> std::io::Result<bool> {
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                return Ok(false);
            }
            return Err(e);
        }
        Ok(n > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoder_applies_shift_and_ignores_releases_and_repeats() {
        let mut d = KeyDecoder::default();
        // "Hi!\n": shift+h, i, shift+1, enter
        for (c, v) in [
            (42, 1),
            (35, 1),
            (35, 0),
            (42, 0),
            (23, 1),
            (23, 2),
            (23, 0),
            (54, 1),
            (2, 1),
            (2, 0),
            (54, 0),
            (28, 1),
        ] {
            d.feed(c, v);
        }
        assert_eq!(d.text, "Hi!\n");
    }

    #[test]
    fn every_printable_ascii_char_has_a_key() {
        for ch in (0x20u8..0x7f).map(char::from) {
            let found = (0..128u16).any(|c| key_char(c).is_some_and(|(l, u)| l == ch || u == ch));
            assert!(found, "{ch:?}");
        }
    }
}
