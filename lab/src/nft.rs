//! nftables rulesets that make a Linux router behave like a [`NatBehavior`].
//!
//! Pure text generation, no I/O: the namespace lab ([`crate::netns`]) loads these rules
//! into its router namespaces, and a router container can load the very same ones
//! (`introducer-lab-nft … | nft -f -`), so both testbeds have identical NATs.
//!
//! A router needs three things: the ruleset ([`nat_ruleset`], or [`Kind::ruleset`] by name),
//! the sysctls ([`router_sysctls`] or [`Kind::sysctls`]: forwarding, no reverse-path
//! filtering, conntrack timeouts equal to the mapping lifetime), and, whenever its mappings must be forgotten,
//! `conntrack -F` plus [`flush_learned_maps`].

use introducer_actors::nat::{Allocation, Filtering, Mapping, NatBehavior};
use std::fmt;
use std::net::Ipv4Addr;
use std::time::Duration;

/// The one table every ruleset lives in (`table ip lab_nat`), so a router's NAT can be
/// replaced or inspected without touching anything else in its namespace.
pub const TABLE: &str = "lab_nat";

/// First port handed out by `snat to WAN:20000-29999` and by sequential allocation.
pub const PORT_BASE: u16 = 20000;

/// Ports in a sequential NAT's cycle before it wraps: enough for any test, small enough
/// that the explicit port map stays a few kilobytes.
pub const SEQUENTIAL_CYCLE: u32 = 1000;

/// The router's two interface names, as the rules match them (`iifname` / `oifname`).
/// They are names, not addresses, because the lab's and a container's interfaces differ
/// (`wan`/`lan` in the lab, `eth0`/`eth1` in a container).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interfaces {
    /// The uplink: traffic leaving through it is NATed, new traffic arriving on it filtered.
    pub wan: String,
    /// The LAN side; only hairpinning needs its name.
    pub lan: String,
}

impl Interfaces {
    pub fn new(wan: impl Into<String>, lan: impl Into<String>) -> Interfaces {
        Interfaces { wan: wan.into(), lan: lan.into() }
    }
}

impl Default for Interfaces {
    /// The lab's names, `wan` and `lan`.
    fn default() -> Interfaces {
        Interfaces::new("wan", "lan")
    }
}

/// Why no ruleset can be generated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RulesetError(String);

impl fmt::Display for RulesetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RulesetError {}

/// One dynamic map (or set) a behaviour's rules learn into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LearnedMap {
    /// `ext2int`, `seen`, `eim` or `adm`.
    pub name: &'static str,
    /// A set (`seen`) rather than a map; `flush set` and `flush map` are distinct commands.
    pub is_set: bool,
    /// What goes between the braces of its declaration (type, flags, timeout, size).
    pub decl: String,
}

/// The dynamic maps a behaviour needs. Each times out with the mapping lifetime: a learned
/// entry that outlived conntrack's would keep letting traffic in after the mapping is gone.
pub fn learned_maps(b: &NatBehavior) -> Vec<LearnedMap> {
    let t = nft_timeout(b.mapping_lifetime);
    let map = |name, ty: &str| LearnedMap {
        name,
        is_set: name == "seen",
        decl: format!("{ty}; flags dynamic, timeout; timeout {t}; size 65535;"),
    };
    let mut maps = Vec::new();
    if b.filtering != Filtering::AddressAndPortDependent || b.hairpin {
        // external port → the internal endpoint it maps to
        maps.push(map("ext2int", "type inet_service : ipv4_addr . inet_service"));
    }
    if b.filtering == Filtering::AddressDependent {
        // external port . remote address the inside has sent to
        maps.push(map("seen", "type inet_service . ipv4_addr"));
    }
    if b.mapping == Mapping::EndpointIndependent && matches!(b.allocation, Allocation::Sequential { .. }) {
        // internal endpoint → its one external port
        maps.push(map("eim", "type ipv4_addr . inet_service : inet_service"));
    }
    if b.mapping == Mapping::AddressDependent {
        // internal endpoint . remote address → external port
        maps.push(map("adm", "type ipv4_addr . inet_service . ipv4_addr : inet_service"));
    }
    maps
}

/// nft commands that empty the learned maps, to run with `conntrack -F`: flushing
/// conntrack alone would leave the maps admitting traffic for forgotten mappings.
pub fn flush_learned_maps(b: &NatBehavior) -> String {
    learned_maps(b)
        .iter()
        .map(|m| format!("flush {} ip {TABLE} {}\n", if m.is_set { "set" } else { "map" }, m.name))
        .collect()
}

/// A duration as an nft timeout, at least a second: nft rejects 0 and conntrack's own
/// timeouts have whole-second resolution anyway.
pub fn nft_timeout(d: Duration) -> String {
    format!("{}ms", d.as_millis().max(1000))
}

/// The sysctls any router needs, as (key, value), to apply inside its namespace:
/// forwarding on (v4 and v6) and reverse-path filtering off (lab traffic is asymmetric, and
/// documentation-range addresses are not routed back the way they came).
pub fn forwarding_sysctls() -> Vec<(&'static str, String)> {
    vec![
        ("net.ipv4.ip_forward", "1".into()),
        ("net.ipv6.conf.all.forwarding", "1".into()),
        ("net.ipv4.conf.all.rp_filter", "0".into()),
        ("net.ipv4.conf.default.rp_filter", "0".into()),
    ]
}

/// Conntrack's UDP timeouts set to `b`'s mapping lifetime, since conntrack is what remembers
/// mappings: `udp_timeout` for flows that never saw a reply, `udp_timeout_stream` for the
/// others (kernel defaults 30 s / 120 s). Per namespace.
pub fn conntrack_sysctls(b: &NatBehavior) -> Vec<(&'static str, String)> {
    let secs = b.mapping_lifetime.as_secs_f64().ceil().max(1.0) as u64;
    vec![
        ("net.netfilter.nf_conntrack_udp_timeout", secs.to_string()),
        ("net.netfilter.nf_conntrack_udp_timeout_stream", secs.to_string()),
    ]
}

/// Every sysctl a NAT router with behaviour `b` needs: [`forwarding_sysctls`] and
/// [`conntrack_sysctls`].
pub fn router_sysctls(b: &NatBehavior) -> Vec<(&'static str, String)> {
    let mut all = forwarding_sysctls();
    all.extend(conntrack_sysctls(b));
    all
}

/// Interface names go into the rules between quotes: anything that could end the string or
/// is not a valid Linux interface name is refused rather than quoted.
fn check_ifname(what: &str, name: &str) -> Result<(), RulesetError> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && name.bytes().all(|c| c.is_ascii_graphic() && !matches!(c, b'"' | b'/' | b'\\' | b':'));
    if ok {
        Ok(())
    } else {
        Err(RulesetError(format!("invalid {what} interface name {name:?}")))
    }
}

/// The nftables ruleset (table `ip lab_nat`) that makes a router with WAN interface
/// `ifs.wan` at `wan_ip` and LAN interface `ifs.lan` behave as `b`. UDP gets the configured
/// behaviour; everything else a plain `masquerade`. Load it into an empty table (the lab
/// runs `flush ruleset` first; a fresh container namespace has no `lab_nat`).
///
/// Mapping and allocation (chain `udp_mapping`, used for WAN traffic and for hairpinned
/// traffic alike; `snat ip to WAN` is what `masquerade` does on a router with one fixed
/// WAN address, and it also works for the hairpin path whose output interface is the LAN):
///
/// | mapping | allocation | rule |
/// |---|---|---|
/// | EIM | preserving | `snat ip to WAN` (= `masquerade`; the kernel reuses a source's existing mapping) |
/// | EIM | random | `snat ip to WAN:20000-29999` |
/// | EIM | sequential | reuse `@eim[src]`, else `snat ip to WAN : numgen inc mod N map {i : 20000+i*step}` |
/// | ADM | random / sequential | reuse `@adm[src . dst ip]`, else the APDM rule |
/// | APDM | random | `snat ip to WAN random` (= `masquerade random`) |
/// | APDM | sequential | `snat ip to WAN : numgen inc mod N map {…}` |
///
/// The port map is written out because nft 1.0.6 loads `numgen … offset` into the port
/// in host byte order. Preserving allocation with a destination-dependent mapping does not
/// exist (a preserved port is the same port for every destination) and is an error, as is
/// a sequential step of 0.
///
/// Filtering: address-and-port-dependent is conntrack itself. Endpoint-independent and
/// address-dependent learn `external port → internal endpoint` (and `external port . remote
/// ip`) after SNAT, and DNAT inbound packets that match in prerouting. The maps time out
/// with the mapping lifetime.
///
/// Hairpin: LAN packets to the WAN address are DNATed through the learned map and SNATed
/// through `udp_mapping`, so the receiver sees the sender's public mapping.
///
/// Input: the router drops everything new that arrives on its WAN interface, as home
/// routers do. This matters for hole punching, not just hygiene: without it, an inbound
/// packet that reaches the router before the inside host has sent to that peer is handed
/// to the router's own INPUT, answered with ICMP, and its conntrack entry (peer → WAN:port)
/// is *confirmed*; when the inside host then sends to that peer, SNAT finds the tuple taken
/// and picks a different external port, breaking endpoint-independent mapping exactly
/// when it matters. A drop in INPUT discards the unconfirmed entry instead.
pub fn nat_ruleset(b: &NatBehavior, wan_ip: Ipv4Addr, ifs: &Interfaces) -> Result<String, RulesetError> {
    check_ifname("WAN", &ifs.wan)?;
    check_ifname("LAN", &ifs.lan)?;
    let (wan_if, lan_if) = (ifs.wan.as_str(), ifs.lan.as_str());
    let wan = wan_ip;
    let maps = learned_maps(b);
    let has = |name: &str| maps.iter().any(|m| m.name == name);

    let seq_rule = |step: i32| -> Result<String, RulesetError> {
        if step == 0 {
            return Err(RulesetError("sequential allocation with step 0".into()));
        }
        let base = u32::from(PORT_BASE);
        let span = 65535 - base;
        let n = SEQUENTIAL_CYCLE.min(span / step.unsigned_abs()).max(1);
        let first: i64 = if step > 0 { base.into() } else { 65535 };
        let elems: Vec<String> = (0..n).map(|i| format!("{i} : {}", first + i64::from(i) * i64::from(step))).collect();
        Ok(format!("meta l4proto udp snat ip to {wan} : numgen inc mod {n} map {{ {} }}", elems.join(", ")))
    };
    let fresh = |alloc: Allocation| -> Result<String, RulesetError> {
        match alloc {
            Allocation::Random => Ok(format!("snat ip to {wan} random")),
            Allocation::Sequential { step } => seq_rule(step),
            Allocation::Preserving => Err(RulesetError(format!(
                "a {} mapping cannot preserve ports (that would be endpoint-independent)",
                b.mapping.as_str()
            ))),
        }
    };
    let mapping_rules: Vec<String> = match (b.mapping, b.allocation) {
        (Mapping::EndpointIndependent, Allocation::Preserving) => vec![format!("snat ip to {wan}")],
        (Mapping::EndpointIndependent, Allocation::Random) => {
            vec![format!("meta l4proto udp snat ip to {wan}:{PORT_BASE}-{}", PORT_BASE + 9999)]
        }
        (Mapping::EndpointIndependent, Allocation::Sequential { step }) => {
            vec![format!("meta l4proto udp snat ip to {wan} : ip saddr . udp sport map @eim"), seq_rule(step)?]
        }
        (Mapping::AddressDependent, alloc) => {
            vec![format!("meta l4proto udp snat ip to {wan} : ip saddr . udp sport . ip daddr map @adm"), fresh(alloc)?]
        }
        (Mapping::AddressAndPortDependent, alloc) => vec![fresh(alloc)?],
    };

    let mut r = String::new();
    let mut line = |s: &str| {
        r.push_str(s);
        r.push('\n');
    };
    line(&format!("table ip {TABLE} {{"));
    for m in &maps {
        line(&format!("  {} {} {{ {} }}", if m.is_set { "set" } else { "map" }, m.name, m.decl));
    }

    line("  chain udp_mapping {");
    for rule in &mapping_rules {
        line(&format!("    {rule}"));
    }
    line("  }");

    line("  chain pre_nat {");
    line("    type nat hook prerouting priority dstnat; policy accept;");
    match b.filtering {
        Filtering::EndpointIndependent => {
            line(&format!("    iifname \"{wan_if}\" udp dport @ext2int dnat ip to udp dport map @ext2int"))
        }
        Filtering::AddressDependent => {
            line(&format!("    iifname \"{wan_if}\" udp dport . ip saddr @seen dnat ip to udp dport map @ext2int"))
        }
        Filtering::AddressAndPortDependent => {}
    }
    if b.hairpin {
        line(&format!("    iifname \"{lan_if}\" ip daddr {wan} udp dport @ext2int dnat ip to udp dport map @ext2int"));
    }
    line("  }");

    line("  chain post_nat {");
    line("    type nat hook postrouting priority srcnat; policy accept;");
    if b.hairpin {
        line(&format!(
            "    iifname \"{lan_if}\" oifname \"{lan_if}\" ct status dnat meta l4proto udp jump udp_mapping"
        ));
    }
    line(&format!("    oifname \"{wan_if}\" meta l4proto udp jump udp_mapping"));
    line(&format!("    oifname \"{wan_if}\" masquerade"));
    line("  }");

    if !maps.is_empty() {
        // After SNAT (srcnat + 10), so `udp sport` is the external port.
        line("  chain post_learn {");
        line("    type filter hook postrouting priority srcnat + 10; policy accept;");
        let out = format!("oifname \"{wan_if}\" meta l4proto udp");
        if has("ext2int") {
            // Flows the inside opened, and flows let in by the filtering rules above.
            line(&format!(
                "    {out} ct direction original update @ext2int {{ udp sport : ct original ip saddr . ct original proto-src }}"
            ));
            line(&format!(
                "    {out} ct direction reply update @ext2int {{ udp sport : ct reply ip saddr . ct reply proto-src }}"
            ));
        }
        if has("seen") {
            line(&format!("    {out} update @seen {{ udp sport . ip daddr }}"));
        }
        if has("eim") {
            line(&format!(
                "    {out} ct direction original update @eim {{ ct original ip saddr . ct original proto-src : udp sport }}"
            ));
        }
        if has("adm") {
            line(&format!(
                "    {out} ct direction original update @adm {{ ct original ip saddr . ct original proto-src . ip daddr : udp sport }}"
            ));
        }
        line("  }");
    }

    // Unsolicited WAN traffic to the router itself is dropped (see above), and nothing new
    // is forwarded from the WAN unless the filtering rules DNATed it.
    line("  chain in_filter {");
    line("    type filter hook input priority filter; policy accept;");
    line(&format!("    iifname \"{wan_if}\" ct state established,related accept"));
    line(&format!("    iifname \"{wan_if}\" drop"));
    line("  }");
    line("  chain fwd_filter {");
    line("    type filter hook forward priority filter; policy accept;");
    line(&format!("    iifname \"{wan_if}\" ct state established,related accept"));
    line(&format!("    iifname \"{wan_if}\" ct status dnat accept"));
    line(&format!("    iifname \"{wan_if}\" drop"));
    line("  }");
    line("}");
    Ok(r)
}

/// A router kind by the label the netns matrix uses. Only single routers: a double NAT
/// (`dbl-*` in the matrix) is two routers, each one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    pub label: &'static str,
    /// `None` for `public`: a plain router, no NAT and no filtering.
    pub nat: Option<NatBehavior>,
}

/// Every [`Kind`], in the matrix's order.
pub const KINDS: [Kind; 7] = [
    Kind { label: "public", nat: None },
    Kind { label: "port-restr", nat: Some(NatBehavior::PORT_RESTRICTED) },
    Kind { label: "full-cone", nat: Some(NatBehavior::FULL_CONE) },
    Kind { label: "restr-cone", nat: Some(NatBehavior::RESTRICTED_CONE) },
    Kind { label: "eim-random", nat: Some(NatBehavior::EIM_RANDOM_PORT) },
    Kind { label: "sym-random", nat: Some(NatBehavior::SYMMETRIC_RANDOM) },
    Kind { label: "sym-seq", nat: Some(NatBehavior::SYMMETRIC_SEQUENTIAL) },
];

impl Kind {
    /// The kind labelled `label`, if there is one.
    pub fn from_label(label: &str) -> Option<Kind> {
        KINDS.into_iter().find(|k| k.label == label)
    }

    /// This kind's ruleset; `public` gets an empty `lab_nat` table, so every kind leaves the
    /// same table to inspect or delete.
    pub fn ruleset(&self, wan_ip: Ipv4Addr, ifs: &Interfaces) -> Result<String, RulesetError> {
        match &self.nat {
            Some(b) => nat_ruleset(b, wan_ip, ifs),
            None => {
                check_ifname("WAN", &ifs.wan)?;
                check_ifname("LAN", &ifs.lan)?;
                Ok(format!("table ip {TABLE} {{\n}}\n"))
            }
        }
    }

    /// This kind's sysctls: [`router_sysctls`], or for `public` only [`forwarding_sysctls`]
    /// (no NAT, so conntrack keeps the kernel's timeouts).
    pub fn sysctls(&self) -> Vec<(&'static str, String)> {
        match &self.nat {
            Some(b) => router_sysctls(b),
            None => forwarding_sysctls(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAN: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);

    fn rules(b: NatBehavior) -> String {
        nat_ruleset(&b, WAN, &Interfaces::default()).unwrap()
    }

    fn kind(label: &str) -> String {
        Kind::from_label(label).unwrap().ruleset(WAN, &Interfaces::default()).unwrap()
    }

    /// The rules of one chain, trimmed, without its `type … hook` line.
    fn chain(rules: &str, name: &str) -> Vec<String> {
        let start = format!("  chain {name} {{");
        let mut lines = rules.lines().skip_while(|l| *l != start);
        assert!(lines.next().is_some(), "no chain {name} in\n{rules}");
        lines.take_while(|l| *l != "  }").map(|l| l.trim().to_string()).filter(|l| !l.starts_with("type ")).collect()
    }

    #[test]
    fn labels_are_the_matrix_labels() {
        let labels: Vec<&str> = KINDS.iter().map(|k| k.label).collect();
        assert_eq!(labels, ["public", "port-restr", "full-cone", "restr-cone", "eim-random", "sym-random", "sym-seq"]);
        for k in KINDS {
            assert_eq!(Kind::from_label(k.label), Some(k));
        }
        assert_eq!(Kind::from_label("dbl-easy"), None);
        assert_eq!(Kind::from_label("Port-Restr"), None);
    }

    #[test]
    fn public_is_an_empty_table() {
        assert_eq!(kind("public"), "table ip lab_nat {\n}\n");
    }

    #[test]
    fn port_restricted_is_plain_snat_and_conntrack() {
        let r = kind("port-restr");
        assert_eq!(chain(&r, "udp_mapping"), ["snat ip to 203.0.113.1"]);
        assert!(chain(&r, "pre_nat").is_empty(), "conntrack alone filters:\n{r}");
        assert!(!r.contains("post_learn") && !r.contains(" map ext2int"), "nothing to learn:\n{r}");
        assert_eq!(
            chain(&r, "post_nat"),
            ["oifname \"wan\" meta l4proto udp jump udp_mapping", "oifname \"wan\" masquerade"]
        );
    }

    #[test]
    fn full_cone_admits_anyone_through_the_learned_map() {
        let r = kind("full-cone");
        assert!(r.contains(
            "  map ext2int { type inet_service : ipv4_addr . inet_service; flags dynamic, timeout; timeout 30000ms; size 65535; }"
        ), "{r}");
        assert_eq!(chain(&r, "pre_nat"), ["iifname \"wan\" udp dport @ext2int dnat ip to udp dport map @ext2int"]);
        assert!(
            chain(&r, "post_learn").iter().any(|l| l.ends_with(
                "ct direction original update @ext2int { udp sport : ct original ip saddr . ct original proto-src }"
            )),
            "{r}"
        );
        assert!(!r.contains("@seen"), "{r}");
    }

    #[test]
    fn restricted_cone_admits_only_addresses_sent_to() {
        let r = kind("restr-cone");
        assert!(r.contains("  set seen { type inet_service . ipv4_addr;"), "{r}");
        assert_eq!(
            chain(&r, "pre_nat"),
            ["iifname \"wan\" udp dport . ip saddr @seen dnat ip to udp dport map @ext2int"]
        );
        assert!(chain(&r, "post_learn")
            .contains(&"oifname \"wan\" meta l4proto udp update @seen { udp sport . ip daddr }".into()));
    }

    #[test]
    fn eim_random_snats_into_a_port_range() {
        let r = kind("eim-random");
        assert_eq!(chain(&r, "udp_mapping"), ["meta l4proto udp snat ip to 203.0.113.1:20000-29999"]);
    }

    #[test]
    fn symmetric_random_is_masquerade_random() {
        let r = kind("sym-random");
        assert_eq!(chain(&r, "udp_mapping"), ["snat ip to 203.0.113.1 random"]);
        assert!(!r.contains("post_learn"), "{r}");
    }

    #[test]
    fn symmetric_sequential_writes_the_port_map_out() {
        let r = kind("sym-seq");
        let mapping = chain(&r, "udp_mapping");
        assert_eq!(mapping.len(), 1, "{r}");
        let rule = &mapping[0];
        assert!(
            rule.starts_with(
                "meta l4proto udp snat ip to 203.0.113.1 : numgen inc mod 1000 map { 0 : 20000, 1 : 20001, 2 : 20002,"
            ),
            "{rule}"
        );
        assert!(rule.ends_with(", 999 : 20999 }"), "{rule}");
        assert!(!rule.contains("offset"), "numgen offset loads the port in host byte order: {rule}");
    }

    #[test]
    fn sequential_steps_and_endpoint_independent_reuse() {
        let seq =
            |step| NatBehavior { allocation: Allocation::Sequential { step }, ..NatBehavior::SYMMETRIC_SEQUENTIAL };
        assert!(rules(seq(2)).contains("mod 1000 map { 0 : 20000, 1 : 20002, 2 : 20004,"));
        assert!(rules(seq(-1)).contains("mod 1000 map { 0 : 65535, 1 : 65534,"));
        // A step too large for 1000 ports below 65535 shortens the cycle.
        assert!(rules(seq(100)).contains("mod 455 map {") && rules(seq(100)).contains(", 454 : 65400 }"));
        let eim = rules(NatBehavior { mapping: Mapping::EndpointIndependent, ..NatBehavior::SYMMETRIC_SEQUENTIAL });
        let mapping = chain(&eim, "udp_mapping");
        assert_eq!(mapping[0], "meta l4proto udp snat ip to 203.0.113.1 : ip saddr . udp sport map @eim");
        assert!(mapping[1].contains("numgen inc mod 1000"), "{eim}");
        let adm = rules(NatBehavior { mapping: Mapping::AddressDependent, ..NatBehavior::SYMMETRIC_RANDOM });
        assert_eq!(
            chain(&adm, "udp_mapping"),
            [
                "meta l4proto udp snat ip to 203.0.113.1 : ip saddr . udp sport . ip daddr map @adm",
                "snat ip to 203.0.113.1 random"
            ]
        );
    }

    #[test]
    fn hairpin_goes_through_the_lan_interface() {
        let r = rules(NatBehavior::PORT_RESTRICTED.with_hairpin(true));
        assert_eq!(
            chain(&r, "pre_nat"),
            ["iifname \"lan\" ip daddr 203.0.113.1 udp dport @ext2int dnat ip to udp dport map @ext2int"]
        );
        assert_eq!(
            chain(&r, "post_nat")[0],
            "iifname \"lan\" oifname \"lan\" ct status dnat meta l4proto udp jump udp_mapping"
        );
    }

    #[test]
    fn interface_names_are_parameters() {
        let b = NatBehavior::FULL_CONE.with_hairpin(true);
        let r = nat_ruleset(&b, WAN, &Interfaces::new("eth0", "eth1")).unwrap();
        assert!(!r.contains("\"wan\"") && !r.contains("\"lan\""), "{r}");
        assert!(r.contains("iifname \"eth0\" udp dport @ext2int") && r.contains("iifname \"eth1\" ip daddr"), "{r}");
        for bad in ["", "a\"b", "with space", "sixteen-chars-xx", "a/b"] {
            assert!(nat_ruleset(&b, WAN, &Interfaces::new(bad, "lan")).is_err(), "{bad:?} accepted");
            assert!(Kind::from_label("public").unwrap().ruleset(WAN, &Interfaces::new("wan", bad)).is_err());
        }
    }

    #[test]
    fn impossible_behaviours_are_errors() {
        let adm_preserving = NatBehavior { mapping: Mapping::AddressDependent, ..NatBehavior::PORT_RESTRICTED };
        let err = nat_ruleset(&adm_preserving, WAN, &Interfaces::default()).unwrap_err();
        assert!(err.to_string().contains("cannot preserve ports"), "{err}");
        let step0 = NatBehavior { allocation: Allocation::Sequential { step: 0 }, ..NatBehavior::SYMMETRIC_SEQUENTIAL };
        assert!(nat_ruleset(&step0, WAN, &Interfaces::default()).is_err());
    }

    #[test]
    fn learned_maps_time_out_with_the_mapping() {
        let b = NatBehavior::FULL_CONE.with_mapping_lifetime(Duration::from_millis(2500));
        assert!(rules(b).contains("timeout 2500ms;"));
        assert!(rules(b.with_mapping_lifetime(Duration::from_millis(10))).contains("timeout 1000ms;"));
        let sysctls = router_sysctls(&b);
        assert!(sysctls.contains(&("net.netfilter.nf_conntrack_udp_timeout", "3".into())), "{sysctls:?}");
        assert!(sysctls.contains(&("net.netfilter.nf_conntrack_udp_timeout_stream", "3".into())), "{sysctls:?}");
        assert!(sysctls.contains(&("net.ipv4.ip_forward", "1".into())), "{sysctls:?}");
    }

    #[test]
    fn flushing_names_every_learned_map() {
        let b = NatBehavior { mapping: Mapping::AddressDependent, ..NatBehavior::RESTRICTED_CONE };
        let b = NatBehavior { allocation: Allocation::Random, ..b };
        assert_eq!(
            flush_learned_maps(&b),
            "flush map ip lab_nat ext2int\nflush set ip lab_nat seen\nflush map ip lab_nat adm\n"
        );
        assert_eq!(flush_learned_maps(&NatBehavior::SYMMETRIC_RANDOM), "");
    }

    #[test]
    fn every_kind_ends_the_table_it_opens() {
        for k in KINDS {
            let r = k.ruleset(WAN, &Interfaces::default()).unwrap();
            assert!(r.starts_with("table ip lab_nat {\n") && r.ends_with("\n}\n"), "{}:\n{r}", k.label);
            assert_eq!(r.matches('{').count(), r.matches('}').count(), "{}:\n{r}", k.label);
        }
    }
}
