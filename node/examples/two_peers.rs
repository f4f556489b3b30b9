//! Two peers and a seed in one process: the seed introduces the peers, they punch a path,
//! ping and talk over it.
//!
//!     cargo run --example two_peers             # everything on this machine
//!     cargo run --example two_peers -- SEED     # the peers join a mesh through SEED (HOST:PORT)
use introducer_node::{Config, Identity, Node, NodeEvent};
use std::net::SocketAddr;
use std::time::Duration;

type Error = Box<dyn std::error::Error>;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    // The seed: the first node of a new mesh (it has nobody to join, so it serves).
    let (_seed, seed_addr) = match std::env::args().nth(1) {
        Some(addr) => (None, addr.parse::<SocketAddr>()?),
        None => {
            let mut config = Config::new(Identity::generate());
            config.listen = vec!["127.0.0.1:0".parse()?];
            let seed = Node::start(config)?;
            let addr = seed.listen()[0];
            (Some(seed), addr)
        }
    };
    // Two peers joining through it, on ephemeral ports.
    let peer = || {
        let mut config = Config::new(Identity::generate());
        config.bootstrap = vec![seed_addr];
        Node::start(config)
    };
    let (mut alice, mut bob) = (peer()?, peer()?);
    // Alice can be reached once the seed holds her registration.
    next(&mut alice, |e| matches!(e, NodeEvent::Registered { .. })).await?;

    bob.connect(alice.peer_id());
    if let NodeEvent::Connected { path, strategy, connect, .. } =
        next(&mut bob, |e| matches!(e, NodeEvent::Connected { .. })).await?
    {
        println!("bob reached alice: {} path, {} in {connect:?}", path.as_str(), strategy.as_str());
    }

    let seq = bob.ping(alice.peer_id());
    let pong = next(&mut bob, |e| matches!(e, NodeEvent::Pong { seq: s, .. } if *s == seq)).await?;
    if let NodeEvent::Pong { rtt, .. } = pong {
        println!("pong {seq}: {rtt:?}");
    }

    bob.send(alice.peer_id(), b"hello, alice".to_vec());
    if let NodeEvent::Data { peer, payload } = next(&mut alice, |e| matches!(e, NodeEvent::Data { .. })).await? {
        println!("alice got {:?} from {peer}", String::from_utf8_lossy(&payload));
    }
    Ok(())
}

/// The node's next event that `wanted` picks (10 s at most); a `Fatal` one is an error.
async fn next(node: &mut Node, wanted: impl Fn(&NodeEvent) -> bool) -> Result<NodeEvent, Error> {
    let wait = async {
        loop {
            match node.next_event().await {
                Some(NodeEvent::Fatal(error)) => return Err(error.into()),
                Some(event) if wanted(&event) => return Ok(event),
                Some(_) => {}
                None => return Err("the node stopped".into()),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait).await?
}
