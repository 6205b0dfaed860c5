//! The README is a test: every command in its `sh` and `python` code blocks runs, in order, as a
//! new user would type it, against the demo's own data, and the test fails when one exits with an
//! error or prints nothing. What differs from a new user's machine is said here and only here:
//!
//! - `cargo run --` is the `mops` this test suite built (the same debug build), already on
//!   `PATH`, so `export PATH=…` is not run, and `scripts/test` is not run (it is what runs this
//!   test).
//! - Ids a reader takes from the demo's output are the demo's: `job-5b718dc8` is its first job,
//!   `job-77aa0011` and `demo-…-overlap` its overlapping one, `agg_4efec569a17ca9ef` one of its
//!   aggregations.
//! - The fixed addresses (`127.0.0.1:50051`, `:9464`, the split services' ports) become free
//!   ports, etcd's and Azurite's addresses the test's own, so runs in parallel do not collide.
//! - A `mops serve` while the first one runs is an alternative to it: the first is stopped, the
//!   alternative must come up and answer on its port, then it is stopped and the first started
//!   again. `token.txt`, `cert.pem` and `key.pem` are made for it.
//! - The Dask submitter block gets the three names it leaves to the reader: `my_model`, `my_loss`
//!   and `BUNDLE_REF`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use modelops_integration_tests::{azurite_container, free_port, mops_binary, required_env, tool};

/// A command of the README: the text of one logical line (continuations joined), or a Python block.
#[derive(Debug, Clone)]
enum Snippet {
    Shell(String),
    Python(String),
}

/// The commands of the README's `sh` and `python` blocks, in order.
fn snippets(readme: &str) -> Vec<Snippet> {
    let mut out = Vec::new();
    let mut block: Option<(String, Vec<&str>)> = None;
    for line in readme.lines() {
        match (&mut block, line.strip_prefix("```")) {
            (None, Some(lang)) => block = Some((lang.trim().to_owned(), Vec::new())),
            (Some(_), Some(_)) => {
                let (lang, lines) = block.take().unwrap();
                match lang.as_str() {
                    "sh" => {
                        let mut current = String::new();
                        for line in lines {
                            if let Some(continued) = line.strip_suffix('\\') {
                                current.push_str(continued);
                                continue;
                            }
                            current.push_str(line);
                            if !current.trim().is_empty() && !current.trim_start().starts_with('#') {
                                out.push(Snippet::Shell(std::mem::take(&mut current)));
                            }
                            current.clear();
                        }
                    }
                    "python" => out.push(Snippet::Python(lines.join("\n"))),
                    _ => {}
                }
            }
            (Some((_, lines)), None) => lines.push(line),
            (None, None) => {}
        }
    }
    out
}

/// A server the README starts, stopped when dropped.
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What the commands run in: a directory, an environment, the text substitutions.
struct Session {
    dir: PathBuf,
    env: BTreeMap<String, String>,
    substitutions: Vec<(String, String)>,
    main: Option<(String, Server)>,
    port: u16,
}

impl Session {
    fn command(&self, shell: &str) -> Command {
        let mut command = Command::new("bash");
        command.args(["-c", shell]).current_dir(&self.dir).env_clear().envs(&self.env);
        command
    }

    fn substitute(&self, text: &str) -> String {
        self.substitutions.iter().fold(text.to_owned(), |text, (from, to)| text.replace(from, to))
    }

    /// Runs a command to completion: it must succeed and print something. Returns its output.
    fn run(&self, shown: &str, shell: &str) -> String {
        let output = self.command(shell).stdin(Stdio::null()).output().unwrap();
        let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        assert!(output.status.success(), "README command failed ({}): {shown}\nran: {shell}\nstdout:\n{stdout}\nstderr:\n{stderr}", output.status);
        assert!(!stdout.trim().is_empty(), "README command printed nothing: {shown}\nran: {shell}\nstderr:\n{stderr}");
        stdout.into_owned()
    }

    /// Starts a server and waits until `port` answers (or it exits: a failure).
    fn start(&self, shown: &str, shell: &str, port: u16, env: &[(&str, String)]) -> Server {
        let log = std::fs::File::create(self.dir.join(format!("serve-{port}.log"))).unwrap();
        let mut command = self.command(&format!("exec env {shell}"));
        command.envs(env.iter().map(|(k, v)| (*k, v))).stdin(Stdio::null()).stdout(Stdio::null()).stderr(log);
        let mut server = Server(command.spawn().unwrap());
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = server.0.try_wait().unwrap() {
                let log = std::fs::read_to_string(self.dir.join(format!("serve-{port}.log"))).unwrap_or_default();
                panic!("README server exited ({status}): {shown}\nran: {shell}\nlog:\n{log}");
            }
            assert!(Instant::now() < deadline, "README server did not listen on {port} within 60 s: {shown}");
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }
}

/// The port a `mops serve` command listens on: its `--listen`, else the environment's.
fn listen_port(shell: &str, default: u16) -> u16 {
    let words: Vec<&str> = shell.split_whitespace().collect();
    words
        .windows(2)
        .find(|pair| pair[0] == "--listen")
        .and_then(|pair| pair[1].rsplit(':').next()?.parse().ok())
        .unwrap_or(default)
}

const DASK_PRELUDE: &str = r#"
import pyarrow as pa
BUNDLE_REF = "sha256:5e1f0c0de5e1f0c0de5e1f0c0de5e1f0c0de5e1f0c0de5e1f0c0de5e1f0c0de5"
def my_model(values, seed):
    return pa.table({"day": list(range(5)), "prevalence": [values["beta"] * (d + 1) + seed % 7 / 100 for d in range(5)]})
def my_loss(target, sims):
    return 0.25
"#;

#[test]
fn every_command_of_the_readme_runs_in_order_against_the_demo() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md")).unwrap();
    let snippets = snippets(&readme);
    assert!(snippets.len() > 30, "the README's commands were not found: {snippets:?}");

    let dir = tempfile::tempdir().unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    std::fs::create_dir_all(dir.path().join("examples")).unwrap();
    std::fs::copy(repo.join("examples/study.json"), dir.path().join("examples/study.json")).unwrap();
    let (port, http_port) = (free_port(), free_port());
    let mut env: BTreeMap<String, String> = std::env::vars().filter(|(k, _)| !k.starts_with("MOPS_") && k != "MODELOPS_HOME").collect();
    let python = tool("MOPS_TEST_PYTHON");
    let path = [mops_binary().parent().unwrap().to_path_buf(), python.parent().unwrap().to_path_buf(), tool("MOPS_TEST_GRPCURL").parent().unwrap().to_path_buf()]
        .iter()
        .map(|p| p.display().to_string())
        .chain(std::iter::once(env.get("PATH").cloned().unwrap_or_default()))
        .collect::<Vec<_>>()
        .join(":");
    env.insert("PATH".into(), path);
    env.insert("MOPS_LISTEN".into(), format!("127.0.0.1:{port}"));
    env.insert("MOPS_METRICS_LISTEN".into(), format!("127.0.0.1:{http_port}"));
    env.insert("MOPS_ENDPOINT".into(), format!("http://127.0.0.1:{port}"));
    let mut substitutions = vec![
        ("cargo run -- ".to_owned(), "mops ".to_owned()),
        ("127.0.0.1:50051".to_owned(), format!("127.0.0.1:{port}")),
        ("127.0.0.1:9464".to_owned(), format!("127.0.0.1:{http_port}")),
        ("127.0.0.1:2379".to_owned(), required_env("MOPS_TEST_ETCD_ENDPOINT").trim_start_matches("http://").to_owned()),
        ("AZURE_STORAGE_CONNECTION_STRING=…".to_owned(), format!("AZURE_STORAGE_CONNECTION_STRING='{}'", required_env("AZURE_STORAGE_CONNECTION_STRING"))),
    ];
    for split in ["50061", "50062", "50063", "50064", "9471", "9472", "9473", "9474"] {
        substitutions.push((format!("127.0.0.1:{split}"), format!("127.0.0.1:{}", free_port())));
    }
    let mut session = Session {
        dir: dir.path().to_owned(),
        env,
        substitutions,
        main: None,
        port,
    };
    std::fs::write(dir.path().join("token.txt"), "readme-token\n").unwrap();
    let openssl = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-days", "1", "-keyout", "key.pem", "-out", "cert.pem"])
        .current_dir(dir.path())
        .output()
        .expect("openssl");
    assert!(openssl.status.success());
    // The containers the README's Azure line names.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        azurite_container("job-registry").await;
        azurite_container("jobs").await;
    });

    let mut ran = 0;
    for snippet in snippets {
        match snippet {
            Snippet::Shell(line) => {
                let shell = session.substitute(&line);
                let trimmed = shell.trim();
                if trimmed == "scripts/test" || trimmed.starts_with("export PATH=") {
                    continue;
                }
                if let Some(assignment) = trimmed.strip_prefix("export ") {
                    let assignment = assignment.split(" #").next().unwrap().trim();
                    let (name, value) = assignment.split_once('=').unwrap();
                    session.env.insert(name.to_owned(), value.to_owned());
                    ran += 1;
                    continue;
                }
                if trimmed.contains("mops serve") {
                    if session.main.is_none() {
                        let server = session.start(&line, &shell, port, &[]);
                        session.main = Some((shell.clone(), server));
                    } else {
                        // An alternative to the running server: in its place, then the first again.
                        let (main_shell, main) = session.main.take().unwrap();
                        drop(main);
                        let split = trimmed.contains("--registry-endpoint") || trimmed.contains("mops serve registry");
                        let alternative_port = if split { listen_port(&shell, port) } else { port };
                        let server = session.start(&line, &shell, alternative_port, &[]);
                        drop(server);
                        let server = session.start("(the first server again)", &main_shell, port, &[]);
                        session.main = Some((main_shell, server));
                    }
                    ran += 1;
                    continue;
                }
                let output = session.run(&line, &shell);
                if trimmed.starts_with("mops demo") {
                    demo_substitutions(&mut session, &output);
                }
                ran += 1;
            }
            Snippet::Python(code) => {
                let mut code = session.substitute(&code);
                if code.contains("my_model") {
                    code = format!("{DASK_PRELUDE}\n{code}\nif __name__ == \"__main__\":\n    print('submitted', job_id)\n");
                } else {
                    code.push_str("\nprint('ok')\n");
                }
                let file = session.dir.join(format!("snippet-{ran}.py"));
                std::fs::write(&file, &code).unwrap();
                session.run(&code, &format!("{} {}", python.display(), file.display()));
                ran += 1;
            }
        }
    }
    println!("README: {ran} commands and snippets ran against the demo's data (server on port {})", session.port);
}

/// The ids a reader takes from the demo's output, and one of its aggregations.
fn demo_substitutions(session: &mut Session, output: &str) {
    let jobs: Vec<&str> = output.lines().filter_map(|line| line.split(':').next()).filter(|id| id.starts_with("demo-") && !id.contains(' ')).collect();
    let first = jobs.iter().find(|id| !id.ends_with("-overlap")).expect("the demo's first job id").to_string();
    let overlap = jobs.iter().find(|id| id.ends_with("-overlap")).expect("the demo's overlap job id").to_string();
    let aggs = session.dir.join(".modelops/provenance/token/v1/aggs");
    let agg = walk_for(&aggs, "agg_").expect("one of the demo's aggregations");
    session.substitutions.extend([
        ("demo-…-overlap".to_owned(), overlap.clone()),
        ("job-77aa0011".to_owned(), overlap),
        ("job-5b718dc8".to_owned(), first),
        ("agg_4efec569a17ca9ef".to_owned(), agg),
    ]);
}

/// The name of the first directory under `root` (depth first) whose name starts with `prefix`.
fn walk_for(root: &Path, prefix: &str) -> Option<String> {
    let mut entries: Vec<_> = std::fs::read_dir(root).ok()?.filter_map(Result::ok).collect();
    entries.sort_by_key(std::fs::DirEntry::file_name);
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(prefix) {
            return Some(name);
        }
        if entry.path().is_dir()
            && let Some(found) = walk_for(&entry.path(), prefix)
        {
            return Some(found);
        }
    }
    None
}
