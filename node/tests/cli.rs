//! The `introducer` binary's contract on loopback: identity, one-line errors with a
//! non-zero exit for misuse, and hostile datagrams dropped, counted and never amplified.

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_introducer");

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("introducer-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn introducer(args: &[&str]) -> Output {
    Command::new(BIN).args(args).stdin(Stdio::null()).output().expect("run introducer")
}

/// Asserts a failed run that explains itself in one line mentioning `needle`.
fn assert_one_line_error(out: &Output, needle: &str) {
    assert!(!out.status.success(), "expected failure, got {:?}", out.status);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains(needle), "{needle:?} not in {stderr}");
    assert!(out.stdout.is_empty(), "nothing on stdout: {}", String::from_utf8_lossy(&out.stdout));
}

/// Asserts a failed run that ends with one error line mentioning `needle`, after what it
/// showed of its progress (a connection under way says what it waits for).
fn assert_error_after_progress(out: &Output, needle: &str) {
    assert!(!out.status.success(), "expected failure, got {:?}", out.status);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "one error line: {stderr}");
    assert_eq!(stderr.lines().last(), Some(errors[0]), "the error comes last: {stderr}");
    assert!(errors[0].contains(needle), "{needle:?} not in {stderr}");
}

#[test]
fn id_is_created_private_and_stable() {
    let dir = scratch("id");
    let dir_s = dir.to_str().unwrap();
    let first = introducer(&["id", "--data-dir", dir_s, "--json"]);
    assert!(first.status.success());
    let v: Value = serde_json::from_slice(&first.stdout).unwrap();
    let peer_id = v["peer_id"].as_str().unwrap().to_owned();
    assert!(peer_id.starts_with("12D3KooW"), "ed25519 PeerId: {peer_id}");
    let mode = std::fs::metadata(dir.join("identity.key")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let again = introducer(&["id", "--data-dir", dir_s]);
    assert_eq!(String::from_utf8_lossy(&again.stdout).trim(), peer_id);
    std::fs::remove_dir_all(dir).unwrap();
}

/// DESIGN's contract: `run` refuses to start on a data dir another node is using (it would
/// run under the same identity). The lock goes with the process, however it ends.
#[test]
fn a_data_dir_runs_one_node_at_a_time() {
    let dir = scratch("locked");
    let dir_s = dir.to_str().unwrap();
    let first = Node::start(&["run", "--listen", "127.0.0.1:0", "--json", "--data-dir", dir_s]);
    first.wait(|v| v["event"] == "ready");
    let mut second = Command::new(BIN)
        .args(["run", "--listen", "127.0.0.1:0", "--data-dir", dir_s])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run introducer");
    // It must give up at once; one still running after 20 s took the data dir too.
    let gave_up = (0..200).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        second.try_wait().expect("wait").is_some()
    });
    if !gave_up {
        second.kill().expect("kill");
    }
    let second = second.wait_with_output().expect("output");
    assert!(gave_up, "a second node started on a data dir in use");
    assert_one_line_error(&second, "is in use by another introducer node");
    let id = introducer(&["id", "--data-dir", dir_s]);
    assert!(id.status.success(), "reading the id of a running node is fine");
    drop(first); // killed: no clean shutdown
    let again = Node::start(&["run", "--listen", "127.0.0.1:0", "--json", "--data-dir", dir_s]);
    let ready = again.wait(|v| v["event"] == "ready");
    assert_eq!(ready["peer_id"].as_str().unwrap(), String::from_utf8_lossy(&id.stdout).trim());
    drop(again);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn misuse_gets_one_line_and_a_non_zero_exit() {
    let out = introducer(&["ping", "not-a-peer-id", "--bootstrap", "127.0.0.1:9"]);
    assert_one_line_error(&out, "is not a PeerId");
    let out = introducer(&["nat", "--bootstrap", "no such host:x"]);
    assert_one_line_error(&out, "bad bootstrap address");
    let out = introducer(&["run", "--listen", "300.1.1.1"]);
    assert_one_line_error(&out, "bad --listen address");
    let out = introducer(&["nat"]);
    assert_one_line_error(&out, "--bootstrap");
    let out = introducer(&["run", "--listen", "127.0.0.1:1", "--listen", "127.0.0.1:2"]);
    assert_one_line_error(&out, "two --listen addresses");
}

#[test]
fn unreachable_bootstrap_is_a_clear_error() {
    // Nothing listens there: first contact gives up after its retransmissions.
    let peer = "12D3KooWAmrU6Ag17ojnMVs9s4XrsyZk16Jzj2icikKrNAR3Hzpg";
    let out = introducer(&["ping", peer, "--bootstrap", "127.0.0.1:9", "--timeout", "30"]);
    assert_one_line_error(&out, "no bootstrap node answered (127.0.0.1:9)");
}

/// A node on loopback whose JSON events can be awaited.
struct Node {
    child: Child,
    events: mpsc::Receiver<Value>,
    /// What it said on stderr (`-v`: its progress and reasons), for a failure's message.
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
    /// What it printed on stdout so far.
    seen: std::cell::RefCell<Vec<Value>>,
}

impl Node {
    fn start(args: &[&str]) -> Node {
        let mut child =
            Command::new(BIN).args(args).arg("-v").stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("stdout is JSON only: {line}: {e}"));
                if tx.send(value).is_err() {
                    return;
                }
            }
        });
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (pipe, into) = (child.stderr.take().unwrap(), stderr.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut text = into.lock().unwrap();
                *text += &line;
                text.push('\n');
            }
        });
        Node { child, events, stderr, seen: Default::default() }
    }

    /// A node on loopback that reports its counters every 0.2 s, and its address.
    fn counting(dir: &std::path::Path) -> (Node, std::net::SocketAddr) {
        let args = ["run", "--listen", "127.0.0.1:0", "--json", "--stats-every", "0.2", "--data-dir"];
        let node = Node::start(&[&args[..], &[dir.to_str().unwrap()]].concat());
        let ready = node.wait(|v| v["event"] == "ready");
        let addr = ready["listen"][0].as_str().unwrap().parse().unwrap();
        (node, addr)
    }

    /// The next event `pred` picks; a minute at most (a deadline for a loaded machine,
    /// never waited out when things work), then a failure that shows what the node said.
    fn wait(&self, mut pred: impl FnMut(&Value) -> bool) -> Value {
        loop {
            let Ok(v) = self.events.recv_timeout(Duration::from_secs(60)) else {
                let seen: Vec<String> = self.seen.borrow().iter().map(Value::to_string).collect();
                panic!(
                    "no awaited event within 60 s; stdout:\n{}\nstderr:\n{}",
                    seen.join("\n"),
                    self.stderr.lock().unwrap()
                );
            };
            self.seen.borrow_mut().push(v.clone());
            if pred(&v) {
                return v;
            }
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn hostile_datagrams_are_dropped_counted_and_never_amplified() {
    let dir = scratch("hostile");
    let (node, addr) = Node::counting(&dir);
    let attacker = UdpSocket::bind("127.0.0.1:0").unwrap();
    attacker.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let hello_unpadded = [0x09, 0x0a, 0x00]; // an Envelope with an empty Hello: too small to answer
    let garbage: Vec<Vec<u8>> = vec![
        vec![],                       // empty
        vec![0xff; 40],               // unknown protocol byte
        vec![0x0a, 1, 2, 3],          // introducer frame of an unknown version
        vec![0x09, 0xff, 0xff, 0xff], // malformed protobuf
        vec![0x09],                   // envelope with no message
        vec![0x00, 0x01, 0x00],       // truncated STUN
        vec![0x09; 1500],             // oversized
        hello_unpadded.to_vec(),
    ];
    for datagram in &garbage {
        attacker.send_to(datagram, addr).unwrap();
    }
    let mut buf = [0u8; 2048];
    assert!(attacker.recv_from(&mut buf).is_err(), "nothing is answered to garbage or to an unpadded Hello");
    // Six malformed (the empty one is not even delivered by the kernel as data, so count ≥ 6).
    let stats = node.wait(|v| v["event"] == "stats" && v["stats"]["dropped_malformed"].as_u64() >= Some(6));
    assert!(stats["stats"]["received"].as_u64().unwrap() >= 7, "{stats}");

    // And the node still works: a STUN Binding request is answered.
    let request = [0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];
    attacker.send_to(&request, addr).unwrap();
    let (n, _) = attacker.recv_from(&mut buf).expect("STUN answered");
    assert_eq!(&buf[0..2], &[0x01, 0x01], "Binding success");
    assert!(n <= 76, "answer bounded: {n} bytes");
    std::fs::remove_dir_all(dir).unwrap();
}

/// A seed on 127.0.0.1 and a peer on 127.0.0.2 registered with it: (seed, its address,
/// peer, its PeerId).
fn seed_and_peer(seed_dir: &str, peer_dir: &str) -> (Node, String, Node, String) {
    let seed = Node::start(&["run", "--listen", "127.0.0.1:0", "--json", "--data-dir", seed_dir]);
    let seed_addr = seed.wait(|v| v["event"] == "ready")["listen"][0].as_str().unwrap().to_owned();
    let args = ["run", "--listen", "127.0.0.2:0", "--bootstrap", &seed_addr, "--json", "--data-dir", peer_dir];
    let peer = Node::start(&args);
    let peer_id = peer.wait(|v| v["event"] == "ready")["peer_id"].as_str().unwrap().to_owned();
    peer.wait(|v| v["event"] == "registered");
    (seed, seed_addr, peer, peer_id)
}

#[test]
fn connect_sends_stdin_lines_as_datagrams() {
    let dir = scratch("connect");
    let data = |name: &str| dir.join(name).to_str().unwrap().to_owned();
    let (_seed, seed_addr, peer, peer_id) = seed_and_peer(&data("seed"), &data("peer"));

    let mut connect = Command::new(BIN)
        .args(["connect", &peer_id, "--bootstrap", &seed_addr, "--json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(connect.stdout.take().unwrap()).lines();
    let connected: Value = serde_json::from_str(&stdout.next().unwrap().unwrap()).unwrap();
    assert_eq!(connected["event"], "connected", "{connected}");
    {
        use std::io::Write;
        let mut stdin = connect.stdin.take().unwrap();
        stdin.write_all(b"hello\nworld\n").unwrap();
    } // EOF: connect exits once its lines are sent
    let lines: Vec<Value> = (0..2).map(|_| peer.wait(|v| v["event"] == "data")).collect();
    assert_eq!((lines[0]["data"].as_str(), lines[1]["data"].as_str()), (Some("hello"), Some("world")));
    assert!(connect.wait().unwrap().success());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn an_unknown_peer_gets_the_introducers_clear_error() {
    let dir = scratch("unknown");
    let seed = Node::start(&["run", "--listen", "127.0.0.1:0", "--json", "--data-dir", dir.to_str().unwrap()]);
    let seed_addr = seed.wait(|v| v["event"] == "ready")["listen"][0].as_str().unwrap().to_owned();
    let nobody = "12D3KooWAmrU6Ag17ojnMVs9s4XrsyZk16Jzj2icikKrNAR3Hzpg";
    let out = introducer(&["ping", nobody, "--bootstrap", &seed_addr, "--timeout", "20"]);
    assert_error_after_progress(&out, &format!("peer {nobody} is not registered with introducer {seed_addr}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with(&format!("asking for an introduction to {nobody}")), "{stderr}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_stun_flood_from_one_address_gets_a_bounded_burst_of_answers() {
    let dir = scratch("flood");
    let (node, addr) = Node::counting(&dir);
    let flooder = UdpSocket::bind("127.0.0.1:0").unwrap();
    flooder.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let request = [0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9];
    for _ in 0..200 {
        flooder.send_to(&request, addr).unwrap();
    }
    let mut buf = [0u8; 2048];
    let answers = std::iter::from_fn(|| flooder.recv_from(&mut buf).ok()).count();
    assert!((40..=50).contains(&answers), "a burst of about 40 answers, not 200: {answers}");
    let stats = node.wait(|v| v["event"] == "stats" && v["stats"]["stun_rate_limited"].as_u64() >= Some(150));
    assert!(stats["stats"]["stun_rate_limited"].as_u64().unwrap() <= 160, "{stats}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// Asserts a failed `--json` run: one JSON error line on stdout (with its `kind`), one
/// line on stderr, a non-zero exit.
fn assert_json_error(out: &Output, kind: &str, needle: &str) -> Value {
    assert!(!out.status.success(), "expected failure, got {:?}", out.status);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().count(), 1, "one JSON line on stdout: {stdout}");
    let v: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("not JSON: {stdout}: {e}"));
    assert_eq!((v["event"].as_str(), v["kind"].as_str()), (Some("error"), Some(kind)), "{v}");
    assert!(v["message"].as_str().unwrap().contains(needle), "{needle:?} not in {v}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "one line on stderr: {stderr}");
    v
}

/// `peers` asks a member for the members it knows: one JSON object per member with the
/// contract's keys, or a table for people; a node that is no member says so.
#[test]
fn peers_lists_the_members_a_member_knows() {
    let dir = scratch("peers");
    let data = |name: &str| dir.join(name).to_str().unwrap().to_owned();
    let seed = Node::start(&["run", "--listen", "127.0.0.1:0", "--json", "--data-dir", &data("seed")]);
    let ready = seed.wait(|v| v["event"] == "ready");
    let (seed_addr, seed_id) = (ready["listen"][0].as_str().unwrap().to_owned(), ready["peer_id"].clone());
    let out = introducer(&["peers", "--bootstrap", &seed_addr, "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 1, "the member itself: {lines:?}");
    let member = &lines[0];
    assert_eq!(member["peer_id"], seed_id);
    assert_eq!(member["addrs"], serde_json::json!([seed_addr]));
    assert_eq!(member["roles"], serde_json::json!(["introducer", "relay"]));
    assert_eq!((member["state"].as_str(), member["relay_load"].as_u64()), (Some("alive"), Some(0)), "{member}");
    assert_eq!(member["relay_capacity"].as_u64(), Some(256), "{member}");

    let human = introducer(&["peers", "--bootstrap", &seed_addr]);
    let table = String::from_utf8_lossy(&human.stdout);
    assert!(human.status.success() && table.starts_with("PEER ID"), "{table}");
    assert!(table.lines().any(|l| l.starts_with(seed_id.as_str().unwrap()) && l.contains("alive")), "{table}");

    // A node behind no NAT on loopback cannot be dialed back, so it does not serve: it is
    // no member, and says so. Stopped, its store still names the seed: asked through it.
    let peer = Node::start(&[
        "run",
        "--listen",
        "127.0.0.2:0",
        "--bootstrap",
        &seed_addr,
        "--json",
        "--data-dir",
        &data("peer"),
    ]);
    let peer_addr = peer.wait(|v| v["event"] == "ready")["listen"][0].as_str().unwrap().to_owned();
    peer.wait(|v| v["event"] == "registered");
    let out = introducer(&["peers", "--bootstrap", &peer_addr, "--json"]);
    assert_json_error(&out, "not_a_member", "no member of a mesh");
    let out = introducer(&["peers", "--data-dir", &data("peer"), "--json"]);
    assert_json_error(&out, "data_dir_in_use", "--bootstrap");
    drop(peer);
    let out = introducer(&["peers", "--data-dir", &data("peer"), "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed["peer_id"], seed_id, "asked through the member kept in the data dir");
    std::fs::remove_dir_all(dir).unwrap();
}

/// Mistakes with `peers`: one line and a non-zero exit (a JSON error line under `--json`),
/// and a data dir that is not there is not created.
#[test]
fn peers_mistakes_get_one_line_and_a_non_zero_exit() {
    let out = introducer(&["peers", "--bootstrap", "127.0.0.1:9", "--json"]);
    assert_json_error(&out, "unreachable", "no bootstrap node answered (127.0.0.1:9)");
    let out = introducer(&["peers", "--bootstrap", "127.0.0.1:9"]);
    assert_one_line_error(&out, "no bootstrap node answered (127.0.0.1:9)");
    let out = introducer(&["peers", "--json"]);
    assert_json_error(&out, "error", "--bootstrap ADDR");
    let out = introducer(&["peers", "--bootstrap", "no such host:x", "--json"]);
    assert_json_error(&out, "bad_address", "bad bootstrap address");
    let dir = scratch("peers-none");
    let out = introducer(&["peers", "--data-dir", dir.to_str().unwrap()]);
    assert_one_line_error(&out, "no members kept in");
    assert!(!dir.exists(), "nothing created");
}

/// Each mistake the audit found gets its own clear line, and under `--json` an error
/// event on stdout with a kind a script can branch on.
#[test]
fn mistakes_are_said_once_and_as_json_too() {
    // An out-of-range port is said to be one, not looked up as a host.
    let peer = "12D3KooWAmrU6Ag17ojnMVs9s4XrsyZk16Jzj2icikKrNAR3Hzpg";
    let out = introducer(&["ping", peer, "--bootstrap", "127.0.0.1:99999"]);
    assert_one_line_error(&out, "port 99999 is out of range");
    let out = introducer(&["ping", peer, "--bootstrap", "127.0.0.1:99999", "--json"]);
    assert_json_error(&out, "bad_address", "out of range");
    // `id` asks nobody.
    let out = introducer(&["id", "--bootstrap", "127.0.0.1"]);
    assert_one_line_error(&out, "takes no --bootstrap");
    // No HOME, no XDG_DATA_HOME: no key is left in whatever directory this runs in.
    let cwd = scratch("nohome");
    std::fs::create_dir_all(&cwd).unwrap();
    let out = Command::new(BIN)
        .args(["id", "--json"])
        .current_dir(&cwd)
        .env_remove("HOME")
        .env_remove("XDG_DATA_HOME")
        .env_remove("INTRODUCER_DATA_DIR")
        .output()
        .unwrap();
    assert_json_error(&out, "data_dir", "no data dir");
    assert_eq!(std::fs::read_dir(&cwd).unwrap().count(), 0, "nothing written where it ran");
    // A port in use: its cause said once.
    let taken = UdpSocket::bind("127.0.0.1:0").unwrap();
    let listen = taken.local_addr().unwrap().to_string();
    let dir = scratch("taken");
    let out = introducer(&["run", "--listen", &listen, "--data-dir", dir.to_str().unwrap()]);
    assert_one_line_error(&out, "Address already in use");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.matches("Address already in use").count(), 1, "{stderr}");
    let _ = std::fs::remove_dir_all(dir);
    let _ = std::fs::remove_dir_all(cwd);
}

/// Seeds are often given the full seed list, themselves included: a node whose only
/// bootstrap is itself starts a new mesh (with a warning) instead of waiting forever on
/// itself, and one that may not serve says there is nobody to join.
#[test]
fn a_node_bootstrapping_off_itself_starts_a_mesh_or_says_why_not() {
    let port = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let me = format!("127.0.0.1:{port}");
    let dir = scratch("self");
    let args = ["run", "--listen", &me, "--bootstrap", &me, "--json", "--data-dir", dir.to_str().unwrap()];
    let mut child = Command::new(BIN).args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready: Value = serde_json::from_str(&stdout.next().unwrap().unwrap()).unwrap();
    assert_eq!((&ready["event"], &ready["public"]), (&Value::from("ready"), &Value::from(true)), "{ready}");
    child.kill().unwrap();
    child.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(stderr.contains(&format!("bootstrap node {me} is this node itself: skipped")), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);

    // Nobody to join and not allowed to serve: said at once, not a node that does nothing.
    let data = dir.to_str().unwrap();
    let out = introducer(&["run", "--listen", &me, "--no-serve", "--json", "--data-dir", data]);
    assert_json_error(&out, "nothing_to_join", "nobody to ask");
    let out = introducer(&[
        "run",
        "--listen",
        &me,
        "--bootstrap",
        &me,
        "--no-serve",
        "--json",
        "--data-dir",
        dir.to_str().unwrap(),
    ]);
    let error: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"));
    assert_eq!((&error["event"], &error["kind"]), (&Value::from("error"), &Value::from("nothing_to_join")), "{error}");
    assert_error_after_progress(&out, "nobody to ask");
    let _ = std::fs::remove_dir_all(dir);
}

/// `connect` shows what its peer says as it is, and what anyone else who reached us says
/// with the sender's name: never as if the connected peer had said it.
#[test]
fn connect_names_who_else_speaks() {
    let dir = scratch("others");
    let data = |name: &str| dir.join(name).to_str().unwrap().to_owned();
    let (_seed, seed_addr, _peer, peer_id) = seed_and_peer(&data("seed"), &data("peer"));
    // The user's `connect`, in human mode, with a data dir so that others can name it.
    let user_id = String::from_utf8(introducer(&["id", "--data-dir", &data("user")]).stdout).unwrap();
    let mut user = Command::new(BIN)
        .args(["connect", &peer_id, "--bootstrap", &seed_addr, "--data-dir", &data("user")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut user_out = BufReader::new(user.stdout.take().unwrap()).lines();
    let connected = user_out.next().unwrap().unwrap();
    assert!(connected.starts_with(&format!("connected to {peer_id} via direct path")), "{connected}");
    // Someone else reaches the user and speaks.
    let mut other = Command::new(BIN)
        .args(["connect", user_id.trim(), "--bootstrap", &seed_addr, "--json", "--data-dir", &data("other")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let other_id = String::from_utf8(introducer(&["id", "--data-dir", &data("other")]).stdout).unwrap();
    let mut other_out = BufReader::new(other.stdout.take().unwrap()).lines();
    let reached: Value = serde_json::from_str(&other_out.next().unwrap().unwrap()).unwrap();
    assert_eq!(reached["event"], "connected", "{reached}");
    {
        use std::io::Write;
        other.stdin.take().unwrap().write_all(b"psst\n").unwrap();
    }
    // The user first sees the stranger connect, then what it said, under its name.
    let said = user_out.find(|l| l.as_ref().is_ok_and(|l| l.contains("psst"))).unwrap().unwrap();
    assert_eq!(said, format!("{}: psst", other_id.trim()));
    assert!(other.wait().unwrap().success());
    drop(user.stdin.take());
    assert!(user.wait().unwrap().success());
    let _ = std::fs::remove_dir_all(dir);
}
