//! The mesh: the public nodes know each other by SWIM-style gossip, and each says what it
//! is in a signed node record.
//!
//! Membership is foca's (sans-IO SWIM with suspicion and infection-style dissemination),
//! chosen over writing SWIM by hand: it is maintained, fits this crate's machine style
//! (`send_to` / `submit_after` / `notify`) and lets us bring our own identity, wire format
//! and broadcasts. What foca leaves to us, and this module adds:
//! - **Who speaks.** Every datagram is a [`pb::Gossip`] signed by its sender for one
//!   receiver, fresh within `max_skew`; a datagram whose SWIM header names another sender
//!   than the signer is dropped. So nobody speaks for a member but the member.
//! - **Where we send.** A member is sent SWIM traffic at an address only once it echoed
//!   our token from there (it receives there). Before that it gets a bare Gossip — no
//!   payload, at most one a second per address, and as an answer never larger than what
//!   came in — so no member can aim the mesh's traffic at an address nobody verified.
//!   What foca sends there meanwhile waits for the proof (2 s) instead of being lost.
//! - **Where members are.** Addresses come from a member's own signed record (or from
//!   first contact with a seed), never from what one member says about another.
//! - **Records** ([`record`]) ride foca's custom broadcasts; each member republishes its
//!   own when it changes and every `record_refresh`, and a newcomer is handed every record
//!   by the member it joined through.
//! - **Hosting claims** go to a directory of a few members per peer and per topic, not to
//!   all ([`directory`]); a member that does not keep a key asks them.

pub mod actor;
mod codec;
pub mod directory;
pub mod listing;
pub mod record;

use crate::bucket::TokenBucket;
use crate::identity::{verify_gossip, Identity};
use crate::{SocketId, Transmit};
use directory::{Directory, Key};
use foca::{AccumulatingRuntime, Foca, OwnedNotification, Timer};
use introducer_proto::pb::{self, envelope::Kind};
use libp2p_identity::PeerId;
use prost::Message;
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use record::{NodeRecord, Records, Table};
use sha2::{Digest, Sha256};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::num::{NonZeroU32, NonZeroUsize};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// A member as SWIM knows it. The generation (Unix ms at the node's start) makes a
/// restarted node newer than its former self: foca keeps the newer of two ids of one peer.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MemberId {
    pub peer: PeerId,
    pub generation: u64,
}

impl foca::Identity for MemberId {
    type Addr = PeerId;

    /// Declared down while alive (a partition, say): rejoin as a newer generation.
    fn renew(&self) -> Option<Self> {
        Some(MemberId { peer: self.peer, generation: self.generation + 1 })
    }

    fn addr(&self) -> PeerId {
        self.peer
    }

    fn win_addr_conflict(&self, other: &Self) -> bool {
        self.generation > other.generation
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    /// SWIM's probe period and the wait for a direct answer.
    pub probe_period: Duration,
    pub probe_rtt: Duration,
    /// A suspect not heard from this long is down.
    pub suspect_to_down_after: Duration,
    /// A down member is forgotten after this long (minutes, not a day).
    pub remove_down_after: Duration,
    /// How far a datagram's or record's clock may be from ours.
    pub max_skew: Duration,
    /// A record lives this long unless its member republishes it.
    pub record_ttl: Duration,
    pub record_refresh: Duration,
    /// Most members (records) kept.
    pub max_members: usize,
    /// How long a hosting claim runs; it is renewed at half of it while the peer stays.
    pub hosting_ttl: Duration,
    /// Most peers one home's claims may name in our table.
    pub max_hosted_per_home: usize,
    /// Datagrams per second (and burst) taken from one source IP before their signatures
    /// are checked.
    pub per_ip_rate: f64,
    pub per_ip_burst: f64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            probe_period: Duration::from_secs(2),
            probe_rtt: Duration::from_secs(1),
            suspect_to_down_after: Duration::from_secs(6),
            remove_down_after: Duration::from_secs(5 * 60),
            max_skew: Duration::from_secs(30),
            record_ttl: Duration::from_secs(20 * 60),
            record_refresh: Duration::from_secs(5 * 60),
            max_members: 4096,
            hosting_ttl: Duration::from_secs(120),
            max_hosted_per_home: 65_536,
            per_ip_rate: 50.0,
            per_ip_burst: 100.0,
        }
    }
}

/// The largest foca message: a signed Gossip around it stays within one datagram.
const MAX_PAYLOAD: usize = 960;
/// Source IPs with a rate budget tracked at once; beyond, new ones share one budget.
const MAX_TRACKED_IPS: usize = 4096;
/// Addresses with a path state kept at once.
const MAX_PATHS: usize = 8192;
/// Records handed over in one datagram (three of the largest fit beside the rest).
const RECORDS_PER_DATAGRAM: usize = 3;
/// Claims' bytes in one datagram (a claim is 170–720 bytes).
const CLAIM_BYTES_PER_DATAGRAM: usize = 900;
/// Claims an answer names: for a peer, its homes (and then some); for a topic, one claim
/// per member, as many members as a topic answer to a peer names.
const ANSWER_PEER_CLAIMS: usize = 8;
const ANSWER_TOPIC_PEERS: usize = 64;
/// How long foca's datagram for an unproven address waits for the proof.
const HOLD_UNPROVEN: Duration = Duration::from_secs(2);
/// Records handed over to one member: this many datagrams every `HAND_INTERVAL`, well
/// within the rate a member takes from one IP (`per_ip_rate`, 50 a second by default).
const HAND_BATCH: usize = 10;
const HAND_INTERVAL: Duration = Duration::from_millis(500);
/// The smallest mesh size foca's settings are fitted to.
const MIN_SIZED_FOR: u32 = 32;
/// How often a member passes updates on while it has any.
const GOSSIP_EVERY: Duration = Duration::from_millis(100);
/// How often a member asks two others for members it may not know.
const ANNOUNCE_EVERY: Duration = Duration::from_secs(15);
/// How often the membership is looked over for suspects.
const LOOK_EVERY: Duration = Duration::from_millis(100);
/// Members a rejoining node announces itself to.
const REANNOUNCE_TO: usize = 3;
/// One dial-back probe per IP this often, at most, and this many IPs remembered.
const DIAL_BACK_INTERVAL: Duration = Duration::from_secs(2);
const MAX_DIAL_BACK_IPS: usize = 4096;

/// What this node says about itself (its record, before signing).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Advert {
    pub addrs: Vec<SocketAddr>,
    pub introducer: bool,
    pub relay: bool,
    pub relay_capacity: u32,
    pub relay_load: u32,
}

#[derive(Debug, Clone)]
pub enum Command {
    /// Become a member, saying `Advert` about ourselves.
    Start(Advert),
    /// Ask these nodes (PeerId, address from first contact) to let us in.
    Join(Vec<(PeerId, SocketAddr)>),
    /// Say something new about ourselves (load, addresses).
    Publish(Advert),
    /// Have another member dial `addr` back with `nonce` (a seed's part of dial-back:
    /// `addr` proved it receives there with the seed's cookie).
    DialBack { addr: SocketAddr, nonce: u64 },
    /// A peer registered with us (on these topics): claim to be its home, and renew the
    /// claim while it stays.
    Host { peer: PeerId, topics: Vec<Vec<u8>> },
    /// Its registration ended: the claim is withdrawn.
    Unhost(PeerId),
    /// Ask the directory who hosts a peer, or who is on a topic: answered by
    /// [`Event::Homes`] or [`Event::Topic`] within [`directory::LOOKUP_TIMEOUT`].
    Lookup(Key),
    /// List the members we know to `to` (from `offset` on), answering its
    /// [`pb::MembersRequest`] on `socket`: first contact checked that `to` proved it
    /// receives there (cookie) and that its IP has budget left. See [`listing`].
    ListMembers { socket: SocketId, to: SocketAddr, request_id: u64, offset: u32 },
    /// Leave the mesh gracefully.
    Leave,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A member is up (with its record, once we have it).
    Joined(PeerId),
    /// A member was declared down, or left.
    Left(PeerId),
    /// A member is suspected down: it did not answer a probe (ours, or another member's
    /// whose gossip reached us). Reported once per suspicion; it ends as [`Event::Left`], or
    /// as [`Event::Alive`] if the member refutes it.
    Suspect(PeerId),
    /// A suspect answered again (it refuted the suspicion): alive after all.
    Alive(PeerId),
    /// A new or newer record.
    Record(NodeRecord),
    /// We are part of a mesh (at least one member knows us).
    Active,
    /// Every member we knew is gone.
    Alone,
    /// Where a peer's homes (other than us) answer: a lookup's answer, or news in the claims
    /// we keep; empty when none claims it.
    Homes { peer: PeerId, homes: Vec<SocketAddr> },
    /// Who is on a topic now, by its members' homes' claims.
    Topic { topic: Vec<u8>, peers: Vec<PeerId> },
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub sent: u64,
    pub received: u64,
    pub knocks: u64,
    pub dropped_rate_limited: u64,
    pub dropped_malformed: u64,
    pub dropped_bad_signature: u64,
    pub dropped_not_for_us: u64,
    pub dropped_stale: u64,
    pub dropped_replayed: u64,
    pub dropped_wrong_sender: u64,
    pub dropped_unproven: u64,
    pub dropped_unaddressed: u64,
    pub dropped_foca: u64,
    pub dropped_bad_record: u64,
    pub dropped_table_full: u64,
    /// Dial-backs asked of another member, and probes sent for one.
    pub dial_backs_asked: u64,
    pub dial_backs_sent: u64,
    /// Dial-backs not asked (no other member) or not sent (asked by a non-member, or the
    /// address's IP had one lately, or over the budget).
    pub dropped_dial_back_no_member: u64,
    pub dropped_dial_back_rate: u64,
    /// Listings sent (requests answered), and requests not answered because we are no
    /// member (yet).
    pub members_listed: u64,
    pub dropped_list_not_member: u64,
    /// Lookups asked of the directory (one per member asked), and answered for others.
    pub lookups_sent: u64,
    pub lookups_answered: u64,
    /// Lookups from non-members, answers nobody awaited, and claims sent by anyone but
    /// their home (a member).
    pub dropped_unasked: u64,
    /// Claims for a directory member that never proved a path in time.
    pub dropped_claims_unsent: u64,
}

/// How much a member holds: node records, peers some home claims, hosting claims (one per
/// home and peer), and broadcasts (records, claims) foca has yet to pass on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Load {
    pub records: usize,
    pub hosted_peers: usize,
    pub claims: usize,
    pub backlog: usize,
}

/// What we know of one address of a member.
#[derive(Debug, Clone)]
struct PathState {
    peer: PeerId,
    /// The member's token for us there, to echo.
    echo: u64,
    /// It echoed our token from there: it receives there.
    proven: bool,
    last_knock: Option<Instant>,
}

/// foca's randomness, drawn from the role's seeded generator (so a simulated mesh replays).
struct FocaRng(StdRng);

impl rand_core_010::TryRng for FocaRng {
    type Error = std::convert::Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        Ok(self.0.next_u32())
    }
    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        Ok(self.0.next_u64())
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        self.0.fill_bytes(dst);
        Ok(())
    }
}

type Swim = Foca<MemberId, codec::Codec, FocaRng, Records>;

pub struct Mesh {
    config: Config,
    /// foca's settings, and the mesh size (a power of two) they are fitted to: the times
    /// each update is passed on grow with the log of the size (see [`Mesh::fit_to_size`]).
    swim_config: foca::Config,
    sized_for: u32,
    me: Identity,
    swim: Swim,
    runtime: AccumulatingRuntime<MemberId>,
    table: Rc<RefCell<Table>>,
    /// foca's timers, in firing order (ties in submission order, so a seed replays).
    timers: BTreeMap<(Instant, u64), Timer<MemberId>>,
    timer_seq: u64,
    /// Seeds' addresses from first contact, until their records come.
    hints: BTreeMap<PeerId, SocketAddr>,
    /// Where each member proved it receives (and signed from): preferred to its record.
    proven: BTreeMap<PeerId, SocketAddr>,
    /// Seeds to announce ourselves to once their address is proven.
    announce: BTreeSet<PeerId>,
    /// Members that announced themselves to us, until they are up: they get our records.
    announced: BTreeSet<MemberId>,
    paths: BTreeMap<SocketAddr, PathState>,
    /// foca's newest datagram for each address not proven yet, and since when: sent once
    /// the address is proven (within [`HOLD_UNPROVEN`]), so that what it carries — member
    /// updates, records — is not lost while a path is being proven. Dropped, it cost foca
    /// one of the few times each update is passed on: 150 s after 60 members joined at
    /// once, 5 were still unknown to some.
    held: BTreeMap<SocketAddr, (Instant, PeerId, Vec<u8>)>,
    buckets: BTreeMap<IpAddr, TokenBucket>,
    shared_bucket: TokenBucket,
    /// Signatures seen within `max_skew`, by the time they were sent (replays are dropped).
    seen: BTreeSet<(u64, [u8; 8])>,
    secret: [u8; 32],
    /// Picks the member that dials back.
    rng: StdRng,
    /// When each IP was last dialed back, and the budget of all dial-backs (20 a second).
    dialed: BTreeMap<IpAddr, Instant>,
    dial_budget: TokenBucket,
    advert: Option<Advert>,
    next_refresh: Option<Instant>,
    /// Records still to hand over to members that just came up (where, what), and when the
    /// next batch goes: a newcomer to a mesh of 1,000 gets 334 datagrams, and the burst a
    /// member takes from one IP is 100 — sent at once, most were dropped there.
    handing: BTreeMap<PeerId, (SocketAddr, VecDeque<Vec<u8>>)>,
    next_hand: Option<Instant>,
    /// Members up (SWIM's view, kept from its notifications).
    up: BTreeSet<PeerId>,
    /// Who keeps which claims; the peers we host; lookups in flight.
    directory: Directory,
    last_claim_ms: u64,
    /// The members suspect when we last looked (see [`Mesh::track_suspicion`]), when we
    /// look next, and whether something came in since we last did.
    suspected: BTreeSet<MemberId>,
    next_look: Option<Instant>,
    look_due: bool,
    /// Unix ms at `epoch.0`.
    epoch: (Instant, u64),
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    stats: Stats,
}

impl Mesh {
    /// A node that may become a member: its generation is its start time, `epoch` ties
    /// `now` to Unix time (ms).
    pub fn new(config: Config, me: Identity, epoch: (Instant, u64), mut rng: StdRng) -> Self {
        let id = MemberId { peer: me.peer_id(), generation: epoch.1 };
        let mut swim_config = foca::Config::new_wan(NonZeroU32::new(MIN_SIZED_FOR).expect("nonzero"));
        swim_config.probe_period = config.probe_period;
        swim_config.probe_rtt = config.probe_rtt;
        swim_config.suspect_to_down_after = config.suspect_to_down_after;
        swim_config.remove_down_after = Some(config.remove_down_after);
        swim_config.max_packet_size = NonZeroUsize::new(MAX_PAYLOAD).expect("nonzero");
        // A member missed by gossip is learned from a feed (an answer to an announce) or
        // from its own probe. A feed fits a score of members in our datagrams, so it is
        // asked for every 15 s rather than foca's WAN minute: 60 members joining at once
        // were all known everywhere after 250 s, now after 80 s.
        // Updates and records ride foca's messages, a few per datagram: gossip goes out
        // every 100 ms while there is any (foca's WAN default, 500 ms, sends nothing more
        // when there is nothing to say, but left 300 members joining at once with a fifth
        // of each other's records 20 s later; now all).
        swim_config.periodic_gossip =
            Some(foca::PeriodicParams { frequency: GOSSIP_EVERY, num_members: NonZeroUsize::new(4).expect("nonzero") });
        swim_config.periodic_announce =
            Some(foca::PeriodicParams { frequency: ANNOUNCE_EVERY, num_members: NonZeroUsize::MIN.saturating_add(1) });
        let table = Rc::new(RefCell::new(Table {
            max_skew_ms: config.max_skew.as_millis() as u64,
            ttl_ms: config.record_ttl.as_millis() as u64,
            max_records: config.max_members,
            max_hosted_per_home: config.max_hosted_per_home,
            now_ms: epoch.1,
            ..Table::default()
        }));
        let mut secret = [0; 32];
        rng.fill_bytes(&mut secret);
        let foca_rng = FocaRng(StdRng::from_rng(&mut rng).expect("StdRng never fails"));
        let own_rng = StdRng::from_rng(&mut rng).expect("StdRng never fails");
        let swim = Foca::with_custom_broadcast(id, swim_config.clone(), foca_rng, codec::Codec, Records(table.clone()));
        let directory = Directory::new(me.peer_id());
        Mesh {
            swim_config,
            sized_for: MIN_SIZED_FOR,
            shared_bucket: TokenBucket::full(config.per_ip_rate, config.per_ip_burst, epoch.0),
            config,
            me,
            swim,
            runtime: AccumulatingRuntime::new(),
            table,
            timers: BTreeMap::new(),
            timer_seq: 0,
            hints: BTreeMap::new(),
            proven: BTreeMap::new(),
            announce: BTreeSet::new(),
            announced: BTreeSet::new(),
            paths: BTreeMap::new(),
            held: BTreeMap::new(),
            buckets: BTreeMap::new(),
            seen: BTreeSet::new(),
            secret,
            rng: own_rng,
            dialed: BTreeMap::new(),
            dial_budget: TokenBucket::full(20.0, 20.0, epoch.0),
            advert: None,
            next_refresh: None,
            handing: BTreeMap::new(),
            next_hand: None,
            up: BTreeSet::new(),
            directory,
            last_claim_ms: 0,
            suspected: BTreeSet::new(),
            next_look: None,
            look_due: false,
            epoch,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
        }
    }

    pub fn stats(&self) -> Stats {
        let table = &self.table.borrow().stats;
        Stats {
            dropped_bad_record: table.dropped_bad_record,
            dropped_table_full: table.dropped_table_full,
            dropped_claims_unsent: self.directory.dropped_unsent,
            ..self.stats.clone()
        }
    }

    /// Our SWIM identity.
    pub fn id(&self) -> &MemberId {
        self.swim.identity()
    }

    /// The members up now (alive or suspect), with their records when known.
    pub fn members(&self) -> Vec<(MemberId, foca::State, Option<NodeRecord>)> {
        let table = self.table.borrow();
        let mut members: Vec<_> = self
            .swim
            .iter_membership_state()
            .map(|m| (m.id().clone(), m.state(), table.records.get(&m.id().peer).cloned()))
            .collect();
        members.sort_by(|a, b| a.0.cmp(&b.0));
        members
    }

    /// A member's record, if we hold one.
    pub fn record(&self, peer: &PeerId) -> Option<NodeRecord> {
        self.table.borrow().records.get(peer).cloned()
    }

    /// The homes our table names for `peer` (us included), by their claims, each with the
    /// address we know it at (none without its record or a proven path, and then a lookup
    /// asked of us cannot point there). For measurement: the node hears [`Event::Homes`].
    pub fn homes(&self, peer: &PeerId) -> Vec<(PeerId, Option<SocketAddr>)> {
        let homes = self.table.borrow().homes(peer);
        homes.into_iter().map(|h| (h, self.addr_of(&h))).collect()
    }

    /// The members that keep `key`'s claims, as we rank them.
    pub fn directory_of(&self, key: &Key) -> Vec<PeerId> {
        self.directory.directory(key)
    }

    /// What we hold and still have to spread, for measurement.
    pub fn load(&self) -> Load {
        let table = self.table.borrow();
        Load {
            records: table.records.len(),
            hosted_peers: table.hosting.len(),
            claims: table.hosted_by.values().sum(),
            backlog: self.swim.custom_broadcast_backlog(),
        }
    }

    fn unix_ms(&self, now: Instant) -> u64 {
        self.epoch.1 + now.saturating_duration_since(self.epoch.0).as_millis() as u64
    }

    pub fn command(&mut self, now: Instant, command: Command) {
        self.tick(now);
        match command {
            Command::Start(advert) | Command::Publish(advert) => {
                self.advert = Some(advert);
                self.publish(now);
            }
            Command::Join(seeds) => {
                for (peer, addr) in seeds {
                    if peer == self.me.peer_id() {
                        continue;
                    }
                    self.hints.insert(peer, addr);
                    self.announce.insert(peer);
                    if self.paths.get(&addr).is_some_and(|p| p.proven && p.peer == peer) {
                        self.announce_to(peer);
                    } else {
                        self.knock(now, peer, addr, true);
                    }
                }
            }
            Command::DialBack { addr, nonce } => self.ask_dial_back(now, addr, nonce),
            Command::Host { peer, topics } => {
                if self.directory.hosts(&peer) != Some(&topics[..]) {
                    self.claim(now, peer, topics, self.config.hosting_ttl);
                }
            }
            Command::Unhost(peer) => {
                if self.directory.hosts(&peer).is_some() {
                    self.claim(now, peer, Vec::new(), Duration::ZERO);
                }
            }
            Command::Lookup(key) => self.directory.lookup(now, key),
            Command::ListMembers { socket, to, request_id, offset } => {
                self.list_members(socket, to, request_id, offset)
            }
            Command::Leave => {
                let result = self.swim.leave_cluster(&mut self.runtime);
                self.count(result);
            }
        }
        self.drain(now);
    }

    /// Answers a members request with every member we hold a record of, ourselves
    /// included, ordered by PeerId, each with its state as we see it: down members stay
    /// listed (as down) until foca forgets them. See [`listing`].
    fn list_members(&mut self, socket: SocketId, to: SocketAddr, request_id: u64, offset: u32) {
        if self.advert.is_none() {
            self.stats.dropped_list_not_member += 1;
            return;
        }
        self.stats.members_listed += 1;
        let replies = {
            let table = self.table.borrow();
            // By MemberId: a newer generation of one peer comes later and wins.
            let mut members: Vec<_> = self.swim.iter_membership_state().map(|m| (m.id(), m.state())).collect();
            members.sort_by(|a, b| a.0.cmp(b.0));
            let mut list: BTreeMap<PeerId, listing::Entry<&[u8]>> = BTreeMap::new();
            for (id, state) in members {
                if let Some(record) = table.records.get(&id.peer) {
                    list.insert(id.peer, listing::Entry { state: state.into(), signed: &record.signed });
                }
            }
            if let Some(own) = table.records.get(&self.me.peer_id()) {
                list.insert(own.peer, listing::Entry { state: listing::MemberState::Alive, signed: &own.signed });
            }
            listing::replies(&list.into_values().collect::<Vec<_>>(), request_id, offset)
        };
        for reply in replies {
            self.transmits.push_back(Transmit::envelope(socket, to, Kind::MembersReply(reply)));
        }
    }

    /// Signs our record afresh and hands it to foca to spread.
    fn publish(&mut self, now: Instant) {
        let Some(advert) = self.advert.clone() else { return };
        let record = pb::NodeRecord {
            peer_id: Default::default(),
            generation: self.id().generation,
            issued_ms: self.unix_ms(now),
            addrs: advert.addrs.iter().map(|a| pb::Addr::from(*a)).collect(),
            introducer: advert.introducer,
            relay: advert.relay,
            relay_capacity: advert.relay_capacity,
            relay_load: advert.relay_load,
        };
        match advert.introducer {
            true => self.directory.add_member(now, self.me.peer_id()),
            false => self.directory.remove_member(now, &self.me.peer_id()),
        }
        let signed = self.me.sign_node_record(record);
        let broadcast = pb::Broadcast { item: Some(pb::broadcast::Item::Record(signed)) }.encode_to_vec();
        let result = self.swim.add_broadcast(&broadcast);
        self.count(result.map(|_| ()));
        self.next_refresh = Some(now + self.config.record_refresh);
    }

    /// Asks a member other than us (and than the asker) to probe `addr`: one picked at
    /// random among those that proved their address to us and are up.
    fn ask_dial_back(&mut self, now: Instant, addr: SocketAddr, nonce: u64) {
        let up: BTreeSet<PeerId> = self
            .swim
            .iter_members()
            .map(|m| m.id().peer)
            .filter(|p| self.proven.get(p).is_some_and(|a| a.ip() != addr.ip()))
            .collect();
        let Some(&peer) = up.iter().nth(self.rng.next_u32() as usize % up.len().max(1)) else {
            self.stats.dropped_dial_back_no_member += 1;
            return;
        };
        let to = self.proven[&peer];
        let content =
            pb::Gossip { dial_back: Some(pb::DialBack { addr: Some(addr.into()), nonce }), ..Default::default() };
        let gossip = self.gossip(now, peer, to, content);
        self.stats.dial_backs_asked += 1;
        self.transmits.push_back(Transmit::envelope(SocketId::PRIMARY, to, Kind::Gossip(Box::new(gossip))));
    }

    /// A member asks us to dial a node back: a small probe, at most one per IP every
    /// `DIAL_BACK_INTERVAL`, whoever asks.
    fn dial_back(&mut self, now: Instant, dial: &pb::DialBack) {
        let Some(addr) = dial.addr.as_ref().and_then(|a| SocketAddr::try_from(a).ok()) else {
            self.stats.dropped_malformed += 1;
            return;
        };
        if self.dialed.get(&addr.ip()).is_some_and(|&t| now < t + DIAL_BACK_INTERVAL)
            || (self.dialed.len() >= MAX_DIAL_BACK_IPS && !self.dialed.contains_key(&addr.ip()))
            || !self.dial_budget.try_take(now, 1.0)
        {
            self.stats.dropped_dial_back_rate += 1;
            return;
        }
        self.dialed.insert(addr.ip(), now);
        self.stats.dial_backs_sent += 1;
        let probe = pb::DialBackProbe { nonce: dial.nonce };
        self.transmits.push_back(Transmit::envelope(SocketId::PRIMARY, addr, Kind::DialBackProbe(probe)));
    }

    /// Claims (again) to be `peer`'s home for `ttl`, renewed at half of it; a zero `ttl`
    /// withdraws the claim.
    fn claim(&mut self, now: Instant, peer: PeerId, topics: Vec<Vec<u8>>, ttl: Duration) {
        // Each claim newer than the last, even within a millisecond: the newer replaces.
        let issued_ms = self.unix_ms(now).max(self.last_claim_ms + 1);
        self.last_claim_ms = issued_ms;
        let expires_ms = issued_ms + ttl.as_millis() as u64;
        let signed = self.me.sign_hosting(&peer, issued_ms, expires_ms, &topics).encode_to_vec();
        // Our own table holds it too: we may keep the peer's or a topic's directory.
        let mut table = self.table.borrow_mut();
        if let Some(claim) = table.check_claim(&signed) {
            table.offer_claim(claim);
        }
        drop(table);
        match ttl.is_zero() {
            true => self.directory.unhost(now, &peer, signed),
            false => self.directory.host(now, peer, topics, signed, now + ttl / 2),
        }
    }

    /// Sends the lookups waiting for members we have a proven path to; knocks at the
    /// others (the lookup goes once they answer, or ends without them).
    fn send_lookups(&mut self, now: Instant) {
        let proven = &self.proven;
        for (key, member) in self.directory.to_ask(|m| proven.contains_key(m)) {
            let addr = self.proven[&member];
            let gossip =
                self.gossip(now, member, addr, pb::Gossip { lookup: Some(key.to_pb(false)), ..Default::default() });
            self.stats.lookups_sent += 1;
            self.stats.sent += 1;
            self.transmits.push_back(Transmit::envelope(SocketId::PRIMARY, addr, Kind::Gossip(Box::new(gossip))));
        }
        for member in self.directory.unreached() {
            if let Some(addr) = self.addr_of(&member) {
                self.knock(now, member, addr, false);
            }
        }
    }

    /// A member asks what we keep on `key`: the claims, in as many datagrams as they take.
    fn answer(&mut self, now: Instant, peer: PeerId, addr: SocketAddr, key: Key) {
        let claims: Vec<Vec<u8>> = {
            let table = self.table.borrow();
            match &key {
                Key::Peer(p) => table.claims_on(p, ANSWER_PEER_CLAIMS),
                Key::Topic(t) => {
                    let peers = table.on_topic(t);
                    peers.iter().take(ANSWER_TOPIC_PEERS).flat_map(|p| table.claims_on(p, 1)).collect()
                }
            }
        };
        self.stats.lookups_answered += 1;
        let batches = batches(claims, CLAIM_BYTES_PER_DATAGRAM);
        let last = batches.len() - 1;
        for (i, claims) in batches.into_iter().enumerate() {
            let content = pb::Gossip {
                answer: Some(key.to_pb(i == last)),
                claims: claims.into_iter().map(Into::into).collect(),
                ..Default::default()
            };
            let gossip = self.gossip(now, peer, addr, content);
            self.stats.sent += 1;
            self.transmits.push_back(Transmit::envelope(SocketId::PRIMARY, addr, Kind::Gossip(Box::new(gossip))));
        }
    }

    /// Claims a member sent us, to keep or (`answer`) as the answer to our lookup.
    fn take_claims(&mut self, peer: PeerId, claims: &[bytes::Bytes], answer: Option<&pb::Lookup>) {
        let Some(lookup) = answer else {
            // A home sends its own claims, and only a member (or one whose record we hold)
            // is taken as a home: a stranger with a proven path cannot fill our table.
            let mut table = self.table.borrow_mut();
            let known = self.up.contains(&peer) || table.records.contains_key(&peer);
            for bytes in claims {
                match table.check_claim(bytes) {
                    Some(claim) if known && claim.home == peer => drop(table.offer_claim(claim)),
                    Some(_) => self.stats.dropped_unasked += 1,
                    None => {}
                }
            }
            return;
        };
        let Some(key) = Key::from_pb(lookup).filter(|k| self.directory.awaits(k, &peer)) else {
            self.stats.dropped_unasked += 1;
            return;
        };
        for bytes in claims {
            // The same claim comes from each member asked: checked once.
            let named = pb::SignedHosting::decode(&bytes[..]).ok().and_then(|s| {
                let h = pb::Hosting::decode(&s.hosting[..]).ok()?;
                let home = libp2p_identity::PublicKey::try_decode_protobuf(&s.public_key).ok()?.to_peer_id();
                Some((PeerId::from_bytes(&h.peer_id).ok()?, home, h.issued_ms))
            });
            let Some((p, home, issued)) = named else {
                self.stats.dropped_malformed += 1;
                continue;
            };
            if self.directory.known(&key, &p, &home).is_some_and(|known| known >= issued) {
                continue;
            }
            let claim = self.table.borrow_mut().check_claim(bytes);
            let live = |c: &record::Claim| c.expires_ms > c.issued_ms && key.matches(&c.peer, &c.topics);
            if let Some(claim) = claim.filter(live) {
                if !self.table.borrow().down_homes.contains_key(&claim.home) {
                    self.directory.found(&key, claim.peer, claim.home, claim.issued_ms);
                }
            }
        }
        if lookup.last {
            self.directory.answered(&key, &peer);
        }
    }

    fn announce_to(&mut self, peer: PeerId) {
        if self.announce.remove(&peer) {
            // The seed's generation is not known yet: foca takes an announce for any
            // generation of the right peer, and learns the real one from the answer.
            let result = self.swim.announce(MemberId { peer, generation: 0 }, &mut self.runtime);
            self.count(result);
        }
    }

    fn count(&mut self, result: Result<(), foca::Error>) {
        if let Err(e) = result {
            tracing::debug!("mesh: {e}");
            self.stats.dropped_foca += 1;
        }
    }

    /// Our token for an address: a keyed hash only we can compute.
    fn token(&self, addr: SocketAddr) -> u64 {
        let digest = Sha256::new().chain_update(self.secret).chain_update(addr.to_string()).finalize();
        u64::from_le_bytes(digest[..8].try_into().expect("sha256 is 32 bytes"))
    }

    /// `content` signed for `to`, with our token for `dst` and its token for us echoed.
    fn gossip(&self, now: Instant, to: PeerId, dst: SocketAddr, content: pb::Gossip) -> pb::Gossip {
        let echo = self.paths.get(&dst).filter(|p| p.peer == to).map_or(0, |p| p.echo);
        pb::Gossip {
            token: Some(self.token(dst)),
            echo: Some(echo),
            ..self.me.sign_gossip(&to, self.unix_ms(now), content)
        }
    }

    /// A bare Gossip to `addr`: it carries our token there, so the member can prove the
    /// path by echoing it. At most one a second per address.
    fn knock(&mut self, now: Instant, peer: PeerId, addr: SocketAddr, first: bool) {
        if self.paths.len() >= MAX_PATHS && !self.paths.contains_key(&addr) {
            return;
        }
        let path = self.paths.entry(addr).or_insert(PathState { peer, echo: 0, proven: false, last_knock: None });
        if (path.peer == peer || first) && self.knock_allowed(now, addr) {
            let gossip = self.gossip(now, peer, addr, pb::Gossip::default());
            self.send_knock(addr, gossip);
        }
    }

    fn send_knock(&mut self, addr: SocketAddr, gossip: pb::Gossip) {
        self.stats.knocks += 1;
        self.transmits.push_back(Transmit::envelope(SocketId::PRIMARY, addr, Kind::Gossip(Box::new(gossip))));
    }

    /// Where a member is: where it proved it receives, else its record's first address,
    /// else where first contact found it.
    fn addr_of(&self, peer: &PeerId) -> Option<SocketAddr> {
        let table = self.table.borrow();
        let recorded = || table.records.get(peer).and_then(|r| r.addrs.first().copied());
        self.proven.get(peer).copied().or_else(recorded).or_else(|| self.hints.get(peer).copied())
    }

    /// A datagram from another member.
    pub fn handle(&mut self, now: Instant, src: SocketAddr, gossip: pb::Gossip) {
        self.tick(now);
        self.receive(now, src, gossip);
        self.drain(now);
    }

    fn receive(&mut self, now: Instant, src: SocketAddr, gossip: pb::Gossip) {
        // Cheap checks first: the budget of the source IP, the receiver, the clock.
        if !self.take_budget(now, src.ip()) {
            self.stats.dropped_rate_limited += 1;
            return;
        }
        if gossip.to[..] != self.me.peer_id().to_bytes()[..] {
            self.stats.dropped_not_for_us += 1;
            return;
        }
        let now_ms = self.unix_ms(now);
        let skew = self.config.max_skew.as_millis() as u64;
        if gossip.sent_ms + skew < now_ms || gossip.sent_ms > now_ms + skew {
            self.stats.dropped_stale += 1;
            return;
        }
        let Ok(peer) = verify_gossip(&gossip) else {
            self.stats.dropped_bad_signature += 1;
            return;
        };
        let sig: [u8; 8] = gossip.signature.get(..8).and_then(|s| s.try_into().ok()).unwrap_or_default();
        if !self.seen.insert((gossip.sent_ms, sig)) {
            self.stats.dropped_replayed += 1;
            return;
        }
        self.stats.received += 1;
        let proven = gossip.echo == Some(self.token(src));
        if self.paths.len() >= MAX_PATHS && !self.paths.contains_key(&src) {
            self.stats.dropped_unproven += 1;
            return;
        }
        let path = self.paths.entry(src).or_insert(PathState { peer, echo: 0, proven: false, last_knock: None });
        if path.peer != peer {
            // Another member at this address now (a restart elsewhere, a reused port).
            *path = PathState { peer, echo: 0, proven: false, last_knock: None };
        }
        path.echo = gossip.token.unwrap_or_default();
        let newly = proven && !path.proven;
        path.proven |= proven;
        let path_proven = path.proven;
        if newly {
            if self.proven.len() < self.config.max_members || self.proven.contains_key(&peer) {
                self.proven.insert(peer, src);
            }
            if self.hints.get(&peer) == Some(&src) {
                self.announce_to(peer);
            }
            // Two members that talk learn each other's records first hand.
            if let Some(own) = self.record(&self.me.peer_id()) {
                self.send_records(now, peer, src, vec![own.signed]);
            }
            if let Some((_, for_peer, data)) = self.held.remove(&src) {
                if for_peer == peer {
                    self.send_payload(now, peer, src, data);
                }
            }
        }
        // The member does not know our token for it (it is new, or restarted and lost it):
        // a bare Gossip tells it, never larger than what came in.
        if !proven {
            let answer = self.gossip(now, peer, src, pb::Gossip::default());
            if answer.encoded_len() <= gossip.encoded_len() && self.knock_allowed(now, src) {
                self.send_knock(src, answer);
            }
        }
        if !path_proven {
            self.stats.dropped_unproven += u64::from(!gossip.payload.is_empty());
            return;
        }
        for record in gossip.records.iter().take(RECORDS_PER_DATAGRAM) {
            // A member's own record, first hand, is handed to foca: if it is news it is
            // spread on. A newcomer hands its record to each member it meets, and its own
            // broadcast of it is mostly spent on members it has not proven a path to yet:
            // without this its record reached a third of a 60-member mesh in 20 s. Others'
            // records, handed over in bulk to a newcomer, are news to nobody else.
            let own = pb::SignedNodeRecord::decode(&record[..]).ok().filter(|r| {
                libp2p_identity::PublicKey::try_decode_protobuf(&r.public_key).is_ok_and(|k| k.to_peer_id() == peer)
            });
            match own {
                Some(signed) => {
                    let broadcast = pb::Broadcast { item: Some(pb::broadcast::Item::Record(signed)) };
                    let result = self.swim.add_broadcast(&broadcast.encode_to_vec());
                    self.count(result.map(|_| ()));
                }
                None => drop(self.table.borrow_mut().offer(record)),
            }
        }
        if let Some(dial) = &gossip.dial_back {
            // Only a member may ask (joining takes a proven address and a signed announce).
            if self.swim.iter_members().any(|m| m.id().peer == peer) {
                self.dial_back(now, dial);
            } else {
                self.stats.dropped_dial_back_rate += 1;
            }
        }
        if !gossip.claims.is_empty() || gossip.answer.is_some() {
            self.take_claims(peer, &gossip.claims, gossip.answer.as_ref());
        }
        if let Some(lookup) = &gossip.lookup {
            // Only members ask (an answer may be larger than the question, to a proven
            // address: not an amplifier, but not a service to strangers either).
            match Key::from_pb(lookup) {
                Some(key) if self.up.contains(&peer) => self.answer(now, peer, src, key),
                Some(_) => self.stats.dropped_unasked += 1,
                None => self.stats.dropped_malformed += 1,
            }
        }
        if gossip.payload.is_empty() {
            return;
        }
        // foca trusts the header's sender: it must be the signer.
        let mut read = &gossip.payload[..];
        match <codec::Codec as foca::Codec<MemberId>>::decode_header(&mut codec::Codec, &mut read) {
            Ok(header) if header.src.peer == peer => {
                let new = !self.up.contains(&peer) && self.announced.len() < MAX_PATHS;
                if new && matches!(header.message, foca::Message::Announce) {
                    self.announced.insert(header.src);
                }
            }
            Ok(_) => {
                self.stats.dropped_wrong_sender += 1;
                return;
            }
            Err(_) => {
                self.stats.dropped_malformed += 1;
                return;
            }
        }
        let result = self.swim.handle_data(&gossip.payload, &mut self.runtime);
        self.count(result);
    }

    fn knock_allowed(&mut self, now: Instant, addr: SocketAddr) -> bool {
        let Some(path) = self.paths.get_mut(&addr) else { return false };
        if path.last_knock.is_some_and(|t| now < t + Duration::from_secs(1)) {
            return false;
        }
        path.last_knock = Some(now);
        true
    }

    fn take_budget(&mut self, now: Instant, ip: IpAddr) -> bool {
        let (rate, burst) = (self.config.per_ip_rate, self.config.per_ip_burst);
        if self.buckets.len() >= MAX_TRACKED_IPS && !self.buckets.contains_key(&ip) {
            // Forget the sources that are idle (full again) before sharing one budget.
            self.buckets.retain(|_, b| b.available(now) < burst);
            if self.buckets.len() >= MAX_TRACKED_IPS {
                return self.shared_bucket.try_take(now, 1.0);
            }
        }
        self.buckets.entry(ip).or_insert_with(|| TokenBucket::full(rate, burst, now)).try_take(now, 1.0)
    }

    /// Keeps the table's clock, forgets old replay entries and expired records.
    fn tick(&mut self, now: Instant) {
        let now_ms = self.unix_ms(now);
        let skew = self.config.max_skew.as_millis() as u64;
        self.table.borrow_mut().now_ms = now_ms;
        let keep = self.seen.split_off(&(now_ms.saturating_sub(skew), [0; 8]));
        self.seen = keep;
        self.dialed.retain(|_, t| now < *t + DIAL_BACK_INTERVAL);
        let before = self.held.len();
        self.held.retain(|_, (at, _, _)| now < *at + HOLD_UNPROVEN);
        self.stats.dropped_unproven += (before - self.held.len()) as u64;
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.tick(now);
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let timer = entry.remove();
            let result = self.swim.handle_timer(timer, &mut self.runtime);
            self.count(result);
        }
        if self.next_hand.is_some_and(|t| now >= t) {
            self.hand_some(now);
        }
        if self.next_refresh.is_some_and(|t| now >= t) {
            self.publish(now);
        }
        self.directory.expire(now);
        for (peer, topics) in self.directory.due(now) {
            self.claim(now, peer, topics, self.config.hosting_ttl);
        }
        let gone = self.table.borrow_mut().expire();
        for peer in gone {
            tracing::debug!(%peer, "node record expired");
        }
        self.drain(now);
    }

    /// Moves what foca asked for into our queues: datagrams (to proven paths only),
    /// timers, and membership changes.
    fn drain(&mut self, now: Instant) {
        while let Some((to, data)) = self.runtime.to_send() {
            self.send(now, to, data.to_vec());
        }
        while let Some((after, timer)) = self.runtime.to_schedule() {
            self.timer_seq += 1;
            self.timers.insert((now + after, self.timer_seq), timer);
        }
        while let Some(notification) = self.runtime.to_notify() {
            match notification {
                OwnedNotification::MemberUp(id) => {
                    self.table.borrow_mut().down_homes.remove(&id.peer);
                    self.up.insert(id.peer);
                    if self.record(&id.peer).is_some_and(|r| r.introducer) {
                        self.directory.add_member(now, id.peer);
                    }
                    self.hand_records(now, &id);
                    self.events.push_back(Event::Joined(id.peer));
                }
                OwnedNotification::MemberDown(id) => {
                    self.announced.remove(&id);
                    self.table.borrow_mut().drop_home(&id.peer);
                    self.up.remove(&id.peer);
                    self.directory.remove_member(now, &id.peer);
                    self.events.push_back(Event::Left(id.peer));
                }
                OwnedNotification::Rename(old, new) => {
                    tracing::debug!(?old, ?new, "member restarted");
                    // Its claims (renewed within a minute) count again.
                    self.table.borrow_mut().down_homes.remove(&new.peer);
                }
                OwnedNotification::Active => self.events.push_back(Event::Active),
                OwnedNotification::Idle => self.events.push_back(Event::Alone),
                OwnedNotification::Rejoin(_) => {
                    tracing::info!("declared down by the mesh: rejoining as a newer generation");
                    self.reannounce();
                }
                OwnedNotification::Defunct => tracing::warn!("declared down by the mesh"),
            }
        }
        self.track_suspicion(now);
        self.fit_to_size();
        let fresh = std::mem::take(&mut self.table.borrow_mut().fresh);
        for peer in fresh {
            if let Some(record) = self.record(&peer) {
                if peer != self.me.peer_id() {
                    // A member that introduces ranks in the directory once we know it does.
                    match record.introducer && self.up.contains(&peer) {
                        true => self.directory.add_member(now, peer),
                        false => self.directory.remove_member(now, &peer),
                    }
                    self.events.push_back(Event::Record(record));
                }
            }
        }
        self.send_claims(now);
        self.send_lookups(now);
        // What changed in our table, and what lookups found, goes to the broker.
        let mut homes: BTreeMap<PeerId, BTreeSet<PeerId>> = BTreeMap::new();
        let mut topics: BTreeMap<Vec<u8>, BTreeSet<PeerId>> = BTreeMap::new();
        for peer in std::mem::take(&mut self.table.borrow_mut().rehomed) {
            homes.entry(peer).or_default();
        }
        for topic in std::mem::take(&mut self.table.borrow_mut().retopiced) {
            topics.entry(topic).or_default();
        }
        for done in self.directory.finish(now) {
            match done.key {
                Key::Peer(p) => homes.entry(p).or_default().extend(done.found.iter().map(|(_, home)| *home)),
                Key::Topic(t) => topics.entry(t).or_default().extend(done.found.iter().map(|(peer, _)| *peer)),
            }
        }
        for (peer, mut named) in homes {
            named.extend(self.table.borrow().homes(&peer));
            let homes = self.addresses_of_homes(named);
            self.events.push_back(Event::Homes { peer, homes });
        }
        for (topic, mut peers) in topics {
            peers.extend(self.table.borrow().on_topic(&topic));
            self.events.push_back(Event::Topic { topic, peers: peers.into_iter().collect() });
        }
    }

    /// Passes each update on more times as the mesh grows (foca's WAN rule, 4 log10 n):
    /// fitted to 32 members, an update missed about one member in 400 (e^-6) — at 300
    /// members, one killed member was still up somewhere 30 s later, and new records
    /// never reached everyone.
    fn fit_to_size(&mut self) {
        let size = ((self.up.len() + 1) as u32).next_power_of_two().max(MIN_SIZED_FOR);
        if size == self.sized_for {
            return;
        }
        self.sized_for = size;
        let fitted = foca::Config::new_wan(NonZeroU32::new(size).expect("at least 32"));
        self.swim_config.max_transmissions = fitted.max_transmissions;
        let result = self.swim.set_config(self.swim_config.clone());
        self.count(result);
    }

    /// Where homes answer, suspected ones last (a lookup tries the likely live ones first);
    /// not us, and not a home declared down.
    fn addresses_of_homes(&self, mut homes: BTreeSet<PeerId>) -> Vec<SocketAddr> {
        homes.remove(&self.me.peer_id());
        let down = &self.table.borrow().down_homes;
        let mut homes: Vec<PeerId> = homes.into_iter().filter(|h| !down.contains_key(h)).collect();
        let suspect = |h: &PeerId| self.suspected.iter().any(|m| m.peer == *h);
        homes.sort_by_key(suspect);
        homes.iter().filter_map(|h| self.addr_of(h)).collect()
    }

    /// Claims waiting for members we have a proven path to go out, packed; the others'
    /// wait (a knock asks for the proof).
    fn send_claims(&mut self, now: Instant) {
        for member in self.directory.waiting() {
            match self.proven.get(&member).copied() {
                Some(addr) => {
                    for claims in batches(self.directory.take(&member), CLAIM_BYTES_PER_DATAGRAM) {
                        let content =
                            pb::Gossip { claims: claims.into_iter().map(Into::into).collect(), ..Default::default() };
                        let gossip = self.gossip(now, member, addr, content);
                        self.stats.sent += 1;
                        let kind = Kind::Gossip(Box::new(gossip));
                        self.transmits.push_back(Transmit::envelope(SocketId::PRIMARY, addr, kind));
                    }
                }
                None => {
                    if let Some(addr) = self.addr_of(&member) {
                        self.knock(now, member, addr, false);
                    }
                }
            }
        }
    }

    /// After a rejoin under a newer generation, foca is disconnected and its timers are
    /// reset; the others still address our old generation (foca drops what is not
    /// addressed to the current one), so nobody would ever speak to us again. An announce
    /// is taken whatever generation it names: a few members we proved a path to learn the
    /// new one, and gossip spreads it.
    fn reannounce(&mut self) {
        let members: Vec<PeerId> = self.proven.keys().copied().collect();
        let picks =
            (0..REANNOUNCE_TO.min(members.len())).map(|_| members[self.rng.next_u32() as usize % members.len()]);
        let picks: BTreeSet<PeerId> = picks.collect();
        for peer in picks {
            let result = self.swim.announce(MemberId { peer, generation: 0 }, &mut self.runtime);
            self.count(result);
        }
    }

    /// Reports the members that became suspect since the last input, and the suspects that
    /// are alive again. foca notifies only members up and down; its `ProbeFailed`
    /// (behind the `unstable-notifications` feature, which may change in any release) fires
    /// only when *our* probe fails, while a member also turns suspect here when another
    /// member's gossip says it did not answer *its* probe. So we compare states after each
    /// input instead: one pass over the membership, and a suspicion is reported once however
    /// many members gossip it (the member's state stays suspect until it is refuted or down).
    /// At most every [`LOOK_EVERY`]: a pass per datagram cost a mesh of 1,000 members most
    /// of its CPU.
    fn track_suspicion(&mut self, now: Instant) {
        if self.next_look.is_some_and(|t| now < t) {
            self.look_due = true;
            return;
        }
        (self.next_look, self.look_due) = (Some(now + LOOK_EVERY), false);
        let (mut suspect, mut refuted) = (BTreeSet::new(), Vec::new());
        for member in self.swim.iter_membership_state() {
            match member.state() {
                foca::State::Suspect => {
                    suspect.insert(member.id().clone());
                }
                // A suspect that is down now was reported `Left` by foca; one that is gone
                // (renamed by a restart) says nothing.
                foca::State::Alive if self.suspected.contains(member.id()) => refuted.push(member.id().peer),
                _ => {}
            }
        }
        for id in suspect.difference(&self.suspected) {
            self.events.push_back(Event::Suspect(id.peer));
        }
        self.events.extend(refuted.into_iter().map(Event::Alive));
        self.suspected = suspect;
    }

    /// A member that announced itself to us (it joined through us) gets every record we
    /// hold, once it is up over a proven path: gossip spreads each record only for a while
    /// after it changes, so a newcomer would otherwise wait up to `record_refresh` for the
    /// older ones. They go in batches (see [`Mesh::hand_some`]). Not to every member that
    /// comes up: a newcomer sees every member come up, and sent 24,000 datagrams in a mesh
    /// of 300 handing each all it held.
    fn hand_records(&mut self, now: Instant, id: &MemberId) {
        let peer = id.peer;
        let Some(addr) = self.proven.get(&peer).copied().filter(|_| self.announced.remove(id)) else { return };
        let records: VecDeque<Vec<u8>> =
            self.table.borrow().records.values().filter(|r| r.peer != peer).map(|r| r.signed.clone()).collect();
        if self.handing.len() < self.config.max_members || self.handing.contains_key(&peer) {
            self.handing.insert(peer, (addr, records));
        }
        self.hand_some(now);
    }

    /// The next batch of records to each member we are handing records over to.
    fn hand_some(&mut self, now: Instant) {
        if self.next_hand.is_some_and(|t| now < t) {
            return;
        }
        let mut batches = Vec::new();
        for (peer, (addr, records)) in &mut self.handing {
            for _ in 0..HAND_BATCH {
                let n = records.len().min(RECORDS_PER_DATAGRAM);
                if n == 0 {
                    break;
                }
                batches.push((*peer, *addr, records.drain(..n).collect::<Vec<_>>()));
            }
        }
        self.handing.retain(|_, (_, records)| !records.is_empty());
        for (peer, addr, records) in batches {
            self.send_records(now, peer, addr, records);
        }
        self.next_hand = (!self.handing.is_empty()).then_some(now + HAND_INTERVAL);
    }

    fn send_records(&mut self, now: Instant, peer: PeerId, addr: SocketAddr, records: Vec<Vec<u8>>) {
        let gossip = self.gossip(
            now,
            peer,
            addr,
            pb::Gossip { records: records.into_iter().map(Into::into).collect(), ..Default::default() },
        );
        self.stats.sent += 1;
        self.transmits.push_back(Transmit::envelope(SocketId::PRIMARY, addr, Kind::Gossip(Box::new(gossip))));
    }

    /// foca's datagram for a member: sent if the member proved its address, else a knock.
    fn send(&mut self, now: Instant, to: MemberId, data: Vec<u8>) {
        let Some(addr) = self.addr_of(&to.peer) else {
            self.stats.dropped_unaddressed += 1;
            return;
        };
        if self.paths.get(&addr).is_some_and(|p| p.proven && p.peer == to.peer) {
            self.send_payload(now, to.peer, addr, data);
        } else {
            if self.held.len() < MAX_PATHS || self.held.contains_key(&addr) {
                // A newer datagram replaces the one held: the older is lost.
                if self.held.insert(addr, (now, to.peer, data)).is_some() {
                    self.stats.dropped_unproven += 1;
                }
            } else {
                self.stats.dropped_unproven += 1;
            }
            self.knock(now, to.peer, addr, false);
        }
    }

    fn send_payload(&mut self, now: Instant, peer: PeerId, addr: SocketAddr, data: Vec<u8>) {
        let gossip = self.gossip(now, peer, addr, pb::Gossip { payload: data.into(), ..Default::default() });
        self.stats.sent += 1;
        self.transmits.push_back(Transmit::envelope(SocketId::PRIMARY, addr, Kind::Gossip(Box::new(gossip))));
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let timers = self.timers.keys().next().map(|(t, _)| *t);
        let look = self.next_look.filter(|_| self.look_due);
        [timers, self.next_refresh, self.directory.poll_timeout(), self.next_hand, look].into_iter().flatten().min()
    }
}

/// Splits items into groups of at most `max` bytes (one item per group at least); always
/// one group, empty when there are no items.
fn batches(items: Vec<Vec<u8>>, max: usize) -> Vec<Vec<Vec<u8>>> {
    let mut groups = vec![Vec::new()];
    let mut size = 0;
    for item in items {
        let last = groups.last_mut().expect("never empty");
        if !last.is_empty() && size + item.len() > max {
            groups.push(Vec::new());
            size = 0;
        }
        size += item.len();
        groups.last_mut().expect("never empty").push(item);
    }
    groups
}

#[cfg(test)]
mod tests;
