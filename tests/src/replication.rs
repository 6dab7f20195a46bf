//! Devices for replication tests: a real redb log in a temp dir, a VSS client
//! to a real `till-server`, and the replica on top.

use std::sync::Arc;
use std::time::Duration;

use till_log::{DeviceId, Key, Log, LogOptions, Write};
use till_vss::replica::{
    BackupKeys, Lease, Remote, Replica, ReplicaError, Replicator, ReplicatorConfig,
    ReplicatorHandle,
};
use till_vss::{BearerToken, ClientConfig, RetryPolicy, VssClient};

/// One install of Till: its own log file and device id, the shared backup keys.
pub struct Device {
    /// Keeps the log file alive.
    pub dir: tempfile::TempDir,
    /// This device's id.
    pub id: DeviceId,
    /// The local log.
    pub log: Arc<Log>,
    /// The replica (log + remote).
    pub replica: Replica,
    /// The running replicator, once it holds a lease.
    pub replicator: Option<ReplicatorHandle>,
}

/// A VSS client for `url` with a short retry policy, so outages show quickly.
pub fn client(url: &str, token: &str) -> VssClient {
    let config = ClientConfig {
        request_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(2),
        retry: RetryPolicy {
            max_attempts: 2,
            ..RetryPolicy::default()
        },
    };
    VssClient::new(url, BearerToken::new(token).unwrap(), config).unwrap()
}

/// A replicator config that snapshots often enough for tests to exercise it.
pub fn test_config() -> ReplicatorConfig {
    ReplicatorConfig {
        max_segment_events: 50,
        snapshot_every: 0,
        backoff_max: Duration::from_millis(500),
        ..ReplicatorConfig::default()
    }
}

impl Device {
    /// A fresh device with an empty log.
    pub fn new(url: &str, token: &str, secret: [u8; 32]) -> Device {
        let dir = tempfile::tempdir().unwrap();
        let id = DeviceId::random();
        let log =
            Arc::new(Log::open_with(dir.path().join("till.redb"), LogOptions::default()).unwrap());
        let remote = Remote::new(client(url, token), BackupKeys::from_secret(&secret));
        let replica = Replica::new(log.clone(), remote, id);
        Device {
            dir,
            id,
            log,
            replica,
            replicator: None,
        }
    }

    /// Reopens the log, as after a process restart (the replicator, if any,
    /// is stopped without releasing, as a crash would leave it).
    pub fn reopen(mut self) -> Device {
        if let Some(r) = self.replicator.take() {
            r.stop();
        }
        let Device {
            dir,
            id,
            log,
            replica,
            ..
        } = self;
        let remote = replica.remote().clone();
        drop(replica);
        drop(log);
        let log = Arc::new(Log::open(dir.path().join("till.redb")).unwrap());
        let replica = Replica::new(log.clone(), remote, id);
        Device {
            dir,
            id,
            log,
            replica,
            replicator: None,
        }
    }

    /// Acquires the lease and starts shipping.
    pub async fn acquire(&mut self, config: ReplicatorConfig) -> Result<Lease, ReplicaError> {
        let lease = self.replica.acquire().await?;
        self.start(lease.clone(), config);
        Ok(lease)
    }

    /// Starts a replicator under `lease`.
    pub fn start(&mut self, lease: Lease, config: ReplicatorConfig) {
        self.replicator = Some(Replicator::start(
            self.log.clone(),
            self.replica.remote().clone(),
            lease,
            config,
        ));
    }

    /// Appends `n` puts (key `k{i % 7}` under this device's name) and wakes
    /// the replicator; returns the last seq.
    pub fn append(&self, tag: &str, n: usize) -> u64 {
        let mut last = 0;
        for i in 0..n {
            let out = self
                .log
                .append(vec![Write::put(
                    Key::new("test", "", format!("k{}", i % 7)),
                    format!("{tag}-{i}").into_bytes(),
                )])
                .unwrap();
            last = out.head_seq;
        }
        if let Some(r) = &self.replicator {
            r.notify();
        }
        last
    }

    /// The replicator (panics if none).
    pub fn replicator(&self) -> &ReplicatorHandle {
        self.replicator.as_ref().expect("a running replicator")
    }
}
