//! Batch scoring end to end through the CLI: formats, bad rows, limits on failures,
//! checkpoints, and a million-row file killed with SIGKILL several times and resumed into
//! exactly the bytes of an uninterrupted run, matching onnxruntime's predictions.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Instant;

use arrow_array::{ArrayRef, Float32Array, RecordBatch, StringArray};
use serde_json::Value;

use crate::common::*;

/// A repository with the digits model.
fn digits_repo() -> tempfile::TempDir {
    let repo = tempfile::tempdir().expect("tempdir");
    copy_version(fixtures().digits.dir(), &repo.path().join("digits/1"), 1);
    repo
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf8")
}

/// Scores `input` into `output` with extra flags.
fn batch(repo: &Path, input: &Path, output: &Path, extra: &[&str]) -> Output {
    let args = ["batch", "--repo", path(repo), "--model", "digits", "--input", path(input), "--output", path(output)];
    edgeinfer(&[&args[..], extra].concat())
}

/// Holdout row `i % 450` as CSV cells.
fn cells(i: usize) -> String {
    let x = &holdout().x;
    x[i % x.len()].iter().map(|v| format!("{v}")).collect::<Vec<_>>().join(",")
}

fn header() -> String {
    let names: Vec<String> = (0..64).map(|j| format!("p{j}")).collect();
    format!("key,{}\n", names.join(","))
}

#[test]
fn formats_bad_rows_failure_limits_and_checkpoints() {
    let repo = digits_repo();
    let dir = tempfile::tempdir().expect("tempdir");
    let (rows, bad) = (1000usize, [3usize, 500, 998]);
    let mut csv = header();
    for i in 0..rows {
        let line = match i {
            3 => format!("r{i},{}", cells(i).replacen("0", "zero", 1)),
            500 => format!("r{i},1,2,3"),
            998 => format!("r{i},NaN,{}", cells(i).split_once(',').expect("cells").1),
            _ => format!("r{i},{}", cells(i)),
        };
        csv.push_str(&line);
        csv.push('\n');
    }
    let input = dir.path().join("in.csv");
    std::fs::write(&input, &csv).expect("input");

    // CSV in, CSV out; bad rows go to the errors file with their row, id and reason.
    let out = dir.path().join("out.csv");
    let run = batch(repo.path(), &input, &out, &["--id-column", "key", "--batch-size", "64"]);
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(stdout(&run).contains("997 rows ok, 3 failed"), "{}", stdout(&run));
    let text = std::fs::read_to_string(&out).expect("output");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 998);
    assert!(lines[0].starts_with("id,label,probabilities_0,") && lines[0].ends_with("probabilities_9"));
    let ids: Vec<&str> = lines[1..].iter().map(|l| l.split(',').next().expect("id")).collect();
    let expected: Vec<String> = (0..rows).filter(|i| !bad.contains(i)).map(|i| format!("r{i}")).collect();
    assert_eq!(ids, expected, "every good row once, in input order");
    for line in &lines[1..] {
        let id: usize = line.split(',').next().expect("id")[1..].parse().expect("row");
        let label: i64 = line.split(',').nth(1).expect("label").parse().expect("label");
        assert_eq!(label, holdout().ort_labels[id % 450], "row {id} matches onnxruntime");
    }
    let errors = std::fs::read_to_string(dir.path().join("out.csv.errors.csv")).expect("errors");
    let errors: Vec<&str> = errors.lines().collect();
    assert_eq!(errors[0], "row,id,error");
    assert!(
        errors[1].starts_with("3,r3,") && errors[1].contains("'zero") && errors[1].contains("is not a number"),
        "{errors:?}"
    );
    assert!(errors[2].starts_with("500,r500,") && errors[2].contains("4 columns, the header has 65"), "{errors:?}");
    assert!(errors[3].starts_with("998,r998,column 'p0' is NaN"), "{errors:?}");
    let summary: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("out.csv.summary.json")).expect("summary"))
            .expect("json");
    assert_eq!((summary["rows_ok"].clone(), summary["rows_failed"].clone()), (997.into(), 3.into()));

    // Rerunning a complete job does nothing; --restart scores again into the same bytes.
    let again = batch(repo.path(), &input, &out, &["--id-column", "key", "--batch-size", "64"]);
    assert!(stdout(&again).contains("already complete"), "{}", stdout(&again));
    let restarted = batch(repo.path(), &input, &out, &["--id-column", "key", "--batch-size", "64", "--restart"]);
    assert!(restarted.status.success() && !stdout(&restarted).contains("already"), "{}", stdout(&restarted));
    assert_eq!(std::fs::read_to_string(&out).expect("output"), text);
    // Other options are another job: the checkpoint says so.
    let other = batch(repo.path(), &input, &out, &["--id-column", "key", "--batch-size", "32"]);
    assert!(!other.status.success() && stderr(&other).contains("--restart"), "{}", stderr(&other));

    // The same rows as NDJSON (flat objects, objects naming the input, OIP `inputs`) and as
    // Parquet give the same output rows.
    let mut ndjson = String::new();
    let x = &holdout().x;
    for i in 0..rows {
        let line = match i % 3 {
            0 => {
                let fields: Vec<String> = x[i % 450].iter().enumerate().map(|(j, v)| format!("\"p{j}\": {v}")).collect();
                format!("{{\"key\": \"r{i}\", {}}}", fields.join(", "))
            }
            1 => serde_json::json!({"key": format!("r{i}"), "X": x[i % 450]}).to_string(),
            _ => serde_json::json!({"key": format!("r{i}"), "inputs": [{"name": "X", "shape": [1, 64], "datatype": "FP32", "data": x[i % 450]}]}).to_string(),
        };
        ndjson.push_str(&line);
        ndjson.push('\n');
    }
    let columns: Vec<String> = (0..64).map(|j| format!("p{j}")).collect();
    let ndjson_input = dir.path().join("in.ndjson");
    std::fs::write(&ndjson_input, ndjson).expect("ndjson");
    let ndjson_out = dir.path().join("from-ndjson.csv");
    let run = batch(repo.path(), &ndjson_input, &ndjson_out, &["--id-column", "key", "--columns", &columns.join(",")]);
    assert!(run.status.success(), "{}", stderr(&run));
    let parquet_input = dir.path().join("in.parquet");
    write_parquet(&parquet_input, rows);
    let parquet_out = dir.path().join("from-parquet.csv");
    let run = batch(repo.path(), &parquet_input, &parquet_out, &["--id-column", "key"]);
    assert!(run.status.success(), "{}", stderr(&run));
    let all_rows = restarted_output(repo.path(), dir.path());
    assert_eq!(std::fs::read_to_string(&ndjson_out).expect("ndjson out"), all_rows);
    assert_eq!(std::fs::read_to_string(&parquet_out).expect("parquet out"), all_rows);

    // A row the model refuses inside a chunk fails alone: the chunk is retried row by row.
    let mut poisoned = String::new();
    for (i, row) in x.iter().take(40).enumerate() {
        let (shape, data) = if i == 17 { ([1, 63], &row[..63]) } else { ([1, 64], &row[..]) };
        let inputs = serde_json::json!([{"name": "X", "shape": shape, "datatype": "FP32", "data": data}]);
        poisoned.push_str(&serde_json::json!({"id": format!("q{i}"), "inputs": inputs}).to_string());
        poisoned.push('\n');
    }
    let poisoned_input = dir.path().join("poisoned.ndjson");
    std::fs::write(&poisoned_input, poisoned).expect("poisoned");
    let poisoned_out = dir.path().join("poisoned.ndjson.out.ndjson");
    let run = batch(repo.path(), &poisoned_input, &poisoned_out, &["--batch-size", "16"]);
    assert!(stdout(&run).contains("39 rows ok, 1 failed"), "{}{}", stdout(&run), stderr(&run));
    let scored = std::fs::read_to_string(&poisoned_out).expect("output");
    let ids: Vec<String> = scored
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("json")["id"].as_str().expect("id").to_string())
        .collect();
    assert_eq!(ids, (0..40).filter(|i| *i != 17).map(|i| format!("q{i}")).collect::<Vec<_>>());
    let errors = std::fs::read_to_string(dir.path().join("poisoned.ndjson.out.ndjson.errors.ndjson")).expect("errors");
    let error: Value = serde_json::from_str(errors.trim()).expect("one error");
    assert_eq!((error["row"].clone(), error["id"].clone()), (17.into(), "q17".into()));
    assert!(error["error"].as_str().expect("error").contains("'X'"), "{error}");

    // Parquet and NDJSON output hold the same values.
    let parquet_output = dir.path().join("out.parquet");
    let run = batch(repo.path(), &parquet_input, &parquet_output, &["--id-column", "key"]);
    assert!(run.status.success(), "{}", stderr(&run));
    let (ids, labels) = read_parquet_labels(&parquet_output);
    assert_eq!(ids.len(), rows);
    for (id, label) in ids.iter().zip(&labels) {
        let row: usize = id[1..].parse().expect("row");
        assert_eq!(*label, holdout().ort_labels[row % 450]);
    }

    // --max-errors stops the job with a clear message.
    let limited =
        batch(repo.path(), &input, &dir.path().join("limited.csv"), &["--max-errors", "2", "--id-column", "key"]);
    assert!(!limited.status.success());
    assert!(stderr(&limited).contains("3 of") && stderr(&limited).contains("--max-errors"), "{}", stderr(&limited));
    assert!(!dir.path().join("limited.csv").exists(), "an incomplete output never appears under its name");

    // Inputs that do not fit are refused before anything runs, naming the problem.
    let narrow = dir.path().join("narrow.csv");
    std::fs::write(&narrow, "a,b\n1,2\n").expect("narrow");
    let refused = batch(repo.path(), &narrow, &dir.path().join("n.csv"), &[]);
    assert!(
        stderr(&refused).contains("2 feature columns, but input 'X' takes 64 values per row"),
        "{}",
        stderr(&refused)
    );
    let unknown = batch(repo.path(), &dir.path().join("in.xlsx"), &dir.path().join("n.csv"), &[]);
    assert!(stderr(&unknown).contains("unknown format"), "{}", stderr(&unknown));
    let missing = batch(repo.path(), &input, &dir.path().join("m.csv"), &["--id-column", "nope"]);
    assert!(stderr(&missing).contains("no id column named 'nope'"), "{}", stderr(&missing));
}

/// The output of the CSV rows with every row good (the bad ones replaced).
fn restarted_output(repo: &Path, dir: &Path) -> String {
    let mut csv = header();
    for i in 0..1000 {
        csv.push_str(&format!("r{i},{}\n", cells(i)));
    }
    let input = dir.join("all-good.csv");
    std::fs::write(&input, csv).expect("input");
    let out = dir.join("all-good.out.csv");
    let run = batch(repo, &input, &out, &["--id-column", "key"]);
    assert!(run.status.success(), "{}", stderr(&run));
    std::fs::read_to_string(out).expect("output")
}

fn write_parquet(path: &Path, rows: usize) {
    let x = &holdout().x;
    let mut columns: Vec<(String, ArrayRef)> =
        vec![("key".into(), Arc::new(StringArray::from_iter_values((0..rows).map(|i| format!("r{i}")))) as ArrayRef)];
    columns.extend((0..64).map(|j| {
        let values = Float32Array::from_iter_values((0..rows).map(|i| x[i % 450][j]));
        (format!("p{j}"), Arc::new(values) as ArrayRef)
    }));
    let batch = RecordBatch::try_from_iter(columns).expect("batch");
    let file = std::fs::File::create(path).expect("create");
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).expect("writer");
    writer.write(&batch).expect("write");
    writer.close().expect("close");
}

fn read_parquet_labels(path: &Path) -> (Vec<String>, Vec<i64>) {
    use arrow_array::cast::AsArray;
    let file = std::fs::File::open(path).expect("open");
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .expect("parquet")
        .build()
        .expect("reader");
    let (mut ids, mut labels) = (Vec::new(), Vec::new());
    for batch in reader {
        let batch = batch.expect("batch");
        let id = batch.column_by_name("id").expect("id").as_string::<i32>();
        let label = batch.column_by_name("label").expect("label").as_primitive::<arrow_array::types::Int64Type>();
        assert!(batch.column_by_name("probabilities").is_some_and(|c| c.as_list_opt::<i32>().is_some()));
        ids.extend(id.iter().map(|v| v.expect("id").to_string()));
        labels.extend(label.iter().map(|v| v.expect("label")));
    }
    (ids, labels)
}

/// Rows in the million-row test.
const MILLION: usize = 1_000_000;

fn million_row_file(dir: &Path) -> PathBuf {
    let path = dir.join("million.csv");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path).expect("create"));
    file.write_all(header().as_bytes()).expect("header");
    let lines: Vec<String> = (0..450).map(cells).collect();
    for i in 0..MILLION {
        if i % 99_991 == 7 {
            writeln!(file, "r{i},broken").expect("row");
        } else {
            writeln!(file, "r{i},{}", lines[i % 450]).expect("row");
        }
    }
    file.flush().expect("flush");
    path
}

#[test]
fn a_million_rows_killed_with_sigkill_resume_into_the_uninterrupted_bytes() {
    let repo = digits_repo();
    let dir = tempfile::tempdir().expect("tempdir");
    let input = million_row_file(dir.path());
    let flags = ["--id-column", "key"];

    let reference = dir.path().join("reference.csv");
    let started = Instant::now();
    let run = batch(repo.path(), &input, &reference, &flags);
    assert!(run.status.success(), "{}", stderr(&run));
    let uninterrupted = started.elapsed();
    assert!(stdout(&run).contains(&format!("{} rows ok, 11 failed", MILLION - 11)), "{}", stdout(&run));

    // Killed at several points of the run, then resumed each time.
    let out = dir.path().join("resumed.csv");
    let args =
        ["batch", "--repo", path(repo.path()), "--model", "digits", "--input", path(&input), "--output", path(&out)];
    let mut kills = 0;
    let mut rng = fastrand::Rng::with_seed(7);
    for _ in 0..4 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_edgeinfer"))
            .args(args)
            .args(flags)
            .env("EDGEINFER_CACHE_DIR", cache_dir())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        let wait = uninterrupted.mul_f64(0.1 + 0.25 * rng.f64());
        std::thread::sleep(wait);
        if child.try_wait().expect("status").is_none() {
            child.kill().expect("SIGKILL");
            kills += 1;
        }
        child.wait().expect("reaped");
        assert!(!out.exists() || kills == 0, "no final output while incomplete");
    }
    assert!(kills >= 3, "the job was killed midway {kills} times");
    let last = batch(repo.path(), &input, &out, &flags);
    assert!(last.status.success(), "{}", stderr(&last));
    assert!(stdout(&last).contains("resumed from row"), "{}", stdout(&last));

    let resumed = std::fs::read(&out).expect("resumed output");
    let expected = std::fs::read(&reference).expect("reference output");
    assert!(
        resumed == expected,
        "resumed output differs from the uninterrupted run ({} vs {} bytes)",
        resumed.len(),
        expected.len()
    );
    let errors = std::fs::read(dir.path().join("resumed.csv.errors.csv")).expect("errors");
    assert_eq!(errors, std::fs::read(dir.path().join("reference.csv.errors.csv")).expect("errors"));

    // Every row once, in order, with onnxruntime's label and probabilities.
    let text = String::from_utf8(resumed).expect("utf8");
    let mut seen = 0;
    for (k, line) in text.lines().skip(1).enumerate() {
        let mut cells = line.split(',');
        let row: usize = cells.next().expect("id")[1..].parse().expect("row");
        assert!(row >= k, "in order");
        let label: i64 = cells.next().expect("label").parse().expect("label");
        assert_eq!(label, holdout().ort_labels[row % 450], "row {row}");
        if row.is_multiple_of(997) {
            let probabilities: Vec<f32> = cells.map(|c| c.parse().expect("probability")).collect();
            assert_close(&probabilities, &holdout().ort_probabilities[row % 450], 1e-5, 1e-4);
        }
        seen += 1;
    }
    assert_eq!(seen, MILLION - 11);
}

fn write_rows(path: &Path, rows: usize) {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).expect("create"));
    file.write_all(header().as_bytes()).expect("header");
    let lines: Vec<String> = (0..450).map(cells).collect();
    for i in 0..rows {
        writeln!(file, "r{i},{}", lines[i % 450]).expect("row");
    }
    file.flush().expect("flush");
}

fn job_state(addr: std::net::SocketAddr, id: &str) -> Value {
    let reply = crate::http::get(addr, &format!("/v2/batch/jobs/{id}"));
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()
}

fn wait_for_job(addr: std::net::SocketAddr, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let mut job = Value::Null;
    wait_until(&format!("job {id}"), std::time::Duration::from_secs(120), || {
        job = job_state(addr, id);
        assert_ne!(job["state"], "failed", "{job}");
        done(&job)
    });
    job
}

fn submit(addr: std::net::SocketAddr, body: Value) -> crate::http::Reply {
    crate::http::post_json(addr, "/v2/batch/jobs", &body)
}

#[test]
fn jobs_over_http_run_refuse_escapes_cancel_and_resume_after_a_restart() {
    use crate::server::TestServer;
    use edgeinfer_server::ServerConfig;
    let repo = digits_repo();
    let dir = tempfile::tempdir().expect("tempdir");
    write_rows(&dir.path().join("small.csv"), 2000);
    write_rows(&dir.path().join("big.csv"), 300_000);
    let config =
        || ServerConfig { batch_dir: Some(dir.path().to_path_buf()), batch_workers: 1, ..ServerConfig::default() };
    let mut server = TestServer::start(repo.path(), config());
    let addr = server.addr;

    let reply = submit(
        addr,
        serde_json::json!({"model": "digits", "input": "small.csv", "output": "small.out.csv", "id_column": "key"}),
    );
    assert_eq!(reply.status, 202, "{}", reply.text());
    let id = reply.json()["id"].as_str().expect("id").to_string();
    let job = wait_for_job(addr, &id, |j| j["state"] == "done");
    assert_eq!((job["rows_done"].clone(), job["rows_failed"].clone()), (2000.into(), 0.into()));
    let text = std::fs::read_to_string(dir.path().join("small.out.csv")).expect("output");
    assert_eq!(text.lines().count(), 2001);
    assert_eq!(crate::http::get(addr, "/v2/batch/jobs").json()["jobs"].as_array().map(Vec::len), Some(1));

    // Paths stay inside batch_dir.
    std::os::unix::fs::symlink("/etc/hostname", dir.path().join("link.csv")).expect("symlink");
    for (input, output, why) in [
        ("../small.csv", "x.csv", "leaves batch_dir"),
        ("/etc/hostname", "x.csv", "is absolute"),
        ("link.csv", "x.csv", "leads outside batch_dir"),
        ("small.csv", "nowhere/x.csv", "does not exist"),
        ("small.csv", "../x.csv", "leaves batch_dir"),
        ("missing.csv", "x.csv", "does not exist"),
    ] {
        let reply = submit(addr, serde_json::json!({"model": "digits", "input": input, "output": output}));
        assert_eq!(reply.status, 400, "{input} -> {output}: {}", reply.text());
        assert!(reply.text().contains(why), "{input} -> {output}: {}", reply.text());
    }
    let unknown = submit(addr, serde_json::json!({"model": "nope", "input": "small.csv", "output": "x.csv"}));
    assert_eq!(unknown.status, 400);
    assert_eq!(crate::http::request(addr, "POST", "/v2/batch/jobs", &[], b"{").status, 400);
    assert_eq!(crate::http::get(addr, "/v2/batch/jobs/nope").status, 404);

    // An input that does not fit the model is refused at submission.
    let narrow = submit(addr, serde_json::json!({"model": "digits", "input": "big.csv", "output": "x.csv"}));
    assert_eq!(narrow.status, 400);
    assert!(narrow.text().contains("65 feature columns, but input 'X' takes 64"), "{}", narrow.text());

    // Cancel while running: no output appears.
    let body =
        serde_json::json!({"model": "digits", "input": "big.csv", "output": "cancelled.csv", "id_column": "key"});
    let reply = submit(addr, body);
    let id = reply.json()["id"].as_str().expect("id").to_string();
    wait_for_job(addr, &id, |j| j["state"] == "running" && j["rows_done"].as_u64() > Some(0));
    let cancelled = crate::http::request(addr, "DELETE", &format!("/v2/batch/jobs/{id}"), &[], b"");
    assert_eq!(cancelled.status, 200);
    let job = wait_for_job(addr, &id, |j| j["state"] != "running");
    assert_eq!(job["state"], "cancelled", "{job}");
    assert!(!dir.path().join("cancelled.csv").exists());

    // A restart in the middle of a job: it resumes and ends with the uninterrupted bytes.
    let reply = submit(
        addr,
        serde_json::json!({"model": "digits", "input": "big.csv", "output": "big.out.csv", "id_column": "key"}),
    );
    let id = reply.json()["id"].as_str().expect("id").to_string();
    wait_for_job(addr, &id, |j| j["state"] == "running" && j["rows_done"].as_u64() > Some(0));
    server.shutdown();
    let restarted = TestServer::start(repo.path(), config());
    let job = wait_for_job(restarted.addr, &id, |j| j["state"] == "done" || j["state"] == "failed");
    assert_eq!(job["state"], "done", "{job}");
    let reference = dir.path().join("reference.csv");
    let run = batch(repo.path(), &dir.path().join("big.csv"), &reference, &["--id-column", "key"]);
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(
        std::fs::read(dir.path().join("big.out.csv")).expect("job output")
            == std::fs::read(&reference).expect("reference"),
        "the resumed job's output equals an uninterrupted run's"
    );
}
