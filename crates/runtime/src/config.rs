//! Configuration blocks shared by every service, flattened into each command's clap arguments.
//! Every flag can also be set by an environment variable, as Kubernetes deployments do.

use std::net::SocketAddr;
use std::path::PathBuf;

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (for Kubernetes log collectors).
    Json,
}

/// Logging and tracing (listed under their own heading in every command's help).
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Logging and tracing")]
pub struct LoggingConfig {
    /// Log filter in `tracing` EnvFilter syntax (e.g. `info,modelops=debug`). `RUST_LOG` is used
    /// when this is unset.
    #[arg(long = "log-filter", env = "LOG_FILTER", global = true)]
    pub log_filter: Option<String>,

    /// Log format.
    #[arg(long = "log-format", env = "LOG_FORMAT", value_enum, default_value = "text", global = true)]
    pub log_format: LogFormat,

    /// OTLP gRPC endpoint for traces (e.g. `http://otel-collector:4317`). No traces are exported
    /// when unset.
    #[arg(long = "otlp-endpoint", env = "OTEL_EXPORTER_OTLP_ENDPOINT", global = true)]
    pub otlp_endpoint: Option<String>,

    /// `service.name` reported with traces.
    #[arg(long = "otel-service-name", env = "OTEL_SERVICE_NAME", default_value = "mops", global = true)]
    pub service_name: String,
}

/// The gRPC and HTTP listeners, TLS and authentication of a server.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerConfig {
    /// Address of the gRPC listener.
    #[arg(long = "listen", env = "MOPS_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,

    /// Address of the HTTP listener serving Prometheus `/metrics` (and the dashboard).
    #[arg(long = "metrics-listen", env = "MOPS_METRICS_LISTEN", default_value = "127.0.0.1:9464")]
    pub metrics_listen: SocketAddr,

    /// PEM certificate chain for the gRPC listener's TLS. TLS is on when this and `--tls-key`
    /// are set. The HTTP listener has its own: `--http-tls-cert`.
    #[arg(long = "tls-cert", env = "MOPS_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key for the gRPC listener's TLS.
    #[arg(long = "tls-key", env = "MOPS_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// PEM certificate chain for TLS on the HTTP listener (dashboard, downloads, `/metrics`,
    /// `/healthz`): HTTPS only when this and `--http-tls-key` are set, and the login cookie is
    /// then `Secure`. Independent of `--tls-cert`; give both the same files to encrypt both.
    #[arg(long = "http-tls-cert", env = "MOPS_HTTP_TLS_CERT", requires = "http_tls_key")]
    pub http_tls_cert: Option<PathBuf>,

    /// PEM private key (PKCS#8, PKCS#1 or SEC1) for the HTTP listener's TLS.
    #[arg(long = "http-tls-key", env = "MOPS_HTTP_TLS_KEY", requires = "http_tls_cert")]
    pub http_tls_key: Option<PathBuf>,

    /// File holding the bearer token clients must send (`authorization: Bearer <token>`). Health
    /// checks stay open. No authentication when unset.
    #[arg(long = "auth-token-file", env = "MOPS_AUTH_TOKEN_FILE")]
    pub auth_token_file: Option<PathBuf>,

    /// How long to wait for in-flight work to finish on shutdown, in seconds.
    #[arg(long = "shutdown-grace-seconds", env = "MOPS_SHUTDOWN_GRACE_SECONDS", default_value_t = 25)]
    pub shutdown_grace_seconds: u64,
}

/// The four stores, each a URL (`file://`, `memory://`, `az://`, `s3://`, `gs://`, and for the
/// registry also `etcd://` or `etcds://`, with the `--etcd-*` TLS and user/password settings).
/// Unset stores default to directories under `--home`.
#[derive(Debug, Clone, clap::Args)]
pub struct StoreConfig {
    /// Home of the embedded defaults.
    #[arg(long = "home", env = "MODELOPS_HOME", default_value = "./.modelops")]
    pub home: PathBuf,

    /// Job state store (default: the embedded store in `{home}/registry`).
    #[arg(long = "registry-store", env = "MOPS_REGISTRY_STORE")]
    pub registry_store: Option<String>,

    /// Job spec store, holding `jobs/{job_type}/{job_id}.json` (default: `file://{home}/jobs`).
    #[arg(long = "jobs-store", env = "MOPS_JOBS_STORE")]
    pub jobs_store: Option<String>,

    /// Provenance store, the upstream `token/v1/…` tree (default: `file://{home}/provenance`).
    #[arg(long = "provenance", env = "MOPS_PROVENANCE")]
    pub provenance: Option<String>,

    /// Results store, holding `results/{job_id}/…` (default: `file://{home}/results`).
    #[arg(long = "results", env = "MOPS_RESULTS")]
    pub results: Option<String>,

    /// PEM CA bundle trusted for an etcd registry store's server certificates. Turns TLS on (as
    /// does an `etcds://` URL, which otherwise trusts the system's roots).
    #[arg(long = "etcd-ca-file", env = "MOPS_ETCD_CA_FILE")]
    pub etcd_ca_file: Option<PathBuf>,

    /// PEM client certificate for mutual TLS with etcd (with `--etcd-key-file`). Turns TLS on.
    #[arg(long = "etcd-cert-file", env = "MOPS_ETCD_CERT_FILE", requires = "etcd_key_file")]
    pub etcd_cert_file: Option<PathBuf>,

    /// PEM private key of `--etcd-cert-file`.
    #[arg(long = "etcd-key-file", env = "MOPS_ETCD_KEY_FILE", requires = "etcd_cert_file")]
    pub etcd_key_file: Option<PathBuf>,

    /// etcd user the registry store authenticates as (with `--etcd-password-file`).
    #[arg(long = "etcd-user", env = "MOPS_ETCD_USER", requires = "etcd_password_file")]
    pub etcd_user: Option<String>,

    /// File holding the etcd user's password (a trailing newline is ignored). There is no
    /// password flag, so the password never shows in a process listing.
    #[arg(long = "etcd-password-file", env = "MOPS_ETCD_PASSWORD_FILE", requires = "etcd_user")]
    pub etcd_password_file: Option<PathBuf>,
}

impl StoreConfig {
    fn home_dir(&self) -> PathBuf {
        std::path::absolute(&self.home).unwrap_or_else(|_| self.home.clone())
    }

    fn under_home(&self, name: &str) -> String {
        format!("file://{}", self.home_dir().join(name).display())
    }

    /// The registry store URL; the default is the embedded store `embedded://{home}/registry`.
    pub fn registry_url(&self) -> String {
        self.registry_store
            .clone()
            .unwrap_or_else(|| format!("embedded://{}", self.home_dir().join("registry").display()))
    }

    /// The jobs store URL.
    pub fn jobs_url(&self) -> String {
        self.jobs_store.clone().unwrap_or_else(|| self.under_home("jobs"))
    }

    /// The provenance store URL.
    pub fn provenance_url(&self) -> String {
        self.provenance.clone().unwrap_or_else(|| self.under_home("provenance"))
    }

    /// The results store URL.
    pub fn results_url(&self) -> String {
        self.results.clone().unwrap_or_else(|| self.under_home("results"))
    }
}

/// Where clients connect (listed under their own heading in every client command's help).
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Server")]
pub struct ClientConfig {
    /// The server's gRPC endpoint.
    #[arg(long = "endpoint", env = "MOPS_ENDPOINT", default_value = "http://127.0.0.1:50051", global = true)]
    pub endpoint: String,

    /// File holding the bearer token to send.
    #[arg(long = "auth-token-file", env = "MOPS_AUTH_TOKEN_FILE", global = true)]
    pub auth_token_file: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Probe {
        #[command(flatten)]
        stores: StoreConfig,
    }

    #[test]
    fn stores_default_under_home() {
        let probe = Probe::parse_from(["probe", "--home", "/srv/mops", "--results", "s3://bucket/r"]);
        assert_eq!(probe.stores.registry_url(), "embedded:///srv/mops/registry");
        assert_eq!(probe.stores.jobs_url(), "file:///srv/mops/jobs");
        assert_eq!(probe.stores.provenance_url(), "file:///srv/mops/provenance");
        assert_eq!(probe.stores.results_url(), "s3://bucket/r");
    }

    #[test]
    fn http_tls_files_come_in_pairs_apart_from_grpc_tls() {
        #[derive(Debug, Parser)]
        struct ServerProbe {
            #[command(flatten)]
            server: ServerConfig,
        }
        let probe = ServerProbe::parse_from(["probe", "--http-tls-cert", "/c.pem", "--http-tls-key", "/k.pem"]);
        assert_eq!(probe.server.http_tls_cert, Some(PathBuf::from("/c.pem")));
        assert_eq!(probe.server.http_tls_key, Some(PathBuf::from("/k.pem")));
        assert_eq!(probe.server.tls_cert, None);
        let probe = ServerProbe::parse_from(["probe", "--tls-cert", "/c.pem", "--tls-key", "/k.pem"]);
        assert_eq!(probe.server.http_tls_cert, None, "gRPC TLS leaves the HTTP listener as it is");
        for alone in [["--http-tls-cert", "/c.pem"], ["--http-tls-key", "/k.pem"]] {
            let error = ServerProbe::try_parse_from(["probe", alone[0], alone[1]]).unwrap_err();
            assert_eq!(error.kind(), clap::error::ErrorKind::MissingRequiredArgument, "{alone:?}");
        }
    }

    #[test]
    fn etcd_credentials_come_in_pairs() {
        let probe = Probe::parse_from(["probe", "--etcd-user", "mops", "--etcd-password-file", "/run/secrets/etcd"]);
        assert_eq!(probe.stores.etcd_user.as_deref(), Some("mops"));
        assert_eq!(probe.stores.etcd_password_file, Some(PathBuf::from("/run/secrets/etcd")));
        for alone in [["--etcd-user", "mops"], ["--etcd-password-file", "/p"], ["--etcd-cert-file", "/c"], ["--etcd-key-file", "/k"]] {
            let error = Probe::try_parse_from(["probe", alone[0], alone[1]]).unwrap_err();
            assert_eq!(error.kind(), clap::error::ErrorKind::MissingRequiredArgument, "{alone:?}");
        }
    }
}
