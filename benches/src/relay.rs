//! Our relay next to coturn's TURN relay and a batched forwarder, each its own process on
//! loopback, driven by one load generator: A sends fixed-size datagrams through the relay,
//! B receives them, with a bounded window in flight. What is compared: datagrams per
//! second delivered, and the relay process's CPU time per GB of payload delivered.
//!
//! - **introducer**: a node serving as relay (this bench binary, re-run as a child: the
//!   same library the `introducer` binary runs), its limits lifted. A and B register with
//!   it and are introduced by it, then ask for the circuit — the real protocol, driven by
//!   the real machines ([`Registrations`], [`RelayClient`]) over A's and B's sockets — and
//!   A sends `RelaySend` frames it encoded once.
//! - **coturn**: `turnserver` (long-term credentials): A allocates, binds a channel to B,
//!   and sends `ChannelData`; coturn sends the payload from A's relayed address to B.
//! - **forwarder**: the reference, a forwarder that does nothing else — `recvmmsg`, swap
//!   the address, `sendmmsg` — (this binary again, as a child); **fwd+gso**: the same,
//!   sending runs of datagrams as one (UDP GSO) as the node does, with the node's batch I/O.

use hmac::{Hmac, Mac};
use introducer_actors::driver::Protocol;
use introducer_actors::identity::Identity;
use introducer_actors::nat::NatReport;
use introducer_actors::registration::actor::Registrations;
use introducer_actors::registration::{self, Event as Registered};
use introducer_actors::relay::{ClientConfig, RelayClient};
use introducer_actors::socket::batch::{Batch, Out, BATCH};
use introducer_actors::socket::{self, Inbound};
use introducer_actors::{Machine, SocketId};
use introducer_proto::frame::encode_envelope;
use introducer_proto::pb::{self, envelope::Kind, Envelope};
use md5::{Digest, Md5};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The environment variable that makes the bench binary a relay child.
pub const CHILD: &str = "RELAY_COMPARE_CHILD";
const WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind3 {
    Introducer,
    Coturn,
    /// `recvmmsg`/`sendmmsg`, one datagram per message: the reference the relay is held to.
    Forwarder,
    /// The same with UDP GSO, as the node sends: what the machine allows.
    ForwarderGso,
}

impl Kind3 {
    pub fn name(self) -> &'static str {
        match self {
            Kind3::Introducer => "introducer",
            Kind3::Coturn => "coturn",
            Kind3::Forwarder => "forwarder",
            Kind3::ForwarderGso => "fwd+gso",
        }
    }
}

/// A relay (or introducer) process.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts `kind`'s process and returns once it listens.
    pub fn start(kind: Kind3) -> Server {
        let (child, addr) = match kind {
            Kind3::Introducer => child("introducer", &[free_port().to_string()]),
            Kind3::Forwarder => child("forwarder", &["plain".to_owned()]),
            Kind3::ForwarderGso => child("forwarder", &["gso".to_owned()]),
            Kind3::Coturn => {
                let port = free_port();
                let child = Command::new("turnserver")
                    .args(["-n", "--no-cli", "--no-tls", "--no-dtls", "--listening-ip", "127.0.0.1"])
                    .args(["--relay-ip", "127.0.0.1", "--listening-port", &port.to_string()])
                    .args(["--lt-cred-mech", "--user", "bench:bench", "--realm", "bench"])
                    .args(["--allow-loopback-peers", "--no-stun", "--log-file", "stdout", "--simple-log"])
                    .args(["--min-port", "20000", "--max-port", "60000", "--total-quota", "0", "--user-quota", "0"])
                    .args(["--max-bps", "0", "--relay-threads", "1", "--no-software-attribute"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("turnserver (scripts/install-deps.sh installs coturn)");
                (child, SocketAddr::from(([127, 0, 0, 1], port)))
            }
        };
        Server { child, addr }
    }

    /// The process's CPU time so far (user and system, all threads).
    pub fn cpu(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        // Fields after the command name (which may hold spaces): utime is the 14th field
        // of the line, stime the 15th.
        let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
        let ticks: u64 = [11, 12].iter().filter_map(|&i| fields.get(i)?.parse::<u64>().ok()).sum();
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        Duration::from_nanos(ticks * 1_000_000_000 / hz)
    }
}

/// A relay process and what A sends through it.
pub struct Relay {
    pub kind: Kind3,
    pub server: Server,
    pub a: UdpSocket,
    pub b: UdpSocket,
    /// Where A sends, and the datagram it sends (`size` bytes of payload in the relay's
    /// framing).
    pub to: SocketAddr,
    pub datagram: Vec<u8>,
}

fn loopback() -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket2::SockRef::from(&socket).set_recv_buffer_size(4 << 20).ok();
    socket
}

/// A free loopback port (and the next, for a node's STUN alternate port).
fn free_port() -> u16 {
    loop {
        let port = loopback().local_addr().unwrap().port();
        if port < 65000 && UdpSocket::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
}

/// Starts this binary as a child in `role`; returns once it printed its address.
fn child(role: &str, args: &[String]) -> (Child, SocketAddr) {
    let exe = std::env::current_exe().expect("current exe");
    let mut child = Command::new(exe)
        .env(CHILD, role)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn a relay child");
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).expect("child's address");
    (child, line.trim().parse().unwrap_or_else(|_| panic!("{role} child printed {line:?}")))
}

impl Relay {
    pub fn start(kind: Kind3, size: usize) -> Relay {
        let (a, b) = (loopback(), loopback());
        let server = Server::start(kind);
        let to = server.addr;
        let datagram = match kind {
            Kind3::Introducer => {
                let circuit = circuit(to, &a, &b);
                let data = pb::RelayData { circuit, payload: vec![0x5a; size].into() };
                encode_envelope(&Envelope { kind: Some(Kind::RelaySend(data)) })
            }
            Kind3::Forwarder | Kind3::ForwarderGso => {
                // The forwarder pairs the first two sources it hears from.
                a.send_to(b"a", to).unwrap();
                std::thread::sleep(Duration::from_millis(20));
                b.send_to(b"b", to).unwrap();
                b.set_read_timeout(Some(WAIT)).unwrap();
                let mut buf = [0u8; 16];
                a.send_to(b"hello", to).unwrap();
                assert_eq!(b.recv(&mut buf).expect("the forwarder forwards"), 5);
                vec![0x5a; size]
            }
            Kind3::Coturn => {
                let channel = turn_channel(&a, to, b.local_addr().unwrap());
                let mut datagram = Vec::with_capacity(4 + size);
                datagram.extend_from_slice(&channel.to_be_bytes());
                datagram.extend_from_slice(&(size as u16).to_be_bytes());
                datagram.resize(4 + size, 0x5a);
                datagram
            }
        };
        Relay { kind, server, a, b, to, datagram }
    }
}

/// What one blast delivered.
#[derive(Debug, Clone, Copy)]
pub struct Blast {
    pub sent: u64,
    pub received: u64,
    pub elapsed: Duration,
    pub relay_cpu: Duration,
}

/// Sends `datagram` to `dst` `n` times (at most [`BATCH`]) in one `sendmmsg`: the load
/// comes in bursts, as from many senders, and costs the generator little. How many went.
fn send_many(socket: &UdpSocket, datagram: &[u8], dst: SocketAddr, n: usize) -> usize {
    use std::os::fd::AsRawFd;
    let SocketAddr::V4(v4) = dst else { panic!("IPv4 only") };
    // SAFETY: all-zero is a valid sockaddr_in and mmsghdr; every header points at live
    // buffers of the sizes it states, which sendmmsg only reads.
    unsafe {
        let mut name: libc::sockaddr_in = std::mem::zeroed();
        name.sin_family = libc::AF_INET as libc::sa_family_t;
        name.sin_port = v4.port().to_be();
        name.sin_addr = libc::in_addr { s_addr: u32::from(*v4.ip()).to_be() };
        let mut iov = libc::iovec { iov_base: datagram.as_ptr() as *mut _, iov_len: datagram.len() };
        let mut hdrs: [libc::mmsghdr; BATCH] = std::mem::zeroed();
        for hdr in &mut hdrs[..n] {
            hdr.msg_hdr.msg_name = (&mut name as *mut libc::sockaddr_in).cast();
            hdr.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            hdr.msg_hdr.msg_iov = &mut iov;
            hdr.msg_hdr.msg_iovlen = 1;
        }
        libc::sendmmsg(socket.as_raw_fd(), hdrs.as_mut_ptr(), n as _, 0).max(0) as usize
    }
}

/// A sends `count` datagrams through the relay with at most `window` in flight (a
/// datagram not heard of for 20 ms counts as lost and frees its place); B counts them.
pub fn blast(relay: &Relay, count: u64, window: u64) -> Blast {
    let received = Arc::new(AtomicU64::new(0));
    let b = relay.b.try_clone().unwrap();
    b.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let counter = received.clone();
    let receiver = std::thread::spawn(move || {
        let mut batch = Batch::default();
        let mut quiet = Instant::now();
        while counter.load(Ordering::Relaxed) < count && quiet.elapsed() < Duration::from_millis(500) {
            if let Ok(n) = batch.recv(&b) {
                counter.fetch_add(n as u64, Ordering::Relaxed);
                quiet = Instant::now();
            }
        }
    });
    let cpu = relay.server.cpu();
    let start = Instant::now();
    let (mut sent, mut lost) = (0u64, 0u64);
    let mut stalled: Option<Instant> = None;
    while sent < count {
        let got = received.load(Ordering::Relaxed);
        if sent - got - lost.min(sent - got) >= window {
            let since = *stalled.get_or_insert_with(Instant::now);
            if since.elapsed() > Duration::from_millis(20) {
                lost = sent - got;
                stalled = None;
            }
            std::hint::spin_loop();
            continue;
        }
        stalled = None;
        let room = (window - (sent - got - lost.min(sent - got))).min(count - sent).min(BATCH as u64);
        sent += send_many(&relay.a, &relay.datagram, relay.to, room as usize) as u64;
    }
    receiver.join().unwrap();
    let elapsed = start.elapsed();
    Blast { sent, received: received.load(Ordering::Relaxed), elapsed, relay_cpu: relay.server.cpu() - cpu }
}

// ----- the introducer's circuit, by the real machines -----

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// One side: its socket, its registration, and (once introduced) its relay client.
struct Side<'a> {
    socket: &'a UdpSocket,
    registrations: Registrations,
    introduced: Option<Vec<u8>>,
    client: Option<RelayClient>,
}

impl Side<'_> {
    fn pump(&mut self, relay: SocketAddr, now: Instant) {
        let mut buf = [0u8; 2048];
        while let Ok((n, src)) = self.socket.recv_from(&mut buf) {
            let datagram = buf[..n].to_vec();
            if let Some(client) = self.client.as_mut() {
                client.handle_datagram(now, SocketId::PRIMARY, src, &datagram);
            }
            if let Some((_, payload)) = socket::classify(datagram) {
                let inbound = Inbound { now, socket: SocketId::PRIMARY, src, len: n, payload };
                self.registrations.handle_inbound(inbound);
            }
        }
        if self.registrations.poll_timeout().is_some_and(|t| t <= now) {
            self.registrations.handle_timeout(now);
        }
        if let Some(client) = self.client.as_mut().filter(|c| c.poll_timeout().is_some_and(|t| t <= now)) {
            client.handle_timeout(now);
        }
        while let Some(t) = self.registrations.poll_transmit() {
            self.socket.send_to(&t.payload, t.dst).unwrap();
        }
        while let Some(t) = self.client.as_mut().and_then(RelayClient::poll_transmit) {
            assert_eq!(t.dst, relay);
            self.socket.send_to(&t.payload, t.dst).unwrap();
        }
    }
}

/// Registers A and B with the relay, has it introduce them, asks for their circuit; its id.
fn circuit(relay: SocketAddr, a: &UdpSocket, b: &UdpSocket) -> u64 {
    let mut rng = StdRng::from_entropy();
    let ids = [Identity::from_seed(rng.gen()), Identity::from_seed(rng.gen())];
    let now = Instant::now();
    let mut sides: Vec<Side> = [a, b]
        .into_iter()
        .zip(&ids)
        .map(|(socket, id)| {
            socket.set_nonblocking(true).unwrap();
            let nat = NatReport::public(socket.local_addr().unwrap());
            let record = pb::PeerRecord { nat: Some((&nat).into()), issued_ms: unix_ms(), ..Default::default() };
            let mut registrations =
                Registrations::new(registration::Config::default(), id.clone(), StdRng::from_rng(&mut rng).unwrap());
            registrations.add(now, relay, id.sign_record(record));
            Side { socket, registrations, introduced: None, client: None }
        })
        .collect();
    let deadline = Instant::now() + WAIT;
    let (mut registered, mut asked) = ([false; 2], false);
    loop {
        assert!(
            Instant::now() < deadline,
            "no circuit: registered {registered:?}, introduced {}",
            sides[0].introduced.is_some()
        );
        let now = Instant::now();
        for (i, side) in sides.iter_mut().enumerate() {
            side.pump(relay, now);
            while let Some((_, event)) = side.registrations.poll_event() {
                match event {
                    Registered::Registered { .. } => registered[i] = true,
                    Registered::Introduced(introduced) => side.introduced = Some(introduced.nonce.clone()),
                    _ => {}
                }
            }
            if let (Some(nonce), None) = (&side.introduced, &side.client) {
                let peer = ids[1 - i].peer_id();
                let config = ClientConfig::default();
                side.client =
                    Some(RelayClient::new(config, ids[i].clone(), SocketId::PRIMARY, relay, peer, nonce, now));
            }
        }
        if registered == [true; 2] && !asked {
            asked = true;
            sides[0].registrations.introduce(now, ids[1].peer_id());
        }
        let circuits: Vec<Option<u64>> =
            sides.iter().map(|s| s.client.as_ref().filter(|c| c.is_ready()).and_then(RelayClient::circuit)).collect();
        if let [Some(x), Some(y)] = circuits[..] {
            assert_eq!(x, y);
            for side in &sides {
                side.socket.set_nonblocking(false).unwrap();
                // What the set-up left queued.
                side.socket.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
                let mut buf = [0u8; 2048];
                while side.socket.recv(&mut buf).is_ok() {}
            }
            return x;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

// ----- a minimal TURN client (RFC 8656: Allocate, ChannelBind, long-term credentials) -----

const MAGIC: u32 = 0x2112_a442;

fn attr(msg: &mut Vec<u8>, kind: u16, value: &[u8]) {
    msg.extend_from_slice(&kind.to_be_bytes());
    msg.extend_from_slice(&(value.len() as u16).to_be_bytes());
    msg.extend_from_slice(value);
    msg.resize(msg.len().next_multiple_of(4), 0);
}

fn xor_addr(addr: SocketAddr) -> Vec<u8> {
    let SocketAddr::V4(v4) = addr else { panic!("IPv4 only") };
    let mut v = vec![0, 1];
    v.extend_from_slice(&(v4.port() ^ (MAGIC >> 16) as u16).to_be_bytes());
    v.extend_from_slice(&(u32::from(*v4.ip()) ^ MAGIC).to_be_bytes());
    v
}

/// A request of `method` with `attrs`; with credentials, USERNAME/REALM/NONCE and
/// MESSAGE-INTEGRITY.
fn request(method: u16, attrs: &[(u16, Vec<u8>)], auth: Option<(&[u8], &[u8], &[u8; 16])>) -> Vec<u8> {
    let mut msg = Vec::new();
    msg.extend_from_slice(&method.to_be_bytes());
    msg.extend_from_slice(&[0, 0]);
    msg.extend_from_slice(&MAGIC.to_be_bytes());
    msg.extend_from_slice(&rand::random::<[u8; 12]>());
    for (kind, value) in attrs {
        attr(&mut msg, *kind, value);
    }
    if let Some((realm, nonce, key)) = auth {
        attr(&mut msg, 0x0006, b"bench");
        attr(&mut msg, 0x0014, realm);
        attr(&mut msg, 0x0015, nonce);
        // The length covers MESSAGE-INTEGRITY, which is computed over what precedes it.
        let len = (msg.len() - 20 + 24) as u16;
        msg[2..4].copy_from_slice(&len.to_be_bytes());
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(key).expect("any key length");
        mac.update(&msg);
        attr(&mut msg, 0x0008, &mac.finalize().into_bytes());
    } else {
        let len = (msg.len() - 20) as u16;
        msg[2..4].copy_from_slice(&len.to_be_bytes());
    }
    msg
}

/// A STUN message's type and its attributes.
fn parse(buf: &[u8]) -> (u16, Vec<(u16, Vec<u8>)>) {
    let kind = u16::from_be_bytes([buf[0], buf[1]]);
    let mut attrs = Vec::new();
    let mut at = 20;
    while at + 4 <= buf.len() {
        let t = u16::from_be_bytes([buf[at], buf[at + 1]]);
        let l = usize::from(u16::from_be_bytes([buf[at + 2], buf[at + 3]]));
        attrs.push((t, buf[at + 4..(at + 4 + l).min(buf.len())].to_vec()));
        at += 4 + l.next_multiple_of(4);
    }
    (kind, attrs)
}

/// Sends `msg` until an answer comes: its type and attributes.
fn answer(socket: &UdpSocket, msg: &[u8], server: SocketAddr) -> (u16, Vec<(u16, Vec<u8>)>) {
    socket.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let mut buf = [0u8; 1500];
    for _ in 0..10 {
        socket.send_to(msg, server).unwrap();
        if let Ok(n) = socket.recv(&mut buf) {
            return parse(&buf[..n]);
        }
    }
    panic!("no answer from turnserver at {server}");
}

/// A 401's realm and nonce, and the long-term key for them.
fn credentials(attrs: &[(u16, Vec<u8>)]) -> (Vec<u8>, Vec<u8>, [u8; 16]) {
    let get = |t: u16| attrs.iter().find(|(k, _)| *k == t).map(|(_, v)| v.clone()).expect("realm and nonce");
    let (realm, nonce) = (get(0x0014), get(0x0015));
    let key: [u8; 16] = Md5::digest([b"bench:".as_slice(), &realm, b":bench"].concat()).into();
    (realm, nonce, key)
}

/// Allocates on `server` from `socket` and binds channel 0x4000 to `peer`.
fn turn_channel(socket: &UdpSocket, server: SocketAddr, peer: SocketAddr) -> u16 {
    let transport = (0x0019, vec![17, 0, 0, 0]);
    let (kind, attrs) = answer(socket, &request(0x0003, std::slice::from_ref(&transport), None), server);
    assert_eq!(kind, 0x0113, "Allocate without credentials is refused with 401");
    let (realm, nonce, key) = credentials(&attrs);
    let auth = Some((realm.as_slice(), nonce.as_slice(), &key));
    let (kind, _) = answer(socket, &request(0x0003, &[transport], auth), server);
    assert_eq!(kind, 0x0103, "Allocate succeeds");
    let channel = 0x4000u16;
    let bind = [(0x000c, [channel.to_be_bytes().as_slice(), &[0, 0]].concat()), (0x0012, xor_addr(peer))];
    let (kind, _) = answer(socket, &request(0x0009, &bind, auth), server);
    assert_eq!(kind, 0x0109, "ChannelBind succeeds");
    channel
}

// ----- registrations against authenticated allocations -----

/// What a run of [`registrations`] did.
#[derive(Debug, Clone, Copy)]
pub struct Admitted {
    pub done: u64,
    pub elapsed: Duration,
    pub server_cpu: Duration,
}

/// One client of [`registrations`]: each completes admissions one after another, each
/// from scratch.
trait Admit {
    /// Reads what came, sends what is due; how many admissions completed.
    fn step(&mut self, now: Instant) -> u64;
}

/// A non-blocking loopback socket: each admission comes from a new address.
fn fresh_socket() -> UdpSocket {
    let socket = loopback();
    socket.set_nonblocking(true).unwrap();
    socket
}

/// A fresh identity registering from a new address: Register, the challenge, Register with
/// the cookie and its proof of possession, Registered (the real [`Registrations`] machine).
struct Registering {
    socket: UdpSocket,
    introducer: SocketAddr,
    machine: Registrations,
}

impl Registering {
    fn new(introducer: SocketAddr, now: Instant) -> Registering {
        let socket = fresh_socket();
        let machine = Self::fresh(&socket, introducer, now);
        Registering { socket, introducer, machine }
    }

    fn fresh(socket: &UdpSocket, introducer: SocketAddr, now: Instant) -> Registrations {
        let id = Identity::generate();
        let nat = NatReport::public(socket.local_addr().unwrap());
        let record = pb::PeerRecord { nat: Some((&nat).into()), issued_ms: unix_ms(), ..Default::default() };
        let mut machine = Registrations::new(registration::Config::default(), id.clone(), StdRng::from_entropy());
        machine.add(now, introducer, id.sign_record(record));
        machine
    }
}

impl Admit for Registering {
    fn step(&mut self, now: Instant) -> u64 {
        let mut buf = [0u8; 2048];
        while let Ok((n, src)) = self.socket.recv_from(&mut buf) {
            if let Some((_, payload)) = socket::classify(buf[..n].to_vec()) {
                self.machine.handle_inbound(Inbound { now, socket: SocketId::PRIMARY, src, len: n, payload });
            }
        }
        if self.machine.poll_timeout().is_some_and(|t| t <= now) {
            self.machine.handle_timeout(now);
        }
        let mut done = 0;
        while let Some((_, event)) = self.machine.poll_event() {
            if matches!(event, Registered::Registered { .. }) {
                done += 1;
            }
        }
        if done > 0 {
            self.socket = fresh_socket();
            self.machine = Self::fresh(&self.socket, self.introducer, now);
        }
        while let Some(t) = self.machine.poll_transmit() {
            let _ = self.socket.send_to(&t.payload, t.dst);
        }
        done
    }
}

/// A TURN client allocating from scratch: Allocate, its 401, Allocate with long-term
/// credentials; then Refresh with lifetime 0 frees the relayed port, and the next client
/// starts from a new socket.
struct Allocating {
    socket: UdpSocket,
    server: SocketAddr,
    /// The request in flight and when it went (sent again after 200 ms).
    sent: Option<(Vec<u8>, Instant)>,
    /// The Refresh that frees the allocation, signed with the credentials of the last 401.
    refresh: Option<Vec<u8>>,
    turn: Turn,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Turn {
    Challenge,
    Allocate,
}

impl Allocating {
    fn new(server: SocketAddr) -> Allocating {
        Allocating { socket: fresh_socket(), server, sent: None, refresh: None, turn: Turn::Challenge }
    }

    fn send(&mut self, turn: Turn, msg: Vec<u8>, now: Instant) {
        let _ = self.socket.send_to(&msg, self.server);
        (self.turn, self.sent) = (turn, Some((msg, now)));
    }

    fn start(&mut self, now: Instant) {
        let transport = (TRANSPORT_UDP.0, TRANSPORT_UDP.1.to_vec());
        self.send(Turn::Challenge, request(0x0003, &[transport], None), now);
    }
}

const TRANSPORT_UDP: (u16, [u8; 4]) = (0x0019, [17, 0, 0, 0]);

impl Admit for Allocating {
    fn step(&mut self, now: Instant) -> u64 {
        if self.sent.is_none() {
            self.start(now);
        }
        let mut buf = [0u8; 1500];
        let mut done = 0;
        while let Ok(n) = self.socket.recv(&mut buf) {
            let (kind, attrs) = parse(&buf[..n]);
            let has = |t: u16| attrs.iter().any(|(k, _)| *k == t);
            match (self.turn, kind) {
                // A 401 (or a stale nonce): again, with credentials.
                (Turn::Challenge | Turn::Allocate, 0x0113) if has(0x0014) && has(0x0015) => {
                    let (realm, nonce, key) = credentials(&attrs);
                    let auth = Some((realm.as_slice(), nonce.as_slice(), &key));
                    self.refresh = Some(request(0x0004, &[(0x000d, vec![0; 4])], auth));
                    let transport = (TRANSPORT_UDP.0, TRANSPORT_UDP.1.to_vec());
                    self.send(Turn::Allocate, request(0x0003, &[transport], auth), now);
                }
                // Freed at once (coturn answers a new Allocate from the same 5-tuple with
                // 437 for a while), and the next client starts on a socket of its own.
                (Turn::Allocate, 0x0103) => {
                    done += 1;
                    let refresh = self.refresh.take().expect("credentials came first");
                    let _ = self.socket.send_to(&refresh, self.server);
                    self.socket = fresh_socket();
                    self.start(now);
                }
                (Turn::Allocate, 0x0113) => self.start(now),
                _ => {}
            }
        }
        if let Some((msg, at)) = self.sent.clone().filter(|(_, at)| now >= *at + Duration::from_millis(200)) {
            let _ = at;
            let turn = self.turn;
            self.send(turn, msg, now);
        }
        done
    }
}

/// `clients` clients at once admit themselves to `kind` (registrations with our introducer,
/// allocations with coturn) for `duration`.
pub fn registrations(kind: Kind3, clients: usize, duration: Duration) -> Admitted {
    let server = Server::start(kind);
    let now = Instant::now();
    let mut all: Vec<Box<dyn Admit>> = (0..clients)
        .map(|_| -> Box<dyn Admit> {
            match kind {
                Kind3::Introducer => Box::new(Registering::new(server.addr, now)),
                Kind3::Coturn => Box::new(Allocating::new(server.addr)),
                other => panic!("{} admits nobody", other.name()),
            }
        })
        .collect();
    // A warm-up, then the measurement.
    let run = |all: &mut Vec<Box<dyn Admit>>, for_: Duration| {
        let start = Instant::now();
        let mut done = 0;
        while start.elapsed() < for_ {
            let now = Instant::now();
            done += all.iter_mut().map(|c| c.step(now)).sum::<u64>();
        }
        (done, start.elapsed())
    };
    run(&mut all, duration / 4);
    let cpu = server.cpu();
    let (done, elapsed) = run(&mut all, duration);
    Admitted { done, elapsed, server_cpu: server.cpu() - cpu }
}

// ----- the children -----

/// The child roles: `introducer PORT` serves as a relay; `forwarder` forwards. Each prints
/// its address, then runs until its stdin closes.
pub fn run_child(role: &str) {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match role {
        "introducer" => {
            let port: u16 = args[0].parse().expect("port");
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let mut config = introducer_node::Config::new(Identity::generate());
            config.listen = vec![SocketAddr::from(([127, 0, 0, 1], port))];
            crate::lift_limits(&mut config);
            let node = introducer_node::Node::start(config).expect("relay node");
            println!("{}", node.listen()[0]);
            std::io::stdout().flush().unwrap();
            wait_for_stdin();
            drop(rt);
            drop(node);
        }
        "forwarder" => {
            let socket = loopback();
            println!("{}", socket.local_addr().unwrap());
            std::io::stdout().flush().unwrap();
            std::thread::spawn(wait_for_stdin_then_exit);
            forward(&socket, args.first().is_some_and(|a| a == "gso"));
        }
        other => panic!("unknown child role {other}"),
    }
}

fn wait_for_stdin() {
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
}

fn wait_for_stdin_then_exit() {
    wait_for_stdin();
    std::process::exit(0);
}

/// Pairs the first two sources, then sends each one's datagrams to the other, a batch at
/// a time.
fn forward(socket: &UdpSocket, gso: bool) {
    let mut batch = if gso { Batch::default() } else { Batch::without_gso() };
    let mut pair: Vec<SocketAddr> = Vec::new();
    let mut out = Vec::with_capacity(BATCH);
    loop {
        let Ok(n) = batch.recv(socket) else { continue };
        out.clear();
        for (index, meta) in batch.meta()[..n].iter().enumerate() {
            if pair.len() < 2 {
                if !pair.contains(&meta.src) {
                    pair.push(meta.src);
                }
                continue;
            }
            let dst = if meta.src == pair[0] { pair[1] } else { pair[0] };
            out.push(Out { via: SocketId::PRIMARY, index, dst });
        }
        let mut done = 0;
        while done < out.len() {
            match batch.send(socket, &out[done..]) {
                Ok(sent) => done += sent,
                Err(_) => done += 1,
            }
        }
    }
}
