//! `LogStore` conformance: LDK's `KVStoreSync` and `KVStore` contracts against a real redb log
//! file, and the durability barrier's place in them (what waits, for which seq, and what does
//! not).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Duration;

use till_engine::lightning::io::ErrorKind;
use till_engine::lightning::util::persist::{
    CHANNEL_MANAGER_PERSISTENCE_KEY, CHANNEL_MONITOR_PERSISTENCE_PRIMARY_NAMESPACE,
    CHANNEL_MONITOR_UPDATE_PERSISTENCE_PRIMARY_NAMESPACE, KVSTORE_NAMESPACE_KEY_MAX_LEN, KVStore,
    KVStoreSync,
};
use till_engine::{
    BackupState, BarrierError, BarrierFuture, BarrierPassed, DurabilityBarrier, LocalOnly,
    LogStore, WaitPolicy,
};
use till_log::{Key, Log};

fn open(dir: &tempfile::TempDir) -> Arc<Log> {
    Arc::new(Log::open(dir.path().join("till.redb")).unwrap())
}

fn local_store(dir: &tempfile::TempDir) -> LogStore {
    LogStore::new(open(dir), Arc::new(LocalOnly))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn sorted(mut keys: Vec<String>) -> Vec<String> {
    keys.sort();
    keys
}

#[test]
fn read_write_remove_list_like_ldks_own_store_tests() {
    let dir = tempfile::tempdir().unwrap();
    let store = local_store(&dir);
    let data = vec![42u8; 32];
    let (primary, secondary, key) = ("testspace", "testsubspace", "testkey");

    // NotFound before anything is written, and only NotFound.
    let err = KVStoreSync::read(&store, primary, secondary, key).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(
        KVStoreSync::list(&store, primary, secondary)
            .unwrap()
            .is_empty()
    );

    KVStoreSync::write(&store, primary, secondary, key, data.clone()).unwrap();
    // An empty primary and secondary namespace is allowed; a secondary without a primary, or an
    // empty key, is not.
    KVStoreSync::write(&store, "", "", key, data.clone()).unwrap();
    assert!(KVStoreSync::write(&store, "", secondary, key, data.clone()).is_err());
    assert!(KVStoreSync::write(&store, primary, secondary, "", data.clone()).is_err());
    assert!(KVStoreSync::list(&store, "", secondary).is_err());

    assert_eq!(
        KVStoreSync::list(&store, primary, secondary).unwrap(),
        vec![key]
    );
    assert_eq!(
        KVStoreSync::read(&store, primary, secondary, key).unwrap(),
        data
    );
    assert_eq!(KVStoreSync::read(&store, "", "", key).unwrap(), data);

    KVStoreSync::remove(&store, primary, secondary, key, false).unwrap();
    assert!(
        KVStoreSync::list(&store, primary, secondary)
            .unwrap()
            .is_empty()
    );
    let err = KVStoreSync::read(&store, primary, secondary, key).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    // Removing what is absent succeeds.
    KVStoreSync::remove(&store, primary, secondary, key, false).unwrap();
    KVStoreSync::remove(&store, "never", "written", key, true).unwrap();

    // Names of LDK's maximum length work.
    let max = "A".repeat(KVSTORE_NAMESPACE_KEY_MAX_LEN);
    KVStoreSync::write(&store, &max, &max, &max, data.clone()).unwrap();
    assert_eq!(
        KVStoreSync::list(&store, &max, &max).unwrap(),
        vec![max.clone()]
    );
    assert_eq!(KVStoreSync::read(&store, &max, &max, &max).unwrap(), data);
    KVStoreSync::remove(&store, &max, &max, &max, false).unwrap();
    assert!(KVStoreSync::list(&store, &max, &max).unwrap().is_empty());
}

#[test]
fn list_is_per_namespace_and_overwrites_add_versions() {
    let dir = tempfile::tempdir().unwrap();
    let store = local_store(&dir);
    for (p, s, k) in [
        ("a", "", "k1"),
        ("a", "", "k2"),
        ("a", "x", "k3"),
        ("ab", "", "k4"),
        ("", "", "k5"),
        ("b", "a", "k6"),
    ] {
        KVStoreSync::write(&store, p, s, k, k.as_bytes().to_vec()).unwrap();
    }
    assert_eq!(
        sorted(KVStoreSync::list(&store, "a", "").unwrap()),
        ["k1", "k2"]
    );
    assert_eq!(KVStoreSync::list(&store, "a", "x").unwrap(), ["k3"]);
    assert_eq!(KVStoreSync::list(&store, "ab", "").unwrap(), ["k4"]);
    assert_eq!(KVStoreSync::list(&store, "", "").unwrap(), ["k5"]);
    assert_eq!(KVStoreSync::list(&store, "b", "a").unwrap(), ["k6"]);
    assert!(KVStoreSync::list(&store, "b", "").unwrap().is_empty());
    assert!(KVStoreSync::list(&store, "unknown", "").unwrap().is_empty());

    // Every overwrite is an event with the next version; reads see the latest.
    for i in 0..5u8 {
        KVStoreSync::write(&store, "a", "", "k1", vec![i]).unwrap();
        assert_eq!(KVStoreSync::read(&store, "a", "", "k1").unwrap(), vec![i]);
    }
    let key = Key::new("a", "", "k1");
    assert_eq!(store.log().get(&key).unwrap().unwrap().version, 5);
    KVStoreSync::remove(&store, "a", "", "k1", false).unwrap();
    KVStoreSync::write(&store, "a", "", "k1", b"again".to_vec()).unwrap();
    // A delete and a re-create keep counting (log invariant L2).
    assert_eq!(store.log().get(&key).unwrap().unwrap().version, 7);
    assert_eq!(store.log().history(&key).unwrap().len(), 8);
}

#[test]
fn a_write_after_a_lazy_remove_wins() {
    let dir = tempfile::tempdir().unwrap();
    let store = local_store(&dir);
    KVStoreSync::write(&store, "monitor_updates", "chan", "1", vec![1]).unwrap();
    KVStoreSync::remove(&store, "monitor_updates", "chan", "1", true).unwrap();
    KVStoreSync::write(&store, "monitor_updates", "chan", "1", vec![2]).unwrap();
    assert_eq!(
        KVStoreSync::read(&store, "monitor_updates", "chan", "1").unwrap(),
        vec![2]
    );
    assert_eq!(
        KVStoreSync::list(&store, "monitor_updates", "chan").unwrap(),
        ["1"]
    );
}

#[test]
fn writes_survive_reopening_the_log_file() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = local_store(&dir);
        KVStoreSync::write(&store, "monitors", "", "chan_0", vec![7; 100]).unwrap();
        KVStoreSync::write(&store, "", "", "manager", vec![8; 10]).unwrap();
        KVStoreSync::write(&store, "payments", "", "gone", vec![9]).unwrap();
        KVStoreSync::remove(&store, "payments", "", "gone", false).unwrap();
    }
    let store = local_store(&dir);
    assert_eq!(
        KVStoreSync::read(&store, "monitors", "", "chan_0").unwrap(),
        vec![7; 100]
    );
    assert_eq!(
        KVStoreSync::read(&store, "", "", "manager").unwrap(),
        vec![8; 10]
    );
    assert_eq!(
        KVStoreSync::read(&store, "payments", "", "gone")
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
    store.log().verify().unwrap();
}

#[test]
fn the_async_trait_keeps_call_order_per_key() {
    let dir = tempfile::tempdir().unwrap();
    let store = local_store(&dir);
    let rt = runtime();
    // Two writes to one key, their futures awaited in reverse: the later call wins.
    let first = KVStore::write(&store, "ns", "", "k", b"first".to_vec());
    let second = KVStore::write(&store, "ns", "", "k", b"second".to_vec());
    rt.block_on(second).unwrap();
    assert_eq!(
        rt.block_on(KVStore::read(&store, "ns", "", "k")).unwrap(),
        b"second"
    );
    rt.block_on(first).unwrap();
    assert_eq!(
        rt.block_on(KVStore::read(&store, "ns", "", "k")).unwrap(),
        b"second"
    );

    // A remove, then a write, in call order: the key is live.
    let removed = KVStore::remove(&store, "ns", "", "k", false);
    let written = KVStore::write(&store, "ns", "", "k", b"third".to_vec());
    rt.block_on(written).unwrap();
    rt.block_on(removed).unwrap();
    assert_eq!(
        rt.block_on(KVStore::read(&store, "ns", "", "k")).unwrap(),
        b"third"
    );
    assert_eq!(rt.block_on(KVStore::list(&store, "ns", "")).unwrap(), ["k"]);
    let err = rt
        .block_on(KVStore::read(&store, "ns", "", "absent"))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(
        rt.block_on(KVStore::write(&store, "", "sub", "k", vec![]))
            .is_err()
    );
}

/// A barrier the test opens by hand: a seq is durable once the test released it. Records every
/// seq waited for.
#[derive(Default)]
struct Gate {
    state: Mutex<GateState>,
    changed: Condvar,
}

#[derive(Default)]
struct GateState {
    durable: u64,
    notified: u64,
    waited: Vec<u64>,
    fenced: bool,
}

impl Gate {
    fn release(&self, seq: u64) {
        self.state.lock().unwrap().durable = seq;
        self.changed.notify_all();
    }

    fn fence(&self) {
        self.state.lock().unwrap().fenced = true;
        self.changed.notify_all();
    }

    fn waited(&self) -> Vec<u64> {
        self.state.lock().unwrap().waited.clone()
    }

    fn check(state: &GateState, seq: u64) -> Option<Result<(), BarrierError>> {
        if state.fenced {
            return Some(Err(BarrierError::Fenced {
                device: till_log::DeviceId([9; 16]),
                epoch: 2,
            }));
        }
        (state.durable >= seq).then_some(Ok(()))
    }
}

/// The barrier side of a [`Gate`] (a local type, for the orphan rule).
struct GateBarrier(Arc<Gate>);

impl DurabilityBarrier for GateBarrier {
    fn notify(&self, seq: u64) {
        self.0.state.lock().unwrap().notified = seq;
    }

    fn wait_durable_blocking(&self, seq: u64) -> Result<(), BarrierError> {
        let mut state = self.0.state.lock().unwrap();
        state.waited.push(seq);
        loop {
            if let Some(done) = Gate::check(&state, seq) {
                return done;
            }
            state = self.0.changed.wait(state).unwrap();
        }
    }

    fn wait_durable(&self, seq: u64) -> BarrierFuture {
        let gate = Arc::clone(&self.0);
        gate.state.lock().unwrap().waited.push(seq);
        Box::pin(async move {
            loop {
                if let Some(done) = Gate::check(&gate.state.lock().unwrap(), seq) {
                    return done;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    }

    fn state(&self) -> BackupState {
        if self.0.state.lock().unwrap().fenced {
            BackupState::Fenced {
                device: till_log::DeviceId([9; 16]),
                epoch: 2,
            }
        } else {
            BackupState::Ok
        }
    }
}

fn gated_store(
    dir: &tempfile::TempDir,
) -> (Arc<LogStore>, Arc<Gate>, Arc<Mutex<Vec<BarrierPassed>>>) {
    let gate = Arc::new(Gate::default());
    let passed = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&passed);
    let store = LogStore::new(open(dir), Arc::new(GateBarrier(Arc::clone(&gate))))
        .with_observer(move |p| seen.lock().unwrap().push(p.clone()));
    (Arc::new(store), gate, passed)
}

#[test]
fn channel_state_waits_for_the_barrier_and_other_keys_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let (store, gate, passed) = gated_store(&dir);

    // Not channel state: returns after the local commit, the barrier only hears of it.
    KVStoreSync::write(&*store, "payments", "", "p1", vec![1]).unwrap();
    KVStoreSync::write(&*store, "", "", "network_graph", vec![2]).unwrap();
    assert!(gate.waited().is_empty());
    assert_eq!(gate.state.lock().unwrap().notified, 2);

    // A monitor write blocks until its seq is released.
    let returned = Arc::new(AtomicBool::new(false));
    let writer = {
        let (store, returned) = (Arc::clone(&store), Arc::clone(&returned));
        thread::spawn(move || {
            KVStoreSync::write(
                &*store,
                CHANNEL_MONITOR_PERSISTENCE_PRIMARY_NAMESPACE,
                "",
                "chan_0",
                vec![3],
            )
            .unwrap();
            returned.store(true, Ordering::SeqCst);
        })
    };
    while gate.waited().is_empty() {
        thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(gate.waited(), [3]);
    // Committed locally (read-your-writes) but not acknowledged.
    assert_eq!(
        KVStoreSync::read(
            &*store,
            CHANNEL_MONITOR_PERSISTENCE_PRIMARY_NAMESPACE,
            "",
            "chan_0"
        )
        .unwrap(),
        vec![3]
    );
    thread::sleep(Duration::from_millis(100));
    assert!(!returned.load(Ordering::SeqCst), "returned before durable");
    gate.release(2);
    thread::sleep(Duration::from_millis(100));
    assert!(!returned.load(Ordering::SeqCst), "returned on an older seq");
    gate.release(3);
    writer.join().unwrap();
    assert!(returned.load(Ordering::SeqCst));

    // With everything released, the other channel-state keys wait too, each for its own seq.
    gate.release(u64::MAX);
    KVStoreSync::write(
        &*store,
        CHANNEL_MONITOR_UPDATE_PERSISTENCE_PRIMARY_NAMESPACE,
        "chan_0",
        "1",
        vec![4],
    )
    .unwrap();
    KVStoreSync::write(&*store, "", "", CHANNEL_MANAGER_PERSISTENCE_KEY, vec![5]).unwrap();
    // A lazy remove of an update does not wait; a non-lazy remove of a monitor does.
    KVStoreSync::remove(
        &*store,
        CHANNEL_MONITOR_UPDATE_PERSISTENCE_PRIMARY_NAMESPACE,
        "chan_0",
        "1",
        true,
    )
    .unwrap();
    KVStoreSync::remove(
        &*store,
        CHANNEL_MONITOR_PERSISTENCE_PRIMARY_NAMESPACE,
        "",
        "chan_0",
        false,
    )
    .unwrap();
    assert_eq!(gate.waited(), [3, 4, 5, 7]);

    // The observer saw each channel-state write with the seq of its own event.
    let passed = passed.lock().unwrap().clone();
    assert_eq!(passed.len(), 4);
    for p in &passed {
        let event = store.log().event(p.seq).unwrap().unwrap();
        assert_eq!(event.key, p.key, "seq {} is the write's own event", p.seq);
    }
    assert_eq!(
        passed.iter().map(|p| p.removed).collect::<Vec<_>>(),
        [false, false, false, true]
    );
}

#[test]
fn async_channel_state_writes_resolve_only_when_durable() {
    let dir = tempfile::tempdir().unwrap();
    let (store, gate, passed) = gated_store(&dir);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let write = KVStore::write(&*store, "", "", CHANNEL_MANAGER_PERSISTENCE_KEY, vec![1]);
    let task = rt.spawn(write);
    rt.block_on(async { tokio::time::sleep(Duration::from_millis(100)).await });
    assert!(!task.is_finished(), "resolved before durable");
    assert!(passed.lock().unwrap().is_empty());
    gate.release(1);
    rt.block_on(task).unwrap().unwrap();
    assert_eq!(passed.lock().unwrap()[0].seq, 1);
    // Other keys resolve at once.
    rt.block_on(KVStore::write(&*store, "payments", "", "p", vec![2]))
        .unwrap();
    assert_eq!(gate.waited(), [1]);
}

#[test]
fn a_fenced_barrier_fails_channel_state_writes() {
    let dir = tempfile::tempdir().unwrap();
    let (store, gate, _) = gated_store(&dir);
    gate.fence();
    let err = KVStoreSync::write(&*store, "monitors", "", "chan_0", vec![1]).unwrap_err();
    assert!(err.to_string().contains("fenced"), "{err}");
    assert!(matches!(
        store.backup_state(),
        BackupState::Fenced { epoch: 2, .. }
    ));
    // Other keys still commit locally: the node is being stopped, not the log.
    KVStoreSync::write(&*store, "payments", "", "p", vec![1]).unwrap();
}

#[test]
fn the_policy_decides_what_waits() {
    let dir = tempfile::tempdir().unwrap();
    let gate = Arc::new(Gate::default());
    gate.release(u64::MAX);
    let everything = LogStore::new(open(&dir), Arc::new(GateBarrier(Arc::clone(&gate))))
        .with_policy(WaitPolicy::Everything);
    KVStoreSync::write(&everything, "payments", "", "p", vec![1]).unwrap();
    assert_eq!(gate.waited(), [1]);
    drop(everything);

    let nothing = LogStore::new(open(&dir), Arc::new(GateBarrier(Arc::clone(&gate))))
        .with_policy(WaitPolicy::Nothing);
    KVStoreSync::write(&nothing, "monitors", "", "chan_0", vec![1]).unwrap();
    assert_eq!(gate.waited(), [1]);
}
