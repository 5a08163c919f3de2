//! The in-process backend's buffer handover and same-thread dispatch, through the gadget API
//! with the in-process host. Every wait is ended by an action; timeouts are safety nets only.

use std::ops::ControlFlow;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use rawgadget::inprocess::{InlineEvents, InlineTransfers};
use rawgadget::mock::MockBackend;
use rawgadget::{
    has_in_data_stage, Endpoint, EndpointAddress, EndpointDescriptor, Errno, Event, Gadget,
    InProcess, IoFlags, Speed, TransferType,
};
use rawgadget_loopback::{Host, HostConfig, HostPort, SharedBus, Threaded};
use rawgadget_udc::{Urb, UrbFlags};

const LONG: Duration = Duration::from_secs(30);

fn bulk(address: u8) -> EndpointDescriptor {
    EndpointDescriptor::new(EndpointAddress(address), TransferType::Bulk, 512, 0)
}

/// A gadget on a fresh in-process bus, past the host's port reset, with bulk IN 0x81 and
/// bulk OUT 0x02 enabled. Its events are left queued (fewer than raw gadget's limit of 16).
fn running() -> (Gadget, Threaded, Endpoint, Endpoint) {
    let (backend, bus) = InProcess::new();
    let gadget = Gadget::builder()
        .speed(Speed::High)
        .build(Arc::new(backend))
        .expect("INIT");
    gadget.run().expect("RUN");
    let mut port = Threaded::new(bus);
    let mut host = Host::new(HostConfig::default());
    host.wait_connect(&mut port).expect("connected");
    host.port_reset(&mut port).expect("port enabled");
    let ep_in = gadget.enable(&bulk(0x81)).expect("EP_ENABLE in");
    let ep_out = gadget.enable(&bulk(0x02)).expect("EP_ENABLE out");
    (gadget, port, ep_in, ep_out)
}

fn bus(port: &Threaded) -> &Arc<SharedBus> {
    port.shared()
}

/// A host wait that returns at once: it runs the inline steps until they are idle.
fn run_steps(port: &Threaded) {
    let _ = port.shared().wait_for(Duration::ZERO, |_| None::<()>);
}

/// A 64 KiB IN transfer through `write_owned` moves no byte: the host receives the very
/// allocation the gadget wrote from, and the gadget gets the URB's buffer back to reuse.
#[test]
fn owned_write_hands_the_buffer_to_the_host() {
    let (_gadget, mut port, ep_in, _) = running();
    let data: Vec<u8> = (0..65536u32).map(|i| (i % 251) as u8).collect();
    let gadget_ptr = data.as_ptr() as usize;
    let urb_buf = vec![0u8; 65536];
    let urb_ptr = urb_buf.as_ptr() as usize;
    let writer = thread::spawn(move || ep_in.write_owned(data));
    let id = port.submit(Urb::bulk(0x81, urb_buf));
    let c = port.wait(id, LONG).expect("given back");
    let (sent, back) = writer.join().unwrap();
    assert_eq!(sent.unwrap(), 65536);
    assert_eq!(c.status, Ok(()));
    assert_eq!(c.actual_length, 65536);
    assert!(c
        .data()
        .iter()
        .enumerate()
        .all(|(i, &b)| b == (i % 251) as u8));
    assert_eq!(c.buffer.as_ptr() as usize, gadget_ptr, "handed over");
    assert_eq!((back.as_ptr() as usize, back.len()), (urb_ptr, 65536));
}

/// A 64 KiB OUT transfer through `read_owned`: the gadget receives the host's allocation.
#[test]
fn owned_read_takes_the_host_buffer() {
    let (_gadget, mut port, _, ep_out) = running();
    let sent: Vec<u8> = (0..65536u32).map(|i| (i % 241) as u8).collect();
    let urb_buf = sent.clone();
    let urb_ptr = urb_buf.as_ptr() as usize;
    let reader = thread::spawn(move || ep_out.read_owned(vec![0; 65536]));
    let id = port.submit(Urb::bulk(0x02, urb_buf));
    let c = port.wait(id, LONG).expect("given back");
    assert_eq!((c.status, c.actual_length), (Ok(()), 65536));
    let (n, got) = reader.join().unwrap();
    assert_eq!(n.unwrap(), 65536);
    assert_eq!(got, sent);
    assert_eq!(got.as_ptr() as usize, urb_ptr, "handed over");
}

/// contract D8: a short packet ends the gadget's request; `read_owned` returns the buffer cut
/// to the bytes received (copied: the move covers neither buffer whole).
#[test]
fn owned_read_of_a_short_transfer_is_cut_to_it() {
    let (_gadget, mut port, _, ep_out) = running();
    let reader = thread::spawn(move || ep_out.read_owned(vec![0xee; 4096]));
    let id = port.submit(Urb::bulk(0x02, vec![5; 100]));
    assert_eq!(port.wait(id, LONG).expect("given back").actual_length, 100);
    let (n, got) = reader.join().unwrap();
    assert_eq!(n.unwrap(), 100);
    assert_eq!(got, vec![5; 100]);
}

/// contract D31: cancelling an owned write still queued ends it with EINTR and gives the
/// buffer back.
#[test]
fn d31_cancelled_owned_write_returns_eintr_and_the_buffer() {
    let (_gadget, _port, ep_in, _) = running();
    let (tx, rx) = mpsc::channel();
    let writer = {
        let ep = ep_in.clone();
        thread::spawn(move || {
            tx.send(()).unwrap();
            ep.write_owned(vec![1; 512])
        })
    };
    rx.recv().unwrap();
    // returns once no call is blocked; a cancel that comes first is sticky (EINTR at once)
    ep_in.cancel();
    let (r, back) = writer.join().unwrap();
    assert_eq!(r.unwrap_err().errno(), Errno::EINTR);
    assert_eq!(back.len(), 512);
}

/// The owned methods of a backend without handover (the default implementation) go through
/// the slice calls: the same buffer comes back, a read's cut to what arrived.
#[test]
fn default_owned_methods_use_the_slice_calls() {
    let mock = MockBackend::default();
    let g = Gadget::builder()
        .build(Arc::new(mock.clone()))
        .expect("INIT");
    g.run().unwrap();
    assert_eq!(g.next_event().unwrap(), Event::Connect);
    let ep_in = g.enable(&bulk(0x81)).unwrap();
    let ep_out = g.enable(&bulk(0x02)).unwrap();
    let data = vec![4u8; 300];
    let ptr = data.as_ptr() as usize;
    let writer = thread::spawn(move || ep_in.write_owned(data));
    assert_eq!(mock.host_in(0x81).unwrap(), vec![4u8; 300]);
    let (n, back) = writer.join().unwrap();
    assert_eq!((n.unwrap(), back.as_ptr() as usize), (300, ptr));
    let reader = thread::spawn(move || ep_out.read_owned(vec![0; 512]));
    mock.host_out(0x02, &[6; 10]).unwrap();
    let (n, got) = reader.join().unwrap();
    assert_eq!((n.unwrap(), got), (10, vec![6; 10]));
    // a read on an IN endpoint is refused before the backend; the buffer comes back
    let (r, back) = g.enable(&bulk(0x86)).unwrap().read_owned(vec![0; 8]);
    assert!(r.is_err());
    assert_eq!(back.len(), 8);
}

/// Same-thread dispatch: the event handler answers control requests in the host's thread,
/// through the blocking ep0 calls, with the same results as an event thread.
#[test]
fn inline_events_answer_control_requests_in_the_host_thread() {
    let (gadget, mut port, _, _) = running();
    let handler_threads = Arc::new(Mutex::new(Vec::new()));
    let events = {
        let (g, threads) = (gadget.clone(), handler_threads.clone());
        InlineEvents::start(bus(&port), move |ev| {
            threads.lock().unwrap().push(thread::current().id());
            if let Event::Control(s) = ev {
                let _ = match (s.request_type, s.request) {
                    (0xc0, 0x5c) => g.ep0_reply(&s, b"inline").map(drop),
                    (0x40, 0x5b) if !has_in_data_stage(&s) => g.ep0_ack(),
                    _ => g.ep0_stall(),
                };
            }
            ControlFlow::Continue(())
        })
    };
    let mut host = Host::new(HostConfig::default());
    for _ in 0..3 {
        assert_eq!(
            host.control_in(&mut port, 0xc0, 0x5c, 0, 0, 64).unwrap(),
            b"inline"
        );
        host.control_out(&mut port, 0x40, 0x5b, 0, 0, &[]).unwrap();
    }
    // anything else is stalled by the handler (EPIPE for the host)
    assert_eq!(
        host.control_in(&mut port, 0xc0, 0x01, 0, 0, 4),
        Err(Errno::EPIPE)
    );
    let threads = handler_threads.lock().unwrap();
    // the queued CONNECT, RESET ... first, then the 7 SETUPs
    assert!(threads.len() >= 7, "{}", threads.len());
    assert!(threads.iter().all(|&t| t == thread::current().id()));
    assert_eq!(events.ended(), None);
}

/// A call in the handler that would wait for the host, which is the handler's own thread,
/// fails with EINTR instead of deadlocking; the request can still be answered.
#[test]
fn inline_handler_call_that_needs_the_host_is_interrupted() {
    let (gadget, mut port, ep_in, _) = running();
    let seen = Arc::new(Mutex::new(None));
    let _events = {
        let (g, seen) = (gadget.clone(), seen.clone());
        InlineEvents::start(bus(&port), move |ev| {
            if let Event::Control(_) = ev {
                // no IN URB is queued on 0x81: only the host could complete this (512 bytes:
                // more than dummy's IN FIFO completes at once, contract D13)
                *seen.lock().unwrap() = Some(ep_in.write(&[1; 512]).map_err(|e| e.errno()));
                let _ = g.ep0_ack();
            }
            ControlFlow::Continue(())
        })
    };
    let mut host = Host::new(HostConfig::default());
    host.control_out(&mut port, 0x40, 0x5b, 0, 0, &[]).unwrap();
    assert_eq!(*seen.lock().unwrap(), Some(Err(Errno::EINTR)));
}

/// Closing the gadget ends the pending EVENT_FETCH with ESHUTDOWN (`release()` ends every
/// blocked call), which ends the dispatch.
#[test]
fn inline_events_end_when_the_gadget_closes() {
    let (gadget, port, ep_in, ep_out) = running();
    let events = InlineEvents::start(bus(&port), |_| ControlFlow::Continue(()));
    // fetches the queued events, then one fetch stays pending
    run_steps(&port);
    assert_eq!(events.ended(), None);
    drop((gadget, ep_in, ep_out));
    run_steps(&port);
    assert_eq!(events.ended(), Some(Err(Errno::ESHUTDOWN)));
}

/// Same-thread transfers: an IN stream and an OUT stream, each run by the host's waits,
/// move their data in order and stop when the handler says so.
#[test]
fn inline_transfers_stream_in_and_out() {
    let (_gadget, mut port, ep_in, ep_out) = running();
    let mut next = 1u8;
    let writer = InlineTransfers::start(
        bus(&port),
        &ep_in,
        IoFlags::NONE,
        vec![0; 1000],
        move |r, mut buf| {
            assert_eq!(r.unwrap(), 1000);
            next += 1;
            buf.fill(next);
            (next <= 3).then_some(buf)
        },
    );
    let received = Arc::new(Mutex::new(Vec::new()));
    let reader = {
        let received = received.clone();
        InlineTransfers::start(
            bus(&port),
            &ep_out,
            IoFlags::NONE,
            vec![0; 512],
            move |r, mut buf| {
                assert_eq!(r.unwrap(), buf.len());
                received.lock().unwrap().push(buf.clone());
                buf.resize(512, 0);
                Some(buf)
            },
        )
    };
    let mut host = Host::new(HostConfig::default());
    let flags = UrbFlags::default();
    // the first buffer is all zeroes, then the handler fills 2 and 3
    for want in [0u8, 2, 3] {
        let r = host.bulk_in(&mut port, 0x81, 1024, flags, LONG);
        assert_eq!(r.status, Ok(()));
        assert_eq!(r.data, vec![want; 1000], "a short packet ends the URB");
    }
    assert!(writer.ended());
    let sent = [vec![0x11u8; 512], vec![0x22u8; 30]];
    for data in &sent {
        let r = host.bulk_out(&mut port, 0x02, data.clone(), flags, LONG);
        assert_eq!((r.status, r.actual as usize), (Ok(()), data.len()));
    }
    // the last completion reaches the handler at the host's next wait
    run_steps(&port);
    assert_eq!(*received.lock().unwrap(), sent);
    drop(reader);
}

/// contract D31: dropping a stream cancels its pending transfer, so the endpoint takes a
/// blocking call again (no EBUSY from a transfer left in flight).
#[test]
fn dropping_inline_transfers_frees_the_endpoint() {
    let (_gadget, mut port, _, ep_out) = running();
    let stream = InlineTransfers::start(
        bus(&port),
        &ep_out,
        IoFlags::NONE,
        vec![0; 512],
        |_, buf| Some(buf),
    );
    // the host's wait runs the step, which queues the read
    run_steps(&port);
    let blocked = ep_out.read(512);
    assert_eq!(blocked.unwrap_err().errno(), Errno::EBUSY, "one in flight");
    drop(stream);
    let reader = thread::spawn(move || ep_out.read(512));
    let r = Host::new(HostConfig::default()).bulk_out(
        &mut port,
        0x02,
        vec![8; 512],
        UrbFlags::default(),
        LONG,
    );
    assert_eq!(r.status, Ok(()));
    assert_eq!(reader.join().unwrap().unwrap(), vec![8; 512]);
}
