//! Load on one till-server (issue 9): 200 simulated devices, each shipping to its own VSS store the
//! way a real device does (a new segment at version 0 and the head, with its plaintext lease
//! header, at the version last read, in one `putObjects`), spread over 20 users, against one
//! server process on loopback, for both backends. Some stores get a second device that takes over
//! mid-run (epoch + 1); the first must be refused on its next write and stop, and never may both
//! be accepted. Afterwards every store is read back whole: no event lost or duplicated, the seqs
//! gapless, each segment written by the device that held the lease then.
//!
//! `cargo bench -p till-tests --bench load` runs 30 s per backend with the release server
//! (`LOAD_SECS` and `LOAD_DEVICES` change that) and prints throughput and latency side by side.
//! tests/tests/server_load.rs runs the same code shorter, as a test.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use till_log::DeviceId;
use till_tests::server::{StoreArg, TillServer, add_user};
use till_vss::replica::{LeaseHeader, LeaseState};
use till_vss::{BearerToken, ClientConfig, KeyValue, PutObjectRequest, RetryPolicy, VssClient};

/// What a run does.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    /// Simulated devices, one store each.
    pub devices: usize,
    /// Users the stores are spread over.
    pub users: usize,
    /// How long the devices ship.
    pub duration: Duration,
    /// Every this many stores gets a second device that takes over mid-run.
    pub takeover_every: usize,
    /// Bytes of one event in a segment.
    pub event_bytes: usize,
    /// Most events in one upload (1 to this, at random).
    pub max_events: u64,
}

impl LoadConfig {
    /// 200 devices over 20 users, a takeover in every 10th store, for `duration`.
    pub fn new(duration: Duration) -> LoadConfig {
        LoadConfig {
            devices: 200,
            users: 20,
            duration,
            takeover_every: 10,
            event_bytes: 128,
            max_events: 8,
        }
    }
}

/// What a run measured and verified.
#[derive(Clone, Debug)]
pub struct LoadReport {
    pub backend: &'static str,
    pub devices: usize,
    pub seconds: f64,
    /// Uploads answered 200.
    pub uploads: usize,
    /// Events in them.
    pub events: u64,
    /// Latency of the accepted uploads, sorted, microseconds.
    pub latencies_us: Vec<u64>,
    /// Takeovers that landed while the first device was shipping.
    pub takeovers: usize,
    /// First devices refused (CONFLICT) after a takeover; must equal `takeovers`.
    pub fenced: usize,
    /// Failures other than a fencing conflict (transport, 5xx): must be none.
    pub errors: Vec<String>,
    /// Segments read back and checked.
    pub verified_segments: usize,
}

impl LoadReport {
    fn percentile(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return 0.0;
        }
        let i = ((self.latencies_us.len() as f64 * p).ceil() as usize)
            .clamp(1, self.latencies_us.len())
            - 1;
        self.latencies_us[i] as f64 / 1000.0
    }

    pub fn p50_ms(&self) -> f64 {
        self.percentile(0.50)
    }

    pub fn p99_ms(&self) -> f64 {
        self.percentile(0.99)
    }

    pub fn max_ms(&self) -> f64 {
        self.latencies_us.last().map_or(0.0, |m| *m as f64 / 1000.0)
    }

    pub fn uploads_per_sec(&self) -> f64 {
        self.uploads as f64 / self.seconds
    }

    pub fn events_per_sec(&self) -> f64 {
        self.events as f64 / self.seconds
    }
}

/// Prints reports side by side.
pub fn print_table(reports: &[LoadReport]) {
    println!(
        "{:<9} {:>7} {:>6} {:>8} {:>10} {:>10} {:>8} {:>8} {:>8} {:>9} {:>6} {:>9}",
        "backend",
        "devices",
        "secs",
        "uploads",
        "uploads/s",
        "events/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "takeovers",
        "fenced",
        "verified"
    );
    for r in reports {
        println!(
            "{:<9} {:>7} {:>6.1} {:>8} {:>10.0} {:>10.0} {:>8.2} {:>8.2} {:>8.2} {:>9} {:>6} {:>9}",
            r.backend,
            r.devices,
            r.seconds,
            r.uploads,
            r.uploads_per_sec(),
            r.events_per_sec(),
            r.p50_ms(),
            r.p99_ms(),
            r.max_ms(),
            r.takeovers,
            r.fenced,
            r.verified_segments
        );
    }
}

const HEAD: &str = "head";
const SEGMENT_MAGIC: &[u8; 4] = b"TILL";
const MANIFEST_MAGIC: &[u8; 4] = b"MANI";

fn segment_key(ordinal: u64) -> String {
    format!("seg{ordinal:010}")
}

/// A head: the lease header, then a manifest stand-in (segments written, last seq).
fn head_value(device: DeviceId, epoch: u64, segments: u64, last_seq: u64) -> Vec<u8> {
    let mut v = LeaseHeader {
        device,
        epoch,
        state: LeaseState::Held,
    }
    .encode()
    .to_vec();
    v.extend_from_slice(MANIFEST_MAGIC);
    v.extend_from_slice(&segments.to_le_bytes());
    v.extend_from_slice(&last_seq.to_le_bytes());
    v
}

/// (lease, segments, last seq) of a head value.
fn parse_head(value: &[u8]) -> (LeaseHeader, u64, u64) {
    let lease = LeaseHeader::decode(value).expect("a head starts with its lease header");
    let m = &value[32..];
    assert_eq!(&m[..4], MANIFEST_MAGIC, "a manifest stand-in");
    let segments = u64::from_le_bytes(m[4..12].try_into().unwrap());
    let last_seq = u64::from_le_bytes(m[12..20].try_into().unwrap());
    (lease, segments, last_seq)
}

/// A segment: magic, writer, epoch, first seq, count, then each event (its seq and filler).
fn segment_value(
    device: DeviceId,
    epoch: u64,
    first: u64,
    count: u64,
    event_bytes: usize,
) -> Vec<u8> {
    let mut v = Vec::with_capacity(40 + count as usize * event_bytes);
    v.extend_from_slice(SEGMENT_MAGIC);
    v.extend_from_slice(&device.0);
    v.extend_from_slice(&epoch.to_le_bytes());
    v.extend_from_slice(&first.to_le_bytes());
    v.extend_from_slice(&count.to_le_bytes());
    for seq in first..first + count {
        v.extend_from_slice(&seq.to_le_bytes());
        v.resize(v.len() + event_bytes.saturating_sub(8), (seq % 251) as u8);
    }
    v
}

/// (writer, epoch, seqs) of a segment value, checking its events.
fn parse_segment(value: &[u8], event_bytes: usize) -> (DeviceId, u64, Vec<u64>) {
    assert_eq!(&value[..4], SEGMENT_MAGIC);
    let device = DeviceId(value[4..20].try_into().unwrap());
    let epoch = u64::from_le_bytes(value[20..28].try_into().unwrap());
    let first = u64::from_le_bytes(value[28..36].try_into().unwrap());
    let count = u64::from_le_bytes(value[36..44].try_into().unwrap());
    let step = event_bytes.max(8);
    assert_eq!(value.len(), 44 + count as usize * step, "segment length");
    let seqs: Vec<u64> = (0..count as usize)
        .map(|i| u64::from_le_bytes(value[44 + i * step..52 + i * step].try_into().unwrap()))
        .collect();
    assert_eq!(
        seqs,
        (first..first + count).collect::<Vec<_>>(),
        "segment events"
    );
    (device, epoch, seqs)
}

fn client(url: &str, token: &str) -> VssClient {
    let config = ClientConfig {
        retry: RetryPolicy::never(),
        request_timeout: Duration::from_secs(60),
        ..Default::default()
    };
    VssClient::new(url, BearerToken::new(token).unwrap(), config).unwrap()
}

/// What one device did.
#[derive(Default)]
struct DeviceLog {
    /// (segment ordinal, first seq, count) of each accepted upload.
    accepted: Vec<Accepted>,
    latencies_us: Vec<u64>,
    /// The ordinal of the upload refused as fenced, if it was.
    fenced_at: Option<u64>,
    errors: Vec<String>,
}

/// A device holding the lease of `store` at `epoch`, whose head is at VSS `version`, shipping
/// until `stop` or until it is fenced.
struct Shipper {
    client: VssClient,
    store: String,
    device: DeviceId,
    epoch: u64,
    version: i64,
    next_segment: u64,
    next_seq: u64,
}

/// How one upload went.
enum Upload {
    /// Accepted: (ordinal, first seq, count, latency in microseconds).
    Accepted(u64, u64, u64, u64),
    /// Refused with CONFLICT: another device holds the lease.
    Fenced(u64),
    /// Anything else.
    Failed(String),
}

impl Shipper {
    /// One upload: a new segment of 1 to `max_events` events and the head, in one put.
    async fn upload(&mut self, config: &LoadConfig) -> Upload {
        let count = 1 + rand::random::<u64>() % config.max_events;
        let ordinal = self.next_segment;
        let first = self.next_seq;
        let request = PutObjectRequest {
            store_id: self.store.clone(),
            global_version: None,
            transaction_items: vec![
                KeyValue::new(
                    segment_key(ordinal),
                    0,
                    segment_value(self.device, self.epoch, first, count, config.event_bytes),
                ),
                KeyValue::new(
                    HEAD,
                    self.version,
                    head_value(self.device, self.epoch, ordinal + 1, first + count - 1),
                ),
            ],
            delete_items: vec![],
        };
        let started = Instant::now();
        match self.client.put_objects(&request).await {
            Ok(()) => {
                self.version += 1;
                self.next_segment += 1;
                self.next_seq += count;
                Upload::Accepted(ordinal, first, count, started.elapsed().as_micros() as u64)
            }
            Err(till_vss::Error::Conflict { .. }) => Upload::Fenced(ordinal),
            Err(e) => Upload::Failed(format!("{}: upload {ordinal}: {e}", self.store)),
        }
    }

    /// Ships until `stop`, or until fenced (it then stops at once and never retries blindly,
    /// R2) or failed. Returns itself, for a last write after the run.
    async fn ship(mut self, config: LoadConfig, stop: Arc<AtomicBool>) -> (Shipper, DeviceLog) {
        let mut log = DeviceLog::default();
        while !stop.load(Ordering::Relaxed) {
            match self.upload(&config).await {
                Upload::Accepted(ordinal, first, count, us) => {
                    log.latencies_us.push(us);
                    log.accepted.push((ordinal, first, count));
                }
                Upload::Fenced(ordinal) => {
                    log.fenced_at = Some(ordinal);
                    break;
                }
                Upload::Failed(e) => {
                    log.errors.push(e);
                    break;
                }
            }
        }
        (self, log)
    }
}

/// Reads the head: (lease, segments, last seq, VSS version), `None` for a new store.
async fn read_head(client: &VssClient, store: &str) -> Option<(LeaseHeader, u64, u64, i64)> {
    match client.get_object(store, HEAD).await {
        Ok(kv) => {
            let (lease, segments, last) = parse_head(&kv.value);
            Some((lease, segments, last, kv.version))
        }
        Err(till_vss::Error::NoSuchKey { .. }) => None,
        Err(e) => panic!("reading the head of {store}: {e}"),
    }
}

/// The second device's takeover: reads the head and writes it back at epoch + 1 under its own
/// device id, at the version read; a conflict (the first device shipped meanwhile) reads again.
async fn take_over(client: &VssClient, store: &str, device: DeviceId) -> Shipper {
    for _ in 0..100 {
        let (lease, segments, last, version) = read_head(client, store)
            .await
            .expect("a store to take over");
        let request = PutObjectRequest {
            store_id: store.to_owned(),
            global_version: None,
            transaction_items: vec![KeyValue::new(
                HEAD,
                version,
                head_value(device, lease.epoch + 1, segments, last),
            )],
            delete_items: vec![],
        };
        match client.put_objects(&request).await {
            Ok(()) => {
                return Shipper {
                    client: client.clone(),
                    store: store.to_owned(),
                    device,
                    epoch: lease.epoch + 1,
                    version: version + 1,
                    next_segment: segments,
                    next_seq: last + 1,
                };
            }
            Err(till_vss::Error::Conflict { .. }) => continue,
            Err(e) => panic!("taking {store} over: {e}"),
        }
    }
    panic!("{store}: the takeover lost 100 races in a row");
}

/// Runs the load against a server at `vss_url` whose users have `tokens`, then reads every store
/// back and verifies it; panics on any loss, duplicate, gap or double acceptance.
pub async fn run_load(
    backend: &'static str,
    vss_url: &str,
    tokens: &[String],
    config: &LoadConfig,
) -> LoadReport {
    let clients: Vec<VssClient> = tokens.iter().map(|t| client(vss_url, t)).collect();
    let run = format!("{:08x}", rand::random::<u32>());
    let stop = Arc::new(AtomicBool::new(false));
    // Every device acquires its new store first (head at version 0, epoch 1), all at once.
    let acquires: Vec<_> = (0..config.devices)
        .map(|i| {
            let c = clients[i % clients.len()].clone();
            let store = format!("load-{run}-{i:04}");
            tokio::spawn(async move {
                let device = DeviceId(rand::random());
                let request = PutObjectRequest {
                    store_id: store.clone(),
                    global_version: None,
                    transaction_items: vec![KeyValue::new(HEAD, 0, head_value(device, 1, 0, 0))],
                    delete_items: vec![],
                };
                c.put_objects(&request).await.unwrap();
                Shipper {
                    client: c,
                    store,
                    device,
                    epoch: 1,
                    version: 1,
                    next_segment: 0,
                    next_seq: 1,
                }
            })
        })
        .collect();
    let mut firsts = Vec::new();
    for a in acquires {
        firsts.push(a.await.unwrap());
    }
    let stores: Vec<(String, VssClient)> = firsts
        .iter()
        .map(|s| (s.store.clone(), s.client.clone()))
        .collect();
    let first_devices: Vec<DeviceId> = firsts.iter().map(|s| s.device).collect();
    let started = Instant::now();
    let first_tasks: Vec<_> = firsts
        .into_iter()
        .map(|s| tokio::spawn(s.ship(config.clone(), stop.clone())))
        .collect();
    // The takeovers, each at a random moment between a quarter and three quarters of the run.
    let mut second_tasks = BTreeMap::new();
    for i in (0..config.devices).step_by(config.takeover_every.max(1)) {
        let (store, c) = stores[i].clone();
        let at = config.duration.mul_f64(0.25 + rand::random::<f64>() * 0.5);
        let stop = stop.clone();
        let config = config.clone();
        second_tasks.insert(
            i,
            tokio::spawn(async move {
                tokio::time::sleep(at).await;
                let device = DeviceId(rand::random());
                let shipper = take_over(&c, &store, device).await;
                let from = shipper.next_segment;
                (device, from, shipper.ship(config, stop).await.1)
            }),
        );
    }
    tokio::time::sleep(config.duration).await;
    stop.store(true, Ordering::SeqCst);
    let mut first_logs = Vec::new();
    let mut first_shippers = Vec::new();
    for t in first_tasks {
        let (shipper, log) = t.await.unwrap();
        first_shippers.push(shipper);
        first_logs.push(log);
    }
    let mut seconds = BTreeMap::new();
    for (i, t) in second_tasks {
        seconds.insert(i, t.await.unwrap());
    }
    let seconds_run = started.elapsed().as_secs_f64();

    // Fencing, from what the devices saw: after a takeover the first device's next write was
    // refused, and none of its uploads from the takeover's segment on was accepted.
    let mut report = LoadReport {
        backend,
        devices: config.devices,
        seconds: seconds_run,
        uploads: 0,
        events: 0,
        latencies_us: Vec::new(),
        takeovers: 0,
        fenced: 0,
        errors: Vec::new(),
        verified_segments: 0,
    };
    for (i, log) in first_logs.iter_mut().enumerate() {
        if let Some((_, from, _)) = seconds.get(&i) {
            report.takeovers += 1;
            assert!(
                log.accepted.iter().all(|(ordinal, _, _)| ordinal < from),
                "{}: the first device had an upload accepted after the takeover at segment {from}",
                stores[i].0
            );
            if !log.errors.is_empty() {
                continue;
            }
            if log.fenced_at.is_none() {
                // The run ended before its next write: that write is made now, and must be
                // refused like any other.
                match first_shippers[i].upload(config).await {
                    Upload::Fenced(ordinal) => log.fenced_at = Some(ordinal),
                    Upload::Accepted(ordinal, ..) => panic!(
                        "{}: the first device's upload {ordinal} was accepted after the takeover",
                        stores[i].0
                    ),
                    Upload::Failed(e) => panic!("{e}"),
                }
            }
            assert_eq!(
                log.fenced_at,
                Some(*from),
                "{}: the first device was not refused on its first write after the takeover",
                stores[i].0
            );
            report.fenced += 1;
        } else {
            assert_eq!(
                log.fenced_at, None,
                "{}: fenced without a takeover",
                stores[i].0
            );
        }
    }
    for log in first_logs.iter().chain(seconds.values().map(|(_, _, l)| l)) {
        report.uploads += log.accepted.len();
        report.events += log.accepted.iter().map(|(_, _, n)| n).sum::<u64>();
        report.latencies_us.extend(&log.latencies_us);
        report.errors.extend(log.errors.iter().cloned());
    }
    report.latencies_us.sort_unstable();

    // Every store read back: the head names the last segment and seq; the segments are exactly
    // 0..segments, their events exactly 1..=last, each written by the device holding the lease
    // at the time, and every accepted upload is there as it was sent.
    let checks: Vec<_> = stores
        .iter()
        .enumerate()
        .map(|(i, (store, c))| {
            let (store, c) = (store.clone(), c.clone());
            let first_device = first_devices[i];
            let first_accepted = first_logs[i].accepted.clone();
            let second = seconds
                .get(&i)
                .map(|(d, from, log)| (*d, *from, log.accepted.clone()));
            let event_bytes = config.event_bytes;
            tokio::spawn(async move {
                verify_store(
                    &c,
                    &store,
                    first_device,
                    &first_accepted,
                    second,
                    event_bytes,
                )
                .await
            })
        })
        .collect();
    let verifying = Instant::now();
    for c in checks {
        report.verified_segments += c.await.unwrap();
    }
    eprintln!(
        "{backend}: {} segments of {} stores read back and verified in {:.1} s",
        report.verified_segments,
        stores.len(),
        verifying.elapsed().as_secs_f64()
    );
    report
}

/// An accepted upload: (segment ordinal, first seq, events).
type Accepted = (u64, u64, u64);
/// The device that took a store over: its id, the first segment it wrote, its accepted uploads.
type Second = (DeviceId, u64, Vec<Accepted>);

/// Checks one store; returns how many segments it holds.
async fn verify_store(
    client: &VssClient,
    store: &str,
    first_device: DeviceId,
    first_accepted: &[Accepted],
    second: Option<Second>,
    event_bytes: usize,
) -> usize {
    let (lease, segments, last, version) = read_head(client, store).await.unwrap();
    let (keys, _) = client.list_all_key_versions(store, None).await.unwrap();
    let mut names: Vec<String> = keys
        .iter()
        .map(|k| k.key.clone())
        .filter(|k| k != HEAD)
        .collect();
    names.sort();
    let expected: Vec<String> = (0..segments).map(segment_key).collect();
    assert_eq!(
        names, expected,
        "{store}: the segments are not exactly 0..{segments}"
    );
    assert!(
        keys.iter().all(|k| k.version == 1 || k.key == HEAD),
        "{store}: a segment was overwritten"
    );
    let mut seqs: Vec<u64> = Vec::new();
    let mut writers = Vec::new();
    let mut by_ordinal: Vec<Vec<u64>> = Vec::new();
    for ordinal in 0..segments {
        let kv = client
            .get_object(store, &segment_key(ordinal))
            .await
            .unwrap();
        let (writer, _, s) = parse_segment(&kv.value, event_bytes);
        writers.push(writer);
        seqs.extend(&s);
        by_ordinal.push(s);
    }
    assert_eq!(
        seqs,
        (1..=last).collect::<Vec<_>>(),
        "{store}: the events are not exactly 1..={last} (lost, duplicated or out of order)"
    );
    let accepted_uploads = first_accepted.len() + second.as_ref().map_or(0, |s| s.2.len());
    let takeover_writes = i64::from(second.is_some());
    assert_eq!(
        version,
        1 + accepted_uploads as i64 + takeover_writes,
        "{store}: the head's version is not one per accepted write"
    );
    for &(ordinal, first, count) in first_accepted {
        assert_eq!(
            writers[ordinal as usize], first_device,
            "{store}: segment {ordinal}'s writer"
        );
        assert_eq!(
            by_ordinal[ordinal as usize],
            (first..first + count).collect::<Vec<_>>(),
            "{store}: accepted upload {ordinal}"
        );
    }
    match second {
        Some((device, from, accepted)) => {
            assert_eq!(
                lease.device, device,
                "{store}: the lease after the takeover"
            );
            assert_eq!(lease.epoch, 2);
            for (ordinal, writer) in writers.iter().enumerate() {
                let expect = if (ordinal as u64) < from {
                    first_device
                } else {
                    device
                };
                assert_eq!(
                    *writer, expect,
                    "{store}: segment {ordinal} by the wrong device"
                );
            }
            assert_eq!(
                accepted.iter().map(|a| a.0).collect::<Vec<_>>(),
                (from..segments).collect::<Vec<_>>(),
                "{store}: the second device's accepted uploads"
            );
        }
        None => {
            assert_eq!(lease.device, first_device);
            assert_eq!(lease.epoch, 1);
            assert_eq!(segments as usize, first_accepted.len());
        }
    }
    segments as usize
}

/// A server of `backend` with `users` users: (its process, their tokens, what keeps its store).
pub fn start_server(
    binary: &std::path::Path,
    postgres: bool,
    users: usize,
) -> Option<(TillServer, Vec<String>, tempfile::TempDir)> {
    let dir = tempfile::tempdir().unwrap();
    let store = if postgres {
        StoreArg::DatabaseUrl(till_tests::postgres::fresh_database()?)
    } else {
        StoreArg::DataDir(dir.path().join("data"))
    };
    let tokens = (0..users)
        .map(|u| add_user(binary, &store, &format!("load-user-{u:02}")))
        .collect();
    let server = TillServer::start(binary, store, &[]);
    Some((server, tokens, dir))
}

#[allow(dead_code)]
fn main() {
    let secs: u64 = till_tests::env_or("LOAD_SECS", 30);
    let mut config = LoadConfig::new(Duration::from_secs(secs));
    config.devices = till_tests::env_or("LOAD_DEVICES", config.devices);
    let binary = till_tests::server::release_server();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut reports = Vec::new();
    for (postgres, name) in [(false, "redb"), (true, "postgres")] {
        let Some((server, tokens, _dir)) = start_server(&binary, postgres, config.users) else {
            eprintln!("{name}: skipped, no PostgreSQL");
            continue;
        };
        eprintln!(
            "{name}: {} devices over {} users for {secs} s against the release server...",
            config.devices, config.users
        );
        let report = runtime.block_on(run_load(name, &server.vss_url(), &tokens, &config));
        assert!(
            report.errors.is_empty(),
            "{name}: errors: {:?}",
            report.errors
        );
        assert_eq!(report.fenced, report.takeovers, "{name}: fencing");
        drop(server);
        reports.push(report);
    }
    println!();
    println!(
        "till-server under load: {} devices (one store each, {} users), closed loop, {} takeovers mid-run; client and server share 2 cores",
        config.devices,
        config.users,
        config.devices.div_ceil(config.takeover_every)
    );
    print_table(&reports);
}
