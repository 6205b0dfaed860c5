//! TLS and user/password authentication for the etcd store, as etcd's own clients do them.
//!
//! [`EtcdOptions`] names files (a CA bundle, a client certificate and key, a password file), read
//! once when the store opens. With a user, the store calls etcd's `Auth/Authenticate` for a
//! token, sends it as [`TOKEN_METADATA_KEY`] metadata on every request, and authenticates again
//! once when etcd says the token is no longer valid (simple tokens expire after etcd's
//! `--auth-token-ttl`, 5 idle minutes by default). Neither the password nor the token is ever
//! formatted: [`Secret`] prints as `<redacted>`.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use modelops_proto::etcd::etcdserverpb::{AuthenticateRequest, auth_client::AuthClient};
use modelops_runtime::config::StoreConfig;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::store::StoreError;

/// The metadata key etcd reads the auth token from.
pub(super) const TOKEN_METADATA_KEY: &str = "token";

/// etcd's answer to a token it no longer knows (its `ErrGRPCInvalidAuthToken`, code
/// `Unauthenticated`).
const INVALID_TOKEN: &str = "etcdserver: invalid auth token";

/// etcd's answer when users or roles changed after the token was issued (`ErrGRPCAuthOldRevision`).
const OLD_AUTH_REVISION: &str = "etcdserver: revision of auth store is old";

/// etcd's answer to a token without the right, and to a watch opened with a stale token.
const PERMISSION_DENIED: &str = "etcdserver: permission denied";

/// etcd's authentication failures that come with a code other than `Unauthenticated` or
/// `PermissionDenied` (etcd's `rpctypes`; its Go client matches these texts too).
const AUTH_FAILURES: &[&str] = &[
    "etcdserver: authentication failed, invalid user ID or password",
    "etcdserver: user name is empty",
    "etcdserver: user name not found",
    "etcdserver: authentication is not enabled",
    "etcdserver: invalid auth management",
    OLD_AUTH_REVISION,
];

/// Files that secure the connection to etcd. All optional: the default is plain text and no
/// authentication, as for `etcd://` before.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EtcdOptions {
    /// PEM CA certificates trusted for etcd's server certificates (instead of the system's
    /// roots). Turns TLS on.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate for mutual TLS, with `key_file`. Turns TLS on.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    pub key_file: Option<PathBuf>,
    /// The etcd user to authenticate as, with `password_file`.
    pub user: Option<String>,
    /// File holding the user's password; a trailing newline is ignored.
    pub password_file: Option<PathBuf>,
}

impl From<&StoreConfig> for EtcdOptions {
    fn from(config: &StoreConfig) -> Self {
        Self {
            ca_file: config.etcd_ca_file.clone(),
            cert_file: config.etcd_cert_file.clone(),
            key_file: config.etcd_key_file.clone(),
            user: config.etcd_user.clone(),
            password_file: config.etcd_password_file.clone(),
        }
    }
}

impl EtcdOptions {
    /// Whether these options turn TLS on even for an `etcd://` URL.
    pub fn wants_tls(&self) -> bool {
        self.ca_file.is_some() || self.cert_file.is_some()
    }

    /// The TLS configuration: the CA bundle if one is named (else the system's roots) and the
    /// client identity if a certificate is named.
    pub(super) fn tls(&self) -> Result<ClientTlsConfig, String> {
        let tls = match &self.ca_file {
            Some(ca) => ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca, "--etcd-ca-file")?)),
            None => ClientTlsConfig::new().with_native_roots(),
        };
        match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => Ok(tls.identity(Identity::from_pem(
                read(cert, "--etcd-cert-file")?,
                read(key, "--etcd-key-file")?,
            ))),
            (None, None) => Ok(tls),
            _ => Err("a client certificate needs its key: set both --etcd-cert-file and --etcd-key-file".into()),
        }
    }

    /// The user and password, if authentication is configured.
    pub(super) fn credentials(&self) -> Result<Option<Credentials>, String> {
        match (&self.user, &self.password_file) {
            (Some(user), Some(file)) => {
                let password = String::from_utf8(read(file, "--etcd-password-file")?)
                    .map_err(|_| format!("--etcd-password-file {} is not UTF-8", file.display()))?;
                let password = password.trim_end_matches(['\r', '\n']);
                if password.is_empty() {
                    return Err(format!("--etcd-password-file {} is empty", file.display()));
                }
                Ok(Some(Credentials {
                    user: user.clone(),
                    password: Secret(password.to_owned()),
                }))
            }
            (None, None) => Ok(None),
            _ => Err("etcd authentication needs both --etcd-user and --etcd-password-file".into()),
        }
    }
}

fn read(path: &Path, flag: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {flag} {}: {e}", path.display()))
}

/// A password or token: usable, never printed.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct Secret<T>(T);

impl<T> std::fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// An etcd user and its password.
#[derive(Debug, Clone)]
pub(super) struct Credentials {
    pub(super) user: String,
    password: Secret<String>,
}

/// A token from `Authenticate`.
pub(super) type Token = Secret<AsciiMetadataValue>;

/// Wraps `message` in a request carrying `token`.
pub(super) fn with_token<T>(message: T, token: &Token) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(TOKEN_METADATA_KEY, token.0.clone());
    request
}

/// Whether etcd refused a request for its token alone, so that a new token may succeed. etcd
/// checks the token before it applies anything, so retrying such a request cannot apply it twice.
pub(super) fn token_is_stale(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::Unauthenticated || status.message() == OLD_AUTH_REVISION
}

/// Whether a watch was cancelled for its token (etcd reports a stale token on a watch as a
/// permission denied cancellation).
pub(super) fn watch_refused(cancel_reason: &str) -> bool {
    [INVALID_TOKEN, PERMISSION_DENIED, OLD_AUTH_REVISION].contains(&cancel_reason)
}

/// Whether `status` is etcd refusing the credentials (rather than failing).
pub(super) fn is_auth_failure(status: &tonic::Status) -> bool {
    matches!(status.code(), tonic::Code::Unauthenticated | tonic::Code::PermissionDenied)
        || AUTH_FAILURES.contains(&status.message())
}

/// Authenticates with etcd and keeps the current token. Concurrent callers that find the token
/// stale authenticate once between them.
#[derive(Debug)]
pub(super) struct Authenticator {
    credentials: Credentials,
    channel: Channel,
    current: Mutex<Option<Token>>,
    refreshing: tokio::sync::Mutex<()>,
}

impl Authenticator {
    pub(super) fn new(credentials: Credentials, channel: Channel) -> Self {
        Self {
            credentials,
            channel,
            current: Mutex::new(None),
            refreshing: tokio::sync::Mutex::new(()),
        }
    }

    /// The user name (not secret; for descriptions).
    pub(super) fn user(&self) -> &str {
        &self.credentials.user
    }

    fn current(&self) -> Option<Token> {
        self.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// The current token, authenticating first if there is none yet.
    pub(super) async fn token(&self) -> Result<Token, StoreError> {
        match self.current() {
            Some(token) => Ok(token),
            None => self.refresh(None).await,
        }
    }

    /// A token other than `stale`: one another caller got meanwhile, or a new one.
    pub(super) async fn refresh(&self, stale: Option<&Token>) -> Result<Token, StoreError> {
        let _single_flight = self.refreshing.lock().await;
        if let Some(token) = self.current()
            && Some(&token) != stale
        {
            return Ok(token);
        }
        let token = self.authenticate().await?;
        *self.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(token.clone());
        Ok(token)
    }

    async fn authenticate(&self) -> Result<Token, StoreError> {
        let request = AuthenticateRequest {
            name: self.credentials.user.clone(),
            password: self.credentials.password.0.clone(),
        };
        let response = AuthClient::new(self.channel.clone()).authenticate(request).await.map_err(|status| {
            match super::map_status(status) {
                StoreError::Backend(message) => {
                    StoreError::Unauthenticated(format!("etcd refused user {:?}: {message}", self.credentials.user))
                }
                other => other,
            }
        })?;
        AsciiMetadataValue::try_from(response.into_inner().token)
            .map(Secret)
            .map_err(|_| StoreError::Backend("etcd answered Authenticate with a token that is not ASCII".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let credentials = Credentials {
            user: "mops".into(),
            password: Secret("hunter2".into()),
        };
        let printed = format!("{credentials:?} {:?}", Secret(AsciiMetadataValue::from_static("tok.42")));
        assert!(printed.contains("mops"), "{printed}");
        assert!(!printed.contains("hunter2") && !printed.contains("tok.42"), "{printed}");
    }

    #[test]
    fn password_files_lose_their_trailing_newline_and_must_not_be_empty() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("password");
        std::fs::write(&file, "s3cret\n").unwrap();
        let options = EtcdOptions {
            user: Some("mops".into()),
            password_file: Some(file.clone()),
            ..Default::default()
        };
        assert_eq!(options.credentials().unwrap().unwrap().password.0, "s3cret");
        std::fs::write(&file, "\n").unwrap();
        assert!(options.credentials().is_err());
        let half = EtcdOptions {
            user: Some("mops".into()),
            ..Default::default()
        };
        assert!(half.credentials().is_err());
        assert_eq!(EtcdOptions::default().credentials().unwrap().map(|c| c.user), None);
    }

    #[test]
    fn tls_needs_readable_files_and_a_key_with_a_certificate() {
        let missing = EtcdOptions {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..Default::default()
        };
        assert!(missing.wants_tls());
        assert!(missing.tls().unwrap_err().contains("--etcd-ca-file"));
        let no_key = EtcdOptions {
            cert_file: Some("/nonexistent/client.pem".into()),
            ..Default::default()
        };
        assert!(no_key.tls().unwrap_err().contains("--etcd-key-file"));
        assert!(!EtcdOptions::default().wants_tls());
    }
}
