use super::sled::Opened;
use super::*;
use introducer_actors::identity::Identity;
use introducer_actors::nat::NatBehavior;
use std::collections::BTreeSet;

fn peer(n: u64) -> PeerId {
    Identity::from_seed(n).peer_id()
}

fn member(n: u64, seen_ms: u64) -> Member {
    Member {
        peer_id: peer(n),
        addr: SocketAddr::from(([198, 51, 100, n as u8], 3478)),
        listen: vec![SocketAddr::from(([0, 0, 0, 0], 3478)), "[2001:db8::1]:3478".parse().unwrap()],
        introducer: n.is_multiple_of(2),
        record: vec![n as u8; 40],
        seen_ms,
    }
}

fn expiring(tag: u8, expires_ms: u64) -> Expiring {
    Expiring { record: vec![tag; 64], expires_ms }
}

/// What every store must do, whatever it keeps its bytes in.
fn round_trips(store: &mut impl Store) {
    assert_eq!(store.load().unwrap(), Stored::default(), "a new store is empty");

    // Members: put, get, replace, remove.
    for n in 1..=3 {
        store.put_member(&member(n, 1000 * n)).unwrap();
    }
    assert_eq!(store.member(&peer(2)).unwrap(), Some(member(2, 2000)));
    store.put_member(&member(2, 9000)).unwrap();
    assert_eq!(store.member(&peer(2)).unwrap(), Some(member(2, 9000)), "a newer put replaces");
    store.remove_member(&peer(3)).unwrap();
    assert_eq!(store.member(&peer(3)).unwrap(), None);

    // Attachments and topics, with expiries; "t" must not see the records of "tt".
    store.put_attachment(&peer(1), &expiring(1, 5_000)).unwrap();
    store.put_attachment(&peer(2), &expiring(2, 50_000)).unwrap();
    store.put_topic("t", &peer(1), &expiring(3, 5_000)).unwrap();
    store.put_topic("t", &peer(2), &expiring(4, 50_000)).unwrap();
    store.put_topic("tt", &peer(1), &expiring(5, 50_000)).unwrap();
    let t = store.topic("t").unwrap();
    assert_eq!(t.keys().copied().collect::<BTreeSet<_>>(), [peer(1), peer(2)].into());
    assert_eq!(t[&peer(2)], expiring(4, 50_000));
    assert_eq!(store.topic("tt").unwrap().len(), 1);
    assert!(matches!(
        store.put_topic(&"x".repeat(70_000), &peer(1), &expiring(0, 1)),
        Err(StoreError::TopicTooLong(70_000))
    ));

    // The NAT report of a network.
    let network = Network { lan: "192.168.1.20".parse().unwrap(), public: "203.0.113.7".parse().unwrap() };
    let report = NatBehavior::SYMMETRIC_RANDOM.expected_report("203.0.113.7:40000".parse().unwrap());
    let nat = MeasuredNat { report, measured_ms: 1234 };
    store.put_nat(&network, &nat).unwrap();
    let elsewhere = Network { lan: network.lan, public: "198.51.100.9".parse().unwrap() };
    assert_eq!(store.nat(&network).unwrap(), Some(nat));
    assert_eq!(store.nat(&elsewhere).unwrap(), None, "another public IP is another network");
    store.set_served(777).unwrap();

    // Everything loads back; pruning at 10 s drops what expired at 5 s, in the store and
    // in a snapshot alike.
    let mut loaded = store.load().unwrap();
    assert_eq!(loaded.members.values().cloned().collect::<Vec<_>>(), {
        let mut m = vec![member(1, 1000), member(2, 9000)];
        m.sort_by_key(|m| m.peer_id);
        m
    });
    assert_eq!((loaded.attachments.len(), loaded.topics.len(), loaded.skipped), (2, 3, 0));
    assert_eq!(loaded.nat.get(&network), Some(&nat));
    assert_eq!(loaded.served_ms, Some(777));
    assert_eq!(loaded.rejoin_seeds(), [member(2, 0).addr, member(1, 0).addr], "most recently seen first");
    assert_eq!(store.prune(10_000).unwrap(), 2);
    assert_eq!(loaded.prune(10_000), 2);
    let pruned = store.load().unwrap();
    assert_eq!(pruned, loaded);
    assert_eq!(pruned.attachments.keys().collect::<Vec<_>>(), [&peer(2)]);
    assert_eq!(
        pruned.topics.keys().cloned().collect::<BTreeSet<_>>(),
        [("t".to_owned(), peer(2)), ("tt".to_owned(), peer(1))].into()
    );
    store.flush().unwrap();
}

/// Records whose key or value is not what the tree holds are skipped, counted and removed.
fn skips_garbage(store: &mut impl Store) {
    store.put_member(&member(1, 1)).unwrap();
    store.put_topic("t", &peer(1), &expiring(1, u64::MAX)).unwrap();
    let garbage = vec![0xff; 9]; // an unterminated varint: no protobuf message
    store.insert(Tree::Members, &peer(2).to_bytes(), garbage.clone()).unwrap();
    store
        .insert(Tree::Members, b"not a peer id", store.get(Tree::Members, &peer(1).to_bytes()).unwrap().unwrap())
        .unwrap();
    store.insert(Tree::Attachments, &peer(3).to_bytes(), garbage.clone()).unwrap();
    store
        .insert(
            Tree::Topics,
            &[0, 200, b't'],
            store.get(Tree::Topics, &codec::encode_topic_key("t", &peer(1)).unwrap()).unwrap().unwrap(),
        )
        .unwrap();
    store.insert(Tree::Nat, b"192.168.1.2/203.0.113.1", garbage.clone()).unwrap();
    store.insert(Tree::Nat, b"no network", store.get(Tree::Members, &peer(1).to_bytes()).unwrap().unwrap()).unwrap();
    store.insert(Tree::Meta, codec::SERVED, garbage).unwrap();
    let loaded = store.load().unwrap();
    assert_eq!(loaded.skipped, 7);
    assert_eq!(loaded.members.keys().collect::<Vec<_>>(), [&peer(1)], "the good record loads");
    assert_eq!(loaded.topics.len(), 1);
    assert!(loaded.attachments.is_empty() && loaded.nat.is_empty() && loaded.served_ms.is_none());
    assert_eq!(store.load().unwrap().skipped, 0, "skipped records are removed");
}

#[test]
fn a_mem_store_round_trips_and_skips_garbage() {
    round_trips(&mut MemStore::new());
    skips_garbage(&mut MemStore::new());
}

#[test]
fn a_sled_store_round_trips_and_skips_garbage() {
    let dir = tempfile::tempdir().unwrap();
    round_trips(&mut SledStore::open(&dir.path().join("a")).unwrap());
    skips_garbage(&mut SledStore::open(&dir.path().join("b")).unwrap());
}

#[test]
fn a_mem_store_loses_what_was_not_flushed_when_it_crashes() {
    let mut store = MemStore::new();
    store.put_member(&member(1, 1)).unwrap();
    store.flush().unwrap();
    store.put_member(&member(2, 2)).unwrap();
    store.crash();
    assert_eq!(store.load().unwrap().members.keys().collect::<Vec<_>>(), [&peer(1)]);
}

/// Waits until sled lets go of the store's files after its last handle was dropped: its
/// flusher thread holds the lock a moment longer (in one process only; one that exits
/// frees it at once). Reopening at once failed as `Locked` on a loaded machine.
fn released(path: &std::path::Path) {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(path.join("db")).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    // SAFETY: flock(2) on a file this function opened and keeps open.
    while unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        assert!(std::time::Instant::now() < deadline, "sled still holds {path:?}");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // SAFETY: as above; closing the file would release it too.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_UN) };
}

#[test]
fn a_reopened_sled_store_sees_what_was_flushed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    {
        let mut store = SledStore::open(&path).unwrap();
        store.put_member(&member(1, 1)).unwrap();
        store.put_topic("t", &peer(1), &expiring(1, 99)).unwrap();
        store.flush().unwrap();
    }
    released(&path);
    let Opened { mut store, stored, moved_aside } = SledStore::open_or_rebuild(&path).unwrap();
    assert_eq!(moved_aside, None);
    assert_eq!(stored.members[&peer(1)], member(1, 1));
    assert_eq!(stored.topics[&("t".to_owned(), peer(1))], expiring(1, 99));
    assert_eq!(store.load().unwrap(), stored);
}

/// Every file of the store overwritten with garbage (sled refuses to open it), or only
/// its log (sled opens it, empty): the store is moved aside and an empty one takes its
/// place, which works.
#[test]
fn a_sled_store_of_garbage_is_moved_aside_and_rebuilt() {
    garbage_is_moved_aside(|_| true);
    garbage_is_moved_aside(|file| file.ends_with("db"));
}

fn garbage_is_moved_aside(overwrite: impl Fn(&std::path::Path) -> bool) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    {
        let mut store = SledStore::open(&path).unwrap();
        store.put_member(&member(1, 1)).unwrap();
        store.flush().unwrap();
    }
    released(&path);
    let mut files = 0;
    for entry in walk(&path).into_iter().filter(|f| overwrite(f)) {
        let len = std::fs::metadata(&entry).unwrap().len().max(64) as usize;
        std::fs::write(&entry, (0..len).map(|i| (i * 7 + 13) as u8).collect::<Vec<_>>()).unwrap();
        files += 1;
    }
    assert!(files >= 1, "sled keeps a db file");
    let Opened { mut store, stored, moved_aside } = SledStore::open_or_rebuild(&path).unwrap();
    let aside = moved_aside.expect("moved aside");
    assert!(aside.is_dir() && aside.file_name().unwrap().to_string_lossy().starts_with("store.corrupt-"), "{aside:?}");
    assert_eq!(stored, Stored::default(), "rebuilt empty");
    store.put_member(&member(2, 2)).unwrap();
    assert_eq!(store.load().unwrap().members.len(), 1, "the new store works");
}

#[test]
fn a_store_of_another_format_is_moved_aside() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    {
        let mut store = SledStore::open(&path).unwrap();
        store.insert(Tree::Meta, codec::FORMAT, 2u32.to_be_bytes().to_vec()).unwrap();
        store.flush().unwrap();
    }
    released(&path);
    assert!(matches!(SledStore::open(&path), Err(StoreError::Format { found, .. }) if found == "2"));
    released(&path);
    let opened = SledStore::open_or_rebuild(&path).unwrap();
    assert!(opened.moved_aside.is_some());
}

/// A store another process (here: another handle) holds is not corrupt: it is left alone.
#[test]
fn a_store_in_use_is_never_moved_aside() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let _first = SledStore::open(&path).unwrap();
    assert!(matches!(SledStore::open_or_rebuild(&path), Err(StoreError::Locked { .. })));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "nothing moved aside");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}
