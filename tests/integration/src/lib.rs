//! Fixtures for the end-to-end tests in `tests/`: an in-process `mops serve` on free ports, the
//! real `mops` binary as a child process, and the external tools and backends that
//! `scripts/test` installs and starts (their addresses arrive in `MOPS_TEST_*` variables).
//!
//! A test that needs an external component fails, never skips, when it is missing: run the
//! tests through `scripts/test`, which provides everything.

// The package's dependencies are its test binary's; this library's own unit-test build uses few.
#![cfg_attr(test, allow(unused_crate_dependencies))]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use modelops_core::study::{JobSpec, SimJobSpec};
use modelops_proto::indexer::v1 as indexer_pb;
use modelops_proto::indexer::v1::indexer_client::IndexerClient;
use modelops_proto::registry::v1 as registry_pb;
use modelops_proto::registry::v1::job_registry_client::JobRegistryClient;


/// Parses `mops serve` arguments exactly as the command line would.
pub fn serve_args(extra: &[&str]) -> mops::serve::ServeArgs {
    mops::serve_args(extra).unwrap_or_else(|e| panic!("invalid test arguments: {e}"))
}

/// The value of a variable `scripts/test` sets; panics with a pointer to it when missing.
pub fn required_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests with scripts/test, which installs and starts the external components")
    })
}

/// Path of an external tool named by a `MOPS_TEST_*` variable.
pub fn tool(env_name: &str) -> PathBuf {
    let path = PathBuf::from(required_env(env_name));
    assert!(path.exists(), "{env_name}={} does not exist", path.display());
    path
}

/// A `mops serve` running inside the test process on free ports, with its own home directory.
#[derive(Debug)]
pub struct TestServer {
    /// The gRPC address.
    pub grpc: SocketAddr,
    /// The metrics/HTTP address.
    pub http: SocketAddr,
    /// The home directory (deleted on drop).
    pub home: tempfile::TempDir,
    server: mops::serve::LocalServer,
}

impl TestServer {
    /// Starts a server with `extra` `mops serve` flags (`--home` is set to a fresh directory).
    pub async fn start(extra: &[&str]) -> Self {
        let home = tempfile::tempdir().expect("temp home");
        let home_str = home.path().display().to_string();
        let mut args = vec!["--home", home_str.as_str()];
        args.extend_from_slice(extra);
        let server = mops::serve::LocalServer::start(&serve_args(&args)).await.expect("start mops serve");
        Self {
            grpc: server.grpc,
            http: server.http,
            home,
            server,
        }
    }

    /// `http://127.0.0.1:port` of the gRPC listener.
    pub fn endpoint(&self) -> String {
        self.server.endpoint()
    }

    /// Stops the server and waits for it; returns what `serve` returned.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.server.stop().await
    }
}

/// A name no other test in this run uses: `{prefix}-{pid}-{n}`, lowercase.
pub fn unique(prefix: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{prefix}-{}-{n}", std::process::id())
}

async fn python(script: &str) {
    let out = tokio::process::Command::new(required_env("MOPS_TEST_PYTHON"))
        .args(["-c", script])
        .output()
        .await
        .expect("run python");
    assert!(out.status.success(), "python failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// Creates an Azurite container (object_store cannot) and returns its `az://` URL. Credentials
/// come from `AZURE_STORAGE_CONNECTION_STRING`, as upstream reads them.
pub async fn azurite_container(name: &str) -> String {
    let connection = required_env("AZURE_STORAGE_CONNECTION_STRING");
    python(&format!(
        "from azure.storage.blob import BlobServiceClient as C\nc=C.from_connection_string({connection:?})\ntry:\n    c.create_container({name:?})\nexcept Exception as e:\n    assert 'ContainerAlreadyExists' in str(e), e\n"
    ))
    .await;
    format!("az://{name}")
}

/// Creates a moto bucket and returns its `s3://` URL (with the endpoint).
pub async fn s3_bucket(name: &str) -> String {
    let endpoint = required_env("MOPS_TEST_S3_ENDPOINT");
    python(&format!(
        "import boto3\ns=boto3.client('s3',endpoint_url={endpoint:?},region_name='us-east-1')\ntry:\n    s.create_bucket(Bucket={name:?})\nexcept s.exceptions.BucketAlreadyOwnedByYou:\n    pass\n"
    ))
    .await;
    format!("s3://{name}?endpoint={endpoint}&region=us-east-1")
}

/// An `etcd://` URL on the test etcd, under `prefix`.
pub fn etcd_url(prefix: &str) -> String {
    let endpoint = required_env("MOPS_TEST_ETCD_ENDPOINT");
    format!("etcd://{}/{prefix}", endpoint.trim_start_matches("http://"))
}

/// Starts a private etcd (Debian's `etcd-server`, which scripts/test installs) on the given
/// 127.0.0.1 ports with its data in `dir`, for tests that kill and restart it.
pub fn start_private_etcd(dir: &std::path::Path, client_port: u16, peer_port: u16) -> Child {
    Command::new("etcd")
        .args(["--name", "private", "--data-dir"])
        .arg(dir)
        .args([
            "--listen-client-urls",
            &format!("http://127.0.0.1:{client_port}"),
            "--advertise-client-urls",
            &format!("http://127.0.0.1:{client_port}"),
            "--listen-peer-urls",
            &format!("http://127.0.0.1:{peer_port}"),
            "--initial-advertise-peer-urls",
            &format!("http://127.0.0.1:{peer_port}"),
            "--initial-cluster",
            &format!("private=http://127.0.0.1:{peer_port}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("etcd on PATH (scripts/test installs it)")
}

/// A gRPC channel to `endpoint` (`http://host:port`).
pub async fn channel(endpoint: &str) -> tonic::transport::Channel {
    tonic::transport::Channel::from_shared(endpoint.to_owned())
        .expect("valid endpoint")
        .connect()
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {endpoint}: {e}"))
}

/// Registers `job` from a Calabaria study and returns the SimJob spec the registry expanded.
pub async fn register_study(channel: &tonic::transport::Channel, job: &str, study_json: &str, bundle_ref: &str) -> SimJobSpec {
    let mut registry = JobRegistryClient::new(channel.clone());
    registry
        .register_job(registry_pb::RegisterJobRequest {
            job_id: job.into(),
            spec: Some(registry_pb::register_job_request::Spec::Study(registry_pb::StudySpec {
                study_json: study_json.into(),
                bundle_ref: bundle_ref.into(),
            })),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("register {job}: {e}"));
    let spec_json = registry
        .get_job_spec(registry_pb::GetJobSpecRequest { job_id: job.into() })
        .await
        .unwrap_or_else(|e| panic!("spec of {job}: {e}"))
        .into_inner()
        .job_spec_json;
    match JobSpec::from_json(spec_json.as_bytes()).expect("a valid spec") {
        JobSpec::Simulation(spec) => spec,
        JobSpec::Calibration { .. } => panic!("{job} expanded to a calibration job"),
    }
}

/// Writes the results of `spec`'s parameter sets `sets` into `provenance` in the token layout,
/// stamped now, as runners would (the core's synthetic writer).
pub async fn write_results(provenance: &modelops_core::store::Store, spec: &SimJobSpec, sets: &[usize]) {
    let timestamp = modelops_core::time::now_iso();
    let run = modelops_core::synthetic::SyntheticRun {
        schema: modelops_core::paths::ProvenanceSchema::Token,
        timestamp: &timestamp,
        param_sets: Some(sets),
        failed_aggregations: &[],
    };
    modelops_core::synthetic::write_job_results(provenance.object_store.as_ref(), spec, &run)
        .await
        .unwrap_or_else(|e| panic!("results of {}: {e}", spec.job_id));
}

/// Moves `job` through `statuses`, one UpdateStatus each.
pub async fn move_through(channel: &tonic::transport::Channel, job: &str, statuses: &[registry_pb::JobStatus]) {
    let mut registry = JobRegistryClient::new(channel.clone());
    for status in statuses {
        registry
            .update_status(registry_pb::UpdateStatusRequest {
                job_id: job.into(),
                status: (*status).into(),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("{job} → {status:?}: {e}"));
    }
}

/// Waits up to `timeout` until the indexer reports `job` indexed, and returns that status.
pub async fn wait_indexed(channel: &tonic::transport::Channel, job: &str, timeout: Duration) -> indexer_pb::IndexStatus {
    let mut indexer = IndexerClient::new(channel.clone());
    let deadline = Instant::now() + timeout;
    loop {
        let status = indexer
            .get_index_status(indexer_pb::GetIndexStatusRequest { job_id: job.into() })
            .await
            .unwrap_or_else(|e| panic!("index status of {job}: {e}"))
            .into_inner()
            .status
            .expect("a status");
        if status.phase == i32::from(indexer_pb::IndexPhase::Done) {
            return status;
        }
        assert!(Instant::now() < deadline, "{job} was not indexed: {status:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The `mops` binary built next to the test executable (`scripts/test` builds it first).
pub fn mops_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(|p| p.parent()).expect("target profile dir");
    let binary = dir.join("mops");
    assert!(binary.exists(), "{} is missing: build it with `cargo build --bin mops` (scripts/test does)", binary.display());
    binary
}

/// A child process's output as text (lossy), for assertions and failure messages.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A free TCP port on 127.0.0.1 (bound and released; good enough for a child process).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A `mops` child process, killed on drop.
#[derive(Debug)]
pub struct MopsProcess {
    /// The child.
    pub child: Child,
    /// Its gRPC port.
    pub port: u16,
    /// Its HTTP port (metrics and the dashboard).
    pub http_port: u16,
}

impl MopsProcess {
    /// Starts `mops serve` with `args` on free ports and waits until it accepts connections.
    /// Its log goes to `{home}/mops.log` (a pipe nobody reads could fill up and stall it).
    pub fn serve(home: &std::path::Path, args: &[&str]) -> Self {
        Self::serve_on(home, free_port(), free_port(), args)
    }

    /// [`MopsProcess::serve`] on given ports: a process restarted where its peers reach it (as
    /// behind a Kubernetes Service).
    pub fn serve_on(home: &std::path::Path, port: u16, metrics_port: u16, args: &[&str]) -> Self {
        Self::serve_on_with_env(home, port, metrics_port, args, &[])
    }

    /// [`MopsProcess::serve_on`] with `env` added to its environment.
    pub fn serve_on_with_env(home: &std::path::Path, port: u16, metrics_port: u16, args: &[&str], env: &[(String, String)]) -> Self {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(home.join("mops.log"))
            .expect("log file");
        let child = Command::new(mops_binary())
            .arg("serve")
            .arg("--home")
            .arg(home)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--metrics-listen")
            .arg(format!("127.0.0.1:{metrics_port}"))
            .args(args)
            // As the image (Dockerfile) runs it.
            .env("MIMALLOC_ARENA_RESERVE", "64MiB")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn mops");
        let process = Self {
            child,
            port,
            http_port: metrics_port,
        };
        // A deadline, not a wait: under CI's parallel tests a replica on Azurite (CPU-bound
        // on the same two cores) once took more than 20 s to listen.
        process.wait_listening(Duration::from_secs(60));
        process
    }

    fn wait_listening(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("mops did not listen on {} within {timeout:?}", self.port);
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "mops did not exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for MopsProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP forwarder in front of a backend that can be cut and restored. While cut, connections are
/// refused and the open ones are dropped, as when the backend's process is killed, but the
/// backend keeps what it acknowledged (Azurite's own store would lose its last writes to a
/// SIGKILL, which would test Azurite, not its clients).
#[derive(Debug)]
pub struct TcpGate {
    port: u16,
    target: SocketAddr,
    open: Option<tokio_util::sync::CancellationToken>,
}

impl TcpGate {
    /// Starts forwarding a free port to `target` (inside a Tokio runtime).
    pub fn start(target: SocketAddr) -> Self {
        let mut gate = Self { port: free_port(), target, open: None };
        gate.restore();
        gate
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Refuses new connections and drops the open ones.
    pub fn cut(&mut self) {
        if let Some(open) = self.open.take() {
            open.cancel();
        }
    }

    /// Accepts and forwards connections again, on the same port.
    pub fn restore(&mut self) {
        if self.open.is_some() {
            return;
        }
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        // The dropped connections' TIME_WAIT must not keep the port.
        socket.set_reuseaddr(true).expect("SO_REUSEADDR");
        socket.bind(SocketAddr::from(([127, 0, 0, 1], self.port))).expect("the gate's port is free again");
        let listener = socket.listen(128).expect("listen");
        let open = tokio_util::sync::CancellationToken::new();
        let (token, target) = (open.clone(), self.target);
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = token.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                let Ok((mut inbound, _)) = accepted else { continue };
                let token = token.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else { return };
                    tokio::select! {
                        () = token.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    }
                });
            }
        });
        self.open = Some(open);
    }
}
