//! `mops serve` as clients see it: grpcurl through reflection, bearer auth, TLS, metrics, and a
//! graceful SIGTERM of the real binary.

use std::process::Command;

use modelops_integration_tests::{MopsProcess, TestServer, channel, text, tool};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// Runs grpcurl without blocking the runtime the in-process server runs on.
async fn grpcurl(args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(tool("MOPS_TEST_GRPCURL"))
        .args(args)
        .output()
        .await
        .expect("run grpcurl")
}

fn grpcurl_blocking(args: &[&str]) -> std::process::Output {
    Command::new(tool("MOPS_TEST_GRPCURL")).args(args).output().expect("run grpcurl")
}

#[tokio::test]
async fn grpcurl_lists_health_reflection_and_served_services() {
    let server = TestServer::start(&[]).await;
    let out = grpcurl(&["-plaintext", &server.grpc.to_string(), "list"]).await;
    assert!(out.status.success(), "grpcurl failed: {}", text(&out.stderr));
    let listed: Vec<String> = text(&out.stdout).lines().map(str::to_owned).collect();
    for service in modelops_runtime::serve::BASE_SERVICES {
        assert!(listed.iter().any(|l| l == service), "{service} not in {listed:?}");
    }
    let health = grpcurl(&["-plaintext", &server.grpc.to_string(), "grpc.health.v1.Health/Check"]).await;
    assert!(text(&health.stdout).contains("SERVING"), "{}", text(&health.stdout));
    // Every listed service can be described, reflection itself included.
    for service in listed.iter().filter(|l| !l.is_empty()) {
        let methods = grpcurl(&["-plaintext", &server.grpc.to_string(), "list", service]).await;
        assert!(methods.status.success() && !methods.stdout.is_empty(), "{service}: {}", text(&methods.stderr));
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn bearer_token_guards_everything_but_health() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "t0ken-for-tests\n").unwrap();
    let server = TestServer::start(&["--auth-token-file", token_file.to_str().unwrap()]).await;
    let addr = server.grpc.to_string();

    let denied = grpcurl(&["-plaintext", &addr, "list"]).await;
    assert!(!denied.status.success());
    assert!(text(&denied.stderr).contains("Unauthenticated"), "{}", text(&denied.stderr));

    let wrong = grpcurl(&["-plaintext", "-H", "authorization: Bearer nope", &addr, "list"]).await;
    assert!(!wrong.status.success());

    let allowed = grpcurl(&["-plaintext", "-H", "authorization: Bearer t0ken-for-tests", &addr, "list"]).await;
    assert!(allowed.status.success(), "{}", text(&allowed.stderr));
    assert!(text(&allowed.stdout).contains("grpc.health.v1.Health"));

    // Health stays open for probes.
    let mut health = HealthClient::new(channel(&server.endpoint()).await);
    let status = health.check(HealthCheckRequest { service: String::new() }).await.unwrap();
    assert_eq!(status.into_inner().status, 1, "SERVING");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn rpc_metrics_are_served_over_http() {
    let server = TestServer::start(&[]).await;
    let mut health = HealthClient::new(channel(&server.endpoint()).await);
    health.check(HealthCheckRequest { service: String::new() }).await.unwrap();
    let unknown = health
        .check(HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);

    let body = http_get(server.http, "/metrics").await;
    assert!(
        body.contains(r#"mops_grpc_requests_total{code="Ok",method="/grpc.health.v1.Health/Check"} 1"#),
        "{body}"
    );
    assert!(body.contains(r#"mops_grpc_requests_total{code="NotFound",method="/grpc.health.v1.Health/Check"} 1"#), "{body}");
    server.stop().await.unwrap();
}

/// A minimal HTTP/1.1 GET, enough for `/metrics`.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
}

#[test]
fn tls_serves_grpcurl_and_refuses_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let status = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(status.status.success(), "{}", text(&status.stderr));
    let home = tempfile::tempdir().unwrap();
    let server = MopsProcess::serve(home.path(), &["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()]);
    let addr = format!("127.0.0.1:{}", server.port);

    let secure = grpcurl_blocking(&["-cacert", cert.to_str().unwrap(), &addr, "list"]);
    assert!(secure.status.success(), "{}", text(&secure.stderr));
    assert!(text(&secure.stdout).contains("grpc.health.v1.Health"));
    let plain = grpcurl_blocking(&["-plaintext", "-max-time", "5", &addr, "list"]);
    assert!(!plain.status.success(), "plaintext must not work against a TLS listener");
    assert!(server.terminate().success());
}

#[test]
fn sigterm_shuts_the_binary_down_cleanly() {
    let home = tempfile::tempdir().unwrap();
    let server = MopsProcess::serve(home.path(), &[]);
    let status = server.terminate();
    assert!(status.success(), "exit status {status:?}");
}

#[test]
fn bad_configuration_is_a_clear_cli_error() {
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(modelops_integration_tests::mops_binary())
        .args(["serve", "--results", "ftp://nowhere/x", "--home"])
        .arg(home.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("unsupported store URL scheme \"ftp\""), "{stderr}");
    let out = Command::new(modelops_integration_tests::mops_binary())
        .args(["serve", "--auth-token-file", "/nonexistent/token"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("cannot read token file"), "{}", text(&out.stderr));
}

#[tokio::test]
async fn junk_paths_without_a_token_do_not_grow_the_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token.txt");
    std::fs::write(&token_file, "metrics-token").unwrap();
    let server = TestServer::start(&["--auth-token-file", token_file.to_str().unwrap()]).await;
    let mut grpc = tonic::client::Grpc::new(channel(&server.endpoint()).await);
    let junk = 500;
    for i in 0..junk {
        grpc.ready().await.unwrap();
        let path = http::uri::PathAndQuery::try_from(format!("/junk{i}.Service/Method{i}")).unwrap();
        let codec = tonic_prost::ProstCodec::<HealthCheckRequest, tonic_health::pb::HealthCheckResponse>::default();
        let status = grpc.unary(tonic::Request::new(HealthCheckRequest::default()), path, codec).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
    }
    let body = http_get(server.http, "/metrics").await;
    assert!(!body.contains("junk"), "junk paths became labels");
    let expected = format!(r#"mops_grpc_requests_total{{code="Unauthenticated",method="unknown"}} {junk}"#);
    assert!(body.contains(&expected), "{body}");
    server.stop().await.unwrap();
}

#[test]
fn serve_prints_where_to_connect_and_logs_without_colours_off_a_terminal() {
    use std::io::BufRead as _;
    let home = tempfile::tempdir().unwrap();
    let log = std::fs::File::create(home.path().join("stderr.log")).unwrap();
    let mut child = Command::new(modelops_integration_tests::mops_binary())
        .args(["serve", "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--home"])
        .arg(home.path())
        .stdout(std::process::Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    // The first line says where the server listens (ports chosen by the OS, so it is the only way
    // to know them), and that the dashboard is there.
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let dashboard = line.split_whitespace().find(|w| w.starts_with("http://127.0.0.1:")).unwrap_or_else(|| panic!("{line}"));
    assert!(dashboard.ends_with("/jobs") && !dashboard.ends_with(":0/jobs"), "{line}");
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    assert!(child.wait().unwrap().success());
    let logged = std::fs::read_to_string(home.path().join("stderr.log")).unwrap();
    assert!(logged.contains("serving"), "{logged}");
    assert!(!logged.contains('\x1b'), "ANSI escapes in a log file: {logged:?}");
}
