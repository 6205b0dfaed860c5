//! The etcd backend, speaking etcd's v3 gRPC API directly (the subset in `proto/etcd/`).
//! Compare-and-swap is a transaction comparing the key's `mod_revision` (or `create_revision ==
//! 0` for creates); changes come from a native watch. Debian's etcd 3.4 can repeat watch events
//! after a reconnect, so readers reconcile by re-reading.

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

use super::{StoreChange, StoreError, Version, Versioned, VersionedStore};

/// A versioned store in etcd, with every key under a prefix.
#[derive(Clone)]
pub struct EtcdStore {
    channel: Channel,
    prefix: String,
    endpoints: Vec<String>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore").field("endpoints", &self.endpoints).field("prefix", &self.prefix).finish()
    }
}

fn map_status(status: tonic::Status) -> StoreError {
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled | tonic::Code::Unknown | tonic::Code::Aborted => {
            StoreError::Unavailable(format!("etcd: {}", status.message()))
        }
        code => StoreError::Backend(format!("etcd: {code:?}: {}", status.message())),
    }
}

/// Parses `etcd://host:port[,host:port…][/prefix]` into endpoints and a key prefix.
pub fn parse_url(url: &str) -> Result<(Vec<String>, String), StoreError> {
    let invalid = |reason: &str| StoreError::InvalidUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let rest = url.strip_prefix("etcd://").ok_or_else(|| invalid("expected etcd://host:port/prefix"))?;
    let (hosts, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let endpoints: Vec<String> = hosts
        .split(',')
        .filter(|h| !h.is_empty())
        .map(|h| format!("http://{h}"))
        .collect();
    if endpoints.is_empty() {
        return Err(invalid("no etcd endpoint"));
    }
    let prefix = prefix.trim_matches('/');
    let prefix = if prefix.is_empty() { String::new() } else { format!("{prefix}/") };
    Ok((endpoints, prefix))
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
    /// Connects (lazily: the first request dials) to the cluster named by an `etcd://` URL.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let (endpoints, prefix) = parse_url(url)?;
        let invalid = |e: tonic::transport::Error| StoreError::InvalidUrl {
            url: url.to_owned(),
            reason: e.to_string(),
        };
        let mut balanced = Vec::with_capacity(endpoints.len());
        for endpoint in &endpoints {
            balanced.push(
                Endpoint::from_shared(endpoint.clone())
                    .map_err(invalid)?
                    .connect_timeout(Duration::from_secs(5))
                    .timeout(Duration::from_secs(10))
                    .http2_keep_alive_interval(Duration::from_secs(10))
                    .keep_alive_timeout(Duration::from_secs(5)),
            );
        }
        let channel = Channel::balance_list(balanced.into_iter());
        Ok(Self { channel, prefix, endpoints })
    }

    fn key(&self, key: &str) -> Vec<u8> {
        format!("{}{key}", self.prefix).into_bytes()
    }

    fn strip(&self, key: &[u8]) -> Option<String> {
        std::str::from_utf8(key).ok()?.strip_prefix(self.prefix.as_str()).map(str::to_owned)
    }

    fn kv(&self) -> KvClient<Channel> {
        KvClient::new(self.channel.clone())
    }

    async fn range(&self, prefix: &str, keys_only: bool) -> Result<Vec<KeyValue>, StoreError> {
        let key = self.key(prefix);
        let request = RangeRequest {
            range_end: prefix_end(&key),
            key,
            keys_only,
            ..Default::default()
        };
        Ok(self.kv().range(request).await.map_err(map_status)?.into_inner().kvs)
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
        let response = self.kv().txn(request).await.map_err(map_status)?.into_inner();
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
        let response = self.kv().range(request).await.map_err(map_status)?.into_inner();
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
        Ok(self.kv().delete_range(request).await.map_err(map_status)?.into_inner().deleted > 0)
    }

    fn changes(&self, prefix: &str) -> Option<BoxStream<'static, Result<StoreChange, StoreError>>> {
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        let store = self.clone();
        let key = self.key(prefix);
        tokio::spawn(async move {
            let create = WatchRequest {
                request_union: Some(watch_request::RequestUnion::CreateRequest(WatchCreateRequest {
                    range_end: prefix_end(&key),
                    key,
                    ..Default::default()
                })),
            };
            // The request stream must stay open for the watch to live: it ends with this task.
            let (request_tx, request_rx) = tokio::sync::mpsc::channel(1);
            if request_tx.send(create).await.is_err() {
                return;
            }
            let requests = tokio_stream::wrappers::ReceiverStream::new(request_rx);
            let mut responses = match WatchClient::new(store.channel.clone()).watch(requests).await {
                Ok(response) => response.into_inner(),
                Err(status) => {
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
                if response.canceled {
                    let reason = format!("etcd cancelled the watch: {}", response.cancel_reason);
                    let _ = tx.send(Err(StoreError::Unavailable(reason))).await;
                    return;
                }
                for event in response.events {
                    let Some(kv) = event.kv.as_ref() else { continue };
                    let Some(key) = store.strip(&kv.key) else { continue };
                    let value = match EventType::try_from(event.r#type) {
                        Ok(EventType::Delete) => None,
                        _ => Some(versioned(kv)),
                    };
                    if tx.send(Ok(StoreChange { key, value })).await.is_err() {
                        return;
                    }
                }
            }
        });
        Some(tokio_stream::wrappers::ReceiverStream::new(rx).boxed())
    }

    fn describe(&self) -> String {
        format!("etcd://{}/{}", self.endpoints.join(","), self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse() {
        let (endpoints, prefix) = parse_url("etcd://a:2379,b:2379/modelops/registry/").unwrap();
        assert_eq!(endpoints, ["http://a:2379", "http://b:2379"]);
        assert_eq!(prefix, "modelops/registry/");
        assert_eq!(parse_url("etcd://a:2379").unwrap().1, "");
        assert!(parse_url("etcd:///x").is_err());
        assert!(parse_url("http://a").is_err());
    }

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"jobs/"), b"jobs0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), b"\0");
    }
}
