//! Asking a member of a mesh for the members it knows (`introducer peers`), as a process
//! that is no member itself: first contact with the given nodes (Hello / ServerInfo, whose
//! cookie proves we receive where we ask from), then a [`pb::MembersRequest`] to the first
//! that serves, paging through its list until every member is in.
//!
//! What comes back is checked here: replies only from the member asked, echoing our random
//! request id, within the list's bounds; every record's signature, size and freshness
//! (`mesh::listing::check_reply`). A state is the answering member's view and is not signed.
//! A member that does not list within its retries is given up for the next one that serves.

use crate::{BootstrapError, Config, Join, Seed};
use introducer_actors::backoff::Backoff;
use introducer_actors::mesh::listing::{self, Checked, Listed};
use introducer_actors::{Machine, SocketId, Transmit};
use introducer_proto::frame::{self, Decoded};
use introducer_proto::pb::{self, envelope::Kind};
use libp2p_identity::PeerId;
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How the query waits and what it accepts.
#[derive(Debug, Clone)]
pub struct QueryConfig {
    /// First contact.
    pub join: Config,
    /// Each members request is sent again after this (doubling), this many times in all.
    pub retransmit: Duration,
    pub max_tries: u32,
    /// A member not done listing within this is given up for the next (whatever it sends:
    /// one that keeps answering without ever completing its list cannot hold us).
    pub member_timeout: Duration,
    /// Records issued further ahead of our clock than this, or older than `record_ttl`,
    /// are dropped (the mesh's own bounds: members republish every 5 minutes).
    pub max_skew: Duration,
    pub record_ttl: Duration,
}

impl Default for QueryConfig {
    fn default() -> Self {
        QueryConfig {
            join: Config::default(),
            retransmit: Duration::from_millis(250),
            max_tries: 4,
            member_timeout: Duration::from_secs(60),
            max_skew: Duration::from_secs(30),
            record_ttl: Duration::from_secs(20 * 60),
        }
    }
}

/// The members one member listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    /// The member that answered (its states are its view).
    pub from: Seed,
    /// One per member, by PeerId.
    pub members: BTreeMap<PeerId, Listed>,
    /// Records it sent that did not verify (dropped).
    pub dropped_records: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MembersError {
    #[error(transparent)]
    Bootstrap(#[from] BootstrapError),
    #[error("{0} answered but is no member of a mesh (it does not serve as introducer): ask a public node")]
    NotAMember(String),
    #[error("no member listed its members ({tried}) after {tries} requests each")]
    NoListing { tried: String, tries: u32 },
}

/// The member being asked.
#[derive(Debug)]
struct Asking {
    seed: Seed,
    checked: Checked,
    total: Option<u32>,
    backoff: Backoff,
    next: Instant,
    /// Given up at this time, done or not.
    until: Instant,
}

impl Asking {
    /// The first member we have not got, if any is missing.
    fn first_missing(&self) -> Option<u32> {
        let total = self.total?;
        (0..total).find(|i| !self.checked.contains_key(i))
    }
}

/// The query: a [`Machine`] (one UDP socket), driven by the CLI over a real socket and by
/// the simulator over a virtual one.
pub struct MembersQuery {
    config: QueryConfig,
    /// Unix ms at `epoch.0`: records are checked against our clock.
    epoch: (Instant, u64),
    request_id: u64,
    join: Option<Join>,
    asking: Option<Asking>,
    /// Members that answered first contact, in the user's order, not asked yet.
    candidates: VecDeque<Seed>,
    /// Members asked that did not list.
    silent: Vec<SocketAddr>,
    transmits: VecDeque<Transmit>,
    result: Option<Result<Listing, MembersError>>,
    /// Replies that were not ours (another source, another request id, out of bounds).
    pub dropped: u64,
}

impl MembersQuery {
    /// Asks `seeds` (in order of preference). `request_id` is random (the caller's RNG);
    /// `epoch` ties `now` to Unix time (ms).
    pub fn new(config: QueryConfig, seeds: Vec<SocketAddr>, request_id: u64, epoch: (Instant, u64)) -> Self {
        let now = epoch.0;
        MembersQuery {
            join: Some(Join::new(config.join.clone(), seeds, now)),
            config,
            epoch,
            request_id,
            asking: None,
            candidates: VecDeque::new(),
            silent: Vec::new(),
            transmits: VecDeque::new(),
            result: None,
            dropped: 0,
        }
    }

    /// The listing, or why there is none; `None` while still asking.
    pub fn result(&self) -> Option<&Result<Listing, MembersError>> {
        self.result.as_ref()
    }

    fn now_ms(&self, now: Instant) -> u64 {
        self.epoch.1 + now.saturating_duration_since(self.epoch.0).as_millis() as u64
    }

    /// First contact is over: ask the first member among those that answered.
    fn joined(&mut self, now: Instant, joined: Result<Vec<Seed>, BootstrapError>) {
        let seeds = match joined {
            Ok(seeds) => seeds,
            Err(e) => return self.result = Some(Err(e.into())),
        };
        let (members, others): (Vec<Seed>, Vec<Seed>) = seeds.into_iter().partition(|s| s.introducer && s.cookie != 0);
        if members.is_empty() {
            let addrs = others.iter().map(|s| s.addr.to_string()).collect::<Vec<_>>().join(", ");
            return self.result = Some(Err(MembersError::NotAMember(addrs)));
        }
        self.candidates = members.into();
        self.ask_next(now);
    }

    /// Asks the next member, or gives up when none is left.
    fn ask_next(&mut self, now: Instant) {
        if let Some(asked) = self.asking.take() {
            self.silent.push(asked.seed.addr);
        }
        let Some(seed) = self.candidates.pop_front() else {
            let tried = self.silent.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", ");
            self.result = Some(Err(MembersError::NoListing { tried, tries: self.config.max_tries }));
            return;
        };
        let backoff = Backoff::new(self.config.retransmit).give_up_after(self.config.max_tries);
        let until = now + self.config.member_timeout;
        self.asking = Some(Asking { seed, checked: Checked::new(), total: None, backoff, next: now, until });
        self.request(now, 0);
    }

    /// Asks the member for its list from `offset` on.
    fn request(&mut self, now: Instant, offset: u32) {
        let Some(asking) = &mut self.asking else { return };
        asking.next = asking.backoff.next(now);
        let request = pb::MembersRequest { cookie: asking.seed.cookie, request_id: self.request_id, offset };
        self.transmits.push_back(Transmit::envelope(
            SocketId::PRIMARY,
            asking.seed.addr,
            Kind::MembersRequest(request),
        ));
    }

    fn handle_reply(&mut self, now: Instant, src: SocketAddr, reply: pb::MembersReply) {
        let now_ms = self.now_ms(now);
        let (skew, ttl) = (self.config.max_skew.as_millis() as u64, self.config.record_ttl.as_millis() as u64);
        let Some(asking) = self.asking.as_mut().filter(|a| a.seed.addr == src && reply.request_id == self.request_id)
        else {
            self.dropped += 1;
            return;
        };
        // Records that did not verify come back as `None`: counted in the listing, not asked
        // for again.
        let Ok((checked, _)) = listing::check_reply(&reply, now_ms, skew, ttl) else {
            self.dropped += 1;
            return;
        };
        // A list that shrank between pages: what lies past its end now is gone.
        asking.checked.retain(|i, _| *i < reply.total);
        let before = asking.checked.len();
        asking.checked.extend(checked);
        asking.total = Some(reply.total);
        // Only a reply that brought members counts as an answer: one that brings none (a
        // member that says its list goes on, and never sends it) runs the retries out.
        let progressed = asking.checked.len() > before;
        if progressed {
            asking.backoff.reset();
        }
        match asking.first_missing() {
            None => {
                let asking = self.asking.take().expect("asking");
                let dropped_records = asking.checked.values().filter(|l| l.is_none()).count() as u64;
                let members = listing::by_peer(&asking.checked);
                self.result = Some(Ok(Listing { from: asking.seed, members, dropped_records }));
            }
            // The member is done with this request: ask for the rest at once.
            Some(missing) if reply.last && progressed => self.request(now, missing),
            Some(_) => {}
        }
    }
}

impl Machine for MembersQuery {
    fn handle_datagram(&mut self, now: Instant, _socket: SocketId, src: SocketAddr, payload: &[u8]) {
        if self.result.is_some() {
            return;
        }
        match frame::decode(payload) {
            Ok(Decoded::Envelope(pb::Envelope { kind: Some(Kind::ServerInfo(info)) })) => {
                let Some(join) = &mut self.join else { return self.dropped += 1 };
                join.handle(now, src, info);
                if let Some(joined) = join.result().cloned() {
                    self.join = None;
                    self.joined(now, joined);
                }
            }
            Ok(Decoded::Envelope(pb::Envelope { kind: Some(Kind::MembersReply(reply)) })) => {
                self.handle_reply(now, src, reply)
            }
            _ => self.dropped += 1,
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        if self.result.is_some() {
            return;
        }
        if let Some(join) = &mut self.join {
            join.handle_timeout(now);
            if let Some(joined) = join.result().cloned() {
                self.join = None;
                self.joined(now, joined);
            }
            return;
        }
        let Some(asking) = &self.asking else { return };
        if now >= asking.until {
            return self.ask_next(now);
        }
        if now < asking.next {
            return;
        }
        if asking.backoff.exhausted() {
            return self.ask_next(now);
        }
        let offset = asking.first_missing().unwrap_or(0);
        self.request(now, offset);
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front().or_else(|| self.join.as_mut()?.poll_transmit())
    }

    fn poll_timeout(&self) -> Option<Instant> {
        if self.result.is_some() {
            return None;
        }
        match &self.join {
            Some(join) => join.poll_timeout(),
            None => self.asking.as_ref().map(|a| a.next.min(a.until)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{answer_hello, HELLO_SIZE};
    use introducer_actors::identity::Identity;
    use introducer_actors::mesh::listing::{Entry, MemberState};
    use prost::Message;

    const START_MS: u64 = 1_800_000_000_000;
    const COOKIE: u64 = 77;

    fn at(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn envelope(kind: Kind) -> Vec<u8> {
        frame::encode_envelope(&pb::Envelope { kind: Some(kind) })
    }

    fn record(seed: u64) -> Vec<u8> {
        Identity::from_seed(seed)
            .sign_node_record(pb::NodeRecord {
                generation: 1,
                issued_ms: START_MS,
                addrs: vec![SocketAddr::from(([198, 51, 100, seed as u8], 3478)).into()],
                introducer: true,
                relay: true,
                relay_capacity: 256,
                relay_load: seed as u32 % 3,
                ..Default::default()
            })
            .encode_to_vec()
    }

    /// A member at `addr` as the wire shows it: it answers Hello, and a members request
    /// with its cookie from `list`.
    struct FakeMember {
        addr: SocketAddr,
        introducer: bool,
        list: Vec<Entry>,
        /// Requests seen, and datagrams to lose (by their number among its replies).
        requests: Vec<pb::MembersRequest>,
        replies: usize,
        lose: Vec<usize>,
        silent_to_requests: bool,
        /// Answers every request with no members and a total that is never reached.
        endless: bool,
    }

    impl FakeMember {
        fn new(addr: &str, n: u64) -> Self {
            let list = (1..=n).map(|i| Entry { state: MemberState::Alive, signed: record(i) }).collect();
            FakeMember {
                addr: at(addr),
                introducer: true,
                list,
                requests: Vec::new(),
                replies: 0,
                lose: Vec::new(),
                silent_to_requests: false,
                endless: false,
            }
        }

        fn answer(&mut self, t: &Transmit, from: SocketAddr) -> Vec<Vec<u8>> {
            if t.dst != self.addr {
                return Vec::new();
            }
            match frame::decode(&t.payload) {
                Ok(Decoded::Envelope(pb::Envelope { kind: Some(Kind::Hello(_)) })) => {
                    let me = Identity::from_seed(900).peer_id();
                    let info = answer_hello(HELLO_SIZE, me, &[self.addr], self.introducer, from, COOKIE).unwrap();
                    vec![envelope(Kind::ServerInfo(info))]
                }
                Ok(Decoded::Envelope(pb::Envelope { kind: Some(Kind::MembersRequest(r)) })) => {
                    self.requests.push(r);
                    if r.cookie != COOKIE || self.silent_to_requests {
                        return Vec::new();
                    }
                    if self.endless {
                        let reply = pb::MembersReply {
                            request_id: r.request_id,
                            offset: r.offset,
                            total: 8192,
                            members: vec![],
                            last: true,
                        };
                        return vec![envelope(Kind::MembersReply(reply))];
                    }
                    let mut out = Vec::new();
                    for reply in listing::replies(&self.list, r.request_id, r.offset) {
                        self.replies += 1;
                        if !self.lose.contains(&self.replies) {
                            out.push(envelope(Kind::MembersReply(reply)));
                        }
                    }
                    out
                }
                _ => Vec::new(),
            }
        }
    }

    const ME: &str = "203.0.113.5:40000";

    /// Runs the query against `members` until it has a result.
    fn run(query: &mut MembersQuery, now: &mut Instant, members: &mut [FakeMember]) {
        for _ in 0..10_000 {
            while let Some(t) = query.poll_transmit() {
                for m in members.iter_mut() {
                    for answer in m.answer(&t, at(ME)) {
                        query.handle_datagram(*now, SocketId::PRIMARY, m.addr, &answer);
                    }
                }
            }
            if query.result().is_some() {
                return;
            }
            let Some(t) = query.poll_timeout() else { return };
            *now = t.max(*now);
            query.handle_timeout(*now);
        }
        panic!("the query never ended");
    }

    fn query(seeds: &[&str]) -> (MembersQuery, Instant) {
        let now = Instant::now();
        let seeds = seeds.iter().map(|s| at(s)).collect();
        (MembersQuery::new(QueryConfig::default(), seeds, 4242, (now, START_MS)), now)
    }

    /// A list longer than one request answers is paged through; a lost datagram is asked
    /// for again; replies from anyone but the member asked, or for another request, are
    /// dropped; a record that does not verify is dropped and counted, the rest listed.
    #[test]
    fn a_query_pages_through_a_long_list_and_takes_only_the_members_verified_replies() {
        let mut member = FakeMember::new("198.51.100.1:3478", 60);
        let mut tampered = member.list[10].signed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        member.list[10].signed = tampered;
        member.list[20].state = MemberState::Suspect;
        member.lose = vec![2];
        let (mut q, mut now) = query(&["198.51.100.1:3478"]);
        // Before anything was asked: a reply out of the blue, and one naming our id from elsewhere.
        let forged = pb::MembersReply { request_id: 4242, offset: 0, total: 1, members: vec![], last: true };
        q.handle_datagram(now, SocketId::PRIMARY, at("192.0.2.66:3478"), &envelope(Kind::MembersReply(forged.clone())));
        let mut members = [member];
        run(&mut q, &mut now, &mut members);
        assert_eq!(q.dropped, 1);
        let listing = q.result().unwrap().as_ref().unwrap().clone();
        assert_eq!((listing.members.len(), listing.dropped_records), (59, 1));
        assert_eq!(listing.from.addr, at("198.51.100.1:3478"));
        let suspect = Identity::from_seed(21).peer_id();
        assert_eq!(listing.members[&suspect].state, MemberState::Suspect);
        assert_eq!(listing.members[&suspect].record.addrs, [at("198.51.100.21:3478")]);
        assert!(!listing.members.contains_key(&Identity::from_seed(11).peer_id()), "tampered");
        let requests = &members[0].requests;
        assert!(requests.iter().all(|r| r.cookie == COOKIE && r.request_id == 4242), "{requests:?}");
        assert!(requests.len() >= 3, "60 members take several requests: {requests:?}");
        // Past the end, nothing more is taken, from the member either.
        q.handle_datagram(now, SocketId::PRIMARY, at("198.51.100.1:3478"), &envelope(Kind::MembersReply(forged)));
        assert!(q.poll_transmit().is_none());
    }

    /// A node that answers Hello but does not serve is no member to ask; a member that
    /// answers Hello but never lists is given up for the next one; nobody answering is the
    /// bootstrap error.
    #[test]
    fn a_query_fails_clearly_without_a_member_that_lists() {
        let mut not_member = FakeMember::new("198.51.100.1:3478", 3);
        not_member.introducer = false;
        let (mut q, mut now) = query(&["198.51.100.1:3478"]);
        run(&mut q, &mut now, &mut [not_member]);
        assert!(matches!(q.result(), Some(Err(MembersError::NotAMember(a))) if a == "198.51.100.1:3478"));

        let mut mute = FakeMember::new("198.51.100.1:3478", 3);
        mute.silent_to_requests = true;
        let good = FakeMember::new("198.51.100.2:3478", 3);
        let (mut q, mut now) = query(&["198.51.100.1:3478", "198.51.100.2:3478"]);
        let mut members = [mute, good];
        run(&mut q, &mut now, &mut members);
        let listing = q.result().unwrap().as_ref().unwrap();
        assert_eq!((listing.from.addr, listing.members.len()), (at("198.51.100.2:3478"), 3));
        assert_eq!(members[0].requests.len(), 4, "asked four times before moving on");

        let mut mute = FakeMember::new("198.51.100.1:3478", 3);
        mute.silent_to_requests = true;
        let (mut q, mut now) = query(&["198.51.100.1:3478"]);
        run(&mut q, &mut now, &mut [mute]);
        assert!(matches!(q.result(), Some(Err(MembersError::NoListing { .. }))), "{:?}", q.result());

        // A member that keeps saying its list goes on, and never sends it, is given up.
        let mut liar = FakeMember::new("198.51.100.1:3478", 3);
        liar.endless = true;
        let (mut q, mut now) = query(&["198.51.100.1:3478"]);
        let started = now;
        run(&mut q, &mut now, &mut [liar]);
        assert!(matches!(q.result(), Some(Err(MembersError::NoListing { .. }))), "{:?}", q.result());
        assert!(now - started < Duration::from_secs(61), "{:?}", now - started);

        let (mut q, mut now) = query(&["198.51.100.9:3478"]);
        run(&mut q, &mut now, &mut []);
        assert!(matches!(q.result(), Some(Err(MembersError::Bootstrap(BootstrapError::Unreachable { .. })))));
    }
}
