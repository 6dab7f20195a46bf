//! The checks the fuzz targets `open_head`, `manifest`, `snapshot`, `restore_plan` and
//! `vss_responses` run, shared with the test that replays their corpora, so a corpus file is checked
//! the same way in both places; and the encoders that write their seeds. Not part of the stable API.
//!
//! Every check goes through the real decoder: [`Manifest::open`], [`LeaseHeader::decode`], the
//! snapshot chunk opener of [`Remote::snapshot`] followed by `Log::install_snapshot`, [`plan`], and
//! the client's decoding of a server's answer that every [`VssClient`] call goes through.
//! Where the fuzzer could never forge a valid seal, the harness seals the fuzzer's bytes under the
//! fuzz keys itself, so the decoder behind the AEAD check is reached too.

use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use prost::Message as _;

use till_log::segment::{self, Binding, Kind};
use till_log::{Hash, Log, State};

use crate::client::{MESSAGE_LIMIT, decode_response};
use crate::proto::{
    DeleteObjectResponse, ErrorCode, ErrorResponse, GetObjectResponse, KeyValue,
    ListKeyVersionsResponse, PutObjectResponse,
};
use crate::replica::object_names as names;
use crate::replica::{
    BackupKeys, LEASE_HEADER_LEN, LeaseHeader, Manifest, PlanError, Remote, SnapshotRef, Target,
    plan,
};
use crate::{BearerToken, ClientConfig, Error, Operation, VssClient};

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

/// The calls of `vss_responses`, by its first byte (mod 4), each with its response message.
pub const VSS_RESPONSE_OPS: [Operation; 4] = [
    Operation::GetObject,
    Operation::PutObjects,
    Operation::DeleteObject,
    Operation::ListKeyVersions,
];

/// The lowest HTTP status `vss_responses` gives; its second and third bytes (u16 LE, mod 500)
/// are added to it, so every status from 100 to 599 is reached.
pub const VSS_RESPONSE_MIN_STATUS: u16 = 100;

/// The most an error's message may be longer than the server's message it carries (cut at
/// `MESSAGE_LIMIT`): the call, the status, the code and the note saying where it was cut.
const ERROR_TEXT_OVERHEAD: usize = 256;

/// `vss_responses`: `data` is a call (one byte), an HTTP status (two) and the body the server
/// answered with, decoded as the client decodes every answer. A 2xx is the call's response message
/// (which round-trips), or an `UnexpectedResponse` that is never retried when it does not decode;
/// any other status is never a success: its `ErrorResponse`'s code alone picks the error (the
/// status only matters for a body that is empty or no `ErrorResponse`, transient for 5xx and 429),
/// and the server's message is carried whole when short and plain, else escaped and cut, so an
/// error's text is one line of bounded length. Returns the error, if the answer is one.
pub fn vss_response(data: &[u8]) -> Result<(), Error> {
    let mut input = Input(data);
    let op = VSS_RESPONSE_OPS[usize::from(input.u8() % 4)];
    let status = VSS_RESPONSE_MIN_STATUS + input.u16() % 500;
    let body = input.0;
    match op {
        Operation::GetObject => check_response::<GetObjectResponse>(op, status, body),
        Operation::PutObjects => check_response::<PutObjectResponse>(op, status, body),
        Operation::DeleteObject => check_response::<DeleteObjectResponse>(op, status, body),
        Operation::ListKeyVersions => check_response::<ListKeyVersionsResponse>(op, status, body),
    }
}

fn check_response<Rs>(op: Operation, status: u16, body: &[u8]) -> Result<(), Error>
where
    Rs: prost::Message + Default + PartialEq + std::fmt::Debug,
{
    let success = (200..300).contains(&status);
    let mut error = match decode_response::<Rs>(op, status, body) {
        Ok(response) => {
            assert!(success, "HTTP {status} is never a success");
            let again = Rs::decode(&response.encode_to_vec()[..]);
            assert_eq!(
                again.as_ref(),
                Ok(&response),
                "a decoded response round-trips"
            );
            return Ok(());
        }
        Err(error) => error,
    };
    assert_eq!(error.operation(), op);
    let unexpected = matches!(
        &error,
        Error::UnexpectedResponse { status: s, attempts: 1, .. } if *s == status
    );
    if success {
        assert!(unexpected, "a 2xx fails only as unexpected: {error:?}");
        assert!(
            Rs::decode(body).is_err(),
            "a 2xx fails only when its body does not decode"
        );
        assert!(
            !error.is_transient(),
            "an undecodable success is not retried"
        );
    } else {
        check_error(&error, status, body, unexpected);
    }
    // As `VssClient::call` does before deciding to retry: the text stays bounded.
    error.set_attempts(u32::MAX);
    let text = error.to_string();
    assert!(text.starts_with(op.path()), "{text}");
    assert!(
        text.len() <= MESSAGE_LIMIT + ERROR_TEXT_OVERHEAD,
        "an error's text is bounded, whatever the body: {} bytes",
        text.len()
    );
    assert!(
        !text.chars().any(char::is_control),
        "an error's text is one inert line: {text:?}"
    );
    let _ = format!("{error:?}");
    Err(error)
}

/// The error of a non-2xx answer is decided by the code of its `ErrorResponse`, never the status.
fn check_error(error: &Error, status: u16, body: &[u8], unexpected: bool) {
    let decoded = ErrorResponse::decode(body)
        .ok()
        .filter(|_| !body.is_empty());
    let Some(response) = decoded else {
        assert!(unexpected, "an empty or undecodable error body: {error:?}");
        assert_eq!(error.is_transient(), status >= 500 || status == 429);
        return;
    };
    let message = match error {
        Error::Conflict { message, .. } => {
            assert_eq!(response.error_code, ErrorCode::ConflictException as i32);
            message
        }
        Error::NoSuchKey {
            message,
            store_id,
            key,
            ..
        } => {
            assert_eq!(response.error_code, ErrorCode::NoSuchKeyException as i32);
            // `get_object` names the store and key it asked for.
            assert!(store_id.is_empty() && key.is_empty());
            message
        }
        Error::InvalidRequest {
            status: s, message, ..
        } => {
            assert_eq!(
                response.error_code,
                ErrorCode::InvalidRequestException as i32
            );
            assert_eq!(*s, status);
            message
        }
        Error::Auth { message, .. } => {
            assert_eq!(response.error_code, ErrorCode::AuthException as i32);
            message
        }
        Error::Internal {
            message, attempts, ..
        } => {
            assert_eq!(
                response.error_code,
                ErrorCode::InternalServerException as i32
            );
            assert_eq!(*attempts, 1);
            message
        }
        Error::UnknownErrorCode {
            status: s,
            code,
            message,
            ..
        } => {
            assert_eq!(*code, response.error_code);
            assert!(
                ErrorCode::from_i32(*code).is_none_or(|c| c == ErrorCode::Unknown),
                "a known code {code} maps to its own error"
            );
            assert_eq!(*s, status);
            message
        }
        other => panic!("a decodable ErrorResponse gives a protocol error, not {other:?}"),
    };
    assert_eq!(
        error.is_transient(),
        response.error_code == ErrorCode::InternalServerException as i32,
        "only INTERNAL_SERVER is retried, whatever the status: {error:?}"
    );
    let raw = &response.message;
    if raw.len() <= MESSAGE_LIMIT && !raw.chars().any(char::is_control) {
        assert_eq!(message, raw, "a short, plain message is carried whole");
    } else {
        assert!(
            message.len() <= MESSAGE_LIMIT + 64,
            "{} bytes",
            message.len()
        );
        assert!(!message.chars().any(char::is_control), "{message:?}");
    }
}

/// A `vss_responses` input: `op`'s answer with `status` (100 to 599) and `body`.
pub fn vss_response_input(op: Operation, status: u16, body: &[u8]) -> Vec<u8> {
    assert!(
        (VSS_RESPONSE_MIN_STATUS..600).contains(&status),
        "status {status}"
    );
    let index = VSS_RESPONSE_OPS
        .iter()
        .position(|&o| o == op)
        .expect("one of the four calls");
    let mut out = vec![index as u8];
    out.extend_from_slice(&(status - VSS_RESPONSE_MIN_STATUS).to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// The `vss_responses` seeds, named: each response message as a server sends it (200), a success
/// body that does not decode, every error code (and an unknown one) under its own status and
/// others (500, as old servers send every error; 403, as Till's server refuses a cashier token),
/// an over-long message and one with escape sequences, and a proxy's empty and HTML error pages.
pub fn vss_response_seeds() -> Vec<(String, Vec<u8>)> {
    let seed = |name: &str, op, status, body: Vec<u8>| {
        (
            format!("seed-{name}"),
            vss_response_input(op, status, &body),
        )
    };
    let error = |code: i32, message: &str| {
        ErrorResponse {
            error_code: code,
            message: message.to_owned(),
        }
        .encode_to_vec()
    };
    let get = GetObjectResponse {
        value: Some(KeyValue::new("head", 7, b"sealed head".to_vec())),
    }
    .encode_to_vec();
    let list = |token: Option<&str>| {
        ListKeyVersionsResponse {
            key_versions: vec![
                KeyValue::new("head", 7, Vec::new()),
                KeyValue::new("seg/0", 1, Vec::new()),
            ],
            next_page_token: token.map(str::to_owned),
            global_version: Some(3),
        }
        .encode_to_vec()
    };
    let mut out = vec![
        seed("get-object", Operation::GetObject, 200, get.clone()),
        seed("get-object-no-value", Operation::GetObject, 200, Vec::new()),
        seed(
            "get-object-truncated",
            Operation::GetObject,
            200,
            get[..get.len() - 3].to_vec(),
        ),
        seed(
            "put-objects",
            Operation::PutObjects,
            200,
            PutObjectResponse {}.encode_to_vec(),
        ),
        seed(
            "delete-object",
            Operation::DeleteObject,
            200,
            DeleteObjectResponse {}.encode_to_vec(),
        ),
        seed(
            "list-page",
            Operation::ListKeyVersions,
            200,
            list(Some("seg/0")),
        ),
        seed(
            "list-last-page",
            Operation::ListKeyVersions,
            200,
            list(None),
        ),
        seed(
            "list-as-put",
            Operation::PutObjects,
            204,
            list(Some("seg/0")),
        ),
        seed("proxy-empty-502", Operation::PutObjects, 502, Vec::new()),
        seed(
            "proxy-html-503",
            Operation::GetObject,
            503,
            b"<html><body>503 Service Unavailable</body></html>".to_vec(),
        ),
        seed(
            "proxy-html-404",
            Operation::ListKeyVersions,
            404,
            b"<html>not found</html>".to_vec(),
        ),
        seed(
            "error-long-message",
            Operation::PutObjects,
            409,
            error(
                ErrorCode::ConflictException as i32,
                &"version mismatch ".repeat(200),
            ),
        ),
        seed(
            "error-escape-sequences",
            Operation::GetObject,
            400,
            error(
                ErrorCode::InvalidRequestException as i32,
                "bad\u{1b}[2J\r\nkey",
            ),
        ),
    ];
    let codes = [
        ("unknown", ErrorCode::Unknown as i32, 500),
        ("conflict", ErrorCode::ConflictException as i32, 409),
        ("invalid", ErrorCode::InvalidRequestException as i32, 400),
        ("internal", ErrorCode::InternalServerException as i32, 500),
        ("no-such-key", ErrorCode::NoSuchKeyException as i32, 404),
        ("auth", ErrorCode::AuthException as i32, 401),
        ("code-42", 42, 418),
    ];
    for (i, (name, code, own)) in codes.into_iter().enumerate() {
        let op = VSS_RESPONSE_OPS[i % VSS_RESPONSE_OPS.len()];
        let mut statuses = vec![own, 500, 403, 413];
        statuses.dedup();
        for status in statuses {
            out.push(seed(
                &format!("error-{name}-{status}"),
                op,
                status,
                error(code, &format!("{name} from the server")),
            ));
        }
    }
    out
}
