//! An in-process network simulator: [`Machine`]s as hosts on a virtual IPv4 internet with
//! NAT boxes between them, on virtual time, with seeded randomness.
//!
//! Same seed, same calls ⇒ the same run, datagram for datagram (compare
//! [`Sim::trace`]s). Nothing sleeps and the real clock is read once per process, for the
//! base [`Instant`] that virtual time is added to; events are kept in a binary heap ordered
//! by (time, sequence number), so events at the same instant run in the order they were
//! scheduled. A NAT-pair matrix over hundreds of seeds runs in milliseconds.
//!
//! # What is modelled
//!
//! - **Hosts**: one machine each, one or more IPv4 addresses in one network (the internet,
//!   or the inside of a NAT), any number of UDP sockets bound to `(ip, port)`.
//! - **NAT boxes** exactly as [`NatBehavior`] describes them (the same model the real-NAT
//!   lab configures and probing reports):
//!   - mapping: endpoint-independent, address-dependent, address-and-port-dependent
//!     (RFC 4787 §4.1);
//!   - filtering (RFC 4787 §5): endpoint-independent admits anyone to a live mapping;
//!     address-dependent admits IPs the mapping has sent to; address-and-port-dependent
//!     admits IP:port pairs it has sent to;
//!   - allocation: preserving (the internal port when free, else the next free port
//!     upwards); sequential (one counter per NAT shared by all hosts behind it, starting
//!     at a seed-chosen port in 20000..30000, moving by `step`, skipping ports in use);
//!     random (seeded, uniform). External ports are 1024..=65535, one mapping per
//!     external port;
//!   - hairpinning: a datagram from inside to the NAT's own public address is, when on,
//!     translated like any outbound datagram and turned back in to the mapping it was
//!     addressed to, so the receiver sees the sender's public endpoint; when off, dropped.
//!     Hairpinned datagrams are *not* filtered: the lab's hairpin is a DNAT through the
//!     learned map, which does not consult filtering;
//!   - mapping lifetime: a mapping is refreshed by every outbound datagram through it and,
//!     by default, by every inbound datagram it admits — Linux conntrack refreshes on
//!     replies too ([`Sim::set_inbound_refresh`] turns that off). A mapping idle for
//!     `mapping_lifetime` or longer is gone: inbound to it is dropped and the next outbound
//!     datagram makes a fresh allocation. Each filtering permission (a remote IP, or IP and
//!     port) expires the same way on its own, as one conntrack flow per remote endpoint
//!     would: a mapping kept alive by keepalives to a server does not keep admitting a peer
//!     it last talked to minutes ago;
//!   - nesting: a NAT can sit inside another (home router behind CGNAT); its public
//!     address is then an address in the outer NAT's inside network.
//! - **Links**: one-way latency, seeded jitter and seeded loss, on the internet, on each
//!   NAT's inside network and on each host's access link ([`Link`]). NAT translation
//!   happens when a datagram reaches the NAT, not when it is sent, so simultaneous open
//!   behaves as on real networks.
//! - **Slow hosts**, when asked for: a receiver that reads one datagram per fixed time,
//!   with a bounded receive buffer per socket (`SO_RCVBUF`), dropping what arrives at a
//!   full buffer ([`Sim::set_receiver`]); a sender that puts one datagram on the wire per
//!   fixed time, so a burst leaves over a while and what it sends next waits behind it
//!   ([`Sim::set_sender`]). Other hosts read and send in no time.
//!
//! # What is not
//!
//! No ICMP (a closed port or an unreachable address just drops the datagram, counted); no
//! IPv6 (datagrams to IPv6 destinations are dropped as unroutable); no fragmentation or
//! MTU; no bandwidth or queueing (but for slow hosts); no TCP; no router addresses inside NATs (the NAT has no
//! inside address a host could send to); no Linux conntrack quirks such as the clash
//! resolution that re-maps a port when two flows race for it, or port reuse for different
//! destinations under one external port (here every mapping owns its external port); no
//! expiry of mappings of different kinds on different timers (conntrack's "stream"
//! timeout): one lifetime per NAT.
//!
//! # Use
//!
//! ```
//! use introducer_actors::nat::NatBehavior;
//! use introducer_sim::{Place, Sim};
//! # use introducer_actors::{socket, Machine, SocketId, Transmit};
//! # use std::{net::SocketAddr, time::{Duration, Instant}};
//! # #[derive(Default)] struct Quiet;
//! # impl Machine for Quiet {
//! #     fn handle_datagram(&mut self, _: Instant, _: SocketId, _: SocketAddr, _: &[u8]) {}
//! #     fn handle_timeout(&mut self, _: Instant) {}
//! #     fn poll_transmit(&mut self) -> Option<Transmit> { None }
//! #     fn poll_timeout(&self) -> Option<Instant> { None }
//! # }
//! let mut sim = Sim::new(7);
//! let server = sim.add_host(Place::Public("198.51.100.1".parse().unwrap()), Quiet);
//! sim.bind(server, SocketId::PRIMARY, 3478);
//! let nat = sim.add_nat(NatBehavior::PORT_RESTRICTED, "203.0.113.1".parse().unwrap(), None);
//! let client = sim.add_host(Place::Behind(nat), Quiet);
//! sim.bind(client, SocketId::PRIMARY, 5000);
//! sim.run_for(Duration::from_secs(1));
//! let _quiet: &mut Quiet = sim.machine(client);
//! ```

mod link;
pub mod mesh_scale;
mod nat_box;
pub mod node;
mod seeds;
pub mod standard;
mod trace;

pub use link::Link;
pub use seeds::for_each_seed;
pub use trace::{Counters, Fate, HostStats, NatCounters, TraceEvent};

use introducer_actors::nat::NatBehavior;
use introducer_actors::{socket, Machine, SocketId, Transmit};
use nat_box::{NatBox, Refused};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::any::Any;
use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A machine the simulator can run and hand back typed ([`Sim::machine`]): any
/// [`Machine`] that is `'static`.
pub trait SimMachine: Machine + Any {
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
    /// The concrete type's name, for error messages.
    fn type_name(&self) -> &'static str;
}

impl<T: Machine + Any> SimMachine for T {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
    fn type_name(&self) -> &'static str {
        std::any::type_name::<T>()
    }
}

/// A host in a [`Sim`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostId(usize);

/// A NAT box in a [`Sim`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NatId(usize);

impl HostId {
    /// Hosts are numbered from 0 in the order they were added.
    pub fn index(self) -> usize {
        self.0
    }
}

impl NatId {
    /// NATs are numbered from 0 in the order they were added.
    pub fn index(self) -> usize {
        self.0
    }
}

impl fmt::Display for HostId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "h{}", self.0)
    }
}

impl fmt::Display for NatId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "nat{}", self.0)
    }
}

/// Where a new host sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// On the internet, at this address.
    Public(Ipv4Addr),
    /// Behind this NAT, at a private address the simulator picks (10.x.y.z, distinct per
    /// NAT so that logs stay readable; real LANs often overlap, use `BehindAt` for that).
    Behind(NatId),
    /// Behind this NAT, at this private address.
    BehindAt(NatId, Ipv4Addr),
}

/// A datagram as a machine sent it ([`Sim::record_sends`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    pub from: HostId,
    /// The sending socket's own (possibly private) address.
    pub src: SocketAddr,
    /// Where the machine addressed it.
    pub dst: SocketAddr,
    pub payload: Vec<u8>,
}

/// A live NAT mapping ([`Sim::nat_mappings`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NatMapping {
    pub internal: SocketAddrV4,
    pub external: SocketAddrV4,
    pub expires: Instant,
}

/// One network: the internet, or the inside of a NAT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Realm {
    Internet,
    Inside(NatId),
}

/// What an address in a realm belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    Host(HostId),
    /// The outside (public) face of a NAT.
    Nat(NatId),
}

/// Where a datagram in flight is headed next.
#[derive(Debug, Clone, Copy)]
enum Hop {
    Host(HostId),
    /// A NAT, arriving from its inside: translate outbound (or hairpin).
    NatFromInside(NatId),
    /// A NAT, arriving from outside: translate inbound.
    NatFromOutside(NatId),
}

/// A datagram in flight: current (possibly translated) addresses, plus what its sender
/// used, for the trace.
#[derive(Debug)]
struct Packet {
    src: SocketAddrV4,
    dst: SocketAddrV4,
    payload: Vec<u8>,
    from: HostId,
    orig_src: SocketAddr,
    orig_dst: SocketAddr,
    sent: Duration,
}

#[derive(Debug)]
enum Event {
    /// A machine's deadline; ignored unless `gen` is still the host's current one.
    Timer {
        host: HostId,
        gen: u64,
    },
    Arrive {
        hop: Hop,
        packet: Packet,
    },
    /// A slow receiver reads the next datagram from a socket's buffer.
    Read {
        host: HostId,
        socket: SocketId,
        packet: Packet,
    },
    /// A slow sender's datagram leaves.
    Depart {
        host: HostId,
        packet: Packet,
    },
}

struct Scheduled {
    at: Duration,
    seq: u64,
    event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    /// Reversed, so that `BinaryHeap` (a max-heap) pops the earliest event first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

struct Host {
    machine: Box<dyn SimMachine>,
    realm: Realm,
    ips: Vec<Ipv4Addr>,
    sockets: BTreeMap<SocketId, SocketAddrV4>,
    by_addr: HashMap<SocketAddrV4, SocketId>,
    link: Link,
    /// The deadline currently scheduled, and its generation (stale timer events carry an
    /// older one).
    timer: Option<Duration>,
    timer_gen: u64,
    /// Timer firings at the same instant in a row: a guard against machines whose
    /// deadline never moves.
    spin: (Duration, u32),
    /// Handed out by [`Sim::machine`]: drain and re-arm before running on.
    dirty: bool,
    next_ephemeral: u16,
    stats: HostStats,
    receiver: Option<Receiver>,
    /// A slow sender's time per datagram, and when what it sent so far has left.
    sender: Option<(Duration, Duration)>,
}

/// A slow receiver ([`Sim::set_receiver`]) and its state.
struct Receiver {
    /// Datagrams one socket buffers, at most.
    capacity: usize,
    /// Time to read and handle one datagram.
    per_datagram: Duration,
    /// When the host is done with what it has read or will read so far.
    busy_until: Duration,
    /// Per socket, when each buffered datagram will be read.
    buffered: HashMap<SocketId, std::collections::VecDeque<Duration>>,
}

struct Nat {
    state: NatBox,
    outside: Realm,
    lan: Link,
    next_private: u32,
}

const EPHEMERAL_START: u16 = 49152;
/// How often a machine may ask for `handle_timeout` at the same instant before the
/// simulator calls it a bug rather than loop forever.
const SPIN_LIMIT: u32 = 10_000;
/// Random streams derived from the seed (see [`seeds::derive`]).
const STREAM_LINKS: u64 = 1;
const STREAM_NAT: u64 = 1 << 32;
const STREAM_USER: u64 = 2 << 32;

/// One process-wide base instant, so that instants from different simulations (and
/// therefore machine states holding them) compare equal when the runs are the same.
fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

/// The simulator. See the [module docs](self).
pub struct Sim {
    seed: u64,
    base: Instant,
    now: Duration,
    seq: u64,
    queue: BinaryHeap<Scheduled>,
    hosts: Vec<Host>,
    nats: Vec<Nat>,
    addrs: HashMap<(Realm, Ipv4Addr), Node>,
    internet: Link,
    default_lan: Link,
    link_rng: StdRng,
    counters: Counters,
    trace: Option<Vec<TraceEvent>>,
    /// Bytes looked for in every datagram, and in how many they were seen.
    sniffing: Option<(Vec<u8>, u64)>,
    /// Every datagram handed to the network since the last [`Sim::take_sends`], when on.
    sends: Option<Vec<Sent>>,
    dirty: Vec<HostId>,
    scratch: Vec<Transmit>,
}

impl Sim {
    /// An empty internet at virtual time zero. Links default to [`Link::INTERNET_DEFAULT`]
    /// (10 ms, no loss) and [`Link::LAN_DEFAULT`] (1 ms) inside NATs.
    pub fn new(seed: u64) -> Sim {
        Sim {
            seed,
            base: base(),
            now: Duration::ZERO,
            seq: 0,
            queue: BinaryHeap::new(),
            hosts: Vec::new(),
            nats: Vec::new(),
            addrs: HashMap::new(),
            internet: Link::INTERNET_DEFAULT,
            default_lan: Link::LAN_DEFAULT,
            link_rng: StdRng::seed_from_u64(seeds::derive(seed, STREAM_LINKS)),
            counters: Counters::default(),
            trace: None,
            sniffing: None,
            sends: None,
            dirty: Vec::new(),
            scratch: Vec::new(),
        }
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// A seed for the caller's own random stream number `stream` (a machine's RNG, say),
    /// derived from the simulation's seed and independent of the simulator's streams.
    pub fn derive_seed(&self, stream: u32) -> u64 {
        seeds::derive(self.seed, STREAM_USER | stream as u64)
    }

    /// The current virtual time.
    pub fn now(&self) -> Instant {
        self.base + self.now
    }

    /// Virtual time since the simulation started.
    pub fn elapsed(&self) -> Duration {
        self.now
    }

    /// The instant `offset` after the simulation started.
    pub fn instant(&self, offset: Duration) -> Instant {
        self.base + offset
    }

    fn offset(&self, t: Instant) -> Duration {
        t.saturating_duration_since(self.base)
    }

    // ----- building the network -----

    /// Adds a NAT box with `public_ip` on the internet, or, with `behind`, inside another
    /// NAT (its public address is then an address in that NAT's inside network).
    pub fn add_nat(&mut self, behavior: NatBehavior, public_ip: Ipv4Addr, behind: Option<NatId>) -> NatId {
        let id = NatId(self.nats.len());
        let outside = match behind {
            None => Realm::Internet,
            Some(outer) => {
                self.nat_check(outer);
                Realm::Inside(outer)
            }
        };
        self.claim(outside, public_ip, Node::Nat(id));
        let seed = seeds::derive(self.seed, STREAM_NAT | id.0 as u64);
        self.nats.push(Nat {
            state: NatBox::new(behavior, public_ip, seed),
            outside,
            lan: self.default_lan,
            next_private: 0,
        });
        id
    }

    /// Adds a host running `machine`. It has no sockets until [`Sim::bind`]; whatever the
    /// machine wants to send or its first deadline is picked up when the simulation runs.
    pub fn add_host<M: Machine + 'static>(&mut self, place: Place, machine: M) -> HostId {
        self.add_host_boxed(place, Box::new(machine))
    }

    /// [`Sim::add_host`] for a machine that needs its IP address to be built.
    pub fn add_host_with<M: Machine + 'static>(&mut self, place: Place, make: impl FnOnce(Ipv4Addr) -> M) -> HostId {
        let (realm, ip) = self.resolve(place);
        self.insert_host(realm, ip, Box::new(make(ip)))
    }

    pub fn add_host_boxed(&mut self, place: Place, machine: Box<dyn SimMachine>) -> HostId {
        let (realm, ip) = self.resolve(place);
        self.insert_host(realm, ip, machine)
    }

    fn resolve(&mut self, place: Place) -> (Realm, Ipv4Addr) {
        match place {
            Place::Public(ip) => (Realm::Internet, ip),
            Place::BehindAt(nat, ip) => {
                self.nat_check(nat);
                (Realm::Inside(nat), ip)
            }
            Place::Behind(nat) => {
                self.nat_check(nat);
                let realm = Realm::Inside(nat);
                loop {
                    let k = self.nats[nat.0].next_private;
                    self.nats[nat.0].next_private += 1;
                    let ip = Ipv4Addr::new(10, (nat.0 % 256) as u8, (k / 253 % 256) as u8, (2 + k % 253) as u8);
                    if !self.addrs.contains_key(&(realm, ip)) {
                        break (realm, ip);
                    }
                }
            }
        }
    }

    fn insert_host(&mut self, realm: Realm, ip: Ipv4Addr, machine: Box<dyn SimMachine>) -> HostId {
        let id = HostId(self.hosts.len());
        self.claim(realm, ip, Node::Host(id));
        self.hosts.push(Host {
            machine,
            realm,
            ips: vec![ip],
            sockets: BTreeMap::new(),
            by_addr: HashMap::new(),
            link: Link::IDEAL,
            timer: None,
            timer_gen: 0,
            spin: (Duration::ZERO, 0),
            dirty: false,
            next_ephemeral: EPHEMERAL_START,
            stats: HostStats::default(),
            receiver: None,
            sender: None,
        });
        self.mark_dirty(id);
        id
    }

    /// Gives `host` another address in its network (an RFC 5780 server has two).
    pub fn add_ip(&mut self, host: HostId, ip: Ipv4Addr) {
        let realm = self.host(host).realm;
        self.claim(realm, ip, Node::Host(host));
        self.hosts[host.0].ips.push(ip);
    }

    fn claim(&mut self, realm: Realm, ip: Ipv4Addr, node: Node) {
        if let Some(old) = self.addrs.insert((realm, ip), node) {
            panic!("{ip} is already taken by {old:?} in {realm:?}");
        }
    }

    /// Binds `socket` of `host` to `port` on the host's first address (port 0: an
    /// ephemeral port from 49152 up). Rebinding a socket moves it. Returns the address.
    pub fn bind(&mut self, host: HostId, socket: SocketId, port: u16) -> SocketAddr {
        let ip = self.host(host).ips[0];
        self.bind_addr(host, socket, SocketAddrV4::new(ip, port))
    }

    /// Binds `socket` of `host` to `addr`, which must be one of the host's addresses.
    pub fn bind_addr(&mut self, host: HostId, socket: SocketId, mut addr: SocketAddrV4) -> SocketAddr {
        let h = self.host_mut(host);
        assert!(h.ips.contains(addr.ip()), "{host} has no address {} (it has {:?})", addr.ip(), h.ips);
        if addr.port() == 0 {
            let start = h.next_ephemeral;
            loop {
                let candidate = SocketAddrV4::new(*addr.ip(), h.next_ephemeral);
                h.next_ephemeral = h.next_ephemeral.checked_add(1).unwrap_or(EPHEMERAL_START);
                if !h.by_addr.contains_key(&candidate) {
                    addr = candidate;
                    break;
                }
                assert!(h.next_ephemeral != start, "{host} has no ephemeral port left");
            }
        }
        if let Some(other) = h.by_addr.get(&addr) {
            if *other != socket {
                panic!("{host}: {addr} is already bound to socket {}", other.0);
            }
        }
        if let Some(old) = h.sockets.insert(socket, addr) {
            h.by_addr.remove(&old);
        }
        h.by_addr.insert(addr, socket);
        SocketAddr::V4(addr)
    }

    /// Closes `socket`: datagrams to its address are dropped from now on.
    pub fn unbind(&mut self, host: HostId, socket: SocketId) {
        let h = self.host_mut(host);
        if let Some(addr) = h.sockets.remove(&socket) {
            h.by_addr.remove(&addr);
        }
    }

    /// The address `socket` of `host` is bound to.
    pub fn local_addr(&self, host: HostId, socket: SocketId) -> SocketAddr {
        match self.host(host).sockets.get(&socket) {
            Some(a) => SocketAddr::V4(*a),
            None => panic!("{host} has no socket {}", socket.0),
        }
    }

    /// Every socket `host` has bound now, in id order.
    pub fn sockets(&self, host: HostId) -> Vec<(SocketId, SocketAddr)> {
        self.host(host).sockets.iter().map(|(&id, &a)| (id, SocketAddr::V4(a))).collect()
    }

    /// The host's first address.
    pub fn host_ip(&self, host: HostId) -> Ipv4Addr {
        self.host(host).ips[0]
    }

    pub fn host_ips(&self, host: HostId) -> &[Ipv4Addr] {
        &self.host(host).ips
    }

    pub fn host_stats(&self, host: HostId) -> HostStats {
        self.host(host).stats
    }

    pub fn nat_public_ip(&self, nat: NatId) -> Ipv4Addr {
        self.nat(nat).state.public_ip
    }

    pub fn nat_behavior(&self, nat: NatId) -> NatBehavior {
        self.nat(nat).state.behavior
    }

    /// Whether inbound datagrams a NAT admits refresh the mapping (default: yes, as Linux
    /// conntrack does; RFC 4787 REQ-6 only requires outbound refresh).
    pub fn set_inbound_refresh(&mut self, nat: NatId, on: bool) {
        self.nat_check(nat);
        self.nats[nat.0].state.inbound_refresh = on;
    }

    /// The internet's link (default [`Link::INTERNET_DEFAULT`]).
    pub fn set_internet_link(&mut self, link: Link) {
        self.internet = link;
    }

    /// The link inside `nat`: between it and the hosts (or inner NATs) behind it, and
    /// between those hosts.
    pub fn set_lan_link(&mut self, nat: NatId, link: Link) {
        self.nat_check(nat);
        self.nats[nat.0].lan = link;
    }

    /// The inside link of NATs added from now on (default [`Link::LAN_DEFAULT`]).
    pub fn set_default_lan_link(&mut self, link: Link) {
        self.default_lan = link;
    }

    /// A host's own access link, crossed by each datagram it sends and each it receives
    /// (default [`Link::IDEAL`]).
    pub fn set_host_link(&mut self, host: HostId, link: Link) {
        self.host_mut(host).link = link;
    }

    /// Makes `host` a slow receiver: it reads one datagram per `per_datagram`, in the
    /// order they arrive, and each socket buffers `capacity` datagrams not yet read; one
    /// arriving at a full buffer is dropped ([`Fate::Overflow`]), as by a full `SO_RCVBUF`.
    /// What the host sends and its timers take no time.
    pub fn set_receiver(&mut self, host: HostId, capacity: usize, per_datagram: Duration) {
        let (busy_until, buffered) = (self.now, HashMap::new());
        self.host_mut(host).receiver = Some(Receiver { capacity, per_datagram, busy_until, buffered });
    }

    /// Makes `host` a slow sender: its datagrams leave one per `per_datagram`, in the order
    /// its machine sent them.
    pub fn set_sender(&mut self, host: HostId, per_datagram: Duration) {
        let now = self.now;
        self.host_mut(host).sender = Some((per_datagram, now));
    }

    // ----- machines -----

    /// `host`'s machine as a `T`. Datagrams it queues and deadline changes are picked up
    /// when the simulation next runs.
    ///
    /// # Panics
    /// If the machine is not a `T`.
    pub fn machine<T: Any>(&mut self, host: HostId) -> &mut T {
        self.mark_dirty(host);
        let m = &mut self.hosts[host.0].machine;
        let name = m.type_name();
        match m.as_mut().as_any_mut().downcast_mut::<T>() {
            Some(m) => m,
            None => panic!("{host} runs a {name}, not a {}", std::any::type_name::<T>()),
        }
    }

    /// `host`'s machine as a `T`, read-only (usable in [`Sim::run_until_cond`] predicates).
    ///
    /// # Panics
    /// If the machine is not a `T`.
    pub fn machine_ref<T: Any>(&self, host: HostId) -> &T {
        let m = &self.host(host).machine;
        match m.as_ref().as_any().downcast_ref::<T>() {
            Some(m) => m,
            None => panic!("{host} runs a {}, not a {}", m.type_name(), std::any::type_name::<T>()),
        }
    }

    fn mark_dirty(&mut self, host: HostId) {
        let h = self.host_mut(host);
        if !h.dirty {
            h.dirty = true;
            self.dirty.push(host);
        }
    }

    fn flush_dirty(&mut self) {
        while let Some(host) = self.dirty.pop() {
            self.hosts[host.0].dirty = false;
            self.after_call(host);
        }
    }

    // ----- observing -----

    /// Network-wide counts.
    pub fn counters(&self) -> Counters {
        let mut c = self.counters;
        for n in &self.nats {
            c.mappings_created += n.state.counters.mappings_created;
            c.mappings_expired += n.state.counters.mappings_expired;
        }
        c
    }

    pub fn nat_counters(&self, nat: NatId) -> NatCounters {
        self.nat(nat).state.counters
    }

    /// Makes `nat` forget every mapping, as `conntrack -F` does to a Linux NAT.
    pub fn flush_nat(&mut self, nat: NatId) {
        self.nat_check(nat);
        self.nats[nat.0].state.flush();
    }

    /// `nat`'s live mappings, by external port.
    pub fn nat_mappings(&self, nat: NatId) -> Vec<NatMapping> {
        let n = &self.nat(nat).state;
        n.mappings(self.now)
            .into_iter()
            .map(|m| NatMapping {
                internal: m.internal,
                external: SocketAddrV4::new(n.public_ip, m.external_port),
                expires: self.base + m.expires,
            })
            .collect()
    }

    /// From now on, counts the datagrams (anywhere, on any link) that contain `needle`: what
    /// an eavesdropper, or a relay, could read.
    pub fn sniff(&mut self, needle: &[u8]) {
        self.sniffing = Some((needle.to_vec(), 0));
    }

    /// Datagrams seen containing the needle since [`Sim::sniff`].
    pub fn sniffed(&self) -> u64 {
        self.sniffing.as_ref().map_or(0, |(_, seen)| *seen)
    }

    /// Starts recording every datagram a machine sends, as it sends it: before links, NATs or
    /// routing decide its fate, so a datagram still in flight or dropped on its way is
    /// there too. The trace, by contrast, records a datagram once its fate is known. For
    /// checks on what a node *chose* to send (the fuzz targets' amplification bounds).
    pub fn record_sends(&mut self) {
        self.sends.get_or_insert_with(Vec::new);
    }

    /// The datagrams sent since [`Sim::record_sends`] or the last call (empty if never
    /// turned on).
    pub fn take_sends(&mut self) -> Vec<Sent> {
        self.sends.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// Starts recording a [`TraceEvent`] per datagram.
    pub fn enable_trace(&mut self) {
        self.trace.get_or_insert_with(Vec::new);
    }

    /// The datagrams recorded since [`Sim::enable_trace`] (empty if never enabled).
    pub fn trace(&self) -> &[TraceEvent] {
        self.trace.as_deref().unwrap_or(&[])
    }

    /// The trace, one datagram per line.
    pub fn trace_dump(&self) -> String {
        let mut s = String::new();
        for e in self.trace() {
            s += &e.to_string();
            s.push('\n');
        }
        s
    }

    // ----- running -----

    /// When the next event is due, if any.
    pub fn next_event(&self) -> Option<Instant> {
        self.queue.peek().map(|s| self.base + s.at)
    }

    /// Runs one event (and whatever the machines queued before it). False when there was
    /// nothing to run.
    pub fn step(&mut self) -> bool {
        self.flush_dirty();
        match self.queue.pop() {
            None => false,
            Some(s) => {
                self.now = self.now.max(s.at);
                self.dispatch(s.event);
                true
            }
        }
    }

    /// Runs every event due up to and including `deadline`; the clock then reads
    /// `deadline` (or stays put if that is in the past).
    pub fn run_until(&mut self, deadline: Instant) {
        let end = self.offset(deadline);
        self.flush_dirty();
        while self.queue.peek().is_some_and(|s| s.at <= end) {
            self.step();
        }
        self.now = self.now.max(end);
    }

    /// Runs for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        self.run_until(self.now() + d);
    }

    /// Runs until nothing is left to do, or for at most `limit`. True if it went idle
    /// (the clock then reads the last event's time); false if the limit came first (the
    /// clock then reads now + `limit`). Machines with periodic deadlines never go idle.
    pub fn run_until_idle(&mut self, limit: Duration) -> bool {
        let end = self.now + limit;
        self.flush_dirty();
        while let Some(s) = self.queue.peek() {
            if s.at > end {
                self.now = end;
                return false;
            }
            self.step();
        }
        true
    }

    /// Runs until `done` holds (checked before the first event and after each), or for at
    /// most `limit`. Returns whether `done` held; the clock then reads the time it first
    /// did, or now + `limit`.
    pub fn run_until_cond(&mut self, limit: Duration, mut done: impl FnMut(&Sim) -> bool) -> bool {
        let end = self.now + limit;
        self.flush_dirty();
        loop {
            if done(self) {
                return true;
            }
            if self.queue.peek().is_none_or(|s| s.at > end) {
                self.now = self.now.max(end);
                return done(self);
            }
            self.step();
        }
    }

    fn schedule(&mut self, at: Duration, event: Event) {
        self.seq += 1;
        self.queue.push(Scheduled { at, seq: self.seq, event });
    }

    fn dispatch(&mut self, event: Event) {
        match event {
            Event::Timer { host, gen } => {
                let h = &mut self.hosts[host.0];
                if h.timer_gen != gen {
                    return;
                }
                h.timer = None;
                if h.spin.0 == self.now {
                    h.spin.1 += 1;
                    if h.spin.1 > SPIN_LIMIT {
                        panic!(
                            "{host} ({}) asked for handle_timeout at {:?} {SPIN_LIMIT} times without \
                             moving its deadline past it: a machine bug",
                            h.machine.type_name(),
                            self.now
                        );
                    }
                } else {
                    h.spin = (self.now, 1);
                }
                let now = self.base + self.now;
                h.machine.handle_timeout(now);
                self.after_call(host);
            }
            Event::Arrive { hop, packet } => match hop {
                Hop::Host(host) => self.arrive_at_host(host, packet),
                Hop::NatFromInside(nat) => self.nat_outbound(nat, packet),
                Hop::NatFromOutside(nat) => self.nat_inbound(nat, packet),
            },
            Event::Read { host, socket, packet } => self.read(host, socket, packet),
            Event::Depart { host, packet } => {
                let realm = self.hosts[host.0].realm;
                self.forward(realm, packet, Some(host));
            }
        }
    }

    /// After any call into a machine: bind or close the sockets it asked for, send what it
    /// queued, re-arm its timer.
    fn after_call(&mut self, host: HostId) {
        self.socket_commands(host);
        let mut out = std::mem::take(&mut self.scratch);
        let h = &mut self.hosts[host.0];
        while let Some(t) = h.machine.poll_transmit() {
            out.push(t);
        }
        let wanted = h.machine.poll_timeout().map(|t| t.saturating_duration_since(self.base).max(self.now));
        if wanted != h.timer {
            h.timer = wanted;
            h.timer_gen += 1;
            if let Some(at) = wanted {
                let gen = h.timer_gen;
                self.schedule(at, Event::Timer { host, gen });
            }
        }
        for t in out.drain(..) {
            self.send(host, t);
        }
        self.scratch = out;
    }

    /// A host binds at once what its machine asks for: on its first address, at ephemeral
    /// ports, as the socket actor does next to the primary socket.
    fn socket_commands(&mut self, host: HostId) {
        while let Some(command) = self.hosts[host.0].machine.poll_socket_command() {
            match command {
                socket::Command::Bind { purpose, sockets } => {
                    let sockets = sockets.into_iter().map(|id| (id, self.bind(host, id, 0))).collect();
                    let now = self.base + self.now;
                    let event = socket::Event::Bound { purpose, sockets };
                    self.hosts[host.0].machine.handle_socket_event(now, event);
                }
                socket::Command::Unbind(sockets) => sockets.into_iter().for_each(|id| self.unbind(host, id)),
            }
        }
    }

    fn send(&mut self, host: HostId, t: Transmit) {
        let h = &mut self.hosts[host.0];
        let Some(&src) = h.sockets.get(&t.socket) else {
            panic!(
                "{host} ({}) sent from socket {} to {}, but that socket is not bound (Sim::bind it first)",
                h.machine.type_name(),
                t.socket.0,
                t.dst
            );
        };
        h.stats.sent += 1;
        let realm = h.realm;
        self.counters.sent += 1;
        if let Some(sends) = &mut self.sends {
            sends.push(Sent { from: host, src: SocketAddr::V4(src), dst: t.dst, payload: t.payload.clone() });
        }
        let dst = match t.dst {
            SocketAddr::V4(d) => d,
            SocketAddr::V6(_) => {
                // Unroutable here; keep the original destination for the trace.
                let packet = Packet {
                    src,
                    dst: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0),
                    payload: t.payload,
                    from: host,
                    orig_src: SocketAddr::V4(src),
                    orig_dst: t.dst,
                    sent: self.now,
                };
                self.finish(&packet, Fate::NoRoute);
                return;
            }
        };
        let packet = Packet {
            src,
            dst,
            payload: t.payload,
            from: host,
            orig_src: SocketAddr::V4(src),
            orig_dst: t.dst,
            sent: self.now,
        };
        if let Some((per_datagram, busy_until)) = &mut self.hosts[host.0].sender {
            let leaves = (*busy_until).max(self.now);
            *busy_until = leaves + *per_datagram;
            if leaves > self.now {
                return self.schedule(leaves, Event::Depart { host, packet });
            }
        }
        self.forward(realm, packet, Some(host));
    }

    /// Puts `packet` on `realm`'s network, from `sender` (a host) or from a NAT, towards
    /// whatever owns its destination there — or the realm's NAT, going out.
    fn forward(&mut self, realm: Realm, packet: Packet, sender: Option<HostId>) {
        let hop = match self.addrs.get(&(realm, *packet.dst.ip())) {
            Some(Node::Host(h)) => Hop::Host(*h),
            Some(Node::Nat(n)) => Hop::NatFromOutside(*n),
            None => match realm {
                Realm::Inside(n) => Hop::NatFromInside(n),
                Realm::Internet => return self.finish(&packet, Fate::NoRoute),
            },
        };
        let realm_link = match realm {
            Realm::Internet => self.internet,
            Realm::Inside(n) => self.nats[n.0].lan,
        };
        let links = [
            sender.map(|h| self.hosts[h.0].link),
            Some(realm_link),
            match hop {
                Hop::Host(h) => Some(self.hosts[h.0].link),
                _ => None,
            },
        ];
        let mut delay = Duration::ZERO;
        for link in links.into_iter().flatten() {
            if link.drops(&mut self.link_rng) {
                if let Realm::Inside(n) = realm {
                    self.nats[n.0].state.counters.dropped_loss += 1;
                }
                return self.finish(&packet, Fate::Lost);
            }
            delay += link.delay(&mut self.link_rng);
        }
        self.schedule(self.now + delay, Event::Arrive { hop, packet });
    }

    fn arrive_at_host(&mut self, host: HostId, packet: Packet) {
        let now = self.now;
        let h = &mut self.hosts[host.0];
        let Some(&socket) = h.by_addr.get(&packet.dst) else {
            return self.finish(&packet, Fate::NoSocket(host));
        };
        if let Some(r) = &mut h.receiver {
            let buffered = r.buffered.entry(socket).or_default();
            while buffered.front().is_some_and(|&read| read <= now) {
                buffered.pop_front();
            }
            if buffered.len() >= r.capacity {
                return self.finish(&packet, Fate::Overflow(host));
            }
            let read = r.busy_until.max(now);
            r.busy_until = read + r.per_datagram;
            if read > now {
                buffered.push_back(read);
                return self.schedule(read, Event::Read { host, socket, packet });
            }
        }
        self.read(host, socket, packet);
    }

    /// `host`'s machine handles a datagram that arrived on `socket`.
    fn read(&mut self, host: HostId, socket: SocketId, packet: Packet) {
        let h = &mut self.hosts[host.0];
        if h.sockets.get(&socket) != Some(&packet.dst) {
            return self.finish(&packet, Fate::NoSocket(host));
        }
        h.stats.received += 1;
        let now = self.base + self.now;
        h.machine.handle_datagram(now, socket, SocketAddr::V4(packet.src), &packet.payload);
        self.finish(&packet, Fate::Delivered { host, socket, src: packet.src });
        self.after_call(host);
    }

    fn nat_outbound(&mut self, nat: NatId, mut packet: Packet) {
        let now = self.now;
        let n = &mut self.nats[nat.0];
        let Some(port) = n.state.outbound(now, packet.src, packet.dst) else {
            n.state.counters.dropped_ports_exhausted += 1;
            return self.finish(&packet, Fate::PortsExhausted(nat));
        };
        let public_ip = n.state.public_ip;
        packet.src = SocketAddrV4::new(public_ip, port);
        if *packet.dst.ip() != public_ip {
            let outside = n.outside;
            return self.forward(outside, packet, None);
        }
        // Addressed to our own public address: hairpin, or not.
        if !n.state.behavior.hairpin {
            n.state.counters.dropped_hairpin += 1;
            return self.finish(&packet, Fate::HairpinOff(nat));
        }
        n.state.counters.hairpinned += 1;
        self.translate_in(nat, packet, false);
    }

    fn nat_inbound(&mut self, nat: NatId, packet: Packet) {
        self.translate_in(nat, packet, true);
    }

    fn translate_in(&mut self, nat: NatId, mut packet: Packet, filter: bool) {
        let now = self.now;
        match self.nats[nat.0].state.inbound(now, packet.dst.port(), packet.src, filter) {
            Ok(internal) => {
                packet.dst = internal;
                self.forward(Realm::Inside(nat), packet, None);
            }
            Err(Refused::NoMapping) => self.finish(&packet, Fate::NoMapping(nat)),
            Err(Refused::Filtered) => self.finish(&packet, Fate::Filtered(nat)),
        }
    }

    /// Counts a datagram's fate and records it in the trace.
    fn finish(&mut self, packet: &Packet, fate: Fate) {
        let c = &mut self.counters;
        match fate {
            Fate::Delivered { .. } => c.delivered += 1,
            Fate::Lost => c.dropped_loss += 1,
            Fate::Filtered(_) => c.dropped_filtered += 1,
            Fate::NoMapping(_) => c.dropped_no_mapping += 1,
            Fate::HairpinOff(_) => c.dropped_hairpin += 1,
            Fate::PortsExhausted(_) => c.dropped_ports_exhausted += 1,
            Fate::NoRoute => c.dropped_no_route += 1,
            Fate::NoSocket(_) => c.dropped_no_socket += 1,
            Fate::Overflow(_) => c.dropped_overflow += 1,
        }
        if !matches!(fate, Fate::Delivered { .. }) {
            tracing::trace!(from = %packet.from, src = %packet.orig_src, dst = %packet.orig_dst, ?fate, "sim: datagram dropped");
        }
        if let Some((needle, seen)) = &mut self.sniffing {
            *seen += u64::from(packet.payload.windows(needle.len()).any(|w| w == &needle[..]));
        }
        if let Some(trace) = &mut self.trace {
            trace.push(TraceEvent {
                sent: packet.sent,
                at: self.now,
                from: packet.from,
                src: packet.orig_src,
                dst: packet.orig_dst,
                len: packet.payload.len(),
                digest: trace::fnv1a(&packet.payload),
                payload: packet.payload.clone(),
                fate,
            });
        }
    }

    fn host(&self, host: HostId) -> &Host {
        self.hosts.get(host.0).unwrap_or_else(|| panic!("no host {host} in this simulation"))
    }

    fn host_mut(&mut self, host: HostId) -> &mut Host {
        self.hosts.get_mut(host.0).unwrap_or_else(|| panic!("no host {host} in this simulation"))
    }

    fn nat(&self, nat: NatId) -> &Nat {
        self.nats.get(nat.0).unwrap_or_else(|| panic!("no NAT {nat} in this simulation"))
    }

    fn nat_check(&self, nat: NatId) {
        self.nat(nat);
    }
}

impl fmt::Debug for Sim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sim")
            .field("seed", &self.seed)
            .field("elapsed", &self.now)
            .field("hosts", &self.hosts.len())
            .field("nats", &self.nats.len())
            .field("queued", &self.queue.len())
            .field("counters", &self.counters())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// Sends its queue, records what arrives, and fires at the deadlines it is given.
    #[derive(Default)]
    struct Probe {
        out: VecDeque<Transmit>,
        got: Vec<(Instant, SocketAddr, Vec<u8>)>,
        deadlines: VecDeque<Instant>,
        fired: Vec<Instant>,
        stuck: bool,
    }

    impl Machine for Probe {
        fn handle_datagram(&mut self, now: Instant, _: SocketId, src: SocketAddr, payload: &[u8]) {
            self.got.push((now, src, payload.to_vec()));
        }
        fn handle_timeout(&mut self, now: Instant) {
            if self.stuck {
                return;
            }
            while self.deadlines.front().is_some_and(|&d| d <= now) {
                self.deadlines.pop_front();
                self.fired.push(now);
            }
        }
        fn poll_transmit(&mut self) -> Option<Transmit> {
            self.out.pop_front()
        }
        fn poll_timeout(&self) -> Option<Instant> {
            self.deadlines.front().copied()
        }
    }

    fn send(sim: &mut Sim, h: HostId, dst: SocketAddr, payload: &[u8]) {
        sim.machine::<Probe>(h).out.push_back(Transmit { socket: SocketId::PRIMARY, dst, payload: payload.to_vec() });
    }

    #[test]
    fn same_instant_events_run_in_the_order_they_were_scheduled() {
        let mut sim = Sim::new(1);
        let a = sim.add_host(Place::Public([198, 51, 100, 1].into()), Probe::default());
        let b = sim.add_host(Place::Public([198, 51, 100, 2].into()), Probe::default());
        sim.bind(a, SocketId::PRIMARY, 1);
        let dst = sim.bind(b, SocketId::PRIMARY, 2);
        for i in 0..50u8 {
            send(&mut sim, a, dst, &[i]);
        }
        sim.run_for(Duration::from_millis(10));
        let got: Vec<u8> = sim.machine_ref::<Probe>(b).got.iter().map(|g| g.2[0]).collect();
        assert_eq!(got, (0..50).collect::<Vec<u8>>());
        assert!(sim.machine_ref::<Probe>(b).got.iter().all(|g| g.0 == sim.instant(Duration::from_millis(10))));
    }

    #[test]
    fn deadlines_fire_on_time_and_moved_deadlines_do_not_fire_twice() {
        let mut sim = Sim::new(1);
        let a = sim.add_host(Place::Public([198, 51, 100, 1].into()), Probe::default());
        let t = |ms| sim.instant(Duration::from_millis(ms));
        let (t5, t7, t9) = (t(5), t(7), t(9));
        sim.machine::<Probe>(a).deadlines.push_back(t9);
        sim.run_for(Duration::from_millis(1));
        // An earlier deadline replaces the armed one; the stale event must be ignored.
        sim.machine::<Probe>(a).deadlines = [t5, t7, t9].into();
        assert!(sim.run_until_idle(Duration::from_secs(1)));
        assert_eq!(sim.machine_ref::<Probe>(a).fired, [t5, t7, t9]);
        assert_eq!(sim.now(), t9);
    }

    #[test]
    #[should_panic(expected = "without moving its deadline")]
    fn a_machine_whose_deadline_never_moves_is_reported() {
        let mut sim = Sim::new(1);
        let a = sim.add_host(Place::Public([198, 51, 100, 1].into()), Probe::default());
        let t = sim.instant(Duration::from_millis(3));
        let p = sim.machine::<Probe>(a);
        p.deadlines.push_back(t);
        p.stuck = true;
        sim.run_for(Duration::from_secs(1));
    }

    #[test]
    fn run_until_cond_stops_at_the_first_event_that_makes_it_true() {
        let mut sim = Sim::new(1);
        let a = sim.add_host(Place::Public([198, 51, 100, 1].into()), Probe::default());
        let b = sim.add_host(Place::Public([198, 51, 100, 2].into()), Probe::default());
        sim.bind(a, SocketId::PRIMARY, 1);
        let dst = sim.bind(b, SocketId::PRIMARY, 2);
        send(&mut sim, a, dst, b"x");
        let got = |s: &Sim| !s.machine_ref::<Probe>(b).got.is_empty();
        assert!(sim.run_until_cond(Duration::from_secs(1), got));
        assert_eq!(sim.elapsed(), Duration::from_millis(10));
        assert!(!sim.run_until_cond(Duration::from_secs(1), |s| s.machine_ref::<Probe>(b).got.len() == 2));
        assert_eq!(sim.elapsed(), Duration::from_millis(1010));
    }

    #[test]
    fn private_hosts_get_distinct_addresses_and_ephemeral_ports() {
        let mut sim = Sim::new(1);
        let nat = sim.add_nat(NatBehavior::FULL_CONE, [203, 0, 113, 1].into(), None);
        let a = sim.add_host(Place::Behind(nat), Probe::default());
        let b = sim.add_host_with(Place::Behind(nat), |ip| {
            assert_eq!(ip, Ipv4Addr::new(10, 0, 0, 3));
            Probe::default()
        });
        assert_eq!(sim.host_ip(a), Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(sim.host_ip(b), Ipv4Addr::new(10, 0, 0, 3));
        assert_eq!(sim.bind(a, SocketId(0), 0), "10.0.0.2:49152".parse::<SocketAddr>().unwrap());
        assert_eq!(sim.bind(a, SocketId(1), 0), "10.0.0.2:49153".parse::<SocketAddr>().unwrap());
    }
}
