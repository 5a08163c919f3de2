//! A scripted controller for tests and fuzzing: it keeps queued requests until the test
//! completes them, and returns whatever errors the test injects. It has dummy_udc's endpoint
//! list (contract D1) but none of its transfer rules; the controller model implements those.

use alloc::collections::BTreeSet;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use rawgadget_uapi::{dummy_udc, Errno, Speed};

use crate::udc::{Binding, Completion, EpId, Request, RequestId, Udc, UdcEndpoint};

/// The 24 endpoints of dummy_udc in list order (contract D1), from the shared reference table.
pub fn dummy_endpoints() -> Vec<UdcEndpoint> {
    dummy_udc::ENDPOINTS
        .iter()
        .map(|(name, caps)| UdcEndpoint {
            name: name.to_string(),
            caps: *caps,
            maxpacket_limit: dummy_udc::MAXPACKET_LIMIT,
            max_streams: dummy_udc::MAX_STREAMS,
        })
        .collect()
}

/// What the mock was asked to do, in order.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Call {
    Bind,
    Unbind,
    EpEnable(u16),
    EpDisable(u16),
    Queue(EpId),
    Dequeue(EpId),
    SetHalt(EpId, bool),
    SetWedge(u16),
    VbusDraw(u32),
    SetConfigured,
}

/// See the module doc.
#[derive(Debug)]
pub struct MockUdc {
    pub driver_name: String,
    pub device_name: String,
    pub endpoints: Vec<UdcEndpoint>,
    pub max_speed: Speed,
    pub bind_error: Option<Errno>,
    pub enable_error: Option<Errno>,
    pub queue_error: Option<Errno>,
    pub halt_error: Option<Errno>,
    pub bound: bool,
    pub enabled: BTreeSet<u16>,
    /// Requests queued and not completed, in queue order.
    pub queued: Vec<(EpId, Request)>,
    pub calls: Vec<Call>,
}

impl Default for MockUdc {
    fn default() -> Self {
        MockUdc {
            driver_name: "dummy_udc".to_string(),
            device_name: "dummy_udc.0".to_string(),
            endpoints: dummy_endpoints(),
            max_speed: Speed::High,
            bind_error: None,
            enable_error: None,
            queue_error: None,
            halt_error: None,
            bound: false,
            enabled: BTreeSet::new(),
            queued: Vec::new(),
            calls: Vec::new(),
        }
    }
}

impl MockUdc {
    /// Completes the oldest request queued on `ep`: `data` is what an OUT request receives
    /// (truncated to its room); an IN request reports `actual` as given.
    pub fn complete(
        &mut self,
        ep: EpId,
        status: Result<(), Errno>,
        actual: u32,
        data: &[u8],
    ) -> Option<Completion> {
        let pos = self.queued.iter().position(|(e, _)| *e == ep)?;
        let (_, mut req) = self.queued.remove(pos);
        let n = data.len().min(req.buf.len());
        req.buf[..n].copy_from_slice(&data[..n]);
        Some(Completion {
            ep,
            id: req.id,
            status,
            actual,
            buf: req.buf,
        })
    }

    /// The id of the oldest request queued on `ep`.
    pub fn queued_id(&self, ep: EpId) -> Option<RequestId> {
        self.queued
            .iter()
            .find(|(e, _)| *e == ep)
            .map(|(_, r)| r.id)
    }
}

impl Udc for MockUdc {
    fn bind(&mut self, driver: &[u8], device: &[u8], _speed: Speed) -> Result<Binding, Errno> {
        self.calls.push(Call::Bind);
        if let Some(e) = self.bind_error {
            return Err(e);
        }
        if self.bound
            || driver != self.driver_name.as_bytes()
            || device != self.device_name.as_bytes()
        {
            return Err(Errno::EBUSY);
        }
        self.bound = true;
        Ok(Binding {
            endpoints: self.endpoints.clone(),
            max_speed: self.max_speed,
        })
    }

    fn unbind(&mut self) {
        self.calls.push(Call::Unbind);
        self.bound = false;
    }

    fn ep_enable(&mut self, ep: u16, _desc: &[u8; 9]) -> Result<(), Errno> {
        self.calls.push(Call::EpEnable(ep));
        if let Some(e) = self.enable_error {
            return Err(e);
        }
        self.enabled.insert(ep);
        Ok(())
    }

    fn ep_disable(&mut self, ep: u16) -> Result<(), Errno> {
        self.calls.push(Call::EpDisable(ep));
        if self.enabled.remove(&ep) {
            Ok(())
        } else {
            Err(Errno::EINVAL)
        }
    }

    fn queue(&mut self, ep: EpId, req: Request) -> Result<(), (Errno, Request)> {
        self.calls.push(Call::Queue(ep));
        if let Some(e) = self.queue_error {
            return Err((e, req));
        }
        self.queued.push((ep, req));
        Ok(())
    }

    fn dequeue(&mut self, ep: EpId, id: RequestId) -> Option<Completion> {
        self.calls.push(Call::Dequeue(ep));
        let pos = self
            .queued
            .iter()
            .position(|(e, r)| *e == ep && r.id == id)?;
        let (_, req) = self.queued.remove(pos);
        Some(Completion {
            ep,
            id,
            status: Err(Errno::ECONNRESET),
            actual: 0,
            buf: req.buf,
        })
    }

    fn set_halt(&mut self, ep: EpId, halt: bool) -> Result<(), Errno> {
        self.calls.push(Call::SetHalt(ep, halt));
        match self.halt_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn set_wedge(&mut self, ep: u16) -> Result<(), Errno> {
        self.calls.push(Call::SetWedge(ep));
        Ok(())
    }

    fn vbus_draw(&mut self, ma: u32) {
        self.calls.push(Call::VbusDraw(ma));
    }

    fn set_configured(&mut self) {
        self.calls.push(Call::SetConfigured);
    }
}
