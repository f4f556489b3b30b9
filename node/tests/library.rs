//! The embeddable `Node` as a library user meets it, on loopback.

use introducer_node::{Config, FatalError, Identity, Node, NodeEvent};
use std::net::UdpSocket;
use std::time::Duration;

/// A Fatal event is the last one: the stream ends after it (it used to hang), and the
/// node's sockets are closed.
#[tokio::test]
async fn a_fatal_event_ends_the_stream() {
    // A port that answers nothing: first contact gives up after its tries.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut config = Config::new(Identity::generate());
    config.bootstrap = vec![silent.local_addr().unwrap()];
    config.bootstrap_timing.retransmit = Duration::from_millis(50);
    let mut node = Node::start(config).unwrap();
    let events = tokio::time::timeout(Duration::from_secs(30), async {
        let mut events = Vec::new();
        while let Some(event) = node.next_event().await {
            events.push(event);
        }
        events
    })
    .await
    .expect("the stream ends");
    assert!(
        matches!(events.last(), Some(NodeEvent::Fatal(FatalError::Bootstrap(_)))),
        "the last event is the fatal one: {events:?}"
    );
    assert!(node.next_event().await.is_none(), "and it stays ended");
    // What first contact sent is all the silent port ever got: the node stopped.
    silent.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 2048];
    let sent = std::iter::from_fn(|| silent.recv_from(&mut buf).ok()).count();
    assert_eq!(sent, introducer_node::config::BootstrapConfig::default().max_tries as usize);
}

/// The node's next event that `wanted` picks (20 s at most).
async fn until(node: &mut Node, wanted: fn(&NodeEvent) -> bool) -> NodeEvent {
    let wait = async {
        loop {
            match node.next_event().await {
                Some(e) if wanted(&e) => return e,
                Some(NodeEvent::Fatal(e)) => panic!("{e}"),
                Some(_) => {}
                None => panic!("node stopped"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), wait).await.expect("event within 20 s")
}

/// Pings are numbered per peer, and the number `ping` returns is the one its pong carries.
#[tokio::test]
async fn ping_returns_the_sequence_number_its_pong_carries() {
    let mut seed_config = Config::new(Identity::generate());
    seed_config.listen = vec!["127.0.0.1:0".parse().unwrap()];
    let seed = Node::start(seed_config).unwrap();
    let peer = || {
        let mut config = Config::new(Identity::generate());
        config.bootstrap = vec![seed.listen()[0]];
        Node::start(config).unwrap()
    };
    let (mut a, mut b) = (peer(), peer());
    until(&mut a, |e| matches!(e, NodeEvent::Registered { .. })).await;
    b.connect(a.peer_id());
    until(&mut b, |e| matches!(e, NodeEvent::Connected { .. })).await;
    let seqs: Vec<u64> = (0..3).map(|_| b.ping(a.peer_id())).collect();
    assert_eq!(seqs, [0, 1, 2]);
    let mut answered = Vec::new();
    while answered.len() < 3 {
        if let NodeEvent::Pong { seq, peer, .. } = until(&mut b, |e| matches!(e, NodeEvent::Pong { .. })).await {
            assert_eq!(peer, a.peer_id());
            answered.push(seq);
        }
    }
    answered.sort();
    assert_eq!(answered, seqs);
}

/// The README shows the example as it is in `examples/` (which the doc test runs).
#[test]
fn the_readme_shows_the_example_as_it_runs() {
    let readme = include_str!("../../README.md");
    let example = include_str!("../examples/two_peers.rs");
    assert!(readme.contains(&format!("```rust\n{example}```")), "README's example differs from examples/two_peers.rs");
}
