//! The store on the real binary, on loopback: a node restarted with only its data dir
//! rejoins the mesh through the members it kept; `kill -9` at any point never prevents the
//! next start; a corrupt store is moved aside with a warning and the node runs; with every
//! kept member down, a NATed node fails with one clear line and a public one serves alone.
//!
//! Every wait is on a line of output (an event, a log line, the end of stderr), never on
//! a sleep, so the tests hold on a loaded machine.

use introducer_lab::overwrite_with_garbage;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_introducer");
/// Generous: first contact, probing and registering on a loaded 2-core machine.
const PATIENCE: Duration = Duration::from_secs(30);

/// A running `introducer` whose JSON events and stderr lines can be awaited.
struct Node {
    child: Child,
    events: Receiver<Value>,
    stderr: Receiver<String>,
    /// Every stderr line so far, for failure messages.
    said: Vec<String>,
}

impl Node {
    fn start(args: &[&str]) -> Node {
        let mut child = Command::new(BIN)
            .args(args)
            .arg("--json")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run introducer");
        let (stdout, err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
        let (event_tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("stdout is JSON only: {line}: {e}"));
                if event_tx.send(value).is_err() {
                    return;
                }
            }
        });
        let (line_tx, stderr) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if line_tx.send(line).is_err() {
                    return;
                }
            }
        });
        Node { child, events, stderr, said: Vec::new() }
    }

    /// `run` on `listen` from `data_dir`, joining `bootstrap` if given.
    fn run(listen: &str, data_dir: &Path, bootstrap: Option<&str>, extra: &[&str]) -> Node {
        let mut args = vec!["run", "--listen", listen, "--data-dir", data_dir.to_str().unwrap(), "--stats-every", "0"];
        if let Some(b) = bootstrap {
            args.extend(["--bootstrap", b]);
        }
        Node::start(&[&args[..], extra].concat())
    }

    fn wait(&mut self, what: &str, mut pred: impl FnMut(&Value) -> bool) -> Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            match self.events.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(v) if pred(&v) => return v,
                Ok(_) => {}
                Err(_) => {
                    self.said.extend(self.stderr.try_iter());
                    panic!("no {what} within {PATIENCE:?}; stderr: {:#?}", self.said)
                }
            }
        }
    }

    /// The first stderr line that holds `needle`.
    fn wait_stderr(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            match self.stderr.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) if line.contains(needle) => return line,
                Ok(line) => self.said.push(line),
                Err(_) => panic!("{needle:?} not on stderr within {PATIENCE:?}: {:#?}", self.said),
            }
        }
    }

    /// Waits for the process to end on its own; its status and every stderr line.
    fn exit(mut self) -> (ExitStatus, Vec<String>) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            match self.stderr.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => self.said.push(line),
                Err(RecvTimeoutError::Disconnected) => break, // stderr closed: it exited
                Err(RecvTimeoutError::Timeout) => panic!("still running after {PATIENCE:?}: {:#?}", self.said),
            }
        }
        let status = self.child.wait().expect("wait");
        (status, std::mem::take(&mut self.said))
    }

    /// `kill -9`, and waits until it is gone (its locks released).
    fn kill9(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("wait");
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("introducer-restart-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn s(v: &Value, key: &str) -> String {
    v[key].as_str().unwrap_or_else(|| panic!("no {key} in {v}")).to_owned()
}

/// A public seed X on loopback: its address and PeerId.
fn seed(dir: &Path) -> (Node, String, String) {
    let mut x = Node::run("127.0.0.1:0", &dir.join("x"), None, &[]);
    let ready = x.wait("ready", |v| v["event"] == "ready");
    (x, ready["listen"][0].as_str().unwrap().to_owned(), s(&ready, "peer_id"))
}

fn registered_with(x_addr: &str) -> impl FnMut(&Value) -> bool + '_ {
    move |v: &Value| v["event"] == "registered" && v["introducer"] == x_addr
}

#[test]
fn a_node_restarted_with_only_its_data_dir_rejoins_through_the_members_it_kept() {
    let dir = scratch("rejoin");
    let (mut x, x_addr, _) = seed(&dir);
    let y_dir = dir.join("y");
    let mut y = Node::run("127.0.0.2:0", &y_dir, Some(&x_addr), &[]);
    let y_id = s(&y.wait("ready", |v| v["event"] == "ready"), "peer_id");
    y.wait("registered with X", registered_with(&x_addr));
    x.wait("Y registered at X", |v| v["event"] == "peer_registered" && v["peer_id"] == y_id.as_str());
    y.kill9();

    let mut again = Node::run("127.0.0.2:0", &y_dir, None, &[]);
    let ready = again.wait("ready", |v| v["event"] == "ready");
    assert_eq!(s(&ready, "peer_id"), y_id, "same identity");
    again.wait("registered with X again", registered_with(&x_addr));
    x.wait("Y registered at X again", |v| v["event"] == "peer_registered" && v["peer_id"] == y_id.as_str());
    drop((again, x));
    std::fs::remove_dir_all(dir).unwrap();
}

/// `kill -9` right after start (the store being created or opened), once ready (the NAT
/// report being written) and once registered, again and again: every next start runs, and
/// the last one, without `--bootstrap`, still rejoins.
#[test]
fn kill_9_at_any_moment_never_prevents_the_next_start() {
    let dir = scratch("kill9");
    let (_x, x_addr, _) = seed(&dir);
    let y_dir = dir.join("y");
    for round in 0..6 {
        let mut y = Node::run("127.0.0.2:0", &y_dir, Some(&x_addr), &[]);
        match round % 3 {
            0 => {}
            1 => drop(y.wait("ready", |v| v["event"] == "ready")),
            _ => drop(y.wait("registered", registered_with(&x_addr))),
        }
        y.kill9();
    }
    let mut y = Node::run("127.0.0.2:0", &y_dir, None, &[]);
    y.wait("registered with X after the kills", registered_with(&x_addr));
    drop(y);
    std::fs::remove_dir_all(dir).unwrap();
}

/// Every file of a stopped node's store overwritten with garbage: the next start warns on
/// stderr, moves the store aside (kept for a look) and runs with a new one, which works.
#[test]
fn a_corrupt_store_is_moved_aside_with_a_warning_and_the_node_runs() {
    let dir = scratch("corrupt");
    let (_x, x_addr, _) = seed(&dir);
    let y_dir = dir.join("y");
    let mut y = Node::run("127.0.0.2:0", &y_dir, Some(&x_addr), &[]);
    y.wait("registered", registered_with(&x_addr));
    y.kill9();
    let store = y_dir.join("store");
    let files = overwrite_with_garbage(&store);
    assert!(files > 0, "the store has files");

    let mut y = Node::run("127.0.0.2:0", &y_dir, Some(&x_addr), &[]);
    let warning = y.wait_stderr("moved it aside");
    assert!(warning.contains("WARN") && warning.contains(store.to_str().unwrap()), "{warning}");
    y.wait("registered on a new store", registered_with(&x_addr));
    let aside: Vec<String> = std::fs::read_dir(&y_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("store.corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1, "moved aside once: {aside:?}");
    assert!(y_dir.join(&aside[0]).is_dir() && store.is_dir());
    y.kill9();

    // The new store kept X: the data dir alone rejoins.
    let mut y = Node::run("127.0.0.2:0", &y_dir, None, &[]);
    y.wait("registered from the new store", registered_with(&x_addr));
    drop(y);
    std::fs::remove_dir_all(dir).unwrap();
}

/// X is an RFC 5780 seed on two loopback IPs, so P, which serves (public), and N, which
/// does not (`--no-serve`, as any NATed node), both join it. With X and both killed, P
/// and N restarted from their data dirs alone: N exits with one clear line naming X, P
/// warns and serves on its own.
#[test]
fn with_every_kept_member_down_a_natted_node_fails_clearly_and_a_public_one_serves_alone() {
    let dir = scratch("alone");
    let port = free_port_pair();
    let (a, b) = (format!("127.0.0.1:{port}"), format!("127.0.0.2:{port}"));
    let mut x = Node::run(&a, &dir.join("x"), None, &["--listen", &b]);
    x.wait("ready", |v| v["event"] == "ready");
    let (p_dir, n_dir) = (dir.join("p"), dir.join("n"));
    let mut p = Node::run("127.0.0.3:0", &p_dir, Some(&a), &[]);
    let mut n = Node::run("127.0.0.4:0", &n_dir, Some(&a), &["--no-serve"]);
    let ready = p.wait("P ready", |v| v["event"] == "ready");
    assert_eq!(ready["public"], true, "P probes as public against an RFC 5780 seed: {ready}");
    p.wait("P registered", registered_with(&a));
    n.wait("N registered", registered_with(&a));
    for node in [x, p, n] {
        node.kill9();
    }

    let n = Node::run("127.0.0.4:0", &n_dir, None, &["--no-serve"]);
    let mut p = Node::run("127.0.0.3:0", &p_dir, None, &[]);
    let warning = p.wait_stderr("serving on our own");
    assert!(warning.contains("WARN") && warning.contains(&a), "{warning}");
    let ready = p.wait("P ready alone", |v| v["event"] == "ready");
    assert_eq!(ready["public"], true, "{ready}");

    let (status, stderr) = n.exit();
    assert!(!status.success());
    let errors: Vec<&String> = stderr.iter().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr:#?}");
    assert!(
        errors[0].contains("cannot rejoin through the members kept in the data dir") && errors[0].contains(&a),
        "{errors:?}"
    );
    assert!(errors[0].contains("--bootstrap"), "says what to do: {errors:?}");
    drop(p);
    std::fs::remove_dir_all(dir).unwrap();
}

/// A port P free on 127.0.0.1 and 127.0.0.2, with P+1 free on both (RFC 5780's alternate).
fn free_port_pair() -> u16 {
    loop {
        let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = probe.local_addr().unwrap().port();
        drop(probe);
        if port == u16::MAX {
            continue;
        }
        let free = ["127.0.0.1", "127.0.0.2"]
            .iter()
            .flat_map(|ip| [port, port + 1].map(|p| format!("{ip}:{p}")))
            .map(|a| UdpSocket::bind(a).ok())
            .collect::<Option<Vec<_>>>();
        if free.is_some() {
            return port;
        }
    }
}
