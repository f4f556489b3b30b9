//! Listing the members of a mesh from outside it (`introducer peers`): the driver of
//! [`MembersQuery`] over one real UDP socket and the real clock. All it decides is nothing:
//! the query machine asks, retries, checks every record and says when it is done.
//!
//! Where the members to ask come from (the `peers` command's choice): the nodes given with
//! `--bootstrap`; without any, the members kept in a data dir's store when no node runs
//! from it (asked, not printed: a store is a cache of records that may be long stale, and a
//! member's state is only what a live member sees). The store is read, never written.

use crate::identity::{DataDir, IdentityError};
use crate::store::{SledStore, Stored};
use introducer_actors::mesh::listing::Listed;
use introducer_actors::{Machine, SocketId};
use introducer_bootstrap::members::{Listing, MembersError, MembersQuery, QueryConfig};
use introducer_proto::MAX_DATAGRAM;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::UdpSocket;
use tokio::time::Instant;

#[derive(Debug, thiserror::Error)]
pub enum PeersError {
    #[error(transparent)]
    Query(#[from] MembersError),
    #[error("cannot open a UDP socket: {0}")]
    Socket(std::io::Error),
    #[error("no members kept in {0}: pass --bootstrap ADDR (any public node of the mesh)")]
    NothingKept(PathBuf),
    #[error("a node runs from {0}, and the members kept there cannot be read while it does: pass --bootstrap ADDR (that node's address will do)")]
    InUse(PathBuf),
    #[error(transparent)]
    DataDir(IdentityError),
}

impl PeersError {
    /// A short, stable word for scripts (`--json`).
    pub fn kind(&self) -> &'static str {
        match self {
            PeersError::Query(MembersError::Bootstrap(e)) => e.kind(),
            PeersError::Query(MembersError::NotAMember(_)) => "not_a_member",
            PeersError::Query(MembersError::NoListing { .. }) => "no_listing",
            PeersError::Socket(_) => "socket",
            PeersError::NothingKept(_) => "nothing_kept",
            PeersError::InUse(_) => "data_dir_in_use",
            PeersError::DataDir(_) => "data_dir",
        }
    }
}

/// The members kept in `dir`'s store, to ask (the most recently seen first), if no node
/// runs from it.
pub fn kept_members(dir: &Path) -> Result<Vec<SocketAddr>, PeersError> {
    let nothing = || PeersError::NothingKept(dir.to_owned());
    // Nothing is created just to find it empty.
    if !dir.join("store").exists() {
        return Err(nothing());
    }
    let held = match DataDir::lock(dir) {
        Ok(held) => held,
        Err(IdentityError::InUse(_)) => return Err(PeersError::InUse(dir.to_owned())),
        Err(e) => return Err(PeersError::DataDir(e)),
    };
    let stored: Stored = SledStore::open_or_rebuild(&held.store()).map(|opened| opened.stored).unwrap_or_default();
    let seeds = stored.rejoin_seeds();
    if seeds.is_empty() {
        return Err(nothing());
    }
    Ok(seeds)
}

/// Asks `seeds` (in order) for the members of their mesh: the first that serves lists them.
pub async fn list(seeds: Vec<SocketAddr>) -> Result<Listing, PeersError> {
    let any: SocketAddr = if seeds.first().is_some_and(SocketAddr::is_ipv6) {
        "[::]:0".parse().expect("literal")
    } else {
        "0.0.0.0:0".parse().expect("literal")
    };
    let socket = UdpSocket::bind(any).await.map_err(PeersError::Socket)?;
    let unix_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let start = Instant::now();
    let mut query = MembersQuery::new(QueryConfig::default(), seeds, rand::random(), (start.into_std(), unix_ms));
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    loop {
        while let Some(t) = query.poll_transmit() {
            // A send that fails is a datagram lost: the query asks again.
            if let Err(e) = socket.send_to(&t.payload, t.dst).await {
                tracing::debug!(dst = %t.dst, "send: {e}");
            }
        }
        if let Some(result) = query.result() {
            return result.clone().map_err(PeersError::Query);
        }
        // A query without a result always has a deadline; were it ever without, it is
        // looked at again in a second rather than waited on forever.
        let deadline = query.poll_timeout().unwrap_or_else(|| (Instant::now() + Duration::from_secs(1)).into_std());
        tokio::select! {
            received = socket.recv_from(&mut buf) => match received {
                Ok((len, src)) => query.handle_datagram(Instant::now().into_std(), SocketId::PRIMARY, src, &buf[..len]),
                Err(e) => tracing::debug!("recv: {e}"),
            },
            _ = tokio::time::sleep_until(deadline.into()) => query.handle_timeout(Instant::now().into_std()),
        }
    }
}

/// A member's JSON line (the CLI contract's keys: `peer_id`, `addrs`, `roles`, `state`;
/// and the relay's capacity and load, the record's generation and when it was signed).
pub fn member_json(listed: &Listed) -> Value {
    let r = &listed.record;
    json!({
        "peer_id": r.peer.to_string(),
        "addrs": r.addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        "roles": roles(listed),
        "state": listed.state.as_str(),
        "relay_capacity": r.relay_capacity,
        "relay_load": r.relay_load,
        "generation": r.generation,
        "issued_ms": r.issued_ms,
    })
}

fn roles(listed: &Listed) -> Vec<&'static str> {
    let r = &listed.record;
    [(r.introducer, "introducer"), (r.relay, "relay")].into_iter().filter(|(on, _)| *on).map(|(_, n)| n).collect()
}

/// The listing as a table for people: one row per member, ordered by PeerId.
pub fn table(listing: &Listing) -> String {
    let rows: Vec<[String; 5]> = listing
        .members
        .values()
        .map(|m| {
            let r = &m.record;
            let roles = roles(m);
            let load = if r.relay { format!("{}/{}", r.relay_load, r.relay_capacity) } else { "-".into() };
            let addrs = r.addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", ");
            let roles = if roles.is_empty() { "-".into() } else { roles.join(",") };
            [r.peer.to_string(), m.state.as_str().into(), roles, load, addrs]
        })
        .collect();
    let header = ["PEER ID", "STATE", "ROLES", "RELAY LOAD", "ADDRESSES"].map(String::from);
    let widths: Vec<usize> =
        (0..5).map(|i| rows.iter().chain([&header]).map(|r| r[i].chars().count()).max().unwrap_or(0)).collect();
    let line = |r: &[String; 5]| {
        let cells: Vec<String> = (0..4).map(|i| format!("{:<w$}", r[i], w = widths[i])).collect();
        format!("{}  {}", cells.join("  "), r[4]).trim_end().to_owned()
    };
    let mut out: Vec<String> = std::iter::once(&header).chain(&rows).map(line).collect();
    let n = listing.members.len();
    let mut footer = format!(
        "{n} member{} as {} ({}) sees {}",
        if n == 1 { "" } else { "s" },
        listing.from.addr,
        listing.from.peer_id,
        if n == 1 { "it" } else { "them" }
    );
    if listing.dropped_records > 0 {
        footer += &format!("; {} record(s) that did not verify were left out", listing.dropped_records);
    }
    out.push(footer);
    out.join("\n")
}
