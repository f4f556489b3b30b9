//! The real-NAT lab of introducer.
//!
//! - [`nft`]: the nftables rulesets (and sysctls) that make a Linux router behave like a
//!   [`NatBehavior`](introducer_actors::nat::NatBehavior). Pure text, so any testbed can use
//!   it: the namespace lab below, and router containers through the `introducer-lab-nft`
//!   binary (`introducer-lab-nft --kind sym-seq --wan-ip 203.0.113.1 | nft -f -`).
//! - [`netns`]: the harness the node's integration tests run in: network namespaces, veths
//!   and bridges with those routers between real processes. Needs root.
//! - [`stun`]: a minimal STUN Binding client for looking at a mapping from inside.
//! - [`amplification`]: one datagram of every kind, for the amplification tables (the
//!   simulator's and the real-NAT one).

pub mod amplification;
pub mod netns;
pub mod nft;
pub mod stun;

/// Overwrites every file under `dir` with garbage of the same length (64 bytes at least),
/// as a disk that went bad would; returns how many files it wrote. For tests of a corrupt
/// store.
pub fn overwrite_with_garbage(dir: &std::path::Path) -> usize {
    let mut n = 0;
    for entry in std::fs::read_dir(dir).expect("a readable directory") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            n += overwrite_with_garbage(&path);
        } else {
            let len = std::fs::metadata(&path).expect("a file").len().max(64) as usize;
            std::fs::write(&path, (0..len).map(|i| (i * 31 + 7) as u8).collect::<Vec<u8>>()).expect("writable");
            n += 1;
        }
    }
    n
}
