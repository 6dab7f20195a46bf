//! Property test of the lease protocol (issue 4, scenario 8): three devices
//! with the same backup keys do acquire, append, ship, release, takeover,
//! crash and restart in random interleavings against a real till-server.
//! After every case: no epoch in the remote history has events of two
//! devices, and every event that `wait_durable` confirmed is in a final
//! restore with the same seq and content.

use std::collections::BTreeMap;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use till_log::{DeviceId, Op};
use till_tests::replication::{Device, test_config};
use till_tests::server::{StoreArg, TillServer, add_user, server_binary};
use till_vss::replica::{ReplicaError, TakeoverConfirmed, restore};

const DEVICES: usize = 3;

#[derive(Clone, Debug)]
enum Step {
    Acquire(usize),
    Append(usize, u8),
    Ship(usize),
    Release(usize),
    Takeover(usize),
    Crash(usize),
}

fn step() -> impl Strategy<Value = Step> {
    let d = 0..DEVICES;
    prop_oneof![
        4 => d.clone().prop_map(Step::Acquire),
        5 => (d.clone(), 1u8..20).prop_map(|(d, n)| Step::Append(d, n)),
        4 => d.clone().prop_map(Step::Ship),
        2 => d.clone().prop_map(Step::Release),
        2 => d.clone().prop_map(Step::Takeover),
        1 => d.prop_map(Step::Crash),
    ]
}

struct World {
    url: String,
    token: String,
    secret: [u8; 32],
    devices: Vec<Option<Device>>,
    /// seq -> (device, value) of every event a device saw confirmed durable.
    confirmed: BTreeMap<u64, (DeviceId, Vec<u8>)>,
    counter: u64,
}

impl World {
    fn device(&mut self, i: usize) -> &mut Device {
        if self.devices[i].is_none() {
            self.devices[i] = Some(Device::new(&self.url, &self.token, self.secret));
        }
        self.devices[i].as_mut().unwrap()
    }

    /// A device whose log forked (it has events the server never got, and
    /// the backup moved on) is restored as a new install.
    fn reset(&mut self, i: usize) {
        if let Some(d) = self.devices[i].take()
            && let Some(r) = &d.replicator
        {
            r.stop();
        }
    }

    async fn run(&mut self, step: Step) {
        match step {
            Step::Acquire(i) | Step::Takeover(i) => {
                let takeover = matches!(step, Step::Takeover(_));
                let d = self.device(i);
                if d.replicator.as_ref().is_some_and(running) {
                    return;
                }
                let result = if takeover {
                    d.replica
                        .takeover(TakeoverConfirmed::confirmed_by_user())
                        .await
                } else {
                    d.replica.acquire().await
                };
                match result {
                    Ok(lease) => d.start(lease, test_config()),
                    Err(ReplicaError::LeaseHeld { .. } | ReplicaError::Contended(_)) => {}
                    Err(ReplicaError::LocalFork { .. }) => self.reset(i),
                    Err(e) => panic!("device {i}: {e}"),
                }
            }
            Step::Append(i, n) => {
                let tag = self.counter;
                self.counter += 1;
                let d = self.device(i);
                if d.replicator.as_ref().is_some_and(running) {
                    d.append(&format!("d{i}-{tag}"), n as usize);
                }
            }
            Step::Ship(i) => {
                let d = self.device(i);
                let Some(r) = d.replicator.clone() else {
                    return;
                };
                let seq = d.log.head().unwrap().seq;
                let waited =
                    tokio::time::timeout(Duration::from_secs(20), r.wait_durable(seq)).await;
                // Fenced or stopped: it stops, and confirms nothing.
                if let Ok(()) = waited.expect("shipping hung") {
                    let id = d.id;
                    let events = d.log.events(1, seq, usize::MAX).unwrap();
                    for e in events {
                        let Op::Put(v) = e.op else { continue };
                        let entry = self.confirmed.entry(e.seq).or_insert((e.device, v.clone()));
                        assert_eq!(
                            *entry,
                            (e.device, v),
                            "device {i} confirmed seq {} with other content than confirmed before ({id})",
                            e.seq
                        );
                    }
                }
            }
            Step::Release(i) => {
                let d = self.device(i);
                if let Some(r) = d.replicator.clone() {
                    let _ = tokio::time::timeout(Duration::from_secs(20), r.release())
                        .await
                        .expect("release hung");
                }
            }
            Step::Crash(i) => {
                if let Some(d) = self.devices[i].take() {
                    self.devices[i] = Some(d.reopen());
                }
            }
        }
    }
}

fn running(r: &till_vss::replica::ReplicatorHandle) -> bool {
    matches!(
        r.status().state,
        till_vss::replica::ReplicatorState::Running
            | till_vss::replica::ReplicatorState::Unreachable { .. }
    )
}

#[test]
fn lease_protocol_model() {
    let dir = tempfile::tempdir().unwrap();
    let store = StoreArg::DataDir(dir.path().to_path_buf());
    let bin = server_binary();
    let token = add_user(&bin, &store, "merchant");
    let server = TillServer::start(&bin, store, &[]);
    let url = server.vss_url();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut runner = TestRunner::new(Config {
        cases: 32,
        failure_persistence: None,
        ..Config::default()
    });
    let epochs_checked = std::cell::Cell::new(0usize);
    let confirmed_checked = std::cell::Cell::new(0usize);
    runner
        .run(&prop::collection::vec(step(), 15..45), |steps| {
            runtime.block_on(async {
                let mut world = World {
                    url: url.clone(),
                    token: token.clone(),
                    secret: rand::random(),
                    devices: (0..DEVICES).map(|_| None).collect(),
                    confirmed: BTreeMap::new(),
                    counter: 0,
                };
                for step in steps {
                    world.run(step).await;
                }
                for i in 0..DEVICES {
                    world.reset(i);
                }
                // The final restore.
                let c = Device::new(&url, &token, world.secret);
                match restore(c.replica.remote(), &c.log, |_| {}).await {
                    Ok(_) => {}
                    Err(till_vss::replica::RestoreError::NoBackup(_)) => {
                        assert!(world.confirmed.is_empty());
                        return;
                    }
                    Err(e) => panic!("final restore: {e}"),
                }
                let events = c.log.events(1, u64::MAX, usize::MAX).unwrap();
                let mut owners: BTreeMap<u64, DeviceId> = BTreeMap::new();
                for e in &events {
                    let owner = owners.entry(e.epoch).or_insert(e.device);
                    assert_eq!(
                        *owner, e.device,
                        "epoch {} has events of two devices (seq {})",
                        e.epoch, e.seq
                    );
                }
                epochs_checked.set(epochs_checked.get() + owners.len());
                for (seq, (device, value)) in &world.confirmed {
                    let e = &events[(*seq - 1) as usize];
                    assert_eq!(e.seq, *seq);
                    assert_eq!(
                        e.device, *device,
                        "seq {seq} was confirmed for another device"
                    );
                    assert_eq!(e.op, Op::Put(value.clone()), "seq {seq} lost its content");
                }
                confirmed_checked.set(confirmed_checked.get() + world.confirmed.len());
            });
            Ok(())
        })
        .unwrap();
    eprintln!(
        "lease model: 32 cases, {} epochs with one writer each, {} confirmed events found after restore",
        epochs_checked.get(),
        confirmed_checked.get()
    );
    assert!(confirmed_checked.get() > 0, "no case confirmed any event");
}
