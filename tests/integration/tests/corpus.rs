//! The bad-input corpus (`tests/corpus/bad-input.json`) replayed against the real `mops serve`
//! binary under a 2 GiB address-space cap: gRPC methods of every service through grpcurl,
//! Flight commands and SQL as tickets, raw protobuf bytes that do not decode, and the HTTP
//! routes. Each entry must get its expected status; after each one the server must still be
//! up; at the end its peak RSS must be under a bound and nothing in its stores may have changed.
//! Then the store files of the corpus (`store_file`: malformed, non-finite, deep, oversized
//! records, links out of the store, a directory or FIFO where a record should be) replace the
//! records of one job's aggregations, and indexing that job must give each its expected row
//! status, with no absolute path in the reasons.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use modelops_integration_tests::{MopsProcess, channel, text, tool};

/// The address-space cap the server runs under (the robustness target of TARGETS.md).
const ADDRESS_SPACE_CAP: u64 = 2 << 30;
/// The peak RSS the server must stay under through the whole corpus.
const PEAK_RSS_BOUND: u64 = 1536 << 20;
const TOKEN: &str = "corpus-token-0123456789";

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    kind: String,
    method: String,
    #[serde(default)]
    request: Option<serde_json::Value>,
    #[serde(default)]
    hex: Option<String>,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    headers: Option<BTreeMap<String, String>>,
    #[serde(default)]
    location_not_prefix: Option<Vec<String>>,
    /// `store_file`: which file of the aggregation is replaced (`result.json`, `metadata.json`).
    #[serde(default)]
    file: Option<String>,
    /// `store_file`: its new bytes.
    #[serde(default)]
    content: Option<String>,
    /// `store_file`: what it becomes instead (a link, a FIFO, a directory, …).
    #[serde(default)]
    special: Option<String>,
    expect: serde_json::Value,
}

/// Every file under `dir` but the server's log, with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        for entry in std::fs::read_dir(&current).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            if entry.file_type().unwrap().is_dir() {
                pending.push(path);
            } else if path.file_name().is_some_and(|n| n != "mops.log") {
                let key = path.strip_prefix(dir).unwrap().display().to_string();
                files.insert(key, std::fs::read(&path).unwrap());
            }
        }
    }
    files
}

/// The gRPC code grpcurl reports (`OK` when it printed a response).
fn grpcurl_code(port: u16, method: &str, request: &serde_json::Value) -> (String, String) {
    let mut child = Command::new(tool("MOPS_TEST_GRPCURL"))
        .args(["-plaintext", "-max-time", "60", "-H", &format!("authorization: Bearer {TOKEN}"), "-d", "@"])
        .arg(format!("127.0.0.1:{port}"))
        .arg(method)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run grpcurl");
    let body = serde_json::to_vec(request).unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // Written from a thread: grpcurl may answer (and stop reading) before the whole body is in.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&body);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    let stderr = text(&out.stderr);
    if out.status.success() {
        return ("OK".into(), stderr);
    }
    let code = stderr
        .lines()
        .find_map(|line| line.trim().strip_prefix("Code: "))
        .map(str::to_owned)
        .unwrap_or_else(|| format!("no code in: {stderr}"));
    (code, stderr)
}

/// A codec sending and receiving raw message bytes, to send what no generated client would.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        let bytes = bytes::Buf::copy_to_bytes(src, bytes::Buf::remaining(src));
        Ok(Some(bytes.to_vec()))
    }
}

async fn raw_code(endpoint: &str, method: &str, hex: &str) -> String {
    let bytes: Vec<u8> = (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
    let mut grpc = tonic::client::Grpc::new(channel(endpoint).await);
    grpc.ready().await.unwrap();
    let mut request = tonic::Request::new(bytes);
    request.metadata_mut().insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    let path = http::uri::PathAndQuery::try_from(method).unwrap();
    match grpc.unary::<Vec<u8>, Vec<u8>, RawCodec>(request, path, RawCodec).await {
        Ok(_) => "OK".into(),
        Err(status) => format!("{:?}", status.code()),
    }
}

/// Sends one HTTP/1.1 request; returns the status code and the response head.
async fn http_request(port: u16, entry: &Entry) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let body = entry.body.clone().unwrap_or_default().replace("TOKEN", TOKEN);
    let mut request = format!("{} {} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n", entry.method, entry.path.as_deref().unwrap());
    if entry.body.is_some() {
        request.push_str(&format!("Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n", body.len()));
    } else {
        request.push_str(&format!("Authorization: Bearer {TOKEN}\r\n"));
    }
    for (name, value) in entry.headers.iter().flatten() {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(&body);
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let response = text(&response);
    let head = response.split("\r\n\r\n").next().unwrap_or_default().to_owned();
    let code = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, head)
}

/// A `/proc/{pid}/status` figure in bytes (`VmHWM`: peak RSS; `VmPeak`: peak address space).
fn proc_status(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|v| v.trim_start_matches(':').trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bad_input_corpus_gets_its_statuses_and_changes_nothing() {
    let corpus: Vec<Entry> = serde_json::from_str(include_str!("../../corpus/bad-input.json")).unwrap();
    let home = tempfile::tempdir().unwrap();
    let token_file = home.path().join("token.txt");
    std::fs::write(&token_file, TOKEN).unwrap();
    let mut server = MopsProcess::serve(home.path(), &["--auth-token-file", token_file.to_str().unwrap()]);
    let pid = server.child.id();
    let capped = Command::new("prlimit")
        .arg(format!("--pid={pid}"))
        .arg(format!("--as={ADDRESS_SPACE_CAP}:{ADDRESS_SPACE_CAP}"))
        .status()
        .unwrap();
    assert!(capped.success(), "prlimit");
    let endpoint = format!("http://127.0.0.1:{}", server.port);

    // One job to aim at; its state is part of what must not change.
    let (code, err) = grpcurl_code(server.port, "modelops.registry.v1.JobRegistry/RegisterJob", &serde_json::json!({"job_id": "corpus-job"}));
    assert_eq!(code, "OK", "{err}");
    let before = snapshot(home.path());

    let mut failures = Vec::new();
    for entry in &corpus {
        let got = match entry.kind.as_str() {
            "grpc" => grpcurl_code(server.port, &entry.method, entry.request.as_ref().unwrap()).0,
            "grpc_raw" => raw_code(&endpoint, &entry.method, entry.hex.as_deref().unwrap()).await,
            "http" => {
                let (code, head) = http_request(server.http_port, entry).await;
                let location = head
                    .lines()
                    .find_map(|l| l.strip_prefix("location: ").or_else(|| l.strip_prefix("Location: ")))
                    .unwrap_or_default()
                    .to_owned();
                for prefix in entry.location_not_prefix.iter().flatten() {
                    if location.starts_with(prefix.as_str()) {
                        failures.push(format!("{}: Location {location:?} starts with {prefix:?}", entry.name));
                    }
                }
                code.to_string()
            }
            "store_file" => continue,
            other => panic!("unknown kind {other}"),
        };
        let expected = match &entry.expect {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        if got != expected {
            failures.push(format!("{}: expected {expected}, got {got}", entry.name));
        }
        if let Some(status) = server.child.try_wait().unwrap() {
            panic!("the server died at {:?} ({status}); failures so far: {failures:#?}", entry.name);
        }
    }
    let peak = proc_status(pid, "VmHWM");
    let peak_address_space = proc_status(pid, "VmPeak");
    let after = snapshot(home.path());
    let changed: Vec<&String> = before
        .keys()
        .chain(after.keys())
        .filter(|key| before.get(*key) != after.get(*key))
        .collect();
    println!(
        "corpus: {} entries, server peak RSS {} MiB, peak address space {} MiB under a {} MiB cap",
        corpus.len(),
        peak >> 20,
        peak_address_space >> 20,
        ADDRESS_SPACE_CAP >> 20
    );
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(changed.is_empty(), "stored files changed: {changed:?}");
    assert!(peak < PEAK_RSS_BOUND, "peak RSS {} MiB", peak >> 20);

    let files: Vec<&Entry> = corpus.iter().filter(|e| e.kind == "store_file").collect();
    let checked = hostile_store_files(&server, home.path(), &files).await;
    assert!(server.child.try_wait().unwrap().is_none(), "the server died indexing the hostile store files");
    println!("corpus: {checked} store files indexed as expected; server peak RSS {} MiB", proc_status(pid, "VmHWM") >> 20);
    assert!(proc_status(pid, "VmHWM") < PEAK_RSS_BOUND, "peak RSS {} MiB", proc_status(pid, "VmHWM") >> 20);
    let status = server.terminate();
    assert!(status.success(), "{status}");
}

/// Calls `method` through grpcurl and returns its JSON answer (the call must succeed).
fn grpcurl_ok(port: u16, method: &str, request: &serde_json::Value) -> serde_json::Value {
    let out = Command::new(tool("MOPS_TEST_GRPCURL"))
        .args(["-plaintext", "-max-time", "120", "-H", &format!("authorization: Bearer {TOKEN}"), "-d"])
        .arg(request.to_string())
        .arg(format!("127.0.0.1:{port}"))
        .arg(method)
        .output()
        .expect("run grpcurl");
    assert!(out.status.success(), "{method}: {}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

/// Registers a job of one parameter set per store file (and one left alone), writes its
/// results, replaces each set's aggregation record as its entry says, finishes and indexes the
/// job, and checks each row's status. Returns how many entries were checked.
async fn hostile_store_files(server: &MopsProcess, home: &Path, files: &[&Entry]) -> usize {
    use modelops_core::study::JobSpec;
    let job = "corpus-store";
    let sets: Vec<String> = (0..=files.len()).map(|i| format!(r#"{{"beta": {}}}"#, i + 1)).collect();
    let study = format!(
        r#"{{"model": "models.seir.SEIR", "scenario": "baseline", "n_replicates": 1, "parameter_sets": [{}], "targets": ["targets.prev:prevalence_target"]}}"#,
        sets.join(", ")
    );
    let bundle = format!("sha256:{}", "ab".repeat(32));
    let registry = |method: &str| format!("modelops.registry.v1.JobRegistry/{method}");
    grpcurl_ok(server.port, &registry("RegisterJob"), &serde_json::json!({"job_id": job, "study": {"study_json": study, "bundle_ref": bundle}}));
    let spec = grpcurl_ok(server.port, &registry("GetJobSpec"), &serde_json::json!({"job_id": job}));
    let JobSpec::Simulation(spec) = JobSpec::from_json(spec["jobSpecJson"].as_str().unwrap().as_bytes()).unwrap() else { panic!("a SimJob") };
    let provenance = modelops_core::store::Store::open(&format!("file://{}/provenance", home.display())).unwrap();
    let timestamp = modelops_core::time::now_iso();
    let run = modelops_core::synthetic::SyntheticRun {
        schema: modelops_core::paths::ProvenanceSchema::Token,
        timestamp: &timestamp,
        param_sets: Some(&(0..=files.len()).collect::<Vec<_>>()),
        failed_aggregations: &[],
    };
    let written = modelops_core::synthetic::write_job_results(provenance.object_store.as_ref(), &spec, &run).await.unwrap();
    let root = home.join("provenance");
    let outside = home.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    for (i, entry) in files.iter().enumerate() {
        let dir = root.join(&written.aggs[i]);
        let file = dir.join(entry.file.as_deref().unwrap_or("result.json"));
        let valid = std::fs::read(&file).ok();
        match (entry.special.as_deref(), &entry.content) {
            (None, Some(content)) => std::fs::write(&file, content).unwrap(),
            (Some("nan_loss"), _) => {
                let text = String::from_utf8(valid.unwrap()).unwrap();
                let at = text.find("\"loss\":").unwrap();
                let end = at + text[at..].find(',').unwrap();
                std::fs::write(&file, format!("{}\"loss\": NaN{}", &text[..at], &text[end..])).unwrap();
            }
            (Some("lone_surrogate"), _) => {
                let text = String::from_utf8(valid.unwrap()).unwrap();
                std::fs::write(&file, text.replacen('{', r#"{"note": "\ud800", "#, 1)).unwrap();
            }
            (Some("extra_field"), _) => {
                let text = String::from_utf8(valid.unwrap()).unwrap();
                std::fs::write(&file, text.replacen('{', r#"{"added_by_a_newer_writer": [1, {"x": null}], "#, 1)).unwrap();
            }
            (Some("directory"), _) => {
                std::fs::remove_file(&file).unwrap();
                std::fs::create_dir(&file).unwrap();
            }
            (Some("fifo"), _) => {
                std::fs::remove_file(&file).unwrap();
                assert!(Command::new("mkfifo").arg(&file).status().unwrap().success());
            }
            (Some("symlink_out"), _) => {
                let target = outside.join(format!("{i}.json"));
                std::fs::write(&target, valid.unwrap()).unwrap();
                std::fs::remove_file(&file).unwrap();
                std::os::unix::fs::symlink(&target, &file).unwrap();
            }
            (Some("dir_symlink_out"), _) => {
                let moved = outside.join(format!("agg-{i}"));
                std::fs::rename(&dir, &moved).unwrap();
                std::os::unix::fs::symlink(&moved, &dir).unwrap();
            }
            (Some("oversized"), _) => {
                let padding = "x".repeat(17 << 20);
                std::fs::write(&file, format!(r#"{{"loss": 1.0, "n_replicates": 1, "pad": "{padding}"}}"#)).unwrap();
            }
            (Some("delete"), _) => std::fs::remove_file(&file).unwrap(),
            other => panic!("{}: unknown store file entry {other:?}", entry.name),
        }
    }
    for status in ["JOB_STATUS_SUBMITTING", "JOB_STATUS_SCHEDULED", "JOB_STATUS_RUNNING", "JOB_STATUS_VALIDATING"] {
        grpcurl_ok(server.port, &registry("UpdateStatus"), &serde_json::json!({"job_id": job, "status": status}));
    }
    grpcurl_ok(server.port, &registry("FinalizeJob"), &serde_json::json!({"job_id": job, "status": "JOB_STATUS_PARTIAL"}));
    let indexed = grpcurl_ok(server.port, "modelops.indexer.v1.Indexer/IndexJob", &serde_json::json!({"job_id": job, "wait": true}));
    assert_eq!(indexed["status"]["phase"], "INDEX_PHASE_DONE", "{indexed}");

    // Each row's status, by parameter set, from the committed table.
    let table = std::fs::File::open(home.join(format!("results/results/{job}/losses.parquet"))).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(table).unwrap().build().unwrap();
    let mut statuses = BTreeMap::new();
    for batch in reader {
        let batch = batch.unwrap();
        let column = |name: &str| batch.column_by_name(name).unwrap().as_any().downcast_ref::<arrow::array::StringArray>().unwrap().clone();
        let (params, status) = (column("param_id"), column("status"));
        for row in 0..batch.num_rows() {
            statuses.insert(params.value(row).to_owned(), status.value(row).to_owned());
        }
    }
    let groups = spec.task_groups();
    let mut failures = Vec::new();
    for (i, entry) in files.iter().enumerate() {
        let got = &statuses[groups[i].param_id];
        let expected = entry.expect.as_str().unwrap();
        if got != expected {
            failures.push(format!("{}: expected {expected}, got {got}", entry.name));
        }
    }
    assert_eq!(statuses[groups[files.len()].param_id], "ok", "the untouched set");
    assert!(failures.is_empty(), "{failures:#?}");
    let manifest = std::fs::read_to_string(home.join(format!("results/results/{job}/manifest.json"))).unwrap();
    assert!(!manifest.contains(&home.display().to_string()), "no absolute path in the reasons: {manifest}");
    files.len()
}
