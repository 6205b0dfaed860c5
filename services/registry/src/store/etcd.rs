//! The etcd backend, speaking etcd's v3 gRPC API directly (the subset in `proto/etcd/`).
//! Compare-and-swap is a transaction comparing the key's `mod_revision` (or `create_revision ==
//! 0` for creates); changes come from a native watch. Debian's etcd 3.4 can repeat watch events
//! after a reconnect, so readers reconcile by re-reading.
//!
//! `etcds://` (or a CA bundle or client certificate in [`EtcdOptions`]) turns TLS on; a user and
//! password file turn etcd authentication on (see `security.rs`). A refused password or an
//! untrusted server certificate is [`StoreError::Unauthenticated`], at open if etcd is reachable
//! then. A refused client certificate is not: TLS 1.3 reports it after the handshake, and what
//! reaches the store is a closed connection (`Unavailable`).

mod security;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use modelops_proto::etcd::etcdserverpb::{
    DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest, WatchCreateRequest, WatchRequest, compare,
    kv_client::KvClient, request_op, watch_client::WatchClient, watch_request,
};
use modelops_proto::etcd::etcdserverpb::Compare;
use modelops_proto::etcd::mvccpb::{KeyValue, event::EventType};
use tonic::transport::{Channel, Endpoint};

pub use self::security::EtcdOptions;
use self::security::{Authenticator, Token, with_token};
use super::{ChangeFeedItem, RevisionFeedItem, StoreChange, StoreError, Version, Versioned, VersionedStore};

/// A versioned store in etcd, with every key under a prefix.
#[derive(Clone)]
pub struct EtcdStore {
    channel: Channel,
    prefix: String,
    hosts: Vec<String>,
    tls: bool,
    /// Present when the store authenticates as an etcd user.
    auth: Option<Arc<Authenticator>>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("hosts", &self.hosts)
            .field("prefix", &self.prefix)
            .field("tls", &self.tls)
            .field("user", &self.auth.as_ref().map(|auth| auth.user()))
            .finish()
    }
}

/// The text of `status` with the errors under it (a transport error says what failed only there).
fn status_text(status: &tonic::Status) -> String {
    with_sources(status.message().to_owned(), std::error::Error::source(status))
}

/// `text` followed by the messages of `source` and the errors under it that it does not repeat.
fn with_sources(mut text: String, mut source: Option<&(dyn std::error::Error + 'static)>) -> String {
    while let Some(error) = source {
        let part = error.to_string();
        if !text.contains(&part) {
            text = if text.is_empty() { part } else { format!("{text}: {part}") };
        }
        source = error.source();
    }
    text
}

/// Whether the connection under `status` failed in its TLS handshake: rustls reports a server
/// certificate it cannot verify (and any other TLS failure it sees) as invalid data.
fn tls_failed(status: &tonic::Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(error) = source {
        if error.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::InvalidData) {
            return true;
        }
        source = error.source();
    }
    false
}

fn map_status(status: tonic::Status) -> StoreError {
    let text = status_text(&status);
    if tls_failed(&status) {
        return StoreError::Unauthenticated(format!("etcd: TLS handshake failed: {text}"));
    }
    if security::is_auth_failure(&status) {
        return StoreError::Unauthenticated(format!("etcd: {text}"));
    }
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled | tonic::Code::Unknown | tonic::Code::Aborted => {
            StoreError::Unavailable(format!("etcd: {text}"))
        }
        code => StoreError::Backend(format!("etcd: {code:?}: {text}")),
    }
}

/// An `etcd://` or `etcds://` URL, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdUrl {
    /// `host:port` of every member.
    pub hosts: Vec<String>,
    /// The key prefix: empty, or ending in `/`.
    pub prefix: String,
    /// Whether the URL asks for TLS (`etcds://`).
    pub tls: bool,
}

/// Parses `etcd://host:port[,host:port…][/prefix]` (`etcds://` for TLS).
pub fn parse_url(url: &str) -> Result<EtcdUrl, StoreError> {
    let invalid = |reason: &str| StoreError::InvalidUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let (rest, tls) = match (url.strip_prefix("etcd://"), url.strip_prefix("etcds://")) {
        (Some(rest), _) => (rest, false),
        (_, Some(rest)) => (rest, true),
        _ => return Err(invalid("expected etcd://host:port/prefix or etcds://host:port/prefix")),
    };
    let (hosts, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if let Some((_, after)) = hosts.rsplit_once('@') {
        // Never echo what came before the `@`: it is a password.
        return Err(StoreError::InvalidUrl {
            url: format!("{}<redacted>@{after}/{prefix}", if tls { "etcds://" } else { "etcd://" }),
            reason: "credentials do not belong in the URL: use --etcd-user and --etcd-password-file".into(),
        });
    }
    let hosts: Vec<String> = hosts.split(',').filter(|h| !h.is_empty()).map(str::to_owned).collect();
    if hosts.is_empty() {
        return Err(invalid("no etcd endpoint"));
    }
    let prefix = prefix.trim_matches('/');
    let prefix = if prefix.is_empty() { String::new() } else { format!("{prefix}/") };
    Ok(EtcdUrl { hosts, prefix, tls })
}

/// The end of the range of keys starting with `prefix` (etcd's "prefix end"): the prefix with its
/// last byte below 0xff incremented, and what follows dropped; `[0]` (everything) when none is.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn versioned(kv: &KeyValue) -> Versioned {
    Versioned {
        value: Bytes::copy_from_slice(&kv.value),
        version: Version::new(kv.mod_revision.to_string()),
    }
}

impl EtcdStore {
    /// Connects (lazily: the first request dials) to the cluster named by an `etcd://` URL,
    /// without TLS files or credentials.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with(url, &EtcdOptions::default()).await
    }

    /// Connects to the cluster named by an `etcd://` or `etcds://` URL with the TLS files and
    /// credentials in `options`. With either, one request is made at once, so that a refused
    /// password or certificate fails here; an etcd that cannot be reached yet is only logged.
    pub async fn connect_with(url: &str, options: &EtcdOptions) -> Result<Self, StoreError> {
        let parsed = parse_url(url)?;
        let invalid = |reason: String| StoreError::InvalidUrl {
            url: url.to_owned(),
            reason,
        };
        let tls = parsed.tls || options.wants_tls();
        let tls_config = if tls { Some(options.tls().map_err(invalid)?) } else { None };
        let credentials = options.credentials().map_err(invalid)?;
        let scheme = if tls { "https" } else { "http" };
        let mut balanced = Vec::with_capacity(parsed.hosts.len());
        for host in &parsed.hosts {
            let mut endpoint = Endpoint::from_shared(format!("{scheme}://{host}"))
                .map_err(|e| invalid(e.to_string()))?
                .connect_timeout(Duration::from_secs(5))
                .timeout(Duration::from_secs(10))
                .http2_keep_alive_interval(Duration::from_secs(10))
                .keep_alive_timeout(Duration::from_secs(5));
            if let Some(tls_config) = &tls_config {
                endpoint = endpoint
                    .tls_config(tls_config.clone())
                    .map_err(|e| invalid(with_sources(e.to_string(), std::error::Error::source(&e))))?;
            }
            balanced.push(endpoint);
        }
        let channel = Channel::balance_list(balanced.into_iter());
        let auth = credentials.map(|credentials| Arc::new(Authenticator::new(credentials, channel.clone())));
        let store = Self {
            channel,
            prefix: parsed.prefix,
            hosts: parsed.hosts,
            tls,
            auth,
        };
        if store.tls || store.auth.is_some() {
            store.check().await?;
        }
        Ok(store)
    }

    /// Reads one key of the prefix, so that refused credentials or certificates surface at open.
    async fn check(&self) -> Result<(), StoreError> {
        let key = self.key("");
        let request = RangeRequest {
            range_end: prefix_end(&key),
            key,
            limit: 1,
            keys_only: true,
            ..Default::default()
        };
        match self.kv_call(request, |mut kv, request| async move { kv.range(request).await }).await {
            Ok(_) => Ok(()),
            Err(error @ StoreError::Unauthenticated(_)) => Err(error),
            Err(error) => {
                tracing::warn!(store = %self.describe(), %error, "etcd did not answer at open; the store keeps trying on use");
                Ok(())
            }
        }
    }

    /// Makes one KV call, with the auth token when the store has credentials. When etcd refuses
    /// the token as stale, authenticates again and retries once.
    async fn kv_call<T, R, F, Fut>(&self, message: T, rpc: F) -> Result<R, StoreError>
    where
        T: Clone,
        F: Fn(KvClient<Channel>, tonic::Request<T>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<R>, tonic::Status>>,
    {
        let kv = KvClient::new(self.channel.clone());
        let Some(auth) = &self.auth else {
            return rpc(kv, tonic::Request::new(message)).await.map(tonic::Response::into_inner).map_err(map_status);
        };
        let token = auth.token().await?;
        match rpc(kv.clone(), with_token(message.clone(), &token)).await {
            Ok(response) => Ok(response.into_inner()),
            Err(status) if security::token_is_stale(&status) => {
                tracing::debug!(store = %self.describe(), "etcd refused the auth token; authenticating again");
                let token = auth.refresh(Some(&token)).await?;
                rpc(kv, with_token(message, &token)).await.map(tonic::Response::into_inner).map_err(map_status)
            }
            Err(status) => Err(map_status(status)),
        }
    }

    /// Sends the changes under `key` to `tx` until either side ends. A watch etcd refuses for
    /// a stale token is opened once more with a new one.
    /// Watches the keys under `key` from just after `after` (`None`: from now), sending the
    /// feed's start and every change in revision order to `tx`.
    async fn watch(self, key: Vec<u8>, after: Option<u64>, tx: tokio::sync::mpsc::Sender<Result<RevisionFeedItem, StoreError>>) {
        let start_revision = match after {
            Some(after) => i64::try_from(after).unwrap_or(i64::MAX - 1) + 1,
            None => 0,
        };
        let create = WatchRequest {
            request_union: Some(watch_request::RequestUnion::CreateRequest(WatchCreateRequest {
                range_end: prefix_end(&key),
                key,
                start_revision,
                ..Default::default()
            })),
        };
        let mut stale: Option<Token> = None;
        'open: loop {
            let may_retry = stale.is_none();
            let token = match &self.auth {
                None => None,
                Some(auth) => match auth.refresh(stale.as_ref()).await {
                    Ok(token) => Some(token),
                    Err(error) => {
                        let _ = tx.send(Err(error)).await;
                        return;
                    }
                },
            };
            // The request stream must stay open for the watch to live: it ends with this loop.
            let (request_tx, request_rx) = tokio::sync::mpsc::channel(1);
            if request_tx.send(create.clone()).await.is_err() {
                return;
            }
            let requests = tokio_stream::wrappers::ReceiverStream::new(request_rx);
            let request = match &token {
                Some(token) => with_token(requests, token),
                None => tonic::Request::new(requests),
            };
            let mut responses = match WatchClient::new(self.channel.clone()).watch(request).await {
                Ok(response) => response.into_inner(),
                Err(status) => {
                    if may_retry && token.is_some() && security::token_is_stale(&status) {
                        stale = token;
                        continue 'open;
                    }
                    let _ = tx.send(Err(map_status(status))).await;
                    return;
                }
            };
            loop {
                let message = tokio::select! {
                    message = responses.next() => message,
                    () = tx.closed() => return,
                };
                let response = match message {
                    Some(Ok(response)) => response,
                    Some(Err(status)) => {
                        let _ = tx.send(Err(map_status(status))).await;
                        return;
                    }
                    None => {
                        let _ = tx.send(Err(StoreError::Unavailable("etcd watch stream ended".into()))).await;
                        return;
                    }
                };
                if response.compact_revision > 0 {
                    let _ = tx.send(Err(StoreError::Compacted(u64::try_from(response.compact_revision).unwrap_or(0)))).await;
                    return;
                }
                if response.created {
                    // From the requested revision on, or from the revision the watch was made at.
                    let revision = after.unwrap_or_else(|| response.header.as_ref().map_or(0, |h| u64::try_from(h.revision).unwrap_or(0)));
                    if tx.send(Ok(RevisionFeedItem::Started { revision })).await.is_err() {
                        return;
                    }
                }
                if response.canceled {
                    let refused = security::watch_refused(&response.cancel_reason);
                    if refused && may_retry && token.is_some() {
                        stale = token;
                        continue 'open;
                    }
                    let reason = format!("etcd cancelled the watch: {}", response.cancel_reason);
                    let error = if refused { StoreError::Unauthenticated(reason) } else { StoreError::Unavailable(reason) };
                    let _ = tx.send(Err(error)).await;
                    return;
                }
                for event in response.events {
                    let Some(kv) = event.kv.as_ref() else { continue };
                    let Some(key) = self.strip(&kv.key) else { continue };
                    let value = match EventType::try_from(event.r#type) {
                        Ok(EventType::Delete) => None,
                        _ => Some(Bytes::from(kv.value.clone())),
                    };
                    let revision = u64::try_from(kv.mod_revision).unwrap_or(0);
                    if tx.send(Ok(RevisionFeedItem::Change { key, value, revision })).await.is_err() {
                        return;
                    }
                }
            }
        }
    }

    fn key(&self, key: &str) -> Vec<u8> {
        format!("{}{key}", self.prefix).into_bytes()
    }

    fn strip(&self, key: &[u8]) -> Option<String> {
        std::str::from_utf8(key).ok()?.strip_prefix(self.prefix.as_str()).map(str::to_owned)
    }

    async fn range(&self, prefix: &str, keys_only: bool) -> Result<Vec<KeyValue>, StoreError> {
        let key = self.key(prefix);
        let request = RangeRequest {
            range_end: prefix_end(&key),
            key,
            keys_only,
            ..Default::default()
        };
        Ok(self.kv_call(request, |mut kv, request| async move { kv.range(request).await }).await?.kvs)
    }

    async fn put_when(&self, key: &str, value: Bytes, compare: Compare) -> Result<Option<Version>, StoreError> {
        let request = TxnRequest {
            compare: vec![compare],
            success: vec![RequestOp {
                request: Some(request_op::Request::RequestPut(PutRequest {
                    key: self.key(key),
                    value: value.to_vec(),
                    ..Default::default()
                })),
            }],
            failure: Vec::new(),
        };
        let response = self.kv_call(request, |mut kv, request| async move { kv.txn(request).await }).await?;
        Ok(response
            .succeeded
            .then(|| response.header.map(|h| Version::new(h.revision.to_string())))
            .flatten())
    }
}

#[async_trait]
impl VersionedStore for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
        let request = RangeRequest {
            key: self.key(key),
            ..Default::default()
        };
        let response = self.kv_call(request, |mut kv, request| async move { kv.range(request).await }).await?;
        Ok(response.kvs.first().map(versioned))
    }

    async fn create_if_absent(&self, key: &str, value: Bytes) -> Result<Option<Version>, StoreError> {
        let compare = Compare {
            result: compare::CompareResult::Equal.into(),
            target: compare::CompareTarget::Create.into(),
            key: self.key(key),
            target_union: Some(compare::TargetUnion::CreateRevision(0)),
        };
        self.put_when(key, value, compare).await
    }

    async fn put_if_version(&self, key: &str, value: Bytes, expected: &Version) -> Result<Option<Version>, StoreError> {
        let Ok(revision) = expected.as_str().parse::<i64>() else { return Ok(None) };
        let compare = Compare {
            result: compare::CompareResult::Equal.into(),
            target: compare::CompareTarget::Mod.into(),
            key: self.key(key),
            target_union: Some(compare::TargetUnion::ModRevision(revision)),
        };
        self.put_when(key, value, compare).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        Ok(self.range(prefix, true).await?.iter().filter_map(|kv| self.strip(&kv.key)).collect())
    }

    async fn scan(&self, prefix: &str) -> Result<Vec<(String, Versioned)>, StoreError> {
        Ok(self
            .range(prefix, false)
            .await?
            .iter()
            .filter_map(|kv| Some((self.strip(&kv.key)?, versioned(kv))))
            .collect())
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let request = DeleteRangeRequest {
            key: self.key(key),
            ..Default::default()
        };
        let response = self.kv_call(request, |mut kv, request| async move { kv.delete_range(request).await }).await?;
        Ok(response.deleted > 0)
    }

    fn changes(&self, prefix: &str) -> Option<BoxStream<'static, Result<ChangeFeedItem, StoreError>>> {
        let feed = self.revision_feed(prefix, None)?;
        Some(
            feed.filter_map(|item| {
                std::future::ready(match item {
                    Ok(RevisionFeedItem::Started { .. }) => None,
                    Ok(RevisionFeedItem::Change { key, value, revision }) => Some(Ok(ChangeFeedItem::Changed(StoreChange {
                        key,
                        value: value.map(|value| Versioned {
                            value,
                            version: Version::new(revision.to_string()),
                        }),
                    }))),
                    Err(error) => Some(Err(error)),
                })
            })
            .boxed(),
        )
    }

    fn orders_revisions(&self) -> bool {
        true
    }

    async fn current_revision(&self) -> Result<Option<u64>, StoreError> {
        // Any read answers with the store's revision in its header; this one reads no value.
        let request = RangeRequest {
            key: self.key(""),
            count_only: true,
            ..Default::default()
        };
        let response = self.kv_call(request, |mut kv, request| async move { kv.range(request).await }).await?;
        Ok(response.header.and_then(|h| u64::try_from(h.revision).ok()))
    }

    fn revision_feed(&self, prefix: &str, after: Option<u64>) -> Option<BoxStream<'static, Result<RevisionFeedItem, StoreError>>> {
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        tokio::spawn(self.clone().watch(self.key(prefix), after, tx));
        Some(tokio_stream::wrappers::ReceiverStream::new(rx).boxed())
    }

    fn describe(&self) -> String {
        let scheme = if self.tls { "etcds" } else { "etcd" };
        format!("{scheme}://{}/{}", self.hosts.join(","), self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use modelops_proto::etcd::etcdserverpb::{
        AuthenticateRequest, AuthenticateResponse, DeleteRangeResponse, PutResponse, RangeResponse, TxnResponse,
        auth_server::{Auth, AuthServer},
        kv_server::{Kv, KvServer},
    };
    use tonic::{Request, Response, Status};

    use super::*;

    #[test]
    fn urls_parse() {
        let url = parse_url("etcd://a:2379,b:2379/modelops/registry/").unwrap();
        assert_eq!(url.hosts, ["a:2379", "b:2379"]);
        assert_eq!(url.prefix, "modelops/registry/");
        assert!(!url.tls);
        assert_eq!(parse_url("etcd://a:2379").unwrap().prefix, "");
        assert!(parse_url("etcds://a:2379/p").unwrap().tls);
        assert!(parse_url("etcd:///x").is_err());
        assert!(parse_url("http://a").is_err());
    }

    #[test]
    fn passwords_in_urls_are_refused_without_being_echoed() {
        let error = parse_url("etcds://root:hunter2@a:2379/p").unwrap_err();
        assert!(matches!(error, StoreError::InvalidUrl { .. }), "{error:?}");
        assert!(!format!("{error} {error:?}").contains("hunter2"), "{error:?}");
    }

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"jobs/"), b"jobs0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), b"\0");
    }

    const PASSWORD: &str = "correct horse";

    /// An etcd with authentication on: `Authenticate` hands out `token-1`, `token-2`, … and
    /// `Range` accepts only the latest, as etcd does once a simple token expires.
    #[derive(Debug, Default)]
    struct FakeEtcd {
        authentications: AtomicUsize,
        valid: Mutex<String>,
    }

    #[tonic::async_trait]
    impl Auth for FakeEtcd {
        async fn authenticate(&self, request: Request<AuthenticateRequest>) -> Result<Response<AuthenticateResponse>, Status> {
            if request.get_ref().password != PASSWORD {
                return Err(Status::invalid_argument("etcdserver: authentication failed, invalid user ID or password"));
            }
            let token = format!("token-{}", self.authentications.fetch_add(1, Ordering::SeqCst) + 1);
            *self.valid.lock().unwrap() = token.clone();
            Ok(Response::new(AuthenticateResponse { header: None, token }))
        }
    }

    #[tonic::async_trait]
    impl Kv for FakeEtcd {
        async fn range(&self, request: Request<RangeRequest>) -> Result<Response<RangeResponse>, Status> {
            let sent = request.metadata().get(security::TOKEN_METADATA_KEY).and_then(|v| v.to_str().ok());
            if sent != Some(self.valid.lock().unwrap().as_str()) {
                return Err(Status::unauthenticated("etcdserver: invalid auth token"));
            }
            Ok(Response::new(RangeResponse::default()))
        }

        async fn put(&self, _: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
            Err(Status::unimplemented("not in the fake"))
        }

        async fn delete_range(&self, _: Request<DeleteRangeRequest>) -> Result<Response<DeleteRangeResponse>, Status> {
            Err(Status::unimplemented("not in the fake"))
        }

        async fn txn(&self, _: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
            Err(Status::unimplemented("not in the fake"))
        }
    }

    /// Serves `fake` on a free port and returns its `etcd://` URL.
    async fn serve(fake: Arc<FakeEtcd>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = tonic::transport::Server::builder()
            .add_service(KvServer::from_arc(Arc::clone(&fake)))
            .add_service(AuthServer::from_arc(fake))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
        tokio::spawn(server);
        format!("etcd://{address}/fake")
    }

    fn options_with_password(dir: &tempfile::TempDir, password: &str) -> EtcdOptions {
        let file = dir.path().join("password");
        std::fs::write(&file, format!("{password}\n")).unwrap();
        EtcdOptions {
            user: Some("root".into()),
            password_file: Some(file),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_stale_token_is_replaced_once_and_every_waiting_call_retried() {
        let fake = Arc::new(FakeEtcd::default());
        let url = serve(Arc::clone(&fake)).await;
        let dir = tempfile::tempdir().unwrap();
        let store = EtcdStore::connect_with(&url, &options_with_password(&dir, PASSWORD)).await.unwrap();
        assert_eq!(fake.authentications.load(Ordering::SeqCst), 1, "the open authenticates");

        *fake.valid.lock().unwrap() = "expired".into();
        let reads = futures::future::join_all((0..8).map(|_| store.get("jobs/a/state.json"))).await;
        assert!(reads.iter().all(|read| matches!(read, Ok(None))), "{reads:?}");
        assert_eq!(fake.authentications.load(Ordering::SeqCst), 2, "one new token for all stale callers");
    }

    #[tokio::test]
    async fn a_wrong_password_fails_the_open_and_is_never_shown() {
        let url = serve(Arc::new(FakeEtcd::default())).await;
        let dir = tempfile::tempdir().unwrap();
        let error = EtcdStore::connect_with(&url, &options_with_password(&dir, "hunter2")).await.unwrap_err();
        assert!(matches!(error, StoreError::Unauthenticated(_)), "{error:?}");
        assert!(!format!("{error} {error:?}").contains("hunter2"));

        let store = EtcdStore::connect_with(&url, &options_with_password(&dir, PASSWORD)).await.unwrap();
        let shown = format!("{store:?} {}", store.describe());
        assert!(shown.contains("root") && !shown.contains(PASSWORD) && !shown.contains("token-"), "{shown}");
    }
}
