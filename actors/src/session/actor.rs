//! The session actor: one [`Session`] per connected peer, found by its path address.

use super::{Config, Event, SendError, Session};
use crate::driver::{MachineActor, Protocol};
use crate::punch::{Path, Strategy};
use crate::socket::{Inbound, Payload};
use crate::{SocketId, Transmit};
use libp2p_identity::PeerId;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

pub type SessionActor = MachineActor<Sessions>;

pub struct Sessions {
    config: Config,
    by_remote: HashMap<SocketAddr, Session>,
    by_peer: HashMap<PeerId, SocketAddr>,
    /// Session traffic from addresses with no session.
    pub dropped_unknown_source: u64,
}

impl Sessions {
    pub fn new(config: Config) -> Self {
        Sessions { config, by_remote: HashMap::new(), by_peer: HashMap::new(), dropped_unknown_source: 0 }
    }

    /// Opens (or replaces) the session with `peer` over the path a punch proved.
    pub fn open(&mut self, now: Instant, peer: PeerId, remote: SocketAddr, path: Path, strategy: Strategy) {
        if let Some(old) = self.by_peer.insert(peer, remote) {
            self.by_remote.remove(&old);
        }
        let session = Session::new(self.config.clone(), peer, SocketId::PRIMARY, remote, path, strategy, now);
        self.by_remote.insert(remote, session);
    }

    pub fn get_mut(&mut self, peer: &PeerId) -> Option<&mut Session> {
        self.by_remote.get_mut(self.by_peer.get(peer)?)
    }

    pub fn ping(&mut self, now: Instant, peer: &PeerId) -> Result<u64, SendError> {
        Ok(self.get_mut(peer).ok_or(SendError::Closed)?.ping(now))
    }

    pub fn send(&mut self, now: Instant, peer: &PeerId, payload: &[u8]) -> Result<(), SendError> {
        self.get_mut(peer).ok_or(SendError::Closed)?.send_data(now, payload)
    }
}

impl Protocol for Sessions {
    type Event = (PeerId, Event);
    fn handle_inbound(&mut self, inbound: Inbound) {
        let Payload::Envelope(kind) = inbound.payload else { return };
        match self.by_remote.get_mut(&inbound.src) {
            Some(session) => session.handle(inbound.now, inbound.src, kind),
            None => self.dropped_unknown_source += 1,
        }
    }
    fn handle_timeout(&mut self, now: Instant) {
        for session in self.by_remote.values_mut().filter(|s| s.poll_timeout().is_some_and(|t| t <= now)) {
            session.handle_timeout(now);
        }
    }
    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.by_remote.values_mut().find_map(Session::poll_transmit)
    }
    fn poll_event(&mut self) -> Option<(PeerId, Event)> {
        let event = self.by_remote.values_mut().find_map(|s| s.poll_event().map(|e| (s.peer(), e)));
        if event.is_none() {
            let by_peer = &mut self.by_peer;
            self.by_remote.retain(|remote, s| {
                if s.is_closed() && by_peer.get(&s.peer()) == Some(remote) {
                    by_peer.remove(&s.peer());
                }
                !s.is_closed()
            });
        }
        event
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.by_remote.values().filter_map(Session::poll_timeout).min()
    }
}
