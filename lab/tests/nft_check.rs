//! The kernel, not a string comparison, decides whether a generated ruleset is valid: every
//! kind (through `introducer-lab-nft`, as a container entrypoint runs it) and every
//! behaviour the namespace lab builds must pass `nft -c -f -` in a throwaway network
//! namespace, and the entrypoint recipe (`nft -f -`, `sysctl -p -`) must load for real.
//!
//! Needs root for the namespaces (skipped with a message otherwise) and `nft`, `ip`,
//! `sysctl` (scripts/install-deps.sh).

use introducer_actors::nat::{Allocation, Mapping, NatBehavior};
use introducer_lab::netns::find_tool;
use introducer_lab::nft::{self, Interfaces, KINDS};
use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_introducer-lab-nft");
const WAN: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);

/// A network namespace of this test, deleted on drop (also when the test panics). Named
/// like the netns lab's (`il<pid>-…`), so a later lab removes it if this process is killed.
struct Netns(String);

/// `ip netns add` mounts /run/netns on first use; concurrent first uses can race.
static NETNS_LOCK: Mutex<()> = Mutex::new(());

impl Netns {
    /// `None`, after saying why, when not root: namespaces need CAP_SYS_ADMIN.
    fn new(tag: &str) -> Option<Netns> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: checking rulesets with nft needs root (a throwaway network namespace)");
            return None;
        }
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let name = format!("il{}-nftcheck-{tag}-{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed));
        let _g = NETNS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let out = Command::new(tool("ip")).args(["netns", "add", &name]).output().unwrap();
        assert!(out.status.success(), "ip netns add {name}: {}", String::from_utf8_lossy(&out.stderr));
        Some(Netns(name))
    }

    /// Runs `program args` inside, with `stdin` as its input.
    fn run(&self, program: &str, args: &[&str], stdin: &str) -> Output {
        let mut child = Command::new(tool("ip"))
            .args(["netns", "exec", &self.0])
            .arg(tool(program))
            .args(args)
            .env_remove("NFT_DEBUG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("ip netns exec {} {program}: {e}", self.0));
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    }

    /// `nft -c -f -`: the kernel validates the whole batch and commits nothing.
    fn check(&self, what: &str, ruleset: &str) {
        let out = self.run("nft", &["-c", "-f", "-"], ruleset);
        assert!(
            out.status.success(),
            "{what}: nft rejects the ruleset:\n{}\n--- ruleset ---\n{ruleset}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _g = NETNS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        match Command::new(tool("ip")).args(["netns", "del", &self.0]).output() {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!("ip netns del {}: {}", self.0, String::from_utf8_lossy(&o.stderr).trim()),
            Err(e) => eprintln!("ip netns del {}: {e}", self.0),
        }
    }
}

fn tool(name: &str) -> std::path::PathBuf {
    find_tool(name).unwrap_or_else(|| panic!("`{name}` not found; run scripts/install-deps.sh"))
}

/// `introducer-lab-nft args`: its stdout, which must be all there is.
fn lab_nft(args: &[&str]) -> String {
    let out = Command::new(BIN).args(args).output().unwrap();
    assert!(out.status.success(), "introducer-lab-nft {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stderr.is_empty(), "introducer-lab-nft {args:?} wrote to stderr");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn every_kind_from_the_binary_passes_nft_check() {
    let Some(ns) = Netns::new("kinds") else { return };
    for kind in KINDS {
        let wan = WAN.to_string();
        let mut variants = vec![
            vec!["--kind", kind.label, "--wan-ip", &wan],
            vec!["--kind", kind.label, "--wan-ip", &wan, "--wan-if", "eth0", "--lan-if", "eth1"],
        ];
        if kind.nat.is_some() {
            variants.push(vec!["--kind", kind.label, "--wan-ip", &wan, "--hairpin", "--lifetime", "5"]);
        }
        for args in variants {
            let ruleset = lab_nft(&args);
            assert!(ruleset.starts_with("table ip lab_nat {"), "{args:?}:\n{ruleset}");
            ns.check(&format!("{args:?}"), &ruleset);
        }
    }
}

/// Beyond the named kinds: what the lab's own tests build (netns_lab's other mappings,
/// hairpin, short lifetimes) and the sequential edge cases.
#[test]
fn every_behaviour_the_lab_builds_passes_nft_check() {
    let Some(ns) = Netns::new("behaviours") else { return };
    let seq = |step| NatBehavior { allocation: Allocation::Sequential { step }, ..NatBehavior::SYMMETRIC_SEQUENTIAL };
    let behaviours = [
        NatBehavior { mapping: Mapping::AddressDependent, ..NatBehavior::SYMMETRIC_RANDOM },
        NatBehavior { mapping: Mapping::AddressDependent, ..NatBehavior::SYMMETRIC_SEQUENTIAL },
        NatBehavior { mapping: Mapping::EndpointIndependent, ..NatBehavior::SYMMETRIC_SEQUENTIAL },
        NatBehavior {
            mapping: Mapping::AddressDependent,
            allocation: Allocation::Random,
            ..NatBehavior::RESTRICTED_CONE
        }
        .with_hairpin(true)
        .with_mapping_lifetime(Duration::from_millis(1500)),
        NatBehavior { allocation: Allocation::Random, ..NatBehavior::RESTRICTED_CONE },
        seq(2),
        seq(-1),
        seq(100),
        NatBehavior::PORT_RESTRICTED.with_hairpin(true),
        NatBehavior::FULL_CONE.with_hairpin(true).with_mapping_lifetime(Duration::from_secs(1)),
        NatBehavior::EIM_RANDOM_PORT.with_mapping_lifetime(Duration::from_secs(1)),
    ];
    for b in behaviours {
        let ruleset = nft::nat_ruleset(&b, WAN, &Interfaces::default()).unwrap();
        ns.check(&format!("{b:?}"), &ruleset);
    }
}

/// The check above can fail: a ruleset with one broken rule is refused.
#[test]
fn nft_check_refuses_a_broken_ruleset() {
    let Some(ns) = Netns::new("broken") else { return };
    let good = lab_nft(&["--kind", "full-cone", "--wan-ip", "203.0.113.1"]);
    for (from, to) in
        [("dnat ip to udp dport map @ext2int", "dnat ip to udp dport map @nosuchmap"), ("masquerade", "masquerad")]
    {
        let broken = good.replacen(from, to, 1);
        assert_ne!(broken, good, "{from:?} not in the ruleset");
        let out = ns.run("nft", &["-c", "-f", "-"], &broken);
        assert!(!out.status.success(), "nft -c accepted a broken ruleset:\n{broken}");
    }
}

/// The container entrypoint recipe, for real: the ruleset loads, the sysctls apply (each
/// key exists in a fresh namespace) and the table is there afterwards.
#[test]
fn the_entrypoint_recipe_loads() {
    for kind in ["sym-seq", "restr-cone", "public"] {
        let Some(ns) = Netns::new(kind) else { return };
        let ruleset = lab_nft(&["--kind", kind, "--wan-ip", "203.0.113.9", "--wan-if", "eth0", "--lan-if", "eth1"]);
        let out = ns.run("nft", &["-f", "-"], &ruleset);
        assert!(out.status.success(), "{kind}: nft -f: {}", String::from_utf8_lossy(&out.stderr));
        let sysctls = lab_nft(&["--kind", kind, "--sysctls"]);
        assert!(sysctls.lines().all(|l| l.split_once('=').is_some_and(|(k, v)| !k.is_empty() && !v.is_empty())));
        let out = ns.run("sysctl", &["-p", "-"], &sysctls);
        assert!(out.status.success(), "{kind}: sysctl -p -: {}\n{sysctls}", String::from_utf8_lossy(&out.stderr));
        let out = ns.run("sysctl", &["-n", "net.ipv4.ip_forward"], "");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1", "{kind}: forwarding");
        let out = ns.run("nft", &["list", "table", "ip", "lab_nat"], "");
        let listed = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{kind}: {}", String::from_utf8_lossy(&out.stderr));
        if kind != "public" {
            assert!(listed.contains("oifname \"eth0\" masquerade"), "{kind}:\n{listed}");
        }
    }
}

/// Bad input is one line on stderr, nothing on stdout, exit status 2 (no root needed).
#[test]
fn binary_errors_are_one_line() {
    for (args, says) in [
        (&["--kind", "dbl-easy", "--wan-ip", "203.0.113.1"][..], "unknown kind \"dbl-easy\""),
        (&["--kind", "sym-seq"][..], "missing --wan-ip"),
        (&["--wan-ip", "203.0.113.1"][..], "missing --kind"),
        (&["--kind", "sym-seq", "--wan-ip", "203.0.113"][..], "not an IPv4 address"),
        (&["--kind", "sym-seq", "--wan-ip", "203.0.113.1", "--wan-if", "a b"][..], "invalid WAN interface name"),
        (&["--kind", "public", "--wan-ip", "203.0.113.1", "--hairpin"][..], "need a NAT"),
        (&["--kind", "sym-seq", "--wan-ip", "203.0.113.1", "--lifetime", "0"][..], "--lifetime"),
        (&["--kind"][..], "--kind needs a value"),
        (&["--frobnicate"][..], "unexpected argument"),
    ] {
        let out = Command::new(BIN).args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?} printed to stdout");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("introducer-lab-nft: ") && stderr.contains(says), "{args:?}: {stderr}");
    }
    assert_eq!(lab_nft(&["--list"]).lines().collect::<Vec<_>>(), KINDS.map(|k| k.label));
    assert!(lab_nft(&["--help"]).starts_with("usage: introducer-lab-nft"));
}
