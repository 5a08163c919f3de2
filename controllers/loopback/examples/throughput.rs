//! Rough figures for the in-process bus, single-threaded: control transfers per second
//! (GET_DESCRIPTOR answered by a client through the engine) and bulk IN throughput beside a
//! plain memcpy of the same buffers. Run with `cargo run --release -p rawgadget-loopback
//! --example throughput`. Figures, not a test. The blocking gadget API with the host in another
//! thread is measured by `cargo bench -p rawgadget --bench inprocess`.
//!
//! The memcpy baseline copies between two page-aligned buffers. Two `Vec`s of 4 KiB or 64 KiB
//! from malloc lie 16 bytes apart modulo 4096, and glibc's `rep movsb` copy on AMD Zen is about
//! 20 times slower for such a pair (4K aliasing): the old baseline measured 1.2 GB/s at 4 KiB,
//! against 40-80 GB/s for the same copy between aligned buffers.

use std::time::Instant;

use rawgadget_engine::{ClientOp, Outcome};
use rawgadget_loopback::Bus;
use rawgadget_uapi::{speed::USB_SPEED_HIGH, UsbRawEpIo, UsbRawInit};
use rawgadget_udc::Urb;

fn done(o: Outcome) {
    assert!(matches!(o, Outcome::Done(ref r) if r.ret.is_ok()), "{o:?}");
}

fn main() {
    let mut bus = Bus::new();
    let init = UsbRawInit::new("dummy_udc", "dummy_udc.0", USB_SPEED_HIGH);
    done(bus.client(ClientOp::Init(Box::new(init))));
    done(bus.client(ClientOp::Run { arg: 0 }));
    done(bus.client(ClientOp::EventFetch { capacity: 8 }));
    bus.port_reset();
    bus.advance(std::time::Duration::from_millis(50));
    done(bus.client(ClientOp::EventFetch { capacity: 8 }));
    done(bus.client(ClientOp::EventFetch { capacity: 8 }));

    // control: host GET_DESCRIPTOR(DEVICE, 18), client fetches and answers with EP0_WRITE
    let setup = rawgadget_loopback::setup(0x80, 6, 0x0100, 0, 18);
    let reply = vec![0x12u8; 18];
    let n = 200_000;
    let t = Instant::now();
    for _ in 0..n {
        let id = bus.submit(Urb::control(setup, &[]));
        done(bus.client(ClientOp::EventFetch { capacity: 8 }));
        let io = UsbRawEpIo {
            ep: 0,
            flags: 0,
            length: 18,
        };
        let Outcome::Pending(op) = bus.client(ClientOp::Ep0Write {
            io,
            data: reply.clone(),
        }) else {
            panic!()
        };
        bus.take_completion(op).expect("EP0_WRITE done");
        bus.take_urb_completion(id).expect("URB done");
    }
    let dt = t.elapsed().as_secs_f64();
    println!(
        "control: {:.0} transfers/s ({n} in {dt:.3} s)",
        n as f64 / dt
    );

    // bulk IN: client EP_WRITE of `size`, host URB of `size`
    let desc = [9, 5, 0x81, 2, 0x00, 0x02, 0, 0, 0];
    done(bus.client(ClientOp::EpEnable { desc }));
    for size in [512usize, 4096, 65536] {
        let iters = (256 << 20) / size;
        let mut buf = vec![0x5au8; size];
        let mut urb_buf = vec![0u8; size];
        let t = Instant::now();
        for _ in 0..iters {
            let io = UsbRawEpIo {
                ep: 0,
                flags: 0,
                length: size as u32,
            };
            let op = match bus.client(ClientOp::EpWrite { io, data: buf }) {
                Outcome::Pending(op) => op,
                o => panic!("{o:?}"),
            };
            let id = bus.submit(Urb::bulk(0x81, urb_buf));
            let r = bus.take_completion(op).expect("EP_WRITE done");
            let u = bus.take_urb_completion(id).expect("URB done");
            assert_eq!(u.actual_length as usize, size);
            buf = match r.payload {
                rawgadget_engine::Payload::Data(d) => d,
                _ => panic!(),
            };
            buf.resize(size, 0x5a);
            urb_buf = u.buffer;
        }
        let dt = t.elapsed().as_secs_f64();
        let mb = (iters * size) as f64 / dt / 1e6;
        let mmb = memcpy(size, iters);
        println!(
            "bulk IN {size:>6} B: {mb:>9.0} MB/s; memcpy {mmb:>9.0} MB/s ({:.0}%)",
            100.0 * mb / mmb
        );
    }
}

/// `size` bytes at the start of a page, in a buffer of `fill`.
fn page_aligned(size: usize, fill: u8) -> (Vec<u8>, usize) {
    let storage = vec![fill; size + 4096];
    let start = (4096 - storage.as_ptr() as usize % 4096) % 4096;
    (storage, start)
}

/// MB/s of `n` copies of `size` bytes between page-aligned buffers: the median of 32 timed
/// chunks, so that a chunk during which the thread was preempted does not count.
fn memcpy(size: usize, n: usize) -> f64 {
    let (src, s) = page_aligned(size, 0x5a);
    let (mut dst, d) = page_aligned(size, 0);
    let per_chunk = n.div_ceil(32).max(1);
    let mut rates: Vec<f64> = (0..32)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..per_chunk {
                dst[d..d + size].copy_from_slice(std::hint::black_box(&src[s..s + size]));
                std::hint::black_box(&mut dst);
            }
            (per_chunk * size) as f64 / t.elapsed().as_secs_f64() / 1e6
        })
        .collect();
    rates.sort_by(f64::total_cmp);
    rates[rates.len() / 2]
}
