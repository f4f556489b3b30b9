//! The mesh with the real binary across real network namespaces: public nodes that
//! bootstrap off one another become members of one mesh, a member killed with SIGKILL is
//! suspected and then declared left by every other (and taken back when it restarts from
//! its data dir, or with a corrupt store), and `introducer peers` from behind a
//! NAT lists the members as one of them sees them.

use introducer_actors::nat::NatBehavior;
use introducer_lab::netns::{Lab, LabChild, Standard, PORT};
use serde_json::Value;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);
const INTRODUCER: &str = env!("CARGO_BIN_EXE_introducer");

/// Waits until `node` has printed a mesh `change` for each of `peers`, in any order.
fn wait_mesh(node: &mut LabChild, change: &str, peers: &[&String]) {
    let deadline = Instant::now() + WAIT;
    loop {
        let seen = node.json_lines();
        let missing: Vec<&&String> = peers
            .iter()
            .filter(|p| !seen.iter().any(|v| v["event"] == "mesh" && v["change"] == change && v["peer_id"] == ***p))
            .collect();
        if missing.is_empty() {
            return;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "{}: no mesh {change} for {missing:?}\n{}", node.label(), node.context());
        node.next_line(left);
    }
}

fn peer_id(node: &LabChild) -> String {
    let ready = node.json_lines().into_iter().find(|v| v["event"] == "ready").expect("ready came first");
    ready["peer_id"].as_str().unwrap().to_owned()
}

#[test]
fn public_nodes_form_one_mesh_and_a_killed_member_is_declared_left() {
    if let Err(why) = Lab::check() {
        panic!("the real-NAT lab needs root and nft/ip: {why}");
    }
    let std = Standard::new("mesh", INTRODUCER);
    let (mut a, mut b) = std.start_introducers();
    // Two more public nodes, one IP each, in a chain: C bootstraps off B alone, D off C alone.
    // Probing against one IP cannot test their filtering: another member dialing each back
    // shows it is public.
    let ips = [Ipv4Addr::new(198, 51, 100, 20), Ipv4Addr::new(198, 51, 100, 21)];
    let c_host = std.lab.public_host("c", &ips[..1]);
    let d_host = std.lab.public_host("d", &ips[1..]);
    let listen = |ip: Ipv4Addr| format!("{ip}:{PORT}");
    let (c_listen, d_listen, b_addr) = (listen(ips[0]), listen(ips[1]), std.b_addr());
    // C's data dir outlives its first run.
    let c_tmp = tempfile::tempdir().unwrap();
    let c_dir = c_tmp.path().to_str().unwrap().to_owned();
    let mut c =
        c_host.introducer(&["run", "--json", "--listen", &c_listen, "--bootstrap", &b_addr, "--data-dir", &c_dir]);
    let ready = c.wait_json(|v| v["event"] == "ready", WAIT);
    assert_eq!(ready["public"], true, "{ready}");
    let mut d = d_host.introducer(&["run", "--json", "--listen", &d_listen, "--bootstrap", &c_listen]);
    let ready = d.wait_json(|v| v["event"] == "ready", WAIT);
    assert_eq!(ready["public"], true, "{ready}");
    let ids: Vec<String> = [&a, &b, &c, &d].iter().map(|n| peer_id(n)).collect();
    let started = Instant::now();
    for (i, node) in [&mut a, &mut b, &mut c, &mut d].into_iter().enumerate() {
        let others: Vec<&String> = ids.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, id)| id).collect();
        wait_mesh(node, "joined", &others);
    }
    let joined = started.elapsed();
    c.kill();
    let killed = Instant::now();
    for node in [&mut a, &mut b, &mut d] {
        wait_mesh(node, "left", &[&ids[2]]);
    }
    let left = killed.elapsed();
    println!("4 public nodes: one mesh {joined:?} after the last was ready; a SIGKILLed member declared left by all in {left:?}");
    let mut suspected_by = 0;
    for node in [&a, &b, &d] {
        let lefts: Vec<Value> =
            node.json_lines().into_iter().filter(|v| v["event"] == "mesh" && v["change"] == "left").collect();
        assert_eq!(lefts.len(), 1, "only the killed member left: {lefts:?}");
        // Suspected first — once, and nobody else — unless the verdict reached this member
        // before the suspicion did (SWIM allows it; the simulator checks the order strictly).
        let changes: Vec<(String, String)> = node
            .json_lines()
            .into_iter()
            .filter(|v| v["event"] == "mesh" && v["change"] != "joined")
            .map(|v| (v["change"].as_str().unwrap().to_owned(), v["peer_id"].as_str().unwrap().to_owned()))
            .collect();
        let c_left = ("left".to_owned(), ids[2].clone());
        let c_suspect = ("suspect".to_owned(), ids[2].clone());
        assert!(changes == [c_suspect.clone(), c_left.clone()] || changes == [c_left], "{}: {changes:?}", node.label());
        suspected_by += usize::from(changes.contains(&c_suspect));
    }
    assert!(suspected_by > 0, "nobody printed the killed member suspect");
    // C restarted from its data dir alone (no --bootstrap): it rejoins through the members
    // it kept, and the others take it back.
    let mut c = c_host.introducer(&["run", "--json", "--listen", &c_listen, "--data-dir", &c_dir]);
    let ready = c.wait_json(|v| v["event"] == "ready", WAIT);
    assert_eq!((ready["peer_id"].as_str(), ready["public"].as_bool()), (Some(ids[2].as_str()), Some(true)), "{ready}");
    let restarted = Instant::now();
    let joined = |node: &LabChild| {
        let c_joined = |v: &Value| v["event"] == "mesh" && v["change"] == "joined" && v["peer_id"] == ids[2].as_str();
        node.json_lines().iter().filter(|v| c_joined(v)).count()
    };
    for node in [&mut a, &mut b, &mut d] {
        let deadline = Instant::now() + WAIT;
        while joined(node) < 2 {
            assert!(Instant::now() < deadline, "{}: C not taken back\n{}", node.label(), node.context());
            node.next_line(deadline.saturating_duration_since(Instant::now()));
        }
    }
    println!("C restarted from its data dir alone is a member again after {:?}", restarted.elapsed());
    // C killed again and its store overwritten with garbage: restarted (through B, as the
    // store keeps nobody now), it warns, moves the store aside and is a member once more.
    c.kill();
    let store = c_tmp.path().join("store");
    assert!(introducer_lab::overwrite_with_garbage(&store) > 0, "C has a store");
    let mut c =
        c_host.introducer(&["run", "--json", "--listen", &c_listen, "--bootstrap", &b_addr, "--data-dir", &c_dir]);
    c.wait_json(|v| v["event"] == "ready", WAIT);
    // Back before the others declared it down, C is a newer generation of a member they
    // hold (no `left`, no `joined` there); C itself meets every member again.
    wait_mesh(&mut c, "joined", &[&ids[0], &ids[1], &ids[3]]);
    // Written at start, long before C met the others.
    assert!(c.stderr_tail().contains("moved it aside"), "{}", c.context());
    drop(c);
}

/// `introducer peers --json --bootstrap B`, run behind a NAT (a one-shot process, no
/// member), lists A, B and C with the addresses their records name, their roles and state
/// alive as B sees them; the human form is a table.
#[test]
fn peers_from_behind_a_nat_lists_every_member() {
    if let Err(why) = Lab::check() {
        panic!("the real-NAT lab needs root and nft/ip: {why}");
    }
    let std = Standard::new("peers", INTRODUCER);
    let (mut a, mut b) = std.start_introducers();
    let c_ip = Ipv4Addr::new(198, 51, 100, 20);
    let c_host = std.lab.public_host("c", &[c_ip]);
    let c_listen = format!("{c_ip}:{PORT}");
    let mut c = c_host.introducer(&["run", "--json", "--listen", &c_listen, "--bootstrap", &std.bootstrap()]);
    assert_eq!(c.wait_json(|v| v["event"] == "ready", WAIT)["public"], true);
    let ids: Vec<String> = [&a, &b, &c].iter().map(|n| peer_id(n)).collect();
    for (i, node) in [&mut a, &mut b, &mut c].into_iter().enumerate() {
        let others: Vec<&String> = ids.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, id)| id).collect();
        wait_mesh(node, "joined", &others);
    }
    let (_, q_host) = std.natted_host("q", NatBehavior::PORT_RESTRICTED);
    let b_addr = std.b_addr();
    // Records spread by gossip within a few rounds of a member joining: ask until B holds all.
    let started = Instant::now();
    let members: Vec<Value> = loop {
        let out = q_host.run_timeout(INTRODUCER, ["peers", "--json", "--bootstrap", &b_addr], WAIT);
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(out.status.success(), "peers failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        let members: Vec<Value> = stdout.lines().map(|l| serde_json::from_str(l).expect("JSON lines")).collect();
        if members.len() == 3 || started.elapsed() > WAIT {
            break members;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    println!("peers via B, {:?} after the mesh formed:", started.elapsed());
    for m in &members {
        println!("{m}");
    }
    let listed: Vec<&str> = members.iter().map(|m| m["peer_id"].as_str().unwrap()).collect();
    let mut expected: Vec<&str> = ids.iter().map(String::as_str).collect();
    expected.sort();
    assert_eq!(listed, expected, "A, B and C, ordered by PeerId");
    let addrs = [std.bootstrap(), b_addr.clone(), c_listen.clone()];
    for (id, addr) in ids.iter().zip(&addrs) {
        let m = members.iter().find(|m| m["peer_id"] == **id).unwrap();
        assert_eq!(m["addrs"][0].as_str(), Some(addr.as_str()), "{m}");
        assert_eq!(m["roles"], serde_json::json!(["introducer", "relay"]), "{m}");
        assert_eq!((m["state"].as_str(), m["relay_load"].as_u64()), (Some("alive"), Some(0)), "{m}");
    }
    let human = q_host.run_timeout(INTRODUCER, ["peers", "--bootstrap", &b_addr], WAIT);
    let table = String::from_utf8_lossy(&human.stdout);
    assert!(human.status.success() && table.starts_with("PEER ID"), "{table}");
    assert_eq!(table.lines().filter(|l| l.contains(" alive ")).count(), 3, "{table}");
    // Nobody at the address: one JSON error line, a non-zero exit.
    let out = q_host.run_timeout(INTRODUCER, ["peers", "--json", "--bootstrap", "198.51.100.77"], WAIT);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success() && stdout.lines().count() == 1, "{stdout}");
    let error: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!((error["event"].as_str(), error["kind"].as_str()), (Some("error"), Some("unreachable")), "{error}");
}

/// Peers homed at opposite ends of the mesh: P registers with A only, Q asks B only. B
/// knows from the mesh that A hosts P, sends Q there, and A introduces them: they punch
/// and ping (the real binary, real NATs).
#[test]
fn peers_homed_at_different_members_ping_each_other() {
    if let Err(why) = Lab::check() {
        panic!("the real-NAT lab needs root and nft/ip: {why}");
    }
    let std = Standard::new("homes", INTRODUCER);
    let (_a, mut b) = std.start_introducers();
    let (_, p_host) = std.natted_host("p", NatBehavior::PORT_RESTRICTED);
    let (_, q_host) = std.natted_host("q", NatBehavior::PORT_RESTRICTED);
    let (_p, p_id) = std.peer(&p_host, &[]);
    // B learns that A hosts P by gossip: a ping that comes before may find P nowhere (and
    // says so at once); the first that comes after connects.
    let b_addr = std.b_addr();
    let started = Instant::now();
    let connected = loop {
        let out = q_host.run_timeout(
            INTRODUCER,
            ["ping", &p_id, "--bootstrap", &b_addr, "--json", "--count", "2", "--interval", "0.1"],
            Duration::from_secs(40),
        );
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        if out.status.success() {
            break stdout;
        }
        assert!(
            stdout.contains("not registered"),
            "ping failed otherwise: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(started.elapsed() < WAIT, "B never learned where P is homed\n{}", b.context());
    };
    let events: Vec<Value> = connected.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(events[0]["event"], "connected", "{connected}");
    assert_eq!(events[0]["path"], "direct", "{connected}");
    assert_eq!(events.iter().filter(|e| e["event"] == "pong").count(), 2, "{connected}");
    println!("Q (asking B) connected to P (homed at A): {}", events[0]);
    b.kill();
}

/// `kill -9` of a NATed peer's homes, one after another: after each, a peer asking a member
/// reaches it again (the real binary, real NATs), and the peer keeps three homes.
#[test]
fn a_peer_stays_reachable_as_its_homes_are_killed_one_after_another() {
    if let Err(why) = Lab::check() {
        panic!("the real-NAT lab needs root and nft/ip: {why}");
    }
    let std = Standard::new("failover", INTRODUCER);
    let (a, b) = std.start_introducers();
    let bootstrap = std.bootstrap();
    let mut members = vec![(std.bootstrap(), a), (std.b_addr(), b)];
    for (i, ip) in [Ipv4Addr::new(198, 51, 100, 20), Ipv4Addr::new(198, 51, 100, 21)].into_iter().enumerate() {
        let host = std.lab.public_host(&format!("m{i}"), &[ip]);
        let listen = format!("{ip}:{PORT}");
        let mut node = host.introducer(&["run", "--json", "--listen", &listen, "--bootstrap", &bootstrap]);
        let ready = node.wait_json(|v| v["event"] == "ready", WAIT);
        assert_eq!(ready["public"], true, "{ready}");
        members.push((listen, node));
    }
    let (_, p_host) = std.natted_host("p", NatBehavior::PORT_RESTRICTED);
    let (_, q_host) = std.natted_host("q", NatBehavior::PORT_RESTRICTED);
    let (mut p, p_id) = std.peer(&p_host, &[]);
    let homes_of = |p: &mut LabChild, n: usize| -> Vec<String> {
        let deadline = Instant::now() + WAIT;
        loop {
            let homes: Vec<String> = p
                .json_lines()
                .iter()
                .filter(|v| v["event"] == "registered")
                .map(|v| v["introducer"].as_str().unwrap().to_owned())
                .collect();
            if homes.len() >= n {
                return homes;
            }
            assert!(Instant::now() < deadline, "P has {homes:?}\n{}", p.context());
            p.next_line(deadline.saturating_duration_since(Instant::now()));
        }
    };
    let homes = homes_of(&mut p, 3);
    // Ping P through whichever member is alive and asks first, until it answers.
    let ping_through = |members: &[(String, LabChild)]| -> Duration {
        let started = Instant::now();
        loop {
            for (addr, _) in members.iter().filter(|(_, node)| node.is_running()) {
                let out = q_host.run_timeout(
                    INTRODUCER,
                    ["ping", &p_id, "--bootstrap", addr, "--json", "--count", "1", "--timeout", "8"],
                    Duration::from_secs(40),
                );
                if out.status.success() {
                    return started.elapsed();
                }
            }
            assert!(started.elapsed() < 2 * WAIT, "P unreachable for {:?}", started.elapsed());
        }
    };
    let mut times = Vec::new();
    for (round, home) in homes.iter().take(2).enumerate() {
        let (_, node) = members.iter_mut().find(|(addr, _)| addr == home).expect("a member");
        node.kill();
        let took = ping_through(&members);
        println!("round {round}: home {home} killed; P reached again after {took:?}");
        times.push(took);
    }
    let now_homes = homes_of(&mut p, 4);
    println!("P registered with {now_homes:?} over the test");
    assert!(now_homes.len() >= 4, "P took a new home as its homes died: {now_homes:?}");
}

/// `introducer join chat` on three NATed hosts (one behind a symmetric NAT), homed at
/// different members: each connects to the two others and says so with the topic; a line
/// on one's stdin reaches both others; one killed, the others print that it left; one
/// stopped, the last sees it leave at once.
#[test]
fn a_topic_connects_its_members_carries_their_lines_and_notices_a_leave() {
    use std::io::Write;
    if let Err(why) = Lab::check() {
        panic!("the real-NAT lab needs root and nft/ip: {why}");
    }
    let std = Standard::new("topic", INTRODUCER);
    let (_a, _b) = std.start_introducers();
    let hosts = [
        ("t1", NatBehavior::PORT_RESTRICTED, std.bootstrap()),
        ("t2", NatBehavior::PORT_RESTRICTED, std.b_addr()),
        ("t3", NatBehavior::SYMMETRIC_RANDOM, std.bootstrap()),
    ];
    let mut nodes = Vec::new();
    for (name, behavior, seed) in &hosts {
        let (_, host) = std.natted_host(name, *behavior);
        let mut command = host.introducer_command(&["join", "chat", "--json", "--bootstrap", seed]);
        command.stdin(std::process::Stdio::piped());
        let node = host.spawn_command(name, command);
        nodes.push((host, node));
    }
    // Each prints `connected` twice, with the topic, for two different peers.
    let started = Instant::now();
    let mut peers_of = Vec::new();
    for i in 0..nodes.len() {
        let mut seen = std::collections::BTreeSet::new();
        while seen.len() < 2 {
            let found = nodes[i].1.try_wait_json(|v| v["event"] == "connected", Duration::from_secs(40));
            let v = found.unwrap_or_else(|e| {
                let all: Vec<String> = nodes.iter().map(|(_, n)| n.context()).collect();
                panic!("{e}\n{}", all.join("\n"))
            });
            assert_eq!(v["topic"], "chat", "{v}");
            seen.insert(v["peer_id"].as_str().unwrap().to_owned());
        }
        peers_of.push(seen);
    }
    println!("3 members connected to each other {:?} after start", started.elapsed());
    // A line from the first reaches both others.
    writeln!(nodes[0].1.stdin().unwrap(), "hello from t1").unwrap();
    for (_, node) in nodes.iter_mut().skip(1) {
        let v = node.wait_json(|v| v["event"] == "data", Duration::from_secs(20));
        assert_eq!((v["data"].as_str(), v["topic"].as_str()), (Some("hello from t1"), Some("chat")), "{v}");
    }
    // The second is killed: the two others say it left.
    let gone = peers_of[0].intersection(&peers_of[2]).next().expect("t2 is known to both").clone();
    nodes[1].1.kill();
    let killed = Instant::now();
    for i in [0, 2] {
        let v =
            nodes[i].1.wait_json(|v| v["event"] == "left" && v["peer_id"] == gone.as_str(), Duration::from_secs(60));
        assert_eq!(v["topic"], "chat", "{v}");
    }
    println!("a killed member was seen to leave after {:?}", killed.elapsed());
    // The first stops cleanly (SIGINT): its goodbye reaches the third, which sees it leave
    // at once rather than after the 35 s a silent session takes.
    let first = peers_of[2].iter().find(|p| **p != gone).expect("t1 is known to t3").clone();
    nodes[0].1.signal(libc::SIGINT);
    let stopped = Instant::now();
    let v = nodes[2].1.wait_json(|v| v["event"] == "left" && v["peer_id"] == first.as_str(), Duration::from_secs(10));
    assert_eq!(v["topic"], "chat", "{v}");
    println!("a member that stopped was seen to leave after {:?}", stopped.elapsed());
}
