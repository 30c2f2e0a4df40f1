//! Staging, undo and outcomes of one partition's state, against a real local store file.

use std::sync::Arc;

use super::*;

fn defs() -> Arc<[StoreDef]> {
    vec![
        StoreDef {
            name: "counts".into(),
            changelog: Arc::from("app-counts-changelog"),
            timers: false,
        },
        StoreDef {
            name: "timers".into(),
            changelog: Arc::from("app-timers-changelog"),
            timers: true,
        },
    ]
    .into()
}

fn open(dir: &tempfile::TempDir) -> PartitionState {
    let local = LocalStore::open(&dir.path().join("in-3.redb")).expect("open");
    PartitionState::new(3, local, defs()).expect("state")
}

fn value(part: &PartitionState, key: &str) -> Option<Vec<u8>> {
    part.get(0, key.as_bytes()).expect("get")
}

#[test]
fn reads_see_staged_writes_and_the_local_store_changes_only_at_commit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut part = open(&dir);
    part.begin_record(Some(10)).expect("begin");
    part.put(0, b"a", Some(b"1".to_vec()));
    part.end_record();
    assert_eq!(value(&part, "a"), Some(b"1".to_vec()));
    assert_eq!(part.local.get("counts", b"a").expect("local"), None);
    let mut sent = Vec::new();
    part.take_changelog(&mut sent);
    sent.retain(|w| &*w.topic == "app-counts-changelog");
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].partition, 3);
    part.committed(|topic| (topic == "app-counts-changelog").then_some(42))
        .expect("commit");
    assert_eq!(
        part.local.get("counts", b"a").expect("local"),
        Some(b"1".to_vec())
    );
    assert_eq!(part.local.offset("counts").expect("offset"), 42);
    assert_eq!(part.local.offset("timers").expect("offset"), 0);
}

#[test]
fn an_abort_drops_staged_writes_and_stream_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut part = open(&dir);
    part.begin_record(Some(10)).expect("begin");
    part.end_record();
    part.committed(|_| Some(1)).expect("commit");
    part.begin_record(Some(50)).expect("begin");
    part.put(0, b"a", Some(b"9".to_vec()));
    part.end_record();
    assert_eq!(part.stream_time, Some(50));
    part.aborted();
    assert_eq!(value(&part, "a"), None);
    assert_eq!(part.stream_time, Some(10));
    part.committed(|_| Some(99)).expect("commit of nothing");
    assert_eq!(part.local.get("counts", b"a").expect("local"), None);
}

#[test]
fn a_failed_record_is_undone_but_earlier_records_of_the_batch_stay() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut part = open(&dir);
    part.begin_record(Some(5)).expect("begin");
    part.put(0, b"a", Some(b"1".to_vec()));
    part.end_record();
    part.begin_record(Some(7)).expect("begin");
    part.put(0, b"a", Some(b"2".to_vec()));
    part.put(0, b"b", Some(b"1".to_vec()));
    part.undo_record();
    assert_eq!(value(&part, "a"), Some(b"1".to_vec()));
    assert_eq!(value(&part, "b"), None);
    assert_eq!(part.stream_time, Some(5));
    let mut sent = Vec::new();
    part.take_changelog(&mut sent);
    assert_eq!(
        sent.len(),
        2,
        "one write of a, one of the stream time: {sent:?}"
    );
}

#[test]
fn a_record_sends_each_key_once_with_its_last_value_and_deletes_as_tombstones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut part = open(&dir);
    part.begin_record(None).expect("begin");
    part.put(0, b"a", Some(b"1".to_vec()));
    part.put(0, b"a", Some(b"2".to_vec()));
    part.put(0, b"b", Some(b"1".to_vec()));
    part.put(0, b"b", None);
    part.end_record();
    let mut sent = Vec::new();
    part.take_changelog(&mut sent);
    let pairs: Vec<(Vec<u8>, Option<Vec<u8>>)> =
        sent.into_iter().map(|w| (w.key, w.value)).collect();
    assert_eq!(
        pairs,
        vec![(b"a".to_vec(), Some(b"2".to_vec())), (b"b".to_vec(), None)]
    );
}

#[test]
fn ranges_merge_staged_writes_over_the_local_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut part = open(&dir);
    part.begin_record(None).expect("begin");
    for key in ["a", "b", "c", "d"] {
        part.put(0, key.as_bytes(), Some(b"old".to_vec()));
    }
    part.end_record();
    part.committed(|_| Some(4)).expect("commit");
    part.begin_record(None).expect("begin");
    part.put(0, b"b", None);
    part.put(0, b"bb", Some(b"new".to_vec()));
    part.end_record();
    let keys: Vec<Vec<u8>> = part
        .range(0, b"a", Some(b"d"), 10)
        .expect("range")
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(keys, vec![b"a".to_vec(), b"bb".to_vec(), b"c".to_vec()]);
    let first_two = part.range(0, b"a", None, 2).expect("range");
    assert_eq!(first_two.len(), 2);
}

#[test]
fn stream_time_survives_a_reopen_through_the_timer_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut part = open(&dir);
    part.begin_record(Some(1_000)).expect("begin");
    part.end_record();
    part.begin_record(Some(400)).expect("begin");
    part.end_record();
    part.committed(|_| Some(2)).expect("commit");
    drop(part);
    let part = open(&dir);
    assert_eq!(part.stream_time, Some(1_000));
}
