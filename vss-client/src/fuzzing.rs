//! The checks the fuzz targets `open_head`, `manifest`, `snapshot` and `restore_plan` run,
//! shared with the test that replays their corpora, so a corpus file is checked the same way in
//! both places; and the encoders that write their seeds. Not part of the stable API.
//!
//! Every check goes through the real decoder: [`Manifest::open`], [`LeaseHeader::decode`], the
//! snapshot chunk opener of [`Remote::snapshot`] followed by `Log::install_snapshot`, and [`plan`].
//! Where the fuzzer could never forge a valid seal, the harness seals the fuzzer's bytes under the
//! fuzz keys itself, so the decoder behind the AEAD check is reached too.

use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use till_log::segment::{self, Binding, Kind};
use till_log::{Hash, Log, State};

use crate::replica::object_names as names;
use crate::replica::{
    BackupKeys, LEASE_HEADER_LEN, LeaseHeader, Manifest, PlanError, Remote, SnapshotRef, Target,
    plan,
};
use crate::{BearerToken, ClientConfig, VssClient};

/// The backup secret every target and seed uses.
pub const FUZZ_SECRET: [u8; 32] = [0x5a; 32];

/// The backup store of the fuzz keys. Its client is never called: it only names and opens objects.
pub fn fuzz_remote() -> &'static Remote {
    static REMOTE: OnceLock<Remote> = OnceLock::new();
    REMOTE.get_or_init(|| {
        let client = VssClient::new(
            "http://127.0.0.1:9/vss",
            BearerToken::new("fuzz").expect("a plain token"),
            ClientConfig::default(),
        )
        .expect("a client that never connects builds");
        Remote::new(client, BackupKeys::from_secret(&FUZZ_SECRET))
    })
}

fn head_name() -> String {
    fuzz_remote().name(names::HEAD)
}

fn open_head_value(value: &[u8]) -> Result<Manifest, crate::replica::HeadError> {
    let remote = fuzz_remote();
    Manifest::open(
        value,
        remote.keys().seal_key(),
        remote.store_id(),
        &head_name(),
    )
}

/// A head object's value for `manifest`, sealed under the fuzz keys (seeds of `open_head`).
pub fn seal_head(manifest: &Manifest) -> Vec<u8> {
    let remote = fuzz_remote();
    manifest.seal(remote.keys().seal_key(), remote.store_id(), &head_name())
}

/// Checks that a head that opens re-seals and opens to the same manifest, and agrees with its
/// plaintext lease header.
fn check_manifest(value: &[u8], manifest: &Manifest) {
    let header = LeaseHeader::decode(value).expect("an opened head has a valid lease header");
    assert_eq!(
        manifest.lease(),
        header,
        "the header and the manifest agree"
    );
    assert_eq!(manifest.format, crate::replica::MANIFEST_FORMAT_VERSION);
    let again = open_head_value(&seal_head(manifest)).expect("a re-sealed head opens");
    assert_eq!(&again, manifest);
    let payload = postcard::to_stdvec(manifest).expect("a manifest encodes");
    assert_eq!(
        postcard::from_bytes::<Manifest>(&payload).as_ref(),
        Ok(manifest)
    );
}

/// `open_head`: `data` is a head object's value as the server returns it. The lease header must
/// decode to exactly what it encodes back to, and the head must open only if genuine.
pub fn open_head(data: &[u8]) {
    if let Ok(header) = LeaseHeader::decode(data) {
        assert_eq!(header.encode()[..], data[..LEASE_HEADER_LEN]);
    }
    if let Ok(manifest) = open_head_value(data) {
        check_manifest(data, &manifest);
    }
}

/// `manifest`: `data` is a 32-byte lease header followed by a manifest's plaintext. The harness
/// seals the plaintext under the fuzz keys, bound to the header, so the fuzzer reaches the
/// manifest's decoder and its checks behind the seal.
pub fn manifest(data: &[u8]) {
    let split = data.len().min(LEASE_HEADER_LEN);
    let (header, payload) = data.split_at(split);
    let remote = fuzz_remote();
    let name = head_name();
    let sealed = segment::seal(
        Kind::Head,
        payload,
        remote.keys().seal_key(),
        &Binding {
            store_id: remote.store_id(),
            name: &name,
            extra: header,
        },
        false,
    )
    .expect("fuzz inputs are far below the envelope limit");
    let mut value = header.to_vec();
    value.extend_from_slice(&sealed);
    match open_head_value(&value) {
        Ok(manifest) => check_manifest(&value, &manifest),
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}

/// A `manifest` seed: the lease header and the plaintext of `manifest`.
pub fn manifest_seed(manifest: &Manifest) -> Vec<u8> {
    let mut out = manifest.lease().encode().to_vec();
    out.extend(postcard::to_stdvec(manifest).expect("a manifest encodes"));
    out
}

/// Reads fuzz input front to back; past its end every read gives zeros.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    fn u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        for x in &mut b {
            *x = self.u8();
        }
        u64::from_le_bytes(b)
    }

    /// A number that is mostly small (one byte), and any u64 after a 0xff marker.
    fn num(&mut self) -> u64 {
        match self.u8() {
            0xff => self.u64(),
            b => u64::from(b),
        }
    }

    /// The next `u16`-length-prefixed run of bytes, cut at the end of the input.
    fn chunk(&mut self) -> &[u8] {
        let n = usize::from(self.u16()).min(self.0.len());
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head
    }
}

/// `snapshot` flags: the harness seals each chunk's bytes (else they are the raw object value).
pub const SNAPSHOT_SEAL: u8 = 1;
/// `snapshot` flags: the harness compresses what it seals.
pub const SNAPSHOT_COMPRESS: u8 = 2;

fn snapshot_reference(seq: u64, at_ms: u64, chunks: u32) -> SnapshotRef {
    SnapshotRef {
        seq,
        hash: Hash(blake3::hash(&seq.to_le_bytes()).into()),
        at_ms,
        chunks,
        next_segment: 0,
    }
}

/// `snapshot`: `data` is a flags byte, the snapshot's seq (u64 LE) and time (u64 LE), then its
/// chunks, each a u16 LE length and that many bytes: the chunk's plaintext, sealed by the harness
/// (flag [`SNAPSHOT_SEAL`]), or the chunk object's raw value. The chunks are opened as a restore
/// opens them; a snapshot that opens must install into a fresh log that then holds exactly its
/// state and verifies.
pub fn snapshot(data: &[u8]) {
    let mut input = Input(data);
    let flags = input.u8();
    let seq = input.u64();
    let at_ms = input.u64();
    let mut chunks = Vec::new();
    while !input.is_empty() && chunks.len() < 64 {
        chunks.push(input.chunk().to_vec());
    }
    let reference = snapshot_reference(seq, at_ms, chunks.len() as u32);
    let remote = fuzz_remote();
    let mut entries = BTreeMap::new();
    for (i, bytes) in chunks.iter().enumerate() {
        let chunk = i as u32;
        let value = if flags & SNAPSHOT_SEAL != 0 {
            let name = remote.name(&names::snapshot(seq, chunk));
            segment::seal(
                Kind::Snapshot,
                bytes,
                remote.keys().seal_key(),
                &Binding::new(remote.store_id(), &name),
                flags & SNAPSHOT_COMPRESS != 0,
            )
            .expect("fuzz inputs are far below the envelope limit")
        } else {
            bytes.clone()
        };
        match remote.open_snapshot_chunk(&value, &reference, chunk) {
            Ok(opened) => entries.extend(opened),
            Err(e) => {
                assert!(!e.to_string().is_empty());
                return;
            }
        }
    }
    let state = State::from_snapshot(entries, reference.seq, reference.hash, reference.at_ms);
    install_and_check(&state);
}

/// Installs `state` into a fresh log file and checks that the log holds exactly it.
fn install_and_check(state: &State) {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let path = std::env::temp_dir().join(format!(
        "till-fuzz-snapshot-{}-{}.redb",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_file(&path);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let log = Log::open(&path).expect("a fresh log opens");
        let head = match log.install_snapshot(state) {
            Ok(head) => head,
            // Seqs and versions above MAX_SEQ are refused, by design; nothing is installed.
            Err(till_log::ApplyError::SeqOutOfRange { .. }) => {
                assert_eq!(log.head().expect("the head reads").seq, 0);
                return;
            }
            Err(e) => panic!("an opened snapshot installs into an empty log: {e}"),
        };
        assert_eq!(
            (head.seq, head.hash, head.at_ms),
            (state.seq(), state.hash(), state.at_ms())
        );
        assert_eq!(log.head().expect("the head reads"), head);
        assert_eq!(&log.state().expect("the state reads"), state);
        log.verify().expect("an installed snapshot verifies");
    }));
    let _ = std::fs::remove_file(&path);
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

/// Snapshot chunk objects of `state` as `Remote::snapshot_items` writes them, at most
/// `chunk_bytes` of values each, as a `snapshot` seed (sealed by the writer, so flags 0).
pub fn snapshot_seed(state: &State, chunk_bytes: usize) -> Vec<u8> {
    let (items, reference) = fuzz_remote().snapshot_items(state, 0, chunk_bytes);
    let mut out = vec![0u8];
    out.extend_from_slice(&reference.seq.to_le_bytes());
    out.extend_from_slice(&reference.at_ms.to_le_bytes());
    for kv in items {
        let len = u16::try_from(kv.value.len()).expect("seed chunks are small");
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&kv.value);
    }
    out
}

/// A manifest, a listing and a target, as `restore_plan` decodes them from fuzz input.
#[derive(Clone, Debug)]
pub struct PlanCase {
    /// The head's manifest.
    pub manifest: Manifest,
    /// Logical object name -> version (the planner is given the identity naming).
    pub listing: HashMap<String, i64>,
    /// What to restore.
    pub target: Target,
}

/// `restore_plan` input: first byte bit 0 set fills the listing with every object the manifest
/// names, at the versions a genuine store has, before the listed edits apply.
pub const PLAN_FILL: u8 = 1;

impl PlanCase {
    /// Decodes a case: flags, the manifest's numbers, its snapshots, the target, then listing
    /// edits (each an op byte, a name and a version) until the input ends.
    pub fn decode(data: &[u8]) -> PlanCase {
        let mut input = Input(data);
        let flags = input.u8();
        let mut manifest = Manifest::new(till_log::DeviceId([7; 16]));
        manifest.state = if input.u8() & 1 == 0 {
            crate::replica::LeaseState::Held
        } else {
            crate::replica::LeaseState::Released
        };
        manifest.epoch = input.num();
        manifest.last_seq = input.num();
        manifest.last_at_ms = input.num();
        manifest.segments = input.num();
        manifest.first_segment = input.num();
        manifest.writes = input.num();
        for _ in 0..input.u8() % 5 {
            manifest.snapshots.push(SnapshotRef {
                seq: input.num(),
                hash: Hash::GENESIS,
                at_ms: input.num(),
                chunks: u32::try_from(input.num()).unwrap_or(u32::MAX),
                next_segment: input.num(),
            });
        }
        let target = match input.u8() % 3 {
            0 => Target::Latest,
            1 => Target::Seq(input.num()),
            _ => Target::Time(input.num()),
        };
        let mut listing = HashMap::new();
        if flags & PLAN_FILL != 0 {
            listing.insert(names::HEAD.to_owned(), manifest.writes as i64);
            let end = manifest
                .segments
                .min(manifest.first_segment.saturating_add(256));
            for ordinal in manifest.first_segment..end {
                listing.insert(names::segment(ordinal), 1);
            }
            for s in &manifest.snapshots {
                for chunk in 0..s.chunks.min(64) {
                    listing.insert(names::snapshot(s.seq, chunk), 1);
                }
            }
        }
        while !input.is_empty() {
            let op = input.u8();
            let name = match op & 3 {
                0 => names::HEAD.to_owned(),
                1 => names::segment(input.num()),
                2 => names::snapshot(input.num(), input.num() as u32),
                _ => String::from_utf8_lossy(input.chunk()).into_owned(),
            };
            if op & 4 != 0 {
                listing.remove(&name);
                continue;
            }
            let version = match input.u8() {
                0xfe => -1,
                0xff => input.u64() as i64,
                v => i64::from(v),
            };
            listing.insert(name, version);
        }
        PlanCase {
            manifest,
            listing,
            target,
        }
    }

    /// Encodes a case [`PlanCase::decode`] reads back (numbers as 0xff and a u64), with the
    /// listing as it is (no fill), in name order.
    pub fn encode(&self) -> Vec<u8> {
        fn num(out: &mut Vec<u8>, n: u64) {
            out.push(0xff);
            out.extend_from_slice(&n.to_le_bytes());
        }
        let m = &self.manifest;
        let mut out = vec![0, u8::from(m.state == crate::replica::LeaseState::Released)];
        for n in [
            m.epoch,
            m.last_seq,
            m.last_at_ms,
            m.segments,
            m.first_segment,
            m.writes,
        ] {
            num(&mut out, n);
        }
        assert!(m.snapshots.len() < 5, "a case holds at most 4 snapshots");
        out.push(m.snapshots.len() as u8);
        for s in &m.snapshots {
            for n in [s.seq, s.at_ms, u64::from(s.chunks), s.next_segment] {
                num(&mut out, n);
            }
        }
        match self.target {
            Target::Latest => out.push(0),
            Target::Seq(s) => {
                out.push(1);
                num(&mut out, s);
            }
            Target::Time(t) => {
                out.push(2);
                num(&mut out, t);
            }
        }
        let mut listing: Vec<_> = self.listing.iter().collect();
        listing.sort();
        for (name, &version) in listing {
            let bytes = name.as_bytes();
            out.push(3);
            out.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
            out.extend_from_slice(bytes);
            out.push(0xff);
            out.extend_from_slice(&version.to_le_bytes());
        }
        out
    }
}

fn identity(name: &str) -> String {
    name.to_owned()
}

/// `restore_plan`: decodes a [`PlanCase`] and plans. The planner must never panic; a plan it
/// makes must be complete (every object it needs listed, write-once objects at version 1, no
/// gap, nothing beyond the head), and taking away any object it fetches must make it refuse,
/// naming that object.
pub fn restore_plan(data: &[u8]) {
    let case = PlanCase::decode(data);
    let (m, listing) = (&case.manifest, &case.listing);
    let Ok(p) = plan(m, listing, identity, case.target) else {
        return;
    };
    assert_eq!(
        listing.get(names::HEAD),
        Some(&(m.writes as i64)),
        "the head is listed at the version of its writes"
    );
    for ordinal in m.segments..m.segments.saturating_add(16) {
        assert!(
            !listing.contains_key(&names::segment(ordinal)),
            "segment {ordinal} is beyond the head's {} segments",
            m.segments
        );
    }
    if let Target::Seq(seq) = case.target {
        assert!(seq <= m.last_seq, "seq {seq} is beyond the head");
    }
    let usable = |s: &SnapshotRef| match case.target {
        Target::Latest => true,
        Target::Seq(seq) => s.seq <= seq,
        Target::Time(t) => s.at_ms <= t,
    };
    let start = match &p.snapshot {
        Some(s) => {
            let latest = m.snapshots.iter().rev().find(|s| usable(s));
            assert_eq!(
                latest,
                Some(s),
                "the plan starts from the latest usable snapshot"
            );
            assert!(s.next_segment >= m.first_segment, "the snapshot is kept");
            for chunk in 0..s.chunks {
                assert_eq!(
                    listing.get(&names::snapshot(s.seq, chunk)),
                    Some(&1),
                    "chunk {chunk} of the snapshot at {} is listed once-written",
                    s.seq
                );
            }
            s.next_segment
        }
        None => {
            assert_eq!(
                m.first_segment, 0,
                "without a snapshot, every segment is kept"
            );
            0
        }
    };
    // No gap: exactly the segments from the start to the head's count, in order.
    assert!(p.segments.iter().copied().eq(start..m.segments.max(start)));
    for &ordinal in &p.segments {
        assert_eq!(listing.get(&names::segment(ordinal)), Some(&1));
    }
    // Taking away any one object the plan needs makes it refuse, naming that object.
    if let Some(&ordinal) = p.segments.get(p.segments.len() / 2) {
        let mut gap = listing.clone();
        gap.remove(&names::segment(ordinal));
        assert_eq!(
            plan(m, &gap, identity, case.target),
            Err(PlanError::MissingSegment { ordinal })
        );
        gap.insert(names::segment(ordinal), 2);
        assert!(matches!(
            plan(m, &gap, identity, case.target),
            Err(PlanError::Overwritten { version: 2, .. })
        ));
    }
    if let Some(s) = p.snapshot.as_ref().filter(|s| s.chunks > 0) {
        let chunk = s.chunks / 2;
        let mut gap = listing.clone();
        gap.remove(&names::snapshot(s.seq, chunk));
        assert_eq!(
            plan(m, &gap, identity, case.target),
            Err(PlanError::MissingSnapshotChunk { seq: s.seq, chunk })
        );
    }
}

/// The same snapshot as [`snapshot_seed`], as plaintext chunks for the harness to seal and
/// compress (flags [`SNAPSHOT_SEAL`] and [`SNAPSHOT_COMPRESS`]).
pub fn snapshot_plain_seed(state: &State, chunk_bytes: usize) -> Vec<u8> {
    let remote = fuzz_remote();
    let (items, reference) = remote.snapshot_items(state, 0, chunk_bytes);
    let mut out = vec![SNAPSHOT_SEAL | SNAPSHOT_COMPRESS];
    out.extend_from_slice(&reference.seq.to_le_bytes());
    out.extend_from_slice(&reference.at_ms.to_le_bytes());
    for kv in items {
        let plain = segment::open(
            Kind::Snapshot,
            &kv.value,
            remote.keys().seal_key(),
            &Binding::new(remote.store_id(), &kv.key),
        )
        .expect("a chunk just sealed opens");
        let len = u16::try_from(plain.len()).expect("seed chunks are small");
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&plain);
    }
    out
}
