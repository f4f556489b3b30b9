//! The session actor: one [`Session`] per connected peer, found by its path address.

use super::{Config, Event, SendError, Session};
use crate::driver::{MachineActor, Protocol};
use crate::punch::{Path, Strategy};
use crate::socket::{Inbound, Payload};
use crate::{SocketId, Transmit};
use libp2p_identity::PeerId;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Datagrams held for a session about to open, at most, and for how long.
///
/// The peer may send its first datagram the moment it has our punch acknowledgement,
/// which can arrive before our own punch machine has told us the path is proven; a
/// few such datagrams are kept briefly rather than lost.
const EARLY_MAX: usize = 16;
const EARLY_TTL: Duration = Duration::from_secs(2);

pub type SessionActor = MachineActor<Sessions>;

pub struct Sessions {
    config: Config,
    by_remote: HashMap<SocketAddr, Session>,
    by_peer: HashMap<PeerId, SocketAddr>,
    early: VecDeque<Inbound>,
    /// Session traffic from addresses with no session (after the early window).
    pub dropped_unknown_source: u64,
}

impl Sessions {
    pub fn new(config: Config) -> Self {
        Sessions {
            config,
            by_remote: HashMap::new(),
            by_peer: HashMap::new(),
            early: VecDeque::new(),
            dropped_unknown_source: 0,
        }
    }

    /// Opens (or replaces) the session with `peer` over the path a punch proved.
    pub fn open(&mut self, now: Instant, peer: PeerId, remote: SocketAddr, path: Path, strategy: Strategy) {
        if let Some(old) = self.by_peer.insert(peer, remote) {
            self.by_remote.remove(&old);
        }
        let mut session = Session::new(self.config.clone(), peer, SocketId::PRIMARY, remote, path, strategy, now);
        for early in std::mem::take(&mut self.early) {
            match early.payload {
                Payload::Envelope(kind) if early.src == remote => session.handle(now, early.src, kind),
                _ => self.early.push_back(early),
            }
        }
        self.by_remote.insert(remote, session);
    }

    fn hold_early(&mut self, inbound: Inbound) {
        while self.early.front().is_some_and(|e| inbound.now.saturating_duration_since(e.now) > EARLY_TTL) {
            self.early.pop_front();
            self.dropped_unknown_source += 1;
        }
        if self.early.len() >= EARLY_MAX {
            self.dropped_unknown_source += 1;
            tracing::debug!(src = %inbound.src, "dropped session traffic from no session's address");
            return;
        }
        self.early.push_back(inbound);
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
        match (self.by_remote.get_mut(&inbound.src), inbound.payload) {
            (Some(session), Payload::Envelope(kind)) => session.handle(inbound.now, inbound.src, kind),
            (None, payload @ Payload::Envelope(_)) => self.hold_early(Inbound { payload, ..inbound }),
            (_, Payload::Stun(_)) => {}
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;
    use introducer_proto::pb::{self, envelope::Kind};

    fn ping_from(src: SocketAddr, now: Instant) -> Inbound {
        Inbound { now, socket: SocketId::PRIMARY, src, len: 4, payload: Payload::Envelope(Kind::Ping(pb::Ping { seq: 0 })) }
    }

    #[test]
    fn a_ping_that_beats_the_session_open_is_answered_when_it_opens() {
        let now = Instant::now();
        let peer: SocketAddr = "203.0.113.2:5000".parse().unwrap();
        let mut sessions = Sessions::new(Config::default());
        sessions.handle_inbound(ping_from(peer, now));
        assert!(sessions.poll_transmit().is_none());
        sessions.open(now, Identity::from_seed(1).peer_id(), peer, Path::Direct, Strategy::SimultaneousOpen);
        let pong = sessions.poll_transmit().expect("the held ping is answered");
        assert_eq!(pong.dst, peer);
        assert_eq!(sessions.dropped_unknown_source, 0);
    }

    #[test]
    fn early_datagrams_are_bounded_in_count_and_age() {
        let now = Instant::now();
        let mut sessions = Sessions::new(Config::default());
        for i in 0..EARLY_MAX as u16 + 4 {
            sessions.handle_inbound(ping_from(SocketAddr::from(([192, 0, 2, 1], i)), now));
        }
        assert_eq!(sessions.dropped_unknown_source, 4);
        sessions.handle_inbound(ping_from("192.0.2.9:1".parse().unwrap(), now + EARLY_TTL * 2));
        assert_eq!(sessions.dropped_unknown_source, 4 + EARLY_MAX as u64);
        assert_eq!(sessions.early.len(), 1);
    }
}
