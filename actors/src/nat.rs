//! The NAT vocabulary (RFC 4787 / RFC 5780) shared by probing, strategy choice, the
//! simulator's NAT boxes and the real-NAT lab's expectations: one model, so that what the
//! simulator emulates, what the lab configures and what probing reports cannot drift apart.

use introducer_proto::pb;
use std::net::SocketAddr;
use std::time::Duration;

/// How a NAT picks the external endpoint for an outgoing flow (RFC 4787 §4.1), from the
/// least restrictive to the most.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mapping {
    /// One external endpoint per internal endpoint, whatever the destination.
    EndpointIndependent,
    /// A new external endpoint per destination IP.
    AddressDependent,
    /// A new external endpoint per destination IP and port ("symmetric").
    AddressAndPortDependent,
}

/// Which inbound packets a NAT lets through to a mapping (RFC 4787 §5), from the least
/// restrictive to the most.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Filtering {
    /// Anyone may send to the mapping ("full cone").
    EndpointIndependent,
    /// Only IPs the internal endpoint has sent to ("restricted cone").
    AddressDependent,
    /// Only IP:port pairs the internal endpoint has sent to ("port-restricted").
    AddressAndPortDependent,
}

/// How a NAT chooses the external port of a new mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Allocation {
    /// The internal port, when free.
    Preserving,
    /// The previous allocation plus `step`, shared by every host behind the NAT.
    Sequential { step: i32 },
    /// Unpredictable.
    Random,
}

/// The coarse class that decides punching strategy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NatType {
    /// Reachable unsolicited: no translation and no filtering.
    Public,
    /// Endpoint-independent mapping: what the introducer sees is what a peer will see.
    Easy,
    /// The mapping depends on the destination (a peer sees a port nobody has observed),
    /// or probing could not show that it does not.
    Hard,
}

impl Mapping {
    pub fn as_str(self) -> &'static str {
        match self {
            Mapping::EndpointIndependent => "endpoint-independent",
            Mapping::AddressDependent => "address-dependent",
            Mapping::AddressAndPortDependent => "address-and-port-dependent",
        }
    }
}

impl Filtering {
    pub fn as_str(self) -> &'static str {
        match self {
            Filtering::EndpointIndependent => "endpoint-independent",
            Filtering::AddressDependent => "address-dependent",
            Filtering::AddressAndPortDependent => "address-and-port-dependent",
        }
    }
}

impl Allocation {
    pub fn as_str(self) -> &'static str {
        match self {
            Allocation::Preserving => "preserving",
            Allocation::Sequential { .. } => "sequential",
            Allocation::Random => "random",
        }
    }
}

impl NatType {
    pub fn as_str(self) -> &'static str {
        match self {
            NatType::Public => "public",
            NatType::Easy => "easy",
            NatType::Hard => "hard",
        }
    }
}

/// What NAT probing concluded. `None` fields could not be determined (for example,
/// filtering needs a server with an alternate address; telling endpoint-independent
/// mapping from not needs two server IPs). An unknown mapping counts as hard
/// ([`NatReport::nat_type`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NatReport {
    /// The node's public endpoint as the first server saw it.
    pub public_addr: SocketAddr,
    /// The public endpoint equals the local one: no translation on the path.
    pub no_nat: bool,
    pub mapping: Option<Mapping>,
    pub filtering: Option<Filtering>,
    pub allocation: Option<Allocation>,
}

impl NatReport {
    /// What probing reports for a host with no NAT and no filtering at `addr`.
    pub fn public(addr: SocketAddr) -> NatReport {
        NatReport {
            public_addr: addr,
            no_nat: true,
            mapping: Some(Mapping::EndpointIndependent),
            filtering: Some(Filtering::EndpointIndependent),
            allocation: Some(Allocation::Preserving),
        }
    }

    /// Public only when nothing translates and nothing filters; easy only when mapping is
    /// proven endpoint-independent (or nothing translates, so there is no mapping to
    /// depend on anything); hard otherwise — an unknown mapping included.
    ///
    /// Why unknown is hard: "easy" promises that a peer reaches us at the port the
    /// introducer saw. Taken on faith for a symmetric NAT, both sides plan a simultaneous
    /// open that cannot work and fall back to the relay after seconds; taken as hard, an
    /// easy peer is reached by the birthday punch (which works whatever our mapping is),
    /// and two unknowns go to the relay at once.
    pub fn nat_type(&self) -> NatType {
        match (self.no_nat, self.mapping, self.filtering) {
            (true, _, Some(Filtering::EndpointIndependent)) => NatType::Public,
            (_, Some(Mapping::EndpointIndependent), _) | (true, None, _) => NatType::Easy,
            _ => NatType::Hard,
        }
    }
}

impl From<&NatReport> for pb::NatReport {
    fn from(r: &NatReport) -> Self {
        pb::NatReport {
            no_nat: r.no_nat,
            mapping: match r.mapping {
                None => pb::Mapping::Unknown,
                Some(Mapping::EndpointIndependent) => pb::Mapping::EndpointIndependent,
                Some(Mapping::AddressDependent) => pb::Mapping::AddressDependent,
                Some(Mapping::AddressAndPortDependent) => pb::Mapping::AddressAndPortDependent,
            } as i32,
            filtering: match r.filtering {
                None => pb::Filtering::Unknown,
                Some(Filtering::EndpointIndependent) => pb::Filtering::EndpointIndependent,
                Some(Filtering::AddressDependent) => pb::Filtering::AddressDependent,
                Some(Filtering::AddressAndPortDependent) => pb::Filtering::AddressAndPortDependent,
            } as i32,
            allocation: match r.allocation {
                None => pb::Allocation::Unknown,
                Some(Allocation::Preserving) => pb::Allocation::Preserving,
                Some(Allocation::Sequential { .. }) => pb::Allocation::Sequential,
                Some(Allocation::Random) => pb::Allocation::Random,
            } as i32,
            allocation_step: match r.allocation {
                Some(Allocation::Sequential { step }) => step,
                _ => 0,
            },
            public_addr: Some(r.public_addr.into()),
        }
    }
}

impl TryFrom<&pb::NatReport> for NatReport {
    type Error = introducer_proto::addr::BadAddr;
    fn try_from(r: &pb::NatReport) -> Result<Self, Self::Error> {
        let public_addr = r.public_addr.as_ref().ok_or(introducer_proto::addr::BadAddr)?.try_into()?;
        Ok(NatReport {
            public_addr,
            no_nat: r.no_nat,
            mapping: match r.mapping() {
                pb::Mapping::Unknown => None,
                pb::Mapping::EndpointIndependent => Some(Mapping::EndpointIndependent),
                pb::Mapping::AddressDependent => Some(Mapping::AddressDependent),
                pb::Mapping::AddressAndPortDependent => Some(Mapping::AddressAndPortDependent),
            },
            filtering: match r.filtering() {
                pb::Filtering::Unknown => None,
                pb::Filtering::EndpointIndependent => Some(Filtering::EndpointIndependent),
                pb::Filtering::AddressDependent => Some(Filtering::AddressDependent),
                pb::Filtering::AddressAndPortDependent => Some(Filtering::AddressAndPortDependent),
            },
            allocation: match r.allocation() {
                pb::Allocation::Unknown => None,
                pb::Allocation::Preserving => Some(Allocation::Preserving),
                pb::Allocation::Sequential => Some(Allocation::Sequential { step: r.allocation_step }),
                pb::Allocation::Random => Some(Allocation::Random),
            },
        })
    }
}

/// The behaviour of one NAT box: what the simulator emulates and what the lab configures
/// with nftables. [`NatBehavior::expected_report`] is what probing must find behind it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NatBehavior {
    pub mapping: Mapping,
    pub filtering: Filtering,
    pub allocation: Allocation,
    /// Whether hosts behind the NAT reach each other at its public address.
    pub hairpin: bool,
    /// How long an idle mapping survives (conntrack's unreplied UDP timeout in the lab).
    pub mapping_lifetime: Duration,
}

impl NatBehavior {
    const fn new(mapping: Mapping, filtering: Filtering, allocation: Allocation) -> Self {
        NatBehavior { mapping, filtering, allocation, hairpin: false, mapping_lifetime: Duration::from_secs(30) }
    }

    /// Linux `masquerade`: the typical home router.
    pub const PORT_RESTRICTED: Self =
        Self::new(Mapping::EndpointIndependent, Filtering::AddressAndPortDependent, Allocation::Preserving);
    /// Endpoint-independent mapping and filtering ("full cone").
    pub const FULL_CONE: Self =
        Self::new(Mapping::EndpointIndependent, Filtering::EndpointIndependent, Allocation::Preserving);
    /// Endpoint-independent mapping, address-dependent filtering ("restricted cone").
    pub const RESTRICTED_CONE: Self =
        Self::new(Mapping::EndpointIndependent, Filtering::AddressDependent, Allocation::Preserving);
    /// Endpoint-independent mapping to a random port (`snat to IP:range`).
    pub const EIM_RANDOM_PORT: Self =
        Self::new(Mapping::EndpointIndependent, Filtering::AddressAndPortDependent, Allocation::Random);
    /// A new random port per destination (`masquerade random`): "hard", "symmetric".
    pub const SYMMETRIC_RANDOM: Self =
        Self::new(Mapping::AddressAndPortDependent, Filtering::AddressAndPortDependent, Allocation::Random);
    /// A new port per destination, handed out in sequence.
    pub const SYMMETRIC_SEQUENTIAL: Self = Self::new(
        Mapping::AddressAndPortDependent,
        Filtering::AddressAndPortDependent,
        Allocation::Sequential { step: 1 },
    );

    pub fn with_hairpin(mut self, hairpin: bool) -> Self {
        self.hairpin = hairpin;
        self
    }

    pub fn with_mapping_lifetime(mut self, lifetime: Duration) -> Self {
        self.mapping_lifetime = lifetime;
        self
    }

    /// This NAT behind `outer` (a home router behind a carrier-grade NAT), as the internet
    /// sees the pair: each property is the more restrictive layer's, the outer layer picks
    /// the public port unless it preserves the inner one's, and a mapping lives as long as
    /// the shorter-lived layer keeps it. Hairpinning through both needs both.
    pub fn behind(self, outer: NatBehavior) -> NatBehavior {
        NatBehavior {
            mapping: self.mapping.max(outer.mapping),
            filtering: self.filtering.max(outer.filtering),
            allocation: match outer.allocation {
                Allocation::Preserving => self.allocation,
                chosen => chosen,
            },
            hairpin: self.hairpin && outer.hairpin,
            mapping_lifetime: self.mapping_lifetime.min(outer.mapping_lifetime),
        }
    }

    pub fn nat_type(&self) -> NatType {
        match self.mapping {
            Mapping::EndpointIndependent => NatType::Easy,
            _ => NatType::Hard,
        }
    }

    /// What a full probe (RFC 5780 server, several sockets) must report behind this NAT.
    /// Allocation is reported only where probing can tell it: a preserving NAT only shows
    /// as such when the internal port was free, which probing assumes.
    pub fn expected_report(&self, public_addr: SocketAddr) -> NatReport {
        NatReport {
            public_addr,
            no_nat: false,
            mapping: Some(self.mapping),
            filtering: Some(self.filtering),
            allocation: Some(self.allocation),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_round_trips_through_the_wire() {
        let report = NatReport {
            public_addr: "203.0.113.9:40000".parse().unwrap(),
            no_nat: false,
            mapping: Some(Mapping::AddressAndPortDependent),
            filtering: None,
            allocation: Some(Allocation::Sequential { step: 2 }),
        };
        assert_eq!(NatReport::try_from(&pb::NatReport::from(&report)), Ok(report));
    }

    #[test]
    fn two_nats_in_a_row_look_like_their_most_restrictive_layer() {
        let home = NatBehavior::FULL_CONE.with_mapping_lifetime(Duration::from_secs(20));
        let pair = home.behind(NatBehavior::SYMMETRIC_SEQUENTIAL);
        assert_eq!(pair, NatBehavior::SYMMETRIC_SEQUENTIAL.with_mapping_lifetime(Duration::from_secs(20)));
        // A preserving outer layer passes the inner layer's ports through.
        assert_eq!(NatBehavior::SYMMETRIC_RANDOM.behind(NatBehavior::FULL_CONE), NatBehavior::SYMMETRIC_RANDOM);
        let cgnat = NatBehavior::EIM_RANDOM_PORT;
        assert_eq!(NatBehavior::RESTRICTED_CONE.behind(cgnat), NatBehavior::EIM_RANDOM_PORT);
    }

    #[test]
    fn nat_type_follows_mapping_and_filtering() {
        let mut r = NatBehavior::PORT_RESTRICTED.expected_report("203.0.113.1:1".parse().unwrap());
        assert_eq!(r.nat_type(), NatType::Easy);
        r.mapping = Some(Mapping::AddressAndPortDependent);
        assert_eq!(r.nat_type(), NatType::Hard);
        let public = NatReport { no_nat: true, filtering: Some(Filtering::EndpointIndependent), ..r };
        assert_eq!(public.nat_type(), NatType::Public);
        let firewalled = NatReport {
            no_nat: true,
            mapping: Some(Mapping::EndpointIndependent),
            filtering: Some(Filtering::AddressAndPortDependent),
            ..r
        };
        assert_eq!(firewalled.nat_type(), NatType::Easy);
    }

    /// Issue 9: a symmetric NAT probed against servers that could not tell its mapping
    /// (`None`) was reported easy, so a birthday-punchable pair ended up relayed.
    #[test]
    fn an_unknown_mapping_is_never_easy() {
        let unknown =
            NatReport { mapping: None, ..NatBehavior::PORT_RESTRICTED.expected_report(([203, 0, 113, 1], 1).into()) };
        for filtering in [None, Some(Filtering::EndpointIndependent), Some(Filtering::AddressAndPortDependent)] {
            for allocation in [None, Some(Allocation::Preserving), Some(Allocation::Sequential { step: 1 })] {
                let r = NatReport { filtering, allocation, ..unknown };
                assert_eq!(r.nat_type(), NatType::Hard, "{r:?}");
                // What a peer learns from our record says the same.
                let heard = NatReport::try_from(&pb::NatReport::from(&r)).unwrap();
                assert_eq!(heard.nat_type(), NatType::Hard, "{heard:?}");
            }
        }
        // Untranslated, nothing depends on the destination: easy (public if unfiltered).
        let untranslated = NatReport { no_nat: true, ..unknown };
        assert_eq!(untranslated.nat_type(), NatType::Easy);
        let open = NatReport { filtering: Some(Filtering::EndpointIndependent), ..untranslated };
        assert_eq!(open.nat_type(), NatType::Public);
        // Every NAT the model knows has a known mapping, and its type follows it.
        for b in [NatBehavior::PORT_RESTRICTED, NatBehavior::SYMMETRIC_RANDOM, NatBehavior::RESTRICTED_CONE] {
            assert_eq!(b.expected_report(unknown.public_addr).nat_type(), b.nat_type(), "{b:?}");
        }
    }
}
