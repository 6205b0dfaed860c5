//! Job specs: stored once at `jobs/{job_type}/{job_id}.json` beside a job's registration (never
//! overwriting a different one), and read back whole or streamed.

use bytes::Bytes;
use futures::StreamExt as _;
use futures::stream::BoxStream;
use modelops_core::job::JobId;
use modelops_core::paths;
use modelops_core::pyjson::PyValue;
use modelops_core::study::JobSpec;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};

use super::JobRegistry;
use crate::error::RegistryError;

impl JobRegistry {
    /// Stores a spec blob without ever overwriting a different one: an identical blob already
    /// there is accepted (a retried registration), a different one means the id is taken.
    pub(super) async fn store_spec(&self, job_id: &JobId, spec_key: &str, spec: &JobSpec) -> Result<(), RegistryError> {
        let bytes = Bytes::from(spec.to_json());
        let path = Path::parse(spec_key).map_err(|e| RegistryError::InvalidArgument(e.to_string()))?;
        let store = &self.inner.specs.object_store;
        match store.put_opts(&path, PutPayload::from_bytes(bytes.clone()), PutOptions::from(PutMode::Create)).await {
            Ok(_) => Ok(()),
            Err(object_store::Error::AlreadyExists { .. }) => {
                let existing = store.get(&path).await?.bytes().await?;
                if existing == bytes {
                    Ok(())
                } else {
                    Err(RegistryError::AlreadyExists(job_id.to_string()))
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The keys a job's spec blob may be at, in the order to try them: the key in its
    /// `blob_key` metadata, then the simulation and calibration keys. Only the two well-formed
    /// keys of this job are ever tried, whatever `blob_key` says.
    async fn spec_keys(&self, job_id: &JobId) -> Result<Vec<Path>, RegistryError> {
        let state = self.require(job_id).await?;
        let allowed = [paths::job_spec_key("simulation", job_id), paths::job_spec_key("calibration", job_id)];
        let preferred = state.metadata().get("blob_key").and_then(PyValue::as_str).map(str::to_owned);
        let mut keys: Vec<String> = preferred.into_iter().filter(|k| allowed.contains(k)).collect();
        for key in allowed {
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
        Ok(keys.iter().filter_map(|key| Path::parse(key).ok()).collect())
    }

    /// The job type of a spec key (`jobs/{job_type}/{job_id}.json`).
    fn spec_job_type(key: &Path) -> String {
        key.as_ref().split('/').nth(1).unwrap_or("simulation").to_owned()
    }

    /// Reads a job's spec blob: from the key in its `blob_key` metadata, else the simulation and
    /// calibration keys. Returns `(job_type, json)`.
    pub async fn get_spec(&self, job_id: &JobId) -> Result<(String, String), RegistryError> {
        for key in self.spec_keys(job_id).await? {
            match self.inner.specs.object_store.get(&key).await {
                Ok(result) => {
                    let bytes = result.bytes().await?;
                    let text = String::from_utf8(bytes.to_vec()).map_err(|_| RegistryError::CorruptState {
                        key: key.to_string(),
                        reason: "spec is not UTF-8".into(),
                    })?;
                    return Ok((Self::spec_job_type(&key), text));
                }
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Err(RegistryError::NotFound(format!("{job_id} (job spec)")))
    }

    /// Streams a job's spec blob, as [`JobRegistry::get_spec`] finds it: `(job_type, bytes)`.
    /// The blob is never held whole (a study of 128,000 tasks is tens of MB).
    pub async fn read_spec(&self, job_id: &JobId) -> Result<(String, BoxStream<'static, Result<Bytes, RegistryError>>), RegistryError> {
        for key in self.spec_keys(job_id).await? {
            match self.inner.specs.object_store.get(&key).await {
                Ok(result) => {
                    let chunks = result.into_stream().map(|chunk| chunk.map_err(RegistryError::from)).boxed();
                    return Ok((Self::spec_job_type(&key), chunks));
                }
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Err(RegistryError::NotFound(format!("{job_id} (job spec)")))
    }

    /// Reads and parses a job's spec.
    pub async fn get_parsed_spec(&self, job_id: &JobId) -> Result<JobSpec, RegistryError> {
        let (_, json) = self.get_spec(job_id).await?;
        Ok(JobSpec::from_json(json.as_bytes())?)
    }
}
