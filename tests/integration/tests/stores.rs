//! Store URLs against the real backends: Azurite for `az://` (credentials from upstream's
//! `AZURE_STORAGE_CONNECTION_STRING`) and moto for `s3://` (a custom endpoint).

use bytes::Bytes;
use futures::TryStreamExt;
use modelops_core::store::{Store, StoreKind};
use modelops_integration_tests::{azurite_container, s3_bucket};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions};

/// Put, get, list, conditional create and delete through one store.
async fn exercise(store: &Store) {
    let os: &dyn ObjectStore = store.object_store.as_ref();
    let unique = format!("t-{}", std::process::id());
    let key = Path::from(format!("{unique}/token/v1/aggs/x/target_a:b/agg_1/result.json"));
    os.put(&key, Bytes::from_static(b"{}").into()).await.unwrap();
    let got = os.get(&key).await.unwrap().bytes().await.unwrap();
    assert_eq!(&got[..], b"{}");
    let listed: Vec<_> = os.list(Some(&Path::from(unique.as_str()))).try_collect().await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].location, key);
    let again = os
        .put_opts(&key, Bytes::from_static(b"[]").into(), PutOptions::from(PutMode::Create))
        .await
        .unwrap_err();
    assert!(matches!(again, object_store::Error::AlreadyExists { .. }), "{again}");
    let unchanged = os.get(&key).await.unwrap().bytes().await.unwrap();
    assert_eq!(&unchanged[..], b"{}", "a refused create must not overwrite");
    os.delete(&key).await.unwrap();
    assert!(matches!(os.get(&key).await, Err(object_store::Error::NotFound { .. })));
}

#[tokio::test]
async fn az_urls_reach_azurite_through_the_connection_string() {
    let url = azurite_container("modelops-test").await;
    let store = Store::open(&format!("{url}/provenance")).unwrap();
    assert_eq!(store.kind, StoreKind::Azure);
    exercise(&store).await;
}

#[tokio::test]
async fn s3_urls_reach_moto_with_a_custom_endpoint() {
    let url = s3_bucket("modelops-test").await;
    let store = Store::open(&url.replacen("modelops-test", "modelops-test/results", 1)).unwrap();
    assert_eq!(store.kind, StoreKind::S3);
    exercise(&store).await;
}

