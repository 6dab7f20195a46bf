//! Sealed segments: every single-byte flip and every truncation is refused
//! with the right error; another name, store, key or kind is refused.

use till_log::segment::{
    Binding, ENVELOPE_FORMAT_VERSION, HEADER_LEN, Kind, Part, SealKey, SegmentError, open,
    open_segment, seal, seal_segment,
};
use till_log::{DeviceId, Event, Hash, Key, Op};

fn events(n: u64) -> Vec<Event> {
    let mut prev = Hash::GENESIS;
    (1..=n)
        .map(|seq| {
            let e = Event {
                seq,
                key: Key::new("monitors", "", format!("chan{}", seq % 3)),
                version: seq / 3,
                op: Op::Put(vec![seq as u8; 40]),
                at_ms: 1_700_000_000_000 + seq,
                device: DeviceId([1; 16]),
                epoch: 1,
                prev_hash: prev,
            };
            prev = e.hash();
            e
        })
        .collect()
}

fn key() -> SealKey {
    SealKey::from_bytes([42; 32])
}

const STORE: &str = "store-a";
const NAME: &str = "seg-0000001";

#[test]
fn round_trip_with_and_without_compression() {
    let evs = events(20);
    for compress in [false, true] {
        let sealed = seal_segment(&evs, &key(), &Binding::new(STORE, NAME), compress).unwrap();
        assert_eq!(sealed[4], ENVELOPE_FORMAT_VERSION);
        let opened = open_segment(&sealed, &key(), &Binding::new(STORE, NAME)).unwrap();
        assert_eq!(opened, evs);
    }
    let plain = seal_segment(&evs, &key(), &Binding::new(STORE, NAME), false).unwrap();
    let small = seal_segment(&evs, &key(), &Binding::new(STORE, NAME), true).unwrap();
    assert!(
        small.len() < plain.len(),
        "compression should help repetitive events"
    );
}

/// A thread reuses one compression context: each segment it seals after others opens to its
/// own events and is exactly as long as the same segment sealed on a fresh thread.
#[test]
fn a_reused_compression_context_seals_each_segment_alone() {
    let sizes = [20, 1, 300, 7, 20];
    let sealed: Vec<Vec<u8>> = sizes
        .iter()
        .map(|&n| seal_segment(&events(n), &key(), &Binding::new(STORE, NAME), true).unwrap())
        .collect();
    for (&n, sealed) in sizes.iter().zip(&sealed) {
        let opened = open_segment(sealed, &key(), &Binding::new(STORE, NAME)).unwrap();
        assert_eq!(opened, events(n));
        let alone = std::thread::spawn(move || {
            seal_segment(&events(n), &key(), &Binding::new(STORE, NAME), true).unwrap()
        })
        .join()
        .unwrap();
        assert_eq!(sealed.len(), alone.len(), "{n} events");
    }
}

#[test]
fn every_single_byte_flip_is_refused_with_the_right_error() {
    for compress in [false, true] {
        let sealed =
            seal_segment(&events(5), &key(), &Binding::new(STORE, NAME), compress).unwrap();
        for i in 0..sealed.len() {
            for mask in [0x01u8, 0x80, 0xff] {
                let mut bad = sealed.clone();
                bad[i] ^= mask;
                let err = open_segment(&bad, &key(), &Binding::new(STORE, NAME)).unwrap_err();
                let ok = match i {
                    0..4 => err == SegmentError::NotAnEnvelope,
                    4 => matches!(err, SegmentError::UnknownVersion { .. }),
                    5..HEADER_LEN => err == SegmentError::Altered(Part::Header),
                    _ => err == SegmentError::Altered(Part::Body),
                };
                assert!(ok, "flip {mask:#x} at byte {i}: got {err:?}");
            }
        }
    }
}

#[test]
fn every_truncation_is_refused_as_truncated() {
    let sealed = seal_segment(&events(5), &key(), &Binding::new(STORE, NAME), true).unwrap();
    for len in 0..sealed.len() {
        let err = open_segment(&sealed[..len], &key(), &Binding::new(STORE, NAME)).unwrap_err();
        assert!(
            matches!(err, SegmentError::Truncated { found, .. } if found == len),
            "cut to {len} bytes: got {err:?}"
        );
    }
    let mut longer = sealed.clone();
    longer.push(0);
    assert_eq!(
        open_segment(&longer, &key(), &Binding::new(STORE, NAME)).unwrap_err(),
        SegmentError::TrailingBytes(1)
    );
}

#[test]
fn another_name_store_key_or_kind_is_refused() {
    let sealed = seal_segment(&events(3), &key(), &Binding::new(STORE, NAME), false).unwrap();
    assert_eq!(
        open_segment(&sealed, &key(), &Binding::new(STORE, "seg-0000002")).unwrap_err(),
        SegmentError::WrongName("seg-0000002".into())
    );
    assert_eq!(
        open_segment(&sealed, &key(), &Binding::new("store-b", NAME)).unwrap_err(),
        SegmentError::WrongStore("store-b".into())
    );
    assert_eq!(
        open_segment(
            &sealed,
            &SealKey::from_bytes([43; 32]),
            &Binding::new(STORE, NAME)
        )
        .unwrap_err(),
        SegmentError::WrongKey
    );
    assert_eq!(
        open(Kind::Head, &sealed, &key(), &Binding::new(STORE, NAME)).unwrap_err(),
        SegmentError::WrongKind {
            expected: 3,
            found: 1
        }
    );
}

#[test]
fn extra_authenticated_bytes_are_bound() {
    let b = Binding {
        store_id: STORE,
        name: "head",
        extra: b"lease: device 1 epoch 2",
    };
    let sealed = seal(Kind::Head, b"manifest", &key(), &b, false).unwrap();
    assert_eq!(open(Kind::Head, &sealed, &key(), &b).unwrap(), b"manifest");
    let forged = Binding {
        extra: b"lease: device 9 epoch 2",
        ..b
    };
    assert_eq!(
        open(Kind::Head, &sealed, &key(), &forged).unwrap_err(),
        SegmentError::Altered(Part::Body)
    );
}

#[test]
fn unknown_format_version_is_refused() {
    let mut sealed = seal_segment(&events(2), &key(), &Binding::new(STORE, NAME), false).unwrap();
    sealed[4] = 2;
    // Even with a valid checksum for the new version, version 2 is unknown.
    let sum = blake3::hash(&sealed[..60]);
    sealed[60..68].copy_from_slice(&sum.as_bytes()[..8]);
    assert_eq!(
        open_segment(&sealed, &key(), &Binding::new(STORE, NAME)).unwrap_err(),
        SegmentError::UnknownVersion {
            found: 2,
            supported: 1
        }
    );
}

#[test]
fn authentic_but_undecodable_payload_is_malformed() {
    let sealed = seal(
        Kind::Segment,
        b"\xff\xff\xff",
        &key(),
        &Binding::new(STORE, NAME),
        false,
    )
    .unwrap();
    assert!(matches!(
        open_segment(&sealed, &key(), &Binding::new(STORE, NAME)).unwrap_err(),
        SegmentError::Malformed(_)
    ));
}
