//! Store URLs against the real backends: Azurite for `az://` (with upstream's connection string
//! and with the emulator flag) and moto for `s3://`.

use bytes::Bytes;
use futures::TryStreamExt;
use modelops_core::store::{Store, StoreKind};
use modelops_integration_tests::required_env;
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

/// `scripts/test` exports upstream's variable pointing at its Azurite.
fn azurite_connection_string() -> String {
    required_env("AZURE_STORAGE_CONNECTION_STRING")
}

async fn create_container(name: &str) {
    // Azurite starts empty, and object_store has no create-container call: use the Azure SDK.
    let python = required_env("MOPS_TEST_PYTHON");
    let script = format!(
        "from azure.storage.blob import BlobServiceClient as C\nc=C.from_connection_string({conn:?})\ntry:\n    c.create_container({name:?})\nexcept Exception as e:\n    assert 'ContainerAlreadyExists' in str(e), e\n",
        conn = azurite_connection_string(),
    );
    let out = tokio::process::Command::new(python).args(["-c", &script]).output().await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test]
async fn az_urls_reach_azurite_through_the_connection_string() {
    create_container("modelops-test").await;
    let store = Store::open("az://modelops-test/provenance").unwrap();
    assert_eq!(store.kind, StoreKind::Azure);
    exercise(&store).await;
}

#[tokio::test]
async fn s3_urls_reach_moto_with_a_custom_endpoint() {
    let endpoint = required_env("MOPS_TEST_S3_ENDPOINT");
    let bucket = "modelops-test";
    create_bucket(&endpoint, bucket).await;
    let store = Store::open(&format!("s3://{bucket}/results?endpoint={endpoint}&region=us-east-1")).unwrap();
    assert_eq!(store.kind, StoreKind::S3);
    exercise(&store).await;
}

async fn create_bucket(endpoint: &str, bucket: &str) {
    let python = required_env("MOPS_TEST_PYTHON");
    let script = format!(
        "import boto3\ns=boto3.client('s3',endpoint_url={endpoint:?},region_name='us-east-1')\ntry:\n    s.create_bucket(Bucket={bucket:?})\nexcept s.exceptions.BucketAlreadyOwnedByYou:\n    pass\n"
    );
    let out = tokio::process::Command::new(python).args(["-c", &script]).output().await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

