//! The real-NAT lab: Linux network namespaces, veth pairs, bridges and nftables rules that
//! make real kernels behave like the NATs described by [`NatBehavior`], so integration tests
//! can run the real `introducer` binary (or any other program) across real NATs.
//!
//! Everything needs root, `iproute2`, `nftables` and `conntrack` (`scripts/install-deps.sh`);
//! the coturn helpers need `coturn`. The `introducer` binary to run is given to [`Lab::new`]
//! (an integration test of the node passes `env!("CARGO_BIN_EXE_introducer")`).
//!
//! ```text
//!                      "internet" namespace: bridge br0 (no routing, no filtering)
//!        ┌──────────────────┬──────────────────┬─────────────────────────┐
//!    public host A      public host B      NAT router (wan 203.0.113.N)    ...
//!  198.51.100.1 + .2    198.51.100.3          │ lan bridge 10.K.0.1/24
//!                                          ┌──┴──────────┐
//!                                       host 10.K.0.2   home NAT router (wan 10.K.0.3)
//!                                                          │ lan bridge 10.K2.0.1/24
//!                                                       host 10.K2.0.2 ...
//! ```
//!
//! A NAT router sits either on the internet ([`Lab::nat`]) or, like a home router behind a
//! carrier-grade NAT, on another NAT's LAN ([`Lab::nat_behind`]); either way its uplink is
//! `wan` and its LAN bridge `lan`, so one ruleset ([`nat_ruleset`]) serves both.
//!
//! [`nat_ruleset`]: crate::nft::nat_ruleset
//!
//! Every host on the internet side holds its addresses as /32s with a `default dev eth0`
//! route, so any documentation-range address can be used anywhere: the bridge delivers by
//! ARP. NAT routers number their LANs 10.1.0.0/24, 10.2.0.0/24, … in creation order.
//!
//! Namespaces are named `il<pid>-<seq>-<lab>-<node>`; interface names live inside the
//! namespaces (`eth0`, `wan`, `lan`, `p3`, `h2`), so the 15-character limit never bites and
//! nothing is ever created in the machine's own namespace. Dropping the [`Lab`] (also while
//! a test panics) kills every process inside its namespaces and deletes them; a lab created
//! later removes namespaces left behind by processes that died without cleaning up.
//!
//! For the tests of what forged traffic may make a node do: [`spoof`] sends datagrams with
//! any source address from an attacker's namespace, [`counters`] counts what arrives where
//! with nftables and reads what the kernel dropped.

mod child;
pub mod counters;
pub mod spoof;

pub use child::{LabChild, LabError};

use crate::nft::{self, Interfaces};
use crate::stun::stun_binding;
use introducer_actors::nat::NatBehavior;
use serde_json::Value;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard, Once};
use std::thread;
use std::time::{Duration, Instant};

/// Public node A's first address (the one to bootstrap from).
pub const A_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
/// Public node A's second address (RFC 5780 alternate address).
pub const A_ALT_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
/// Public node B's address.
pub const B_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 3);
/// The STUN / introducer port used by the standard topology.
pub const PORT: u16 = 3478;

/// How long [`Host::run`] lets a command run before killing it.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// A router's interface names: the generator's defaults, so [`nft::nat_ruleset`] gets
/// [`Interfaces::default`].
const WAN_IF: &str = "wan";
const LAN_IF: &str = "lan";
const INET_BRIDGE: &str = "br0";
const NS_PREFIX: &str = "il";

/// bridge-nf-call-* is 1 in every new namespace (where br_netfilter is loaded) and would
/// run bridged frames through netfilter, which silently breaks hairpinning across a bridge.
const BRIDGE_NF_OFF: [&str; 3] = [
    "net.bridge.bridge-nf-call-iptables",
    "net.bridge.bridge-nf-call-ip6tables",
    "net.bridge.bridge-nf-call-arptables",
];

static LAB_SEQ: AtomicU32 = AtomicU32::new(0);
/// `ip netns add/del` mount /run/netns on first use; concurrent first uses can race.
static NETNS_LOCK: Mutex<()> = Mutex::new(());
static STALE_CLEANUP: Once = Once::new();

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------------------
// Tools and plain command helpers
// ---------------------------------------------------------------------------------------

/// Finds a system tool in PATH or the sbin directories (CI's PATH may lack /usr/sbin).
pub fn find_tool(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        return Some(PathBuf::from(name));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

fn tool(name: &str) -> PathBuf {
    find_tool(name).unwrap_or_else(|| {
        panic!("lab: `{name}` not found; install the test dependencies with scripts/install-deps.sh")
    })
}

pub(crate) fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs a setup command; panics with its output unless it succeeds.
fn checked(mut cmd: Command, stdin: Option<&str>) -> String {
    let desc = describe(&cmd);
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("lab: cannot start `{desc}`: {e}"));
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(input.as_bytes()).unwrap_or_else(|e| panic!("lab: writing to `{desc}`: {e}"));
    }
    let out = wait_output(child, RUN_TIMEOUT, &desc);
    if !out.status.success() {
        let input = stdin.map(|s| format!("\n--- input ---\n{s}")).unwrap_or_default();
        panic!(
            "lab: `{desc}` failed ({}):\n{}{}{input}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits for a child whose stdout and stderr are piped, killing it after `timeout`.
fn wait_output(mut child: Child, timeout: Duration, desc: &str) -> Output {
    let (tx, rx) = mpsc::channel::<(bool, Vec<u8>)>();
    for (is_out, pipe) in [
        (true, child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>)),
        (false, child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>)),
    ] {
        let tx = tx.clone();
        thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            let _ = tx.send((is_out, buf));
        });
    }
    let deadline = Instant::now() + timeout;
    let (mut stdout, mut stderr) = (None, None);
    while stdout.is_none() || stderr.is_none() {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok((true, b)) => stdout = Some(b),
            Ok((false, b)) => stderr = Some(b),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("lab: `{desc}` still running after {timeout:?}; killed");
            }
        }
    }
    let status = child.wait().unwrap_or_else(|e| panic!("lab: waiting for `{desc}`: {e}"));
    Output { status, stdout: stdout.unwrap(), stderr: stderr.unwrap() }
}

/// `ip -n NS -batch -` with one `ip` command per line.
fn ip_batch(ns: &str, lines: &[String]) {
    let mut cmd = Command::new(tool("ip"));
    cmd.args(["-n", ns, "-batch", "-"]);
    checked(cmd, Some(&(lines.join("\n") + "\n")));
}

/// Sets sysctls inside a namespace; `-e` skips keys this kernel lacks (bridge-nf-call-*
/// exist only where br_netfilter is loaded).
fn sysctls(ns: &str, settings: &[(&str, String)]) {
    let mut cmd = Command::new(tool("ip"));
    cmd.args(["netns", "exec", ns]).arg(tool("sysctl")).args(["-q", "-e", "-w"]);
    for (k, v) in settings {
        cmd.arg(format!("{k}={v}"));
    }
    checked(cmd, None);
}

fn netns_path(ns: &str) -> PathBuf {
    let run = Path::new("/run/netns").join(ns);
    if run.exists() {
        run
    } else {
        Path::new("/var/run/netns").join(ns)
    }
}

/// SIGKILLs every process inside a namespace (the lab's children and anything they forked).
fn kill_netns_pids(ns: &str) {
    let Some(ip) = find_tool("ip") else { return };
    let Ok(out) = Command::new(ip).args(["netns", "pids", ns]).stderr(Stdio::null()).output() else { return };
    for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
        if let Ok(pid) = pid.parse::<i32>() {
            if pid > 1 && pid != std::process::id() as i32 {
                // SAFETY: plain kill(2) on a pid inside one of the lab's namespaces.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

fn delete_netns(ns: &str) {
    let Some(ip) = find_tool("ip") else { return };
    let _g = lock(&NETNS_LOCK);
    match Command::new(ip).args(["netns", "del", ns]).stderr(Stdio::piped()).output() {
        Ok(o) if o.status.success() => {}
        Ok(o) => eprintln!("lab: ip netns del {ns}: {}", String::from_utf8_lossy(&o.stderr).trim()),
        Err(e) => eprintln!("lab: ip netns del {ns}: {e}"),
    }
}

/// The pid in a lab name `il<pid>-...`, if it is one.
fn lab_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(NS_PREFIX)?;
    let (digits, _) = rest.split_once('-')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn dead(pid: u32) -> bool {
    pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists()
}

/// Removes namespaces and temp dirs of labs whose process is gone (killed test runs).
fn cleanup_stale() {
    for dir in ["/run/netns", "/var/run/netns"] {
        let Ok(entries) = fs::read_dir(dir) else { continue };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if lab_pid(&name).is_some_and(dead) {
                kill_netns_pids(&name);
                delete_netns(&name);
            }
        }
    }
    if let Ok(entries) = fs::read_dir(std::env::temp_dir()) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if lab_pid(&name).is_some_and(dead) {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
}

fn sanitize(name: &str) -> String {
    let s: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
    let s = s.trim_matches('-');
    s.chars().take(20).collect::<String>().trim_end_matches('-').to_string()
}

// ---------------------------------------------------------------------------------------
// Lab
// ---------------------------------------------------------------------------------------

struct Shared {
    /// Scratch directory for data dirs, pid files and the like; removed with the lab.
    tmp: PathBuf,
    seq: AtomicU32,
    /// The `introducer` binary [`Host::introducer`] runs.
    introducer: PathBuf,
}

impl Shared {
    fn scratch(&self, what: &str) -> PathBuf {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let p = self.tmp.join(format!("{}-{n}", sanitize(what)));
        fs::create_dir_all(&p).unwrap_or_else(|e| panic!("lab: mkdir {}: {e}", p.display()));
        p
    }
}

/// One topology: an "internet" bridge namespace plus the hosts and NATs attached to it.
/// Dropping it kills everything running inside and deletes every namespace it created.
pub struct Lab {
    prefix: String,
    inet: String,
    namespaces: Mutex<Vec<String>>,
    next_port: AtomicU32,
    next_nat: AtomicU8,
    next_wan: AtomicU8,
    shared: Arc<Shared>,
}

impl Lab {
    /// Whether this process can build labs (root, and the tools installed).
    pub fn check() -> Result<(), String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("the NAT lab needs root (network namespaces, nftables)".into());
        }
        for t in ["ip", "nft", "conntrack", "sysctl"] {
            if find_tool(t).is_none() {
                return Err(format!("`{t}` not found; run scripts/install-deps.sh"));
            }
        }
        Ok(())
    }

    /// Creates the internet namespace. `name` only makes namespace names readable; labs are
    /// unique per process and call anyway. `introducer` is the binary [`Host::introducer`]
    /// and friends run: this crate cannot know where cargo built it, the caller's
    /// `env!("CARGO_BIN_EXE_introducer")` does.
    pub fn new(name: &str, introducer: impl Into<PathBuf>) -> Lab {
        if let Err(e) = Lab::check() {
            panic!("lab: {e}");
        }
        STALE_CLEANUP.call_once(cleanup_stale);
        let prefix =
            format!("{NS_PREFIX}{}-{}-{}", std::process::id(), LAB_SEQ.fetch_add(1, Ordering::Relaxed), sanitize(name));
        let tmp = std::env::temp_dir().join(&prefix);
        let lab = Lab {
            inet: format!("{prefix}-inet"),
            prefix,
            namespaces: Mutex::new(Vec::new()),
            next_port: AtomicU32::new(1),
            next_nat: AtomicU8::new(1),
            next_wan: AtomicU8::new(1),
            shared: Arc::new(Shared { tmp, seq: AtomicU32::new(0), introducer: introducer.into() }),
        };
        lab.add_netns("inet");
        // A plain learning bridge.
        sysctls(&lab.inet, &BRIDGE_NF_OFF.map(|k| (k, "0".to_string())));
        ip_batch(
            &lab.inet,
            &[format!("link add name {INET_BRIDGE} type bridge"), format!("link set dev {INET_BRIDGE} up")],
        );
        lab
    }

    /// The prefix of every namespace name of this lab.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The internet namespace (for debugging, e.g. `ip netns exec … tcpdump`).
    pub fn internet_netns(&self) -> &str {
        &self.inet
    }

    /// Creates `<prefix>-<node>` with loopback up and rp_filter off; registered for cleanup
    /// before anything else can fail.
    fn add_netns(&self, node: &str) -> String {
        let ns = format!("{}-{}", self.prefix, sanitize(node));
        {
            let _g = lock(&NETNS_LOCK);
            let mut list = lock(&self.namespaces);
            assert!(!list.contains(&ns), "lab: node name {node:?} used twice");
            let mut cmd = Command::new(tool("ip"));
            cmd.args(["netns", "add", &ns]);
            checked(cmd, None);
            list.push(ns.clone());
        }
        // rp_filter: IPv4 devconf is inherited from the host; strict reverse-path filtering
        // drops asymmetric lab traffic. Set `default` before any interface arrives.
        sysctls(&ns, &[("net.ipv4.conf.all.rp_filter", "0".into()), ("net.ipv4.conf.default.rp_filter", "0".into())]);
        ip_batch(&ns, &["link set dev lo up".to_string()]);
        ns
    }

    /// A veth from the internet bridge into `ns`, named `ifname` there.
    fn plug_into_internet(&self, ns: &str, ifname: &str) {
        let port = format!("p{}", self.next_port.fetch_add(1, Ordering::Relaxed));
        ip_batch(
            &self.inet,
            &[
                format!("link add name {port} type veth peer name {ifname} netns {ns}"),
                format!("link set dev {port} master {INET_BRIDGE} up"),
            ],
        );
    }

    /// A host directly on the internet with the given addresses (the first is its primary
    /// source address). Nothing filters its traffic.
    pub fn public_host(&self, name: &str, ips: &[Ipv4Addr]) -> Host {
        assert!(!ips.is_empty(), "lab: public host {name} needs an address");
        let ns = self.add_netns(name);
        self.attach(&ns, "eth0", Upstream::Internet(ips[0]));
        let more: Vec<String> = ips[1..].iter().map(|ip| format!("addr add {ip}/32 dev eth0")).collect();
        if !more.is_empty() {
            ip_batch(&ns, &more);
        }
        Host::new(name, ns, ips.to_vec(), "eth0", &self.shared)
    }

    /// The next unused WAN address 203.0.113.N (N = 1, 2, …) for [`Lab::nat`].
    pub fn next_wan_ip(&self) -> Ipv4Addr {
        let n = self.next_wan.fetch_add(1, Ordering::Relaxed);
        assert!(n < 255, "lab: out of WAN addresses");
        Ipv4Addr::new(203, 0, 113, n)
    }

    /// A NAT router on the internet at `wan_ip` whose nftables rules implement `behavior`
    /// exactly (see [`nft::nat_ruleset`]), with an empty LAN 10.K.0.0/24 behind it.
    pub fn nat(&self, name: &str, behavior: NatBehavior, wan_ip: Ipv4Addr) -> Nat {
        self.router(name, behavior, Upstream::Internet(wan_ip))
    }

    /// A NAT router whose WAN interface sits on `outer`'s LAN (the next free address there,
    /// default route via `outer`'s gateway), with an empty LAN 10.K.0.0/24 behind it: a home
    /// router behind a carrier-grade NAT. Its rules are [`nft::nat_ruleset`] for its LAN-side
    /// WAN address, exactly as for [`Lab::nat`]; what the internet sees of the pair is
    /// `behavior.behind(outer.behavior())`.
    pub fn nat_behind(&self, outer: &Nat, name: &str, behavior: NatBehavior) -> Nat {
        self.router(name, behavior, Upstream::Lan(outer))
    }

    /// A host on `nat`'s LAN (10.K.0.2, .3, …), default route through the NAT.
    pub fn host_behind(&self, nat: &Nat, name: &str) -> Host {
        let ns = self.add_netns(name);
        let ip = self.attach(&ns, "eth0", Upstream::Lan(nat));
        Host::new(name, ns, vec![ip], "eth0", &self.shared)
    }

    /// The one router recipe behind [`Lab::nat`] and [`Lab::nat_behind`]: forwarding on, WAN
    /// interface `wan` (the name [`nft::nat_ruleset`] matches) attached to `upstream`, LAN bridge
    /// `lan` at 10.K.0.1/24, rules for `behavior`.
    fn router(&self, name: &str, behavior: NatBehavior, upstream: Upstream) -> Nat {
        let k = self.next_nat.fetch_add(1, Ordering::Relaxed);
        assert!(k < 255, "lab: too many NATs");
        let public_ip = match upstream {
            Upstream::Internet(ip) => ip,
            Upstream::Lan(outer) => outer.public_ip,
        };
        let ns = self.add_netns(name);
        let mut settings = nft::forwarding_sysctls();
        settings.extend(BRIDGE_NF_OFF.map(|k| (k, "0".to_string())));
        sysctls(&ns, &settings);
        let wan_ip = self.attach(&ns, WAN_IF, upstream);
        let gateway = Ipv4Addr::new(10, k, 0, 1);
        ip_batch(
            &ns,
            &[
                format!("link add name {LAN_IF} type bridge"),
                format!("addr add {gateway}/24 dev {LAN_IF}"),
                format!("link set dev {LAN_IF} up"),
            ],
        );
        let nat = Nat {
            router: Host::new(name, ns, vec![wan_ip], WAN_IF, &self.shared),
            wan_ip,
            public_ip,
            gateway,
            behavior: Mutex::new(behavior),
            next_host: AtomicU8::new(2),
        };
        nat.apply(behavior);
        nat
    }

    /// Plugs interface `ifname` of `ns` into `upstream` and gives it its address and default
    /// route; returns the address. Hosts and routers behind a NAT are attached alike.
    fn attach(&self, ns: &str, ifname: &str, upstream: Upstream) -> Ipv4Addr {
        match upstream {
            Upstream::Internet(ip) => {
                self.plug_into_internet(ns, ifname);
                ip_batch(
                    ns,
                    &[
                        format!("addr add {ip}/32 dev {ifname}"),
                        format!("link set dev {ifname} up"),
                        format!("route add default dev {ifname}"),
                    ],
                );
                ip
            }
            Upstream::Lan(nat) => {
                let i = nat.next_host.fetch_add(1, Ordering::Relaxed);
                assert!(i < 255, "lab: NAT LAN full");
                let g = nat.gateway.octets();
                let ip = Ipv4Addr::new(g[0], g[1], g[2], i);
                ip_batch(
                    nat.router.netns(),
                    &[
                        format!("link add name h{i} type veth peer name {ifname} netns {ns}"),
                        format!("link set dev h{i} master {LAN_IF} up"),
                    ],
                );
                ip_batch(
                    ns,
                    &[
                        format!("addr add {ip}/24 dev {ifname}"),
                        format!("link set dev {ifname} up"),
                        format!("route add default via {}", nat.gateway),
                    ],
                );
                ip
            }
        }
    }
}

/// Where a NAT router's or a host's uplink is plugged in.
#[derive(Clone, Copy)]
enum Upstream<'a> {
    /// The internet bridge, at this address (a /32 with `default dev <uplink>`).
    Internet(Ipv4Addr),
    /// A NAT's LAN bridge, at its next free address, default route via its gateway.
    Lan(&'a Nat),
}

impl Drop for Lab {
    fn drop(&mut self) {
        let namespaces = std::mem::take(&mut *lock(&self.namespaces));
        for ns in namespaces.iter().rev() {
            kill_netns_pids(ns);
        }
        for ns in namespaces.iter().rev() {
            delete_netns(ns);
        }
        let _ = fs::remove_dir_all(&self.shared.tmp);
    }
}

// ---------------------------------------------------------------------------------------
// NAT routers
// ---------------------------------------------------------------------------------------

/// A NAT router namespace. Its LAN is 10.K.0.0/24 with the router at 10.K.0.1.
pub struct Nat {
    router: Host,
    /// The address of its WAN interface: public, or on an outer NAT's LAN.
    wan_ip: Ipv4Addr,
    /// The address the internet sees: `wan_ip`, or the outermost NAT's.
    public_ip: Ipv4Addr,
    gateway: Ipv4Addr,
    behavior: Mutex<NatBehavior>,
    next_host: AtomicU8,
}

impl Nat {
    /// The address of the router's WAN interface: 203.0.113.N on the internet, 10.K.0.N
    /// behind another NAT ([`Lab::nat_behind`]).
    pub fn wan_ip(&self) -> Ipv4Addr {
        self.wan_ip
    }

    /// The address the internet sees traffic from this NAT's LAN come from: the WAN
    /// address, or behind other NATs the outermost one's.
    pub fn public_ip(&self) -> Ipv4Addr {
        self.public_ip
    }

    /// The router's LAN address, 10.K.0.1.
    pub fn lan_gateway(&self) -> Ipv4Addr {
        self.gateway
    }

    /// The LAN, "10.K.0.0/24".
    pub fn lan_subnet(&self) -> String {
        let g = self.gateway.octets();
        format!("{}.{}.{}.0/24", g[0], g[1], g[2])
    }

    pub fn behavior(&self) -> NatBehavior {
        *lock(&self.behavior)
    }

    /// The router namespace as a host (to run `conntrack`, `nft`, tcpdump …).
    pub fn router(&self) -> &Host {
        &self.router
    }

    /// Replaces the rules with another behaviour and forgets every existing mapping.
    pub fn set_behavior(&self, behavior: NatBehavior) {
        *lock(&self.behavior) = behavior;
        self.apply(behavior);
    }

    fn apply(&self, b: NatBehavior) {
        let ruleset = nft::nat_ruleset(&b, self.wan_ip, &Interfaces::default())
            .unwrap_or_else(|e| panic!("lab: no NAT rules for {b:?}: {e}"));
        let rules = format!("flush ruleset\n{ruleset}");
        let mut cmd = self.router.command(tool("nft"), ["-f", "-"]);
        cmd.env_remove("NFT_DEBUG");
        checked(cmd, Some(&rules));
        sysctls(self.router.netns(), &nft::conntrack_sysctls(&b));
        self.flush_conntrack();
    }

    /// Forgets every mapping (`conntrack -F`); the learned filtering maps are flushed too.
    pub fn flush_conntrack(&self) {
        checked(self.router.command(tool("conntrack"), ["-F"]), None);
        let cmds = nft::flush_learned_maps(&self.behavior());
        if !cmds.is_empty() {
            checked(self.router.command(tool("nft"), ["-f", "-"]), Some(&cmds));
        }
    }

    /// `conntrack -L` in the router: the live mappings.
    pub fn conntrack_table(&self) -> String {
        self.router.run_ok(tool("conntrack"), ["-L"])
    }

    /// Drops `percent` % of the UDP datagrams the router forwards, either way, at random
    /// (0: none), counting them ([`Nat::lost`]). A table of its own: the NAT's rules stay.
    pub fn set_loss(&self, percent: u32) {
        let rules = format!(
            "table inet lab_loss\ndelete table inet lab_loss\ntable inet lab_loss {{\n  chain forward {{\n    \
             type filter hook forward priority -150;\n    meta l4proto udp numgen random mod 100 < {percent} counter drop\n  }}\n}}\n"
        );
        checked(self.router.command(tool("nft"), ["-f", "-"]), Some(&rules));
    }

    /// The datagrams [`Nat::set_loss`] dropped so far.
    pub fn lost(&self) -> u64 {
        let table = self.router.run_ok(tool("nft"), ["list", "table", "inet", "lab_loss"]);
        let counted = table.split_once("counter packets ").and_then(|(_, rest)| rest.split_whitespace().next());
        counted.and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("lab: no loss counter in {table}"))
    }

    /// `nft list ruleset` in the router.
    pub fn ruleset(&self) -> String {
        self.router.run_ok(tool("nft"), ["list", "ruleset"])
    }
}

// ---------------------------------------------------------------------------------------
// Hosts
// ---------------------------------------------------------------------------------------

/// A handle on one namespace (public host, host behind a NAT, or a NAT router). Cheap to
/// clone; it does not own the namespace (the [`Lab`] does).
#[derive(Clone)]
pub struct Host {
    name: String,
    ns: String,
    ips: Vec<Ipv4Addr>,
    uplink: &'static str,
    shared: Arc<Shared>,
}

impl fmt::Debug for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Host({} {:?} in {})", self.name, self.ips, self.ns)
    }
}

impl Host {
    fn new(name: &str, ns: String, ips: Vec<Ipv4Addr>, uplink: &'static str, shared: &Arc<Shared>) -> Host {
        Host { name: name.to_string(), ns, ips, uplink, shared: shared.clone() }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn netns(&self) -> &str {
        &self.ns
    }

    /// The primary address (a private one behind a NAT; a NAT router's WAN address).
    pub fn ip(&self) -> Ipv4Addr {
        self.ips[0]
    }

    pub fn ips(&self) -> &[Ipv4Addr] {
        &self.ips
    }

    /// `ip():port`.
    pub fn addr(&self, port: u16) -> SocketAddr {
        SocketAddr::from((self.ip(), port))
    }

    /// A command that runs `program args…` in this namespace (`ip netns exec`). System
    /// tools given by bare name are looked up in the sbin directories too.
    pub fn command<I, S>(&self, program: impl AsRef<OsStr>, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let program = program.as_ref();
        let resolved: OsString = match program.to_str() {
            Some(p) if !p.contains('/') => find_tool(p).map(|p| p.into_os_string()).unwrap_or_else(|| program.into()),
            _ => program.into(),
        };
        let mut cmd = Command::new(tool("ip"));
        cmd.args(["netns", "exec"]).arg(&self.ns).arg(resolved).args(args);
        cmd
    }

    /// Starts `program args…` here with stdout and stderr piped (stdin null). Killed when
    /// the returned [`LabChild`] drops.
    pub fn spawn<I, S>(&self, program: impl AsRef<OsStr>, args: I) -> LabChild
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let label =
            format!("{}@{}", Path::new(program.as_ref()).file_name().unwrap_or_default().to_string_lossy(), self.name);
        LabChild::spawn(label, self.command(program, args))
    }

    /// Starts a command made with [`Host::command`] (for example with `stdin(Stdio::piped())`).
    pub fn spawn_command(&self, label: &str, cmd: Command) -> LabChild {
        LabChild::spawn(format!("{label}@{}", self.name), cmd)
    }

    /// Runs to completion (killed after [`RUN_TIMEOUT`]) and returns its output.
    pub fn run<I, S>(&self, program: impl AsRef<OsStr>, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.run_timeout(program, args, RUN_TIMEOUT)
    }

    pub fn run_timeout<I, S>(&self, program: impl AsRef<OsStr>, args: I, timeout: Duration) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.command(program, args);
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let desc = format!("{} (in {})", describe(&cmd), self.name);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("lab: cannot start `{desc}`: {e}"));
        wait_output(child, timeout, &desc)
    }

    /// Runs to completion and returns stdout; panics unless it exits 0.
    pub fn run_ok<I, S>(&self, program: impl AsRef<OsStr>, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        checked(self.command(program, args), None)
    }

    /// A command running the `introducer` binary here with `args`, plus `--data-dir`
    /// (a fresh directory of the lab's) and `--json` unless `args` already has them.
    pub fn introducer_command(&self, args: &[&str]) -> Command {
        let mut all: Vec<OsString> = args.iter().map(OsString::from).collect();
        if !args.contains(&"--data-dir") {
            all.push("--data-dir".into());
            all.push(self.shared.scratch(&format!("{}-data", self.name)).into_os_string());
        }
        if !args.contains(&"--json") {
            all.push("--json".into());
        }
        let mut cmd = self.command(&self.shared.introducer, all);
        cmd.env("RUST_BACKTRACE", "1");
        cmd
    }

    /// Starts `introducer args… --data-dir <fresh> --json` here.
    pub fn introducer(&self, args: &[&str]) -> LabChild {
        self.spawn_command("introducer", self.introducer_command(args))
    }

    /// `introducer nat --json args…` here: its one JSON object (panics unless it exits 0).
    pub fn introducer_nat(&self, args: &[&str]) -> Value {
        let all = [&["nat", "--json"][..], args].concat();
        let out = self.run_timeout(&self.shared.introducer, all, Duration::from_secs(30));
        assert!(out.status.success(), "nat failed: {}", String::from_utf8_lossy(&out.stderr));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(stdout.lines().count(), 1, "nat prints one object: {stdout}");
        serde_json::from_str(stdout.trim()).expect("nat prints JSON")
    }

    /// Runs `f` on a thread that has entered this namespace: sockets it creates live here.
    pub fn in_netns<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = netns_path(&self.ns);
        thread::scope(|s| {
            let h = s.spawn(move || {
                let file = File::open(&path).unwrap_or_else(|e| panic!("lab: open {}: {e}", path.display()));
                // SAFETY: setns on this thread only; the fd is valid for the call.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "lab: setns {}: {}", path.display(), std::io::Error::last_os_error());
                f()
            });
            match h.join() {
                Ok(v) => v,
                Err(p) => std::panic::resume_unwind(p),
            }
        })
    }

    /// A UDP socket bound to `addr` inside this namespace (use `0.0.0.0:0` for any).
    pub fn udp_socket(&self, addr: impl Into<SocketAddr>) -> UdpSocket {
        let addr = addr.into();
        self.in_netns(move || UdpSocket::bind(addr))
            .unwrap_or_else(|e| panic!("lab: bind {addr} in {}: {e}", self.name))
    }

    /// Takes the host's uplink (`eth0`, or a router's `wan`) down or up: a cable pulled.
    pub fn set_link_up(&self, up: bool) {
        ip_batch(&self.ns, &[format!("link set dev {} {}", self.uplink, if up { "up" } else { "down" })]);
        if up && self.ips[0].is_private() {
            // Behind a NAT (a host, or a router behind another NAT): the default route via
            // the gateway went away with the link.
            let o = self.ips[0].octets();
            let _ = self.run("ip", ["route", "replace", "default", "via", &format!("{}.{}.{}.1", o[0], o[1], o[2])]);
        } else if up {
            let _ = self.run("ip", ["route", "replace", "default", "dev", self.uplink]);
        }
    }

    /// Starts coturn's `turnserver` as a plain RFC 5780 STUN server on this host's first two
    /// addresses, ports `port` and `port + 1` (the alternate port), and waits until both
    /// addresses answer Binding requests.
    pub fn turnserver(&self, port: u16) -> LabChild {
        assert!(self.ips.len() >= 2, "lab: an RFC 5780 server needs two addresses; {} has {:?}", self.name, self.ips);
        let dir = self.shared.scratch(&format!("{}-turnserver", self.name));
        let (ip1, ip2) = (self.ips[0].to_string(), self.ips[1].to_string());
        let (p, alt) = (port.to_string(), (port + 1).to_string());
        let pidfile = dir.join("turnserver.pid");
        let db = dir.join("turndb");
        let mut args: Vec<OsString> = [
            // Debian's /etc/turnserver.conf says no-rfc5780; read no config file at all.
            "-c",
            "/dev/null",
            "-L",
            &ip1,
            "-L",
            &ip2,
            "-p",
            &p,
            "--alt-listening-port",
            &alt,
            "--stun-only",
            "--no-cli",
            "--no-tcp",
            "--no-tls",
            "--no-dtls",
            "--log-file",
            "stdout",
            "--simple-log",
            "--pidfile",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        args.push(pidfile.into_os_string());
        args.push("--db".into());
        args.push(db.into_os_string());
        let child = self.spawn("turnserver", args);
        // Readiness: a bounded retry of Binding requests (turnserver has no ready signal).
        let deadline = Instant::now() + Duration::from_secs(10);
        for server in [SocketAddr::from((self.ips[0], port)), SocketAddr::from((self.ips[1], port + 1))] {
            let sock = self.udp_socket(SocketAddr::from(([0, 0, 0, 0], 0)));
            loop {
                if stun_binding(&sock, server, Duration::from_millis(100)).is_some() {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "lab: turnserver on {} not answering at {server}:\n{}",
                    self.name,
                    child.context()
                );
            }
        }
        child
    }
}

/// Asserts that `report` (what `introducer nat --json` printed) is what the NAT model says
/// a NAT with `behavior` at `nat_ip` looks like.
pub fn assert_classified(report: &Value, behavior: NatBehavior, nat_ip: Ipv4Addr) {
    let expected = behavior.expected_report(SocketAddr::from((nat_ip, 0)));
    assert_eq!(report["mapping"], expected.mapping.unwrap().as_str(), "{report}");
    assert_eq!(report["filtering"], expected.filtering.unwrap().as_str(), "{report}");
    assert_eq!(report["allocation"], expected.allocation.unwrap().as_str(), "{report}");
    assert_eq!(report["nat_type"], behavior.nat_type().as_str(), "{report}");
    let public: SocketAddr = report["public_addr"].as_str().unwrap().parse().unwrap();
    assert_eq!(public.ip(), nat_ip, "{report}");
}

// ---------------------------------------------------------------------------------------
// The standard topology
// ---------------------------------------------------------------------------------------

/// The usual test topology: public node host A with two addresses (198.51.100.1 and .2,
/// for RFC 5780), public host B (198.51.100.3); add NATs with [`Standard::nat`] (WAN
/// addresses 203.0.113.1, .2, …) and hosts behind them.
pub struct Standard {
    pub lab: Lab,
    pub a: Host,
    pub b: Host,
}

impl Standard {
    /// `introducer` as for [`Lab::new`].
    pub fn new(name: &str, introducer: impl Into<PathBuf>) -> Standard {
        let lab = Lab::new(name, introducer);
        let a = lab.public_host("a", &[A_IP, A_ALT_IP]);
        let b = lab.public_host("b", &[B_IP]);
        Standard { lab, a, b }
    }

    /// A's primary endpoint, "198.51.100.1:3478", for `--bootstrap` / `--stun`.
    pub fn bootstrap(&self) -> String {
        format!("{A_IP}:{PORT}")
    }

    /// B's endpoint, "198.51.100.3:3478".
    pub fn b_addr(&self) -> String {
        format!("{B_IP}:{PORT}")
    }

    /// The `--listen` arguments for an introducer on A (both addresses, port 3478).
    pub fn a_listen_args() -> [String; 4] {
        ["--listen".into(), format!("{A_IP}:{PORT}"), "--listen".into(), format!("{A_ALT_IP}:{PORT}")]
    }

    /// Starts `introducer run` on A (both IPs: a full RFC 5780 server, the first node of the
    /// mesh) and on B (joining through A); returns once B is registered with A.
    pub fn start_introducers(&self) -> (LabChild, LabChild) {
        self.start_introducers_with(&[])
    }

    /// [`Standard::start_introducers`], with `a_extra` added to A's `introducer run` (its
    /// `--stats-every`, its relay limits).
    pub fn start_introducers_with(&self, a_extra: &[&str]) -> (LabChild, LabChild) {
        let wait = Duration::from_secs(20);
        let listen = Self::a_listen_args();
        let mut args: Vec<&str> = vec!["run"];
        args.extend(listen.iter().map(String::as_str));
        args.extend_from_slice(a_extra);
        let mut a = self.a.introducer(&args);
        a.wait_json(|v| v["event"] == "ready", wait);
        let mut b = self.b.introducer(&["run", "--listen", &self.b_addr(), "--bootstrap", &self.bootstrap()]);
        let ready = b.wait_json(|v| v["event"] == "ready", wait);
        assert_eq!(ready["public"], true, "B has no NAT and A can test its filtering: {ready}");
        b.wait_json(|v| v["event"] == "registered", wait);
        (a, b)
    }

    /// Starts `introducer run --bootstrap A extra…` on `host` and waits until it is
    /// registered; returns it and its PeerId.
    pub fn peer(&self, host: &Host, extra: &[&str]) -> (LabChild, String) {
        let wait = Duration::from_secs(20);
        let bootstrap = self.bootstrap();
        let mut args = vec!["run", "--bootstrap", &bootstrap];
        args.extend_from_slice(extra);
        let mut node = host.introducer(&args);
        let ready = node.wait_json(|v| v["event"] == "ready", wait);
        node.wait_json(|v| v["event"] == "registered", wait);
        let id = ready["peer_id"].as_str().expect("ready carries peer_id").to_owned();
        (node, id)
    }

    /// A NAT with the next free WAN address.
    pub fn nat(&self, name: &str, behavior: NatBehavior) -> Nat {
        self.lab.nat(name, behavior, self.lab.next_wan_ip())
    }

    /// A new NAT named `<name>-nat` with one host `name` behind it.
    pub fn natted_host(&self, name: &str, behavior: NatBehavior) -> (Nat, Host) {
        let nat = self.nat(&format!("{name}-nat"), behavior);
        let host = self.lab.host_behind(&nat, name);
        (nat, host)
    }

    pub fn host_behind(&self, nat: &Nat, name: &str) -> Host {
        self.lab.host_behind(nat, name)
    }

    /// A host `name` behind a home NAT `<name>-nat` behind a carrier-grade NAT `<name>-cgn`
    /// (with the next free WAN address); returns (CGNAT, home NAT, host). The internet
    /// sees `home.behind(cgnat)`.
    pub fn double_natted_host(&self, name: &str, home: NatBehavior, cgnat: NatBehavior) -> (Nat, Nat, Host) {
        let outer = self.nat(&format!("{name}-cgn"), cgnat);
        let inner = self.lab.nat_behind(&outer, &format!("{name}-nat"), home);
        let host = self.lab.host_behind(&inner, name);
        (outer, inner, host)
    }
}
