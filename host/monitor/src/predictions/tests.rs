use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::keys::{KeySource, Keyring, create_key_file, rotate_key_file};
use crate::redaction::Redaction;

fn record(id: &str, size: usize) -> PredictionRecord {
    let tensor = |name: &str, fill: u8| Tensor {
        name: name.into(),
        datatype: Datatype::Uint8,
        shape: vec![size as u64],
        data: vec![fill; size].into(),
    };
    PredictionRecord {
        id: id.into(),
        caller: None,
        time_ms: 1,
        model: "m".into(),
        version: 2,
        sha256: "ab".repeat(32),
        role: Role::Live,
        requested: vec![],
        inputs: vec![tensor("x", 1)],
        outputs: vec![tensor("y", 2), tensor("z", 3)],
        digests: Default::default(),
        redacted: Default::default(),
    }
}

/// A record whose input is a recognisable text, by `caller`.
fn personal(id: &str, caller: &str) -> PredictionRecord {
    let mut record = record(id, 4);
    record.caller = Some(caller.into());
    record.inputs[0].data = format!("secret-of-{caller}-{id}").into_bytes().into();
    record.inputs[0].shape = vec![record.inputs[0].data.len() as u64];
    record
}

fn encode(record: &PredictionRecord) -> Vec<u8> {
    let mut bytes = Vec::new();
    record.write_to(&mut bytes, 0).expect("encode");
    bytes
}

fn bounds(max_file_bytes: u64, max_total_bytes: u64) -> LogBounds {
    LogBounds { max_file_bytes, max_total_bytes, max_full_tensor_bytes: 0, ..LogBounds::default() }
}

fn open(dir: &Path, bounds: LogBounds) -> PredictionLog {
    PredictionLog::open(dir, bounds, LogProtection::default()).expect("open")
}

fn sealed(dir: &Path, key_file: &Path) -> PredictionLog {
    let protection = LogProtection { keys: Some(KeySource::file(key_file).expect("keys")), hash_key: None };
    PredictionLog::open(dir, LogBounds { max_full_tensor_bytes: 0, ..LogBounds::default() }, protection).expect("open")
}

fn all_bytes(dir: &Path) -> Vec<u8> {
    files::log_files(dir).expect("files").iter().flat_map(|(_, p)| std::fs::read(p).expect("read")).collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn records_round_trip_rotate_and_stay_bounded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path(), bounds(4_000, 20_000));
    for i in 0..100 {
        log.append(record(&i.to_string(), 300), None);
    }
    drop(log); // flushes and joins the writer
    let files = files::log_files(dir.path()).expect("files");
    let total: u64 = files.iter().map(|(_, p)| std::fs::metadata(p).expect("meta").len()).sum();
    assert!(files.len() > 2, "rotated into {} files", files.len());
    assert!(total <= 20_000 + 4_000 + 6_000, "total {total}: the bound, the open file and one batch");
    let read = read_log(dir.path(), None).expect("read");
    assert!(read.problems.is_empty(), "{:?}", read.problems);
    let records = read.records;
    assert!(!records.is_empty() && records.len() < 100, "oldest removed: {}", records.len());
    assert_eq!(records.last(), Some(&record("99", 300)));
    let ids: Vec<u64> = records.iter().map(|r| r.id.parse().expect("id")).collect();
    assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "contiguous newest records: {ids:?}");
}

#[test]
fn a_torn_last_record_is_reported_and_the_rest_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("predictions-0000000000000-000000-00000000.eipl");
    let mut bytes = files::PLAIN_MAGIC.to_vec();
    bytes.extend(encode(&record("a", 10)));
    let second = encode(&record("b", 10));
    bytes.extend(&second[..second.len() - 3]);
    std::fs::write(&path, bytes).expect("write");
    let read = read_log(dir.path(), None).expect("read");
    assert_eq!(read.records, vec![record("a", 10)]);
    assert_eq!(read.problems.len(), 1);
    assert_eq!(read.problems[0].kind, ProblemKind::Truncated);
}

#[test]
fn tensors_over_the_full_size_are_logged_as_digests_and_say_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bounds = LogBounds { max_full_tensor_bytes: 100, ..LogBounds::default() };
    let log = open(dir.path(), bounds);
    log.append(record("small", 100), None);
    log.append(record("large", 101), None);
    drop(log);
    let records = read_log(dir.path(), None).expect("read").records;
    assert_eq!(records[0], record("small", 100), "at the limit: in full, bit-exact");
    let large = &records[1];
    let original = record("large", 101);
    assert!(large.inputs.iter().chain(&large.outputs).all(|t| t.data.is_empty()));
    assert_eq!(large.outputs[0].shape, vec![101], "the shape stays");
    for tensor in original.inputs.iter().chain(&original.outputs) {
        assert_eq!(large.digests[&tensor.name], edgeinfer_runtime::digest::sha256_hex(&tensor.data));
    }
    let mut again = Vec::new();
    large.write_to(&mut again, 0).expect("re-encode");
    assert_eq!(PredictionRecord::decode(&again[4..]).expect("decode"), *large, "digests survive a rewrite");
}

#[test]
fn over_its_byte_budget_the_log_drops_and_counts_instead_of_queueing() {
    let dir = tempfile::tempdir().expect("tempdir");
    // One second of budget holds two of these records (300 x 3 bytes + overhead each).
    let bounds = LogBounds { bytes_per_second: 3_000, max_full_tensor_bytes: 0, ..LogBounds::default() };
    let log = open(dir.path(), bounds);
    for i in 0..50 {
        log.append(record(&i.to_string(), 300), None);
    }
    let dropped = log.dropped();
    assert!((45..=48).contains(&dropped), "dropped {dropped} of 50");
    drop(log);
    assert_eq!(read_log(dir.path(), None).expect("read").records.len() as u64, 50 - dropped);
}

#[test]
fn queued_bytes_are_bounded_and_return_to_zero_once_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bounds = LogBounds { max_queued_bytes: 10_000, max_full_tensor_bytes: 0, ..LogBounds::default() };
    let log = open(dir.path(), bounds);
    for i in 0..200 {
        log.append(record(&i.to_string(), 1_000), None);
        assert!(log.queued_bytes() <= 10_000, "queued {}", log.queued_bytes());
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while log.queued_bytes() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5)); // the writer collects every 20 ms
    }
    assert_eq!(log.queued_bytes(), 0);
    assert_eq!(log.written() + log.dropped(), 200);
}

#[test]
fn sealed_logs_hold_no_plaintext_and_read_back_across_a_key_rotation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = dir.path().join("data.key");
    let first = create_key_file(&keys).expect("key");
    let log_dir = dir.path().join("log");
    let log = sealed(&log_dir, &keys);
    log.append(personal("1", "alice"), None);
    drop(log);
    let second = rotate_key_file(&keys).expect("rotate");
    let log = sealed(&log_dir, &keys);
    log.append(personal("2", "alice"), None);
    drop(log);

    let bytes = all_bytes(&log_dir);
    assert!(!contains(&bytes, b"secret-of-alice"), "no plaintext input on disk");
    assert!(!contains(&bytes, b"alice"), "no plaintext caller on disk");
    assert!(contains(&bytes, first.as_bytes()) && contains(&bytes, second.as_bytes()), "both key ids named");
    let read = read_log(&log_dir, Some(&Keyring::load(&keys).expect("keys"))).expect("read");
    assert!(read.problems.is_empty(), "{:?}", read.problems);
    // Two writers opened within one millisecond name their files by the same time and a
    // random tag, so the files' order is the tags' (seen in CI): compare by id.
    let mut records = read.records;
    records.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(records, vec![personal("1", "alice"), personal("2", "alice")], "bit-exact");

    let none = read_log(&log_dir, None).expect("read without keys");
    assert!(none.records.is_empty());
    assert_eq!(none.problems.len(), 2);
    assert!(none.problems.iter().all(|p| p.kind == ProblemKind::UnknownKey));
    for key in [&first, &second] {
        assert_eq!(none.problems.iter().filter(|p| p.message.contains(key.as_str())).count(), 1, "{key} named once");
    }

    let other = dir.path().join("other.key");
    create_key_file(&other).expect("other key");
    let wrong = read_log(&log_dir, Some(&Keyring::load(&other).expect("keys"))).expect("read");
    assert!(wrong.records.is_empty());
    assert!(wrong.problems[0].message.contains(&first), "names the key: {}", wrong.problems[0]);
}

#[test]
fn a_flipped_bit_or_a_cut_fails_only_its_own_segment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = dir.path().join("data.key");
    create_key_file(&keys).expect("key");
    let keyring = Keyring::load(&keys).expect("keys");
    let plain: Vec<Vec<u8>> = (0..3).map(|i| encode(&personal(&i.to_string(), "bob"))).collect();
    let segments: Vec<Vec<u8>> =
        plain.iter().map(|p| files::seal_segment(&keyring, p.clone()).expect("seal")).collect();
    let file = dir.path().join("predictions-0000000000001-000001-00000000.eipl");
    let write = |bytes: Vec<u8>| std::fs::write(&file, [files::SEALED_MAGIC, &bytes].concat()).expect("write");
    let ids = |read: &LogRead| read.records.iter().map(|r| r.id.clone()).collect::<Vec<_>>();

    let mut flipped = segments.concat();
    let middle = segments[0].len() + segments[1].len() / 2;
    flipped[middle] ^= 0x10;
    write(flipped);
    let read = read_log(dir.path(), Some(&keyring)).expect("read");
    assert_eq!(ids(&read), vec!["0", "2"], "the others are read");
    assert_eq!(read.problems.len(), 1);
    assert_eq!(read.problems[0].kind, ProblemKind::Tampered);
    assert_eq!(read.problems[0].offset as usize, files::SEALED_MAGIC.len() + segments[0].len());

    let mut length_damaged = segments.concat();
    length_damaged[segments[0].len() + 6] ^= 0x40; // the second segment's length
    write(length_damaged);
    let read = read_log(dir.path(), Some(&keyring)).expect("read");
    assert_eq!(ids(&read), vec!["0", "2"], "reading resumes at the next segment");
    assert_eq!(read.problems[0].kind, ProblemKind::Garbled);

    let whole = segments.concat();
    write(whole[..whole.len() - 10].to_vec());
    let read = read_log(dir.path(), Some(&keyring)).expect("read");
    assert_eq!(ids(&read), vec!["0", "1"]);
    assert_eq!(read.problems.len(), 1);
    assert_eq!(read.problems[0].kind, ProblemKind::Truncated);
    assert!(read.problems[0].to_string().contains("cut short"), "{}", read.problems[0]);

    std::fs::write(&file, b"not a log at all").expect("write");
    assert!(read_log(dir.path(), Some(&keyring)).unwrap_err().to_string().contains("not an edgeinfer prediction log"));
}

#[test]
fn erasure_removes_exactly_one_callers_records_from_every_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = dir.path().join("data.key");
    create_key_file(&keys).expect("key");
    let log_dir = dir.path().join("log");
    let small = LogBounds { max_file_bytes: 300, max_full_tensor_bytes: 0, ..LogBounds::default() };
    let protection = LogProtection { keys: Some(KeySource::file(&keys).expect("keys")), hash_key: None };
    let log = PredictionLog::open(&log_dir, small, protection).expect("open");
    let mut expected = Vec::new();
    for i in 0..12 {
        let caller = ["alice", "bob", "carol"][i % 3];
        log.append(personal(&i.to_string(), caller), None);
        if caller != "bob" {
            expected.push(personal(&i.to_string(), caller));
        }
    }
    let report = log.erase(Erasure::Caller("bob".into())).expect("erase");
    assert_eq!(report.erased, 4, "{report:?}");
    assert_eq!(report.request_ids, vec!["1", "4", "7", "10"]);
    assert!(report.complete(), "{report:?}");
    log.append(personal("12", "alice"), None);
    expected.push(personal("12", "alice"));
    let report = log.erase(Erasure::RequestId("3".into())).expect("erase by id");
    assert_eq!((report.erased, report.files_rewritten), (1, 1));
    expected.retain(|r| r.id != "3");
    drop(log);
    let keyring = Keyring::load(&keys).expect("keys");
    let read = read_log(&log_dir, Some(&keyring)).expect("read");
    assert!(read.problems.is_empty(), "{:?}", read.problems);
    assert_eq!(read.records, expected, "every other record kept, bit-exact");
    assert!(!contains(&all_bytes(&log_dir), b"secret-of-bob"));

    // Offline, a file a writer holds is left alone and named; others are erased.
    let files_before = files::log_files(&log_dir).expect("files").len();
    let writer = PredictionLog::open(&log_dir, small, LogProtection::default()).expect("writer");
    writer.append(personal("20", "carol"), None);
    let deadline = Instant::now() + Duration::from_secs(10);
    while files::log_files(&log_dir).expect("files").len() == files_before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5)); // the writer collects every 20 ms
    }
    let report = erase(&log_dir, Some(&keyring), &Erasure::Caller("carol".into())).expect("offline erase");
    assert_eq!(report.files_being_written.len(), 1, "{report:?}");
    assert!(!report.complete());
    assert_eq!(report.erased, 4);
}

#[test]
fn redaction_applies_before_writing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path(), LogBounds { max_full_tensor_bytes: 0, ..LogBounds::default() });
    let rules: Redaction = toml::from_str("inputs = { x = \"drop\" }\noutputs = { y = \"hash\" }").expect("rules");
    log.append(personal("1", "dave"), Some(Arc::new(rules)));
    drop(log);
    assert!(!contains(&all_bytes(dir.path()), b"secret-of-dave"));
    let records = read_log(dir.path(), None).expect("read").records;
    let record = &records[0];
    assert!(record.inputs[0].data.is_empty() && record.redacted["x"] == crate::redaction::Rule::Drop);
    assert_eq!(record.outputs[0].datatype, Datatype::Bytes);
    assert_eq!(record.redacted["y"], crate::redaction::Rule::Hash);
    assert_eq!(record.outputs[1], personal("1", "dave").outputs[1], "unnamed: kept");
    assert!(dir.path().join("redaction.key").exists());
}

#[test]
fn files_past_the_age_bound_are_removed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let old = dir.path().join("predictions-0000000000001-000001-00000000.eipl");
    let mut bytes = files::PLAIN_MAGIC.to_vec();
    bytes.extend(encode(&record("old", 4)));
    std::fs::write(&old, bytes).expect("write");
    let file = std::fs::File::options().write(true).open(&old).expect("open");
    file.set_modified(std::time::SystemTime::now() - Duration::from_secs(3 * 86_400)).expect("age it");
    let log = open(dir.path(), LogBounds { max_age_ms: 2 * 86_400_000, ..LogBounds::default() });
    log.append(record("new", 4), None);
    drop(log);
    assert!(!old.exists(), "three days old with a two-day bound: removed");
    let ids: Vec<String> = read_log(dir.path(), None).expect("read").records.into_iter().map(|r| r.id).collect();
    assert_eq!(ids, vec!["new"]);
}

#[test]
fn with_an_age_bound_a_quiet_log_still_moves_on_and_drops_old_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path(), LogBounds { max_age_ms: 400, ..LogBounds::default() });
    log.append(record("first", 4), None);
    let first_file = || files::log_files(dir.path()).expect("files").first().map(|(_, p)| p.clone());
    let deadline = Instant::now() + Duration::from_secs(10);
    while first_file().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let first = first_file().expect("a first file");
    let mut sent = 0;
    // One record every 50 ms: the file is closed after 200 ms (half the bound) and removed
    // once older than 400 ms, though it is nowhere near full.
    while first.exists() && Instant::now() < deadline {
        log.append(record(&format!("later-{sent}"), 4), None);
        sent += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!first.exists(), "the first file outlived the age bound");
    drop(log);
    let ids: Vec<String> = read_log(dir.path(), None).expect("read").records.into_iter().map(|r| r.id).collect();
    assert!(!ids.contains(&"first".to_string()) && ids.last() == Some(&format!("later-{}", sent - 1)), "{ids:?}");
}

#[test]
fn erasure_never_rewrites_a_file_it_cannot_read_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("predictions-0000000000001-000001-00000000.eipl");
    let mut bytes = files::PLAIN_MAGIC.to_vec();
    bytes.extend(encode(&personal("1", "erin")));
    let mut damaged = encode(&personal("2", "frank"));
    damaged[0] = 0xff; // a length running past the end of the file
    bytes.extend(damaged);
    bytes.extend(encode(&personal("3", "erin")));
    std::fs::write(&path, &bytes).expect("write");
    let report = erase(dir.path(), None, &Erasure::Caller("erin".into())).expect("erase");
    assert_eq!(report.erased, 0);
    assert_eq!(report.files_unreadable.len(), 1, "{report:?}");
    assert!(report.files_unreadable[0].contains("cut short"), "{report:?}");
    assert!(!report.complete());
    assert_eq!(std::fs::read(&path).expect("read"), bytes, "left as it was");
}
