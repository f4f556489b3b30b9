//! One NAT box: mappings, filtering, port allocation and expiry, as [`NatBehavior`] says.
//!
//! Pure bookkeeping on virtual time (`Duration` since the simulation started); the
//! simulator decides when packets reach the box and where they go next.

use super::trace::NatCounters;
use introducer_actors::nat::{Allocation, Filtering, Mapping, NatBehavior};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

/// External ports a NAT hands out: the non-privileged range, as Linux does by default.
const PORT_MIN: u16 = 1024;
const PORT_COUNT: i64 = 65536 - PORT_MIN as i64;
/// Where a sequential NAT's counter starts: a seed-chosen port in this range (the lab's
/// sequential rule counts from 20000).
const SEQ_START: std::ops::Range<u16> = 20000..30000;

/// What identifies a mapping: the internal endpoint, plus the destination IP (ADM) or
/// IP and port (APDM).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    internal: SocketAddrV4,
    ip: Option<Ipv4Addr>,
    port: Option<u16>,
}

#[derive(Debug)]
struct Entry {
    key: Key,
    /// Alive while `now < expires`.
    expires: Duration,
    /// Remote endpoints sent to through this mapping, each with its own expiry
    /// (address-and-port-dependent filtering admits these).
    perms: HashMap<SocketAddrV4, Duration>,
    /// Remote IPs sent to (address-dependent filtering admits these).
    ip_perms: HashMap<Ipv4Addr, Duration>,
}

/// Why an inbound datagram did not get through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    NoMapping,
    Filtered,
}

/// A live mapping, for inspection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MappingView {
    pub internal: SocketAddrV4,
    pub external_port: u16,
    pub expires: Duration,
}

#[derive(Debug)]
pub(crate) struct NatBox {
    pub behavior: NatBehavior,
    pub public_ip: Ipv4Addr,
    /// Whether inbound traffic that gets through refreshes the mapping (and the
    /// permission it matched), as Linux conntrack does. Outbound always refreshes.
    pub inbound_refresh: bool,
    pub counters: NatCounters,
    rng: StdRng,
    /// The next port a sequential NAT tries; shared by every host behind it.
    next_seq: u16,
    by_key: HashMap<Key, u16>,
    by_port: HashMap<u16, Entry>,
}

fn wrap(p: i64) -> u16 {
    (PORT_MIN as i64 + (p - PORT_MIN as i64).rem_euclid(PORT_COUNT)) as u16
}

impl NatBox {
    pub fn new(behavior: NatBehavior, public_ip: Ipv4Addr, seed: u64) -> NatBox {
        if let Allocation::Sequential { step } = behavior.allocation {
            assert!((step as i64).rem_euclid(PORT_COUNT) != 0, "a sequential NAT needs a step that moves (got {step})");
        }
        let mut rng = StdRng::seed_from_u64(seed);
        let next_seq = rng.gen_range(SEQ_START);
        NatBox {
            behavior,
            public_ip,
            inbound_refresh: true,
            counters: NatCounters::default(),
            rng,
            next_seq,
            by_key: HashMap::new(),
            by_port: HashMap::new(),
        }
    }

    fn key(&self, internal: SocketAddrV4, remote: SocketAddrV4) -> Key {
        let (ip, port) = match self.behavior.mapping {
            Mapping::EndpointIndependent => (None, None),
            Mapping::AddressDependent => (Some(*remote.ip()), None),
            Mapping::AddressAndPortDependent => (Some(*remote.ip()), Some(remote.port())),
        };
        Key { internal, ip, port }
    }

    /// An outbound datagram from `internal` to `remote` at `now`: finds or creates the
    /// mapping, refreshes it and its permission for `remote`, and returns the external
    /// port. `None` when every port is taken.
    pub fn outbound(&mut self, now: Duration, internal: SocketAddrV4, remote: SocketAddrV4) -> Option<u16> {
        let key = self.key(internal, remote);
        let port = match self.by_key.get(&key).copied() {
            Some(port) if self.by_port[&port].expires > now => port,
            found => {
                if let Some(port) = found {
                    self.expire(port);
                }
                let port = self.allocate(now, internal.port())?;
                self.by_key.insert(key, port);
                self.by_port.insert(port, Entry { key, expires: now, perms: HashMap::new(), ip_perms: HashMap::new() });
                self.counters.mappings_created += 1;
                port
            }
        };
        let until = now + self.behavior.mapping_lifetime;
        let entry = self.by_port.get_mut(&port).expect("mapping just found or made");
        entry.expires = until;
        entry.perms.insert(remote, until);
        entry.ip_perms.insert(*remote.ip(), until);
        self.counters.outbound += 1;
        Some(port)
    }

    /// An inbound datagram from `remote` to external port `port` at `now`: the internal
    /// endpoint to forward it to, or why not. `filter: false` skips filtering (hairpinned
    /// traffic).
    pub fn inbound(
        &mut self,
        now: Duration,
        port: u16,
        remote: SocketAddrV4,
        filter: bool,
    ) -> Result<SocketAddrV4, Refused> {
        let Some(entry) = self.by_port.get_mut(&port) else {
            self.counters.dropped_no_mapping += 1;
            return Err(Refused::NoMapping);
        };
        if entry.expires <= now {
            self.expire(port);
            self.counters.dropped_no_mapping += 1;
            return Err(Refused::NoMapping);
        }
        let alive = |t: Option<&Duration>| t.is_some_and(|&t| t > now);
        let admitted = !filter
            || match self.behavior.filtering {
                Filtering::EndpointIndependent => true,
                Filtering::AddressDependent => alive(entry.ip_perms.get(remote.ip())),
                Filtering::AddressAndPortDependent => alive(entry.perms.get(&remote)),
            };
        if !admitted {
            self.counters.dropped_filtered += 1;
            return Err(Refused::Filtered);
        }
        if self.inbound_refresh {
            let until = now + self.behavior.mapping_lifetime;
            entry.expires = until;
            if filter {
                match self.behavior.filtering {
                    Filtering::EndpointIndependent => {}
                    Filtering::AddressDependent => {
                        entry.ip_perms.insert(*remote.ip(), until);
                    }
                    Filtering::AddressAndPortDependent => {
                        entry.perms.insert(remote, until);
                    }
                }
            }
        }
        self.counters.inbound += 1;
        Ok(entry.key.internal)
    }

    /// Live mappings, by external port.
    /// Forgets every mapping at once (a reboot, `conntrack -F`); the port counter moves on.
    pub fn flush(&mut self) {
        self.by_key.clear();
        self.by_port.clear();
    }

    pub fn mappings(&self, now: Duration) -> Vec<MappingView> {
        let mut v: Vec<MappingView> = self
            .by_port
            .iter()
            .filter(|(_, e)| e.expires > now)
            .map(|(&external_port, e)| MappingView { internal: e.key.internal, external_port, expires: e.expires })
            .collect();
        v.sort_by_key(|m| m.external_port);
        v
    }

    fn expire(&mut self, port: u16) {
        if let Some(entry) = self.by_port.remove(&port) {
            self.by_key.remove(&entry.key);
            self.counters.mappings_expired += 1;
        }
    }

    /// Whether `port` can be handed out; reclaims it from an expired mapping.
    fn free(&mut self, now: Duration, port: u16) -> bool {
        match self.by_port.get(&port) {
            None => true,
            Some(e) if e.expires <= now => {
                self.expire(port);
                true
            }
            Some(_) => false,
        }
    }

    fn allocate(&mut self, now: Duration, internal_port: u16) -> Option<u16> {
        let scan_from = match self.behavior.allocation {
            Allocation::Preserving => {
                if self.free(now, internal_port) {
                    return Some(internal_port);
                }
                internal_port as i64 + 1
            }
            Allocation::Sequential { step } => {
                for _ in 0..PORT_COUNT {
                    let port = self.next_seq;
                    self.next_seq = wrap(port as i64 + step as i64);
                    if self.free(now, port) {
                        return Some(port);
                    }
                    // A step that shares a factor with the range can cycle through
                    // occupied ports only; the scan below then finds the others.
                    if self.next_seq == port {
                        break;
                    }
                }
                self.next_seq as i64
            }
            Allocation::Random => {
                for _ in 0..64 {
                    let port = self.rng.gen_range(PORT_MIN..=u16::MAX);
                    if self.free(now, port) {
                        return Some(port);
                    }
                }
                self.rng.gen_range(PORT_MIN..=u16::MAX) as i64
            }
        };
        (0..PORT_COUNT).map(|i| wrap(scan_from + i)).find(|&p| self.free(now, p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(s: &str) -> SocketAddrV4 {
        s.parse().unwrap()
    }
    const S: Duration = Duration::from_secs(1);

    fn nat(b: NatBehavior) -> NatBox {
        NatBox::new(b, Ipv4Addr::new(203, 0, 113, 1), 42)
    }

    #[test]
    fn sequential_wraps_around_the_port_range_in_both_directions() {
        let mut n = nat(NatBehavior::SYMMETRIC_SEQUENTIAL);
        n.next_seq = 65534;
        let ports: Vec<u16> = (0..3)
            .map(|i| n.outbound(S, ep("10.0.0.2:5000"), SocketAddrV4::new([1, 1, 1, 1].into(), 80 + i)).unwrap())
            .collect();
        assert_eq!(ports, [65534, 65535, 1024]);

        let mut n =
            nat(NatBehavior { allocation: Allocation::Sequential { step: -2 }, ..NatBehavior::SYMMETRIC_SEQUENTIAL });
        n.next_seq = 1026;
        let ports: Vec<u16> = (0..3)
            .map(|i| n.outbound(S, ep("10.0.0.2:5000"), SocketAddrV4::new([1, 1, 1, 1].into(), 80 + i)).unwrap())
            .collect();
        assert_eq!(ports, [1026, 1024, 65534]);
    }

    #[test]
    fn sequential_skips_ports_still_in_use() {
        let mut n = nat(NatBehavior::SYMMETRIC_SEQUENTIAL);
        let first = n.next_seq;
        let a = n.outbound(S, ep("10.0.0.2:5000"), ep("1.1.1.1:1")).unwrap();
        assert_eq!(a, first);
        // Force the counter back onto the port in use: the NAT moves past it.
        n.next_seq = first;
        let b = n.outbound(S, ep("10.0.0.2:5000"), ep("1.1.1.1:2")).unwrap();
        assert_eq!(b, first + 1);
    }

    #[test]
    fn preserving_falls_back_to_the_next_free_port_and_reclaims_expired_ones() {
        let mut n = nat(NatBehavior::PORT_RESTRICTED);
        assert_eq!(n.outbound(S, ep("10.0.0.2:5000"), ep("1.1.1.1:1")), Some(5000));
        assert_eq!(n.outbound(S, ep("10.0.0.3:5000"), ep("1.1.1.1:1")), Some(5001));
        assert_eq!(n.outbound(S, ep("10.0.0.4:5001"), ep("1.1.1.1:1")), Some(5002));
        // After the lifetime, 10.0.0.4 gets its own port back.
        let later = S + n.behavior.mapping_lifetime;
        assert_eq!(n.outbound(later, ep("10.0.0.4:5001"), ep("1.1.1.1:1")), Some(5001));
        assert_eq!(n.counters.mappings_created, 4);
        assert_eq!(n.counters.mappings_expired, 2);
    }

    #[test]
    fn random_allocation_never_hands_out_a_port_twice() {
        let mut n = nat(NatBehavior::SYMMETRIC_RANDOM);
        let mut seen = std::collections::HashSet::new();
        for i in 0..5000u32 {
            let remote = SocketAddrV4::new(Ipv4Addr::from(0x0101_0000 + i), 9);
            let p = n.outbound(S, ep("10.0.0.2:5000"), remote).unwrap();
            assert!(p >= PORT_MIN);
            assert!(seen.insert(p), "port {p} handed out twice");
        }
    }

    #[test]
    fn permissions_expire_one_by_one_while_the_mapping_lives() {
        // The mapping is kept alive by traffic to one server; a peer sent to once loses
        // its permission after the lifetime, as a conntrack flow would.
        let b = NatBehavior::PORT_RESTRICTED.with_mapping_lifetime(Duration::from_secs(30));
        let mut n = nat(b);
        let me = ep("10.0.0.2:5000");
        let port = n.outbound(S, me, ep("1.1.1.1:3478")).unwrap();
        assert_eq!(n.outbound(S, me, ep("2.2.2.2:4000")), Some(port));
        for t in [20, 40] {
            n.outbound(Duration::from_secs(t), me, ep("1.1.1.1:3478"));
        }
        assert_eq!(n.inbound(Duration::from_secs(45), port, ep("1.1.1.1:3478"), true), Ok(me));
        assert_eq!(n.inbound(Duration::from_secs(45), port, ep("2.2.2.2:4000"), true), Err(Refused::Filtered));
    }

    #[test]
    fn a_mapping_idle_for_exactly_its_lifetime_is_gone() {
        let mut n = nat(NatBehavior::FULL_CONE);
        let port = n.outbound(Duration::ZERO, ep("10.0.0.2:5000"), ep("1.1.1.1:1")).unwrap();
        let life = n.behavior.mapping_lifetime;
        let just_before = life - Duration::from_nanos(1);
        assert!(n.inbound(just_before, port, ep("9.9.9.9:9"), true).is_ok());
        // That inbound refreshed it.
        assert!(n.inbound(just_before + life - Duration::from_nanos(1), port, ep("9.9.9.9:9"), true).is_ok());
        n.inbound_refresh = false;
        let t = just_before + life - Duration::from_nanos(1);
        assert!(n.inbound(t + life, port, ep("9.9.9.9:9"), true) == Err(Refused::NoMapping));
        assert_eq!(n.counters.mappings_expired, 1);
        assert!(n.mappings(t + life).is_empty());
    }
}
