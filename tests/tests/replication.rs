//! Replication against a real till-server on loopback, with real redb logs on
//! disk (issue 4's scenarios 1-7). Each scenario that is about fencing runs
//! twice: with the server's lease check, and with it switched off, where the
//! VSS version check alone must fence (a stock VSS server's behaviour).

use std::collections::HashMap;
use std::time::Duration;

use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use till_log::segment::SegmentError;
use till_log::{DeviceId, Key, Log, LogOptions, Op, Write};
use till_tests::power_cut::Disk;
use till_tests::proxy::LossyProxy;
use till_tests::replication::{Device, client, test_config};
use till_tests::server::{StoreArg, TillServer, add_user, server_binary};
use till_vss::replica::{
    BackupKeys, DurableError, PlanError, Remote, RemoteError, Replica, ReplicaError, Replicator,
    ReplicatorState, RestoreError, TakeoverConfirmed, Target, object_names, restore, restore_state,
};
use till_vss::{KeyValue, PutObjectRequest};

const WAIT: Duration = Duration::from_secs(30);

struct Setup {
    _dir: tempfile::TempDir,
    server: TillServer,
    token: String,
}

fn server(lease_check: bool) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let store = StoreArg::DataDir(dir.path().to_path_buf());
    let bin = server_binary();
    let token = add_user(&bin, &store, "merchant");
    let extra: &[&str] = if lease_check {
        &[]
    } else {
        &["--no-lease-check"]
    };
    let server = TillServer::start(&bin, store, extra);
    Setup {
        _dir: dir,
        server,
        token,
    }
}

fn secret() -> [u8; 32] {
    rand::random()
}

async fn durable(d: &Device, seq: u64) {
    tokio::time::timeout(WAIT, d.replicator().wait_durable(seq))
        .await
        .unwrap_or_else(|_| panic!("seq {seq} not durable within {WAIT:?}"))
        .unwrap();
}

fn err_of(r: Result<Device, RestoreError>) -> RestoreError {
    match r {
        Ok(_) => panic!("the restore should have been refused"),
        Err(e) => e,
    }
}

/// Restores the latest state into a fresh log on a new device and returns it.
async fn restore_fresh(s: &Setup, secret: [u8; 32]) -> Result<Device, RestoreError> {
    let d = Device::new(&s.server.vss_url(), &s.token, secret);
    restore(d.replica.remote(), &d.log, |_| {}).await?;
    Ok(d)
}

async fn two_devices_one_master(lease_check: bool) {
    let s = server(lease_check);
    let url = s.server.vss_url();
    let secret = secret();
    let mut a = Device::new(&url, &s.token, secret);
    let b = Device::new(&url, &s.token, secret);

    // A acquires and ships.
    let lease_a = a.acquire(test_config()).await.unwrap();
    assert_eq!(lease_a.epoch(), 1);
    let seq = a.append("a", 120);
    durable(&a, seq).await;

    // B cannot acquire while A holds: the message names A.
    let err = b.replica.acquire().await.unwrap_err();
    match &err {
        ReplicaError::LeaseHeld { device, epoch } => {
            assert_eq!((*device, *epoch), (a.id, 1));
            let msg = err.to_string();
            assert!(msg.contains(&a.id.to_string()), "{msg}");
        }
        other => panic!("expected LeaseHeld, got {other}"),
    }

    // A write by B is refused and nothing of B lands: B read the head, A
    // shipped again, B's conditional write on the old version conflicts.
    let remote_b = b.replica.remote().clone();
    let (mut forged, version) = remote_b.head().await.unwrap().unwrap();
    let seq = a.append("a2", 10);
    durable(&a, seq).await;
    b.append("b-rogue", 5);
    let rogue = b.log.events(1, 5, 5).unwrap();
    forged.device = b.id;
    forged.last_seq = 5;
    forged.last_hash = rogue[4].hash();
    forged.segments += 1;
    forged.writes += 1;
    let result = remote_b
        .put(
            vec![
                remote_b.segment_item(forged.segments - 1, &rogue, true),
                remote_b.head_item(&forged, version),
            ],
            vec![],
        )
        .await;
    assert!(
        matches!(result, Err(till_vss::Error::Conflict { .. })),
        "{result:?}"
    );
    // With the lease check on, even a write at the current version is refused,
    // naming the holder.
    if lease_check {
        let (_, version) = remote_b.head().await.unwrap().unwrap();
        let result = remote_b
            .put(vec![remote_b.head_item(&forged, version)], vec![])
            .await;
        let err = result.unwrap_err().to_string();
        assert!(err.contains(&a.id.to_string()), "{err}");
    }
    let c = restore_fresh(&s, secret).await.unwrap();
    assert_eq!(c.log.state().unwrap(), a.log.state().unwrap());
    assert!(
        c.log
            .events(1, u64::MAX, usize::MAX)
            .unwrap()
            .iter()
            .all(|e| e.device == a.id)
    );

    // A releases. The B that appended rogue events cannot sync onto them
    // (its log would fork); a fresh B syncs, acquires and ships.
    a.replicator().release().await.unwrap();
    assert!(matches!(
        b.replica.acquire().await,
        Err(ReplicaError::LocalFork { unshipped: 5, .. })
    ));
    let mut b = Device::new(&url, &s.token, secret);
    let lease_b = b.acquire(test_config()).await.unwrap();
    assert_eq!(lease_b.epoch(), 2);
    assert_eq!(b.log.state().unwrap(), a.log.state().unwrap());
    let seq = b.append("b", 30);
    durable(&b, seq).await;

    // A's next write fails as Fenced, and A stops.
    a.start(lease_a, test_config());
    let seq = a.append("a-stale", 3);
    let err = tokio::time::timeout(WAIT, a.replicator().wait_durable(seq))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(
        err,
        DurableError::Fenced(till_vss::replica::Fenced {
            device: b.id,
            epoch: 2
        })
    );
    assert!(matches!(
        a.replicator().status().state,
        ReplicatorState::Fenced(_)
    ));
    assert!(err.to_string().contains("another device is master"));
    // Nothing of A's stale write landed.
    let c = restore_fresh(&s, secret).await.unwrap();
    assert_eq!(c.log.state().unwrap(), b.log.state().unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn two_devices_one_master_with_lease_check() {
    two_devices_one_master(true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_devices_one_master_by_versions_alone() {
    two_devices_one_master(false).await;
}

async fn takeover(lease_check: bool) {
    let s = server(lease_check);
    let url = s.server.vss_url();
    let secret = secret();
    let mut a = Device::new(&url, &s.token, secret);
    a.acquire(test_config()).await.unwrap();
    let seq = a.append("a", 40);
    durable(&a, seq).await;
    let takeover_at = seq;

    // A goes silent; B takes over with confirmation.
    let mut b = Device::new(&url, &s.token, secret);
    let lease = b
        .replica
        .takeover(TakeoverConfirmed::confirmed_by_user())
        .await
        .unwrap();
    assert_eq!(lease.epoch(), 2);
    b.start(lease, test_config());
    let seq_b = b.append("b", 25);
    durable(&b, seq_b).await;

    // A wakes up and writes: refused, fenced, stopped.
    let seq = a.append("a-late", 5);
    let err = tokio::time::timeout(WAIT, a.replicator().wait_durable(seq))
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, DurableError::Fenced(f) if f.device == b.id && f.epoch == 2));
    // Its unshipped events sit where the backup has B's: a forked log, to be
    // restored, not a damaged backup.
    b.replicator().release().await.unwrap();
    assert!(matches!(
        a.replica.acquire().await,
        Err(ReplicaError::LocalFork { unshipped: 5, .. })
    ));

    // The remote history has no event of A after the takeover.
    let c = restore_fresh(&s, secret).await.unwrap();
    let events = c.log.events(1, u64::MAX, usize::MAX).unwrap();
    assert_eq!(events.len() as u64, seq_b);
    for e in &events {
        if e.seq <= takeover_at {
            assert_eq!((e.device, e.epoch), (a.id, 1), "seq {}", e.seq);
        } else {
            assert_eq!((e.device, e.epoch), (b.id, 2), "seq {}", e.seq);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn takeover_fences_the_old_master_with_lease_check() {
    takeover(true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn takeover_fences_the_old_master_by_versions_alone() {
    takeover(false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn server_killed_while_shipping_loses_nothing_and_resumes() {
    let mut s = server(true);
    let url = s.server.vss_url();
    let secret = secret();
    let mut a = Device::new(&url, &s.token, secret);
    a.acquire(test_config()).await.unwrap();
    let mut confirmed = 0;
    for round in 0..5 {
        let seq = a.append(&format!("r{round}"), 60);
        // Kill the server while the upload of this round is in flight.
        tokio::time::sleep(Duration::from_millis(rand::thread_rng().gen_range(0..20))).await;
        s.server.kill();
        tokio::time::sleep(Duration::from_millis(300)).await;
        // Whatever was confirmed before the kill must survive it.
        let before = a.replicator().status().durable_seq;
        assert!(before >= confirmed);
        s.server.restart();
        durable(&a, seq).await;
        confirmed = seq;
    }
    assert!(matches!(
        a.replicator().status().state,
        ReplicatorState::Running
    ));
    // The lease survived the restarts: B still cannot acquire.
    let b = Device::new(&url, &s.token, secret);
    assert!(matches!(
        b.replica.acquire().await,
        Err(ReplicaError::LeaseHeld { device, .. }) if device == a.id
    ));
    let c = restore_fresh(&s, secret).await.unwrap();
    assert_eq!(c.log.head().unwrap().seq, confirmed);
    assert_eq!(c.log.state().unwrap(), a.log.state().unwrap());
}

/// A server, a [`LossyProxy`] in front of it, and a master that ships through the proxy, with
/// its backup secret.
async fn master_behind_a_proxy() -> (Setup, LossyProxy, [u8; 32], Device) {
    let s = server(true);
    let proxy = LossyProxy::start(s.server.addr()).await;
    let url = format!("http://{}/vss", proxy.addr());
    let secret = secret();
    let mut a = Device::new(&url, &s.token, secret);
    a.acquire(test_config()).await.unwrap();
    (s, proxy, secret, a)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_answer_is_recognised_not_called_a_fork() {
    let (s, proxy, secret, a) = master_behind_a_proxy().await;
    let seq = a.append("before", 10);
    durable(&a, seq).await;

    // The next upload lands on the server but its answer is lost.
    proxy.lose_next_answer();
    let seq = a.append("lost", 10);
    durable(&a, seq).await;
    assert_eq!(proxy.lost(), 1);
    assert_eq!(a.replicator().status().state, ReplicatorState::Running);
    let seq = a.append("after", 10);
    durable(&a, seq).await;

    let c = restore_fresh(&s, secret).await.unwrap();
    assert_eq!(c.log.state().unwrap(), a.log.state().unwrap());
    assert_eq!(c.log.head().unwrap(), a.log.head().unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn restore_is_identical_and_point_in_time_matches_replay() {
    let s = server(true);
    let url = s.server.vss_url();
    let secret = secret();
    let mut a = Device::new(&url, &s.token, secret);
    let config = till_vss::replica::ReplicatorConfig {
        snapshot_every: 150,
        ..test_config()
    };
    a.acquire(config).await.unwrap();
    for round in 0..8 {
        a.append(&format!("r{round}"), 70);
        // Deletes and re-creates too.
        a.log
            .delete(till_log::Key::new("test", "", format!("k{round}")))
            .unwrap();
    }
    let seq = a.append("last", 1);
    durable(&a, seq).await;
    let head = a.log.head().unwrap();

    // A third device restores: byte-identical state and the same head.
    let c = restore_fresh(&s, secret).await.unwrap();
    assert_eq!(c.log.head().unwrap(), head);
    assert_eq!(c.log.state().unwrap(), a.log.state().unwrap());
    c.log.verify().unwrap();
    let latest = restore_state(c.replica.remote(), Target::Latest, |_| {})
        .await
        .unwrap();
    assert_eq!(latest, a.log.state().unwrap());

    // Point-in-time restores at random seqs equal the master's local replay.
    let mut rng = rand::thread_rng();
    for _ in 0..12 {
        let at = rng.gen_range(0..=head.seq);
        let state = restore_state(c.replica.remote(), Target::Seq(at), |_| {})
            .await
            .unwrap();
        assert_eq!(state, a.log.replay(at).unwrap(), "at seq {at}");
    }
    // And at a time: the state after the last event at or before it.
    let mid = a.log.event(head.seq / 2).unwrap().unwrap().at_ms;
    let state = restore_state(c.replica.remote(), Target::Time(mid), |_| {})
        .await
        .unwrap();
    assert_eq!(state, a.log.replay_at(mid).unwrap());
    // Beyond the last seq is refused.
    assert!(matches!(
        restore_state(c.replica.remote(), Target::Seq(head.seq + 1), |_| {}).await,
        Err(RestoreError::Plan(PlanError::BeyondHead { .. }))
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn tampering_on_the_server_makes_restore_refuse() {
    let s = server(true);
    let url = s.server.vss_url();
    let secret = secret();
    let mut a = Device::new(&url, &s.token, secret);
    a.acquire(test_config()).await.unwrap();
    let seq = a.append("x", 60); // 60 events, 50 per segment
    durable(&a, seq).await;
    let old_head = {
        let remote = a.replica.remote();
        remote
            .client()
            .get_object(remote.store_id(), &remote.name(object_names::HEAD))
            .await
            .unwrap()
    };
    let seq = a.append("y", 120);
    durable(&a, seq).await;
    a.replicator().release().await.unwrap();

    let remote = a.replica.remote().clone();
    let raw = remote.client().clone();
    let store = remote.store_id().to_string();
    let seg = |o: u64| remote.name(&object_names::segment(o));
    let get = |name: String| {
        let (raw, store) = (raw.clone(), store.clone());
        async move { raw.get_object(&store, &name).await.unwrap() }
    };
    let put = |kv: KeyValue| {
        let (raw, store) = (raw.clone(), store.clone());
        async move {
            raw.put_objects(&PutObjectRequest {
                store_id: store,
                global_version: None,
                transaction_items: vec![kv],
                delete_items: vec![],
            })
            .await
            .unwrap()
        }
    };
    let original: HashMap<u64, KeyValue> = {
        let mut m = HashMap::new();
        for o in 0..4 {
            m.insert(o, get(seg(o)).await);
        }
        m
    };
    assert!(restore_fresh(&s, secret).await.is_ok());

    // A flipped byte.
    let mut flipped = original[&1].clone();
    flipped.value[100] ^= 0x20;
    put(KeyValue::new(seg(1), -1, flipped.value)).await;
    let err = err_of(restore_fresh(&s, secret).await);
    assert!(
        matches!(&err, RestoreError::Remote(RemoteError::Segment { ordinal: 1, error }) if matches!(error, SegmentError::Altered(_))),
        "{err}"
    );
    put(KeyValue::new(seg(1), -1, original[&1].value.clone())).await;
    assert!(restore_fresh(&s, secret).await.is_ok());

    // Two segments swapped.
    put(KeyValue::new(seg(1), -1, original[&2].value.clone())).await;
    put(KeyValue::new(seg(2), -1, original[&1].value.clone())).await;
    let err = err_of(restore_fresh(&s, secret).await);
    assert!(
        matches!(&err, RestoreError::Remote(RemoteError::Segment { ordinal: 1, error }) if matches!(error, SegmentError::WrongName(_))),
        "{err}"
    );
    put(KeyValue::new(seg(1), -1, original[&1].value.clone())).await;
    put(KeyValue::new(seg(2), -1, original[&2].value.clone())).await;

    // A dropped segment.
    raw.delete_object(&store, &seg(2), -1).await.unwrap();
    let err = err_of(restore_fresh(&s, secret).await);
    assert!(
        matches!(
            err,
            RestoreError::Plan(PlanError::MissingSegment { ordinal: 2 })
        ),
        "{err}"
    );
    put(KeyValue::new(seg(2), 0, original[&2].value.clone())).await;
    assert!(restore_fresh(&s, secret).await.is_ok());

    // The head rolled back to an older version.
    put(KeyValue::new(
        old_head.key.clone(),
        -1,
        old_head.value.clone(),
    ))
    .await;
    let err = err_of(restore_fresh(&s, secret).await);
    assert!(
        matches!(err, RestoreError::Plan(PlanError::HeadRolledBack { .. })),
        "{err}"
    );

    // And the wrong mnemonic (another secret on the same store) says so.
    let wrong = Device::new(&url, &s.token, [9; 32]);
    let remote = wrong.replica.remote().clone().with_store_id(store.clone());
    let err = restore(&remote, &wrong.log, |_| {}).await.unwrap_err();
    assert_eq!(err.to_string(), "this mnemonic does not open this backup");
    assert_eq!(wrong.log.head().unwrap().seq, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_follower_pulls_and_a_restart_resumes() {
    let s = server(true);
    let url = s.server.vss_url();
    let secret = secret();
    let mut a = Device::new(&url, &s.token, secret);
    a.acquire(test_config()).await.unwrap();
    let follower = Device::new(&url, &s.token, secret);
    for round in 0..4 {
        let seq = a.append(&format!("r{round}"), 40);
        durable(&a, seq).await;
        // The progress a bar draws: the plan, then each segment applied, ending at the head.
        let mut seen = Vec::new();
        let report = follower
            .replica
            .sync_with_progress(&mut |p| seen.push(p))
            .await
            .unwrap();
        assert_eq!(report.seq, seq);
        assert_eq!(follower.log.state().unwrap(), a.log.state().unwrap());
        let Some(till_vss::replica::Progress::Planned {
            segments, last_seq, ..
        }) = seen.first()
        else {
            panic!("no plan first: {seen:?}");
        };
        assert_eq!((*segments, *last_seq), (report.segments, seq), "{seen:?}");
        assert_eq!(seen.len() as u64, 1 + report.segments, "{seen:?}");
        assert!(
            matches!(seen.last(), Some(till_vss::replica::Progress::Segment { done, total, seq: at })
                if *done == *total && *at == seq),
            "{seen:?}"
        );
    }
    // A restarts (no release) and resumes its own lease, same epoch.
    let seq = a.append("unshipped", 5);
    let mut a = a.reopen();
    let lease = a.acquire(test_config()).await.unwrap();
    assert_eq!(lease.epoch(), 1);
    durable(&a, seq).await;
    follower.replica.sync().await.unwrap();
    assert_eq!(follower.log.head().unwrap().seq, seq);
    assert!(
        follower
            .log
            .events(1, seq, usize::MAX)
            .unwrap()
            .iter()
            .all(|e| matches!(e.op, Op::Put(_)))
    );
    // Replay works on the follower's replica too.
    assert_eq!(follower.log.replay(10).unwrap(), a.log.replay(10).unwrap());
}

/// A power cut keeps what the log last synced and rolls back the unsynced commits after it, the
/// shipped watermark's among them (`Log::mark_shipped_unsynced`), while the server already holds
/// later uploads. The master restarts with events the server has but its watermark does not
/// count, and the server further on. Resuming its lease must recognise those events as the
/// server's own and pull the rest, not call them a fork.
#[tokio::test(flavor = "multi_thread")]
async fn after_a_power_cut_the_master_resumes_over_events_its_watermark_lost() {
    let s = server(true);
    let url = s.server.vss_url();
    let secret = secret();
    let mut a = Device::new(&url, &s.token, secret);
    a.acquire(test_config()).await.unwrap();
    let seq = a.append("shipped", 10);
    durable(&a, seq).await;
    // Five more events reach the disk, not yet the server. The file as it is now, copied
    // without closing the log, is the disk a power cut leaves: the watermark at 10, the log at
    // 15.
    if let Some(r) = a.replicator.take() {
        r.stop();
    }
    let on_disk = a.append("synced", 5);
    assert_eq!((on_disk, a.log.shipped().unwrap()), (15, 10));
    let cut = tempfile::tempdir().unwrap();
    std::fs::copy(a.dir.path().join("till.redb"), cut.path().join("till.redb")).unwrap();
    // Before the cut, those five events and five after them reached the server.
    let mut a = a.reopen();
    a.acquire(test_config()).await.unwrap();
    let last = a.append("landed", 5);
    durable(&a, last).await;
    if let Some(r) = a.replicator.take() {
        r.stop();
    }

    // The device starts again from the disk the cut left.
    let log = std::sync::Arc::new(till_log::Log::open(cut.path().join("till.redb")).unwrap());
    assert_eq!((log.head().unwrap().seq, log.shipped().unwrap()), (15, 10));
    let mut restarted = Device {
        dir: cut,
        id: a.id,
        log: log.clone(),
        replica: till_vss::replica::Replica::new(log, a.replica.remote().clone(), a.id),
        replicator: None,
    };
    let lease = restarted.acquire(test_config()).await.unwrap();
    assert_eq!(lease.epoch(), 1);
    assert_eq!(restarted.log.head().unwrap().seq, last);
    assert_eq!(restarted.log.shipped().unwrap(), last);
    assert_eq!(restarted.log.state().unwrap(), a.log.state().unwrap());
    restarted.log.verify().unwrap();
    // It ships on from there.
    let seq = restarted.append("after", 3);
    durable(&restarted, seq).await;
    let c = restore_fresh(&s, secret).await.unwrap();
    assert_eq!(c.log.state().unwrap(), restarted.log.state().unwrap());
}

/// Power cuts at random moments under a master that ships while it appends ([`Disk`]): half
/// its writes wait until durable, as channel state does (appended unsynced, the replicator syncs
/// the log while the upload travels), half are synced appends no one waits for. The device then
/// starts again from what each cut left. Its log opens and verifies and holds every write
/// acknowledged before the cut; it resumes its lease whatever the cut left behind (the server
/// ahead of its disk, its watermark behind its events), never refused as a fork; its state is
/// then the backup's, and it ships on.
#[tokio::test(flavor = "multi_thread")]
async fn a_master_resumes_after_a_power_cut_at_any_moment_without_loss() {
    let rounds: u64 = till_tests::env_or("TILL_POWER_CUTS_SHIPPING", 24);
    let s = server(true);
    let url = s.server.vss_url();
    let first_seed: u64 = rand::random();
    let (mut server_ahead, mut recognised, mut acked) = (0, 0, 0);
    for round in 0..rounds {
        let seed = first_seed.wrapping_add(round);
        let mut rng = StdRng::seed_from_u64(seed);
        let remote = Remote::new(client(&url, &s.token), BackupKeys::from_secret(&secret()));
        let id = DeviceId::random();
        let disk = Disk::new(seed);
        let log = Arc::new(Log::open_on(disk.clone(), LogOptions::default()).unwrap());
        let lease = Replica::new(log.clone(), remote.clone(), id)
            .acquire()
            .await
            .unwrap();
        let handle = Replicator::start(log.clone(), remote.clone(), lease, test_config());
        disk.cut_after(rng.gen_range(10..400));
        let writer = {
            let (log, handle) = (log.clone(), handle.clone());
            tokio::task::spawn_blocking(move || {
                let mut acknowledged = 0;
                for i in 0u64.. {
                    let write = Write::put(
                        Key::new("cut", "", format!("k{}", i % 13)),
                        vec![i as u8; rng.gen_range(1..4000)],
                    );
                    let done = if rng.gen_bool(0.5) {
                        log.append_unsynced(vec![write])
                            .map_err(drop)
                            .and_then(|o| {
                                handle
                                    .wait_durable_blocking(o.head_seq, Some(WAIT))
                                    .map(|()| o.head_seq)
                                    .map_err(drop)
                            })
                    } else {
                        let appended = log.append(vec![write]).map(|o| o.head_seq).map_err(drop);
                        handle.notify();
                        appended
                    };
                    match done {
                        Ok(seq) => acknowledged = seq,
                        // The cut: the disk fails every call from now on.
                        Err(()) => return acknowledged,
                    }
                }
                unreachable!()
            })
        };
        let acknowledged = writer.await.unwrap();
        handle.stop();
        drop(log);

        let image = disk.image().expect("the power was cut");
        let log = Arc::new(
            Log::open_on(Disk::with_image(image, seed), LogOptions::default())
                .unwrap_or_else(|e| panic!("seed {seed}: the log a cut left does not open: {e}")),
        );
        let head = log
            .verify()
            .unwrap_or_else(|e| panic!("seed {seed}: the log a cut left does not verify: {e}"))
            .head
            .seq;
        assert!(
            head >= acknowledged,
            "seed {seed}: seq {acknowledged} was acknowledged, the log a cut left ends at {head}"
        );
        let (backup, _) = remote.head().await.unwrap().unwrap();
        server_ahead += u64::from(backup.last_seq > head);
        // What resuming refused as a fork before session 16.
        recognised += u64::from(log.shipped().unwrap() < head && head < backup.last_seq);
        acked += acknowledged;

        let replica = Replica::new(log.clone(), remote.clone(), id);
        let lease = replica.acquire().await.unwrap_or_else(|e| {
            panic!(
                "seed {seed}: the device cannot resume after the cut (its log at {head}, \
                 watermark {}, the backup at {}): {e}",
                log.shipped().unwrap(),
                backup.last_seq
            )
        });
        assert_eq!(lease.epoch(), 1, "seed {seed}");
        assert_eq!(
            log.head().unwrap().seq,
            head.max(backup.last_seq),
            "seed {seed}"
        );
        let restored = Log::open_on(Disk::new(seed), LogOptions::default()).unwrap();
        restore(&remote, &restored, |_| {}).await.unwrap();
        assert_eq!(
            restored.state().unwrap(),
            log.replay(backup.last_seq).unwrap(),
            "seed {seed}"
        );
        let handle = Replicator::start(log.clone(), remote.clone(), lease, test_config());
        let seq = log
            .append(vec![Write::put(
                Key::new("cut", "", "after"),
                b"on".to_vec(),
            )])
            .unwrap()
            .head_seq;
        tokio::time::timeout(WAIT, handle.wait_durable(seq))
            .await
            .unwrap_or_else(|_| panic!("seed {seed}: no shipping after the cut"))
            .unwrap();
        handle.stop();
    }
    eprintln!(
        "{rounds} power cuts under a shipping master (seeds from {first_seed}): the server was \
         ahead of the disk after {server_ahead}, of which {recognised} left events past the \
         watermark that resuming recognised as the server's; {acked} acknowledged writes checked"
    );
    assert!(acked > 0, "no write was ever acknowledged before a cut");
}

/// A device that cannot go on (its log cannot be written) ends its replicator as failed: with
/// the first reason given, whatever comes after; with a general one when every failure only
/// repeated an earlier one. A wait for an event not yet durable then fails with that reason.
#[tokio::test(flavor = "multi_thread")]
async fn a_log_that_cannot_be_written_ends_the_replicator_with_its_first_reason() {
    let s = server(true);
    let url = s.server.vss_url();
    for reasons in [vec![None, Some("first"), Some("second")], vec![None, None]] {
        let mut a = Device::new(&url, &s.token, secret());
        a.acquire(test_config()).await.unwrap();
        let seq = a.append("shipped", 3);
        durable(&a, seq).await;
        for reason in &reasons {
            a.replicator().fail(reason.map(str::to_owned));
        }
        let expected = reasons.iter().flatten().next().map_or(
            "this device's log could not be written (an earlier write to it failed)",
            |first| first,
        );
        let seq = a.append("after", 1);
        let err = tokio::time::timeout(WAIT, a.replicator().wait_durable(seq))
            .await
            .expect("the wait ends")
            .unwrap_err();
        assert!(err.to_string().contains(expected), "{err}");
        until("the replicator to end as failed", async || {
            a.replicator().status().state == ReplicatorState::Failed(expected.to_owned())
        })
        .await;
        // It stays failed once its worker has stopped.
        a.replicator().stop();
        assert_eq!(
            a.replicator().status().state,
            ReplicatorState::Failed(expected.to_owned())
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_deletes_old_history_only_when_asked() {
    let s = server(true);
    let url = s.server.vss_url();
    let secret = secret();
    let mut a = Device::new(&url, &s.token, secret);
    let config = till_vss::replica::ReplicatorConfig {
        snapshot_every: 100,
        retention: till_vss::replica::Retention::KeepSnapshots(1),
        ..test_config()
    };
    a.acquire(config).await.unwrap();
    let mut last = 0;
    for round in 0..6 {
        last = a.append(&format!("r{round}"), 60);
        durable(&a, last).await;
    }
    let remote = a.replica.remote().clone();
    let (manifest, _) = remote.head().await.unwrap().unwrap();
    assert!(
        manifest.snapshots.len() == 1 && manifest.first_segment > 0,
        "retention kept {} snapshots from segment {}",
        manifest.snapshots.len(),
        manifest.first_segment
    );
    // The deleted segments are gone from the server.
    let listing = remote.listing().await.unwrap();
    assert!(!listing.contains_key(&remote.name(&object_names::segment(0))));
    // The latest state still restores exactly, from the snapshot and the tail.
    let c = restore_fresh(&s, secret).await.unwrap();
    assert_eq!(c.log.state().unwrap(), a.log.state().unwrap());
    assert_eq!(c.log.head().unwrap().seq, last);
    // A point before the kept snapshot is refused with the reason.
    let err = restore_state(&remote, Target::Seq(5), |_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(err, RestoreError::Plan(PlanError::BeforeRetention { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("retention"), "{err}");

    // Without a policy, every segment is kept.
    let mut b = Device::new(&url, &s.token, rand::random());
    b.acquire(till_vss::replica::ReplicatorConfig {
        snapshot_every: 100,
        ..test_config()
    })
    .await
    .unwrap();
    for round in 0..4 {
        let seq = b.append(&format!("r{round}"), 60);
        durable(&b, seq).await;
    }
    let (manifest, _) = b.replica.remote().head().await.unwrap().unwrap();
    assert_eq!(manifest.first_segment, 0);
    assert!(!manifest.snapshots.is_empty());
    let state = restore_state(b.replica.remote(), Target::Seq(5), |_| {})
        .await
        .unwrap();
    assert_eq!(state, b.log.replay(5).unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn restore_while_the_master_keeps_writing() {
    let s = server(true);
    let url = s.server.vss_url();
    let secret = secret();
    let mut a = Device::new(&url, &s.token, secret);
    a.acquire(test_config()).await.unwrap();
    let seq = a.append("warm", 30);
    durable(&a, seq).await;
    // A writer keeps the master shipping while other devices restore.
    let log = a.log.clone();
    let handle = a.replicator().clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let writer = std::thread::spawn(move || {
        let mut i = 0u64;
        while !stop2.load(std::sync::atomic::Ordering::SeqCst) {
            log.put(
                till_log::Key::new("busy", "", format!("k{}", i % 13)),
                vec![1; 64],
            )
            .unwrap();
            handle.notify();
            i += 1;
            std::thread::sleep(Duration::from_millis(2));
        }
    });
    for _ in 0..5 {
        let c = restore_fresh(&s, secret)
            .await
            .unwrap_or_else(|e| panic!("restore during writes: {e}"));
        // What was restored is a prefix of the master's log.
        let head = c.log.head().unwrap();
        assert_eq!(a.log.event(head.seq).unwrap().unwrap().hash(), head.hash);
        c.log.verify().unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    writer.join().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn events_no_one_waits_for_linger_and_share_one_upload_until_a_waiter_comes() {
    let s = server(true);
    let mut a = Device::new(&s.server.vss_url(), &s.token, secret());
    a.acquire(till_vss::replica::ReplicatorConfig {
        linger: Duration::from_secs(60),
        ..test_config()
    })
    .await
    .unwrap();
    let before = a.replicator().status();
    // Five commits, each waking the replicator, and no one waiting: nothing is shipped yet.
    let mut last = 0;
    for round in 0..5 {
        last = a.append(&format!("r{round}"), 1);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let held = a.replicator().status();
    assert_eq!(held.uploads, before.uploads, "{held:?}");
    assert!(held.durable_seq < last, "{held:?}");
    // A caller waiting for the last one ends the linger at once (well before its 60 s): all
    // five go up in one upload.
    let waited = std::time::Instant::now();
    durable(&a, last).await;
    assert!(
        waited.elapsed() < Duration::from_secs(30),
        "{:?}",
        waited.elapsed()
    );
    let shipped = a.replicator().status();
    assert_eq!(shipped.uploads, before.uploads + 1, "{shipped:?}");
    assert_eq!(
        shipped.events_shipped,
        before.events_shipped + 5,
        "{shipped:?}"
    );

    // Events after that, still with no one waiting, ship on their own once the linger ends.
    a.replicator().stop();
    a.acquire(till_vss::replica::ReplicatorConfig {
        linger: Duration::from_millis(200),
        ..test_config()
    })
    .await
    .unwrap();
    let last = a.append("later", 3);
    wait_until_durable_without_waiting(&a, last).await;
}

/// Polls the status (never `wait_durable`, which would end the linger) until `seq` is durable.
async fn wait_until_durable_without_waiting(d: &Device, seq: u64) {
    let deadline = std::time::Instant::now() + WAIT;
    while d.replicator().durable_seq() < seq {
        assert!(
            std::time::Instant::now() < deadline,
            "seq {seq} was never shipped by lingering"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How long the proxy holds a request or an answer back in the pipelining tests: long enough
/// that what the tests watch for happens well within it on a slow machine.
const HELD: Duration = Duration::from_secs(3);

/// Polls `done` every 10 ms until it holds, panicking after [`WAIT`].
async fn until(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = std::time::Instant::now() + WAIT;
    while !done().await {
        assert!(std::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A device shipping through a [`LossyProxy`] for the pipelining tests, with a watcher that
/// reads the server directly, and the replicator's status once a first upload landed.
struct Pipeline {
    s: Setup,
    proxy: LossyProxy,
    secret: [u8; 32],
    a: Device,
    watcher: Device,
    before: till_vss::replica::ReplicatorStatus,
}

type Waiting = tokio::task::JoinHandle<Result<(), DurableError>>;

impl Pipeline {
    async fn start() -> Pipeline {
        let (s, proxy, secret, a) = master_behind_a_proxy().await;
        let seq = a.append("before", 3);
        durable(&a, seq).await;
        let watcher = Device::new(&s.server.vss_url(), &s.token, secret);
        let before = a.replicator().status();
        Pipeline {
            s,
            proxy,
            secret,
            a,
            watcher,
            before,
        }
    }

    /// Appends three events and waits for them in a task; returns the last seq and the wait.
    fn append_waited(&self, tag: &str) -> (u64, Waiting) {
        let seq = self.a.append(tag, 3);
        let r = self.a.replicator().clone();
        (seq, tokio::spawn(async move { r.wait_durable(seq).await }))
    }

    /// The seq of the server's head, read directly (not through the proxy).
    async fn server_head_seq(&self) -> u64 {
        let (manifest, _) = self.watcher.replica.remote().head().await.unwrap().unwrap();
        manifest.last_seq
    }

    /// Both waits end well, with `second` durable after two uploads, `landed` and `refused`
    /// more followers counted, and the replicator running; then the chain on the server goes on
    /// and restores whole.
    async fn both_durable(&self, waits: [Waiting; 2], second: u64, landed: u64, refused: u64) {
        for wait in waits {
            wait.await.unwrap().unwrap();
        }
        let (after, before) = (self.a.replicator().status(), &self.before);
        assert_eq!(after.state, ReplicatorState::Running, "{after:?}");
        assert_eq!(after.durable_seq, second, "{after:?}");
        assert_eq!(after.uploads, before.uploads + 2, "{after:?}");
        assert_eq!(
            after.followers_landed,
            before.followers_landed + landed,
            "{after:?}"
        );
        assert_eq!(
            after.followers_refused,
            before.followers_refused + refused,
            "{after:?}"
        );
        assert_eq!(self.server_head_seq().await, second);

        let seq = self.a.append("after", 2);
        durable(&self.a, seq).await;
        let c = restore_fresh(&self.s, self.secret).await.unwrap();
        assert_eq!(c.log.state().unwrap(), self.a.log.state().unwrap());
        assert_eq!(c.log.head().unwrap(), self.a.log.head().unwrap());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_write_waited_for_while_an_upload_travels_follows_it_at_once() {
    let p = Pipeline::start().await;

    // The first upload lands, but its answer is held back.
    p.proxy.delay_next_answer(HELD);
    let (first, first_waits) = p.append_waited("first");
    until("the server answered the first upload", async || {
        p.proxy.delayed() == 1
    })
    .await;

    // A write waited for meanwhile goes up at once, chained after it: the server holds it
    // while the first answer is still on its way.
    let (second, second_waits) = p.append_waited("second");
    until("the second upload is on the server", async || {
        p.server_head_seq().await == second
    })
    .await;
    assert!(
        p.a.replicator().durable_seq() < first,
        "the first answer is still held back: {:?}",
        p.a.replicator().status()
    );

    // Both are confirmed, in order, once the answer comes.
    p.both_durable([first_waits, second_waits], second, 1, 0)
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_follower_that_reaches_the_server_first_is_refused_and_ships_again() {
    let p = Pipeline::start().await;

    // The first upload is held back on its way to the server; the second, sent behind it,
    // overtakes it, and the server refuses it: the head's version is not the one it follows.
    p.proxy.delay_next_request(HELD);
    let (first, first_waits) = p.append_waited("first");
    until("the first upload is held back", async || {
        p.proxy.delayed() == 1
    })
    .await;
    let (second, second_waits) = p.append_waited("second");
    tokio::time::sleep(HELD / 3).await;
    assert!(
        p.server_head_seq().await < first,
        "nothing of them is on the server while the first is held back"
    );

    // No fork, no fencing: the first lands, the second ships again behind it.
    p.both_durable([first_waits, second_waits], second, 0, 1)
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_follower_whose_answer_is_lost_is_recognised_as_landed() {
    let p = Pipeline::start().await;

    // The first upload's answer is held back; the second lands behind it, and its answer is
    // lost. The client's retry meets a conflict: its own upload, not a refusal or a fork.
    p.proxy.delay_next_answer(HELD);
    let (_, first_waits) = p.append_waited("first");
    until("the server answered the first upload", async || {
        p.proxy.delayed() == 1
    })
    .await;
    p.proxy.lose_next_answer();
    let (second, second_waits) = p.append_waited("second");
    until("the second upload is on the server", async || {
        p.server_head_seq().await == second
    })
    .await;

    p.both_durable([first_waits, second_waits], second, 1, 0)
        .await;
    assert_eq!(p.proxy.lost(), 1);
}
