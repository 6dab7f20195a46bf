//! Property test: the log against a plain in-memory model.
//!
//! Random sequences of puts, deletes (of live, deleted and absent keys),
//! re-creates, batches, replays at random seqs and reopens; after every step
//! the log's state, versions, histories and replays equal the model's.

use std::collections::BTreeMap;

use proptest::prelude::*;
use till_log::{Durability, Key, Log, LogOptions, Op, Write};

#[derive(Clone, Debug)]
enum Step {
    Batch(Vec<(u8, Option<u8>)>), // (key index, Some(value) = put, None = delete)
    Replay(u16),
    Reopen,
    Ship(u16),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => prop::collection::vec((0u8..6, prop::option::weighted(0.7, any::<u8>())), 1..5)
            .prop_map(Step::Batch),
        2 => any::<u16>().prop_map(Step::Replay),
        1 => Just(Step::Reopen),
        1 => any::<u16>().prop_map(Step::Ship),
    ]
}

fn key_of(i: u8) -> Key {
    // Two namespaces so listing is exercised across them.
    Key::new(
        if i.is_multiple_of(2) { "even" } else { "odd" },
        "",
        format!("k{i}"),
    )
}

/// The model: every event as (key, version, value), and per key its
/// (version, live) so far.
#[derive(Default)]
struct Model {
    events: Vec<(Key, u64, Option<Vec<u8>>)>,
    keys: BTreeMap<Key, (u64, bool)>,
    shipped: u64,
}

impl Model {
    fn apply(&mut self, key: Key, value: Option<Vec<u8>>) -> Option<u64> {
        let version = match (self.keys.get(&key), &value) {
            (None, Some(_)) => 0,
            (None, None) => return None,
            (Some(&(_, false)), None) => return None,
            (Some(&(v, _)), _) => v + 1,
        };
        self.keys.insert(key.clone(), (version, value.is_some()));
        self.events.push((key, version, value));
        Some(self.events.len() as u64)
    }

    /// Live values after the first `seq` events.
    fn state_at(&self, seq: u64) -> BTreeMap<Key, (u64, Option<Vec<u8>>)> {
        let mut out = BTreeMap::new();
        for (k, v, val) in &self.events[..seq as usize] {
            out.insert(k.clone(), (*v, val.clone()));
        }
        out
    }
}

fn check_state(state: &till_log::State, expected: &BTreeMap<Key, (u64, Option<Vec<u8>>)>) {
    let got: BTreeMap<Key, (u64, Option<Vec<u8>>)> = state
        .entries()
        .map(|(k, e)| (k.clone(), (e.version, e.value.clone())))
        .collect();
    assert_eq!(&got, expected);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn log_matches_model(steps in prop::collection::vec(step(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.redb");
        let options = LogOptions { durability: Durability::Volatile, ..LogOptions::default() };
        let mut log = Some(Log::open_with(&path, options.clone()).unwrap());
        let mut model = Model::default();

        for step in steps {
            let l = log.as_ref().unwrap();
            match step {
                Step::Batch(ops) => {
                    let writes: Vec<Write> = ops
                        .iter()
                        .map(|&(k, v)| match v {
                            Some(v) => Write::put(key_of(k), vec![v; (v % 7) as usize]),
                            None => Write::delete(key_of(k)),
                        })
                        .collect();
                    let expected: Vec<Option<u64>> = ops
                        .iter()
                        .map(|&(k, v)| model.apply(key_of(k), v.map(|v| vec![v; (v % 7) as usize])))
                        .collect();
                    let out = l.append(writes).unwrap();
                    let got: Vec<Option<u64>> = out.results.iter().map(|r| r.map(|a| a.seq)).collect();
                    prop_assert_eq!(got, expected);
                    prop_assert_eq!(out.head_seq, model.events.len() as u64);
                }
                Step::Replay(at) => {
                    let head = model.events.len() as u64;
                    let seq = if head == 0 { 0 } else { at as u64 % (head + 1) };
                    check_state(&l.replay(seq).unwrap(), &model.state_at(seq));
                    prop_assert!(l.replay(head + 1).is_err());
                }
                Step::Reopen => {
                    drop(log.take());
                    log = Some(Log::open_with(&path, options.clone()).unwrap());
                }
                Step::Ship(at) => {
                    let head = model.events.len() as u64;
                    let seq = if head == 0 { 0 } else { at as u64 % (head + 1) };
                    l.mark_shipped(seq).unwrap();
                    model.shipped = model.shipped.max(seq);
                }
            }

            // After every step: state, versions, histories, listing, outbox.
            let l = log.as_ref().unwrap();
            let head = model.events.len() as u64;
            prop_assert_eq!(l.head().unwrap().seq, head);
            check_state(&l.state().unwrap(), &model.state_at(head));
            for i in 0..6u8 {
                let k = key_of(i);
                let history: Vec<(u64, Option<Vec<u8>>)> = l
                    .history(&k)
                    .unwrap()
                    .into_iter()
                    .map(|e| (e.version, match e.op { Op::Put(v) => Some(v), Op::Delete => None }))
                    .collect();
                let expected: Vec<(u64, Option<Vec<u8>>)> = model
                    .events
                    .iter()
                    .filter(|(ek, _, _)| *ek == k)
                    .map(|(_, v, val)| (*v, val.clone()))
                    .collect();
                prop_assert_eq!(history, expected);
            }
            let live_even: Vec<(String, u64)> = model
                .keys
                .iter()
                .filter(|(k, (_, live))| *live && k.namespace == "even")
                .map(|(k, (v, _))| (k.key.clone(), *v))
                .collect();
            prop_assert_eq!(l.list("even", "").unwrap(), live_even);
            prop_assert_eq!(l.shipped().unwrap(), model.shipped);
            prop_assert_eq!(l.pending(usize::MAX).unwrap().len() as u64, head - model.shipped);
        }
        let report = log.as_ref().unwrap().verify().unwrap();
        prop_assert_eq!(report.events, model.events.len() as u64);
    }
}
