//! Claims: a job held by one worker for some work (an indexer building its table) until a
//! time, taken over once it expires; stored beside the job states under `claims/`, written by
//! compare-and-swap.

use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use modelops_core::job::JobId;
use modelops_core::pyjson::{self, PyObject, PyValue};
use modelops_core::time::{parse_iso, py_isoformat};

use super::{CLAIMS_PREFIX, JobRegistry, uuid_hex8};
use crate::error::RegistryError;

pub use modelops_registry_client::Claim;

impl JobRegistry {
    /// Takes or renews a claim on `job_id` for `purpose` (e.g. "index") by `holder`, lasting `ttl`.
    /// A claim held by someone else and not expired is not granted.
    pub async fn claim(&self, job_id: &JobId, purpose: &str, holder: &str, ttl: Duration) -> Result<Claim, RegistryError> {
        let purpose = JobId::new(purpose).map_err(|e| RegistryError::InvalidArgument(format!("claim purpose: {e}")))?;
        if holder.is_empty() || holder.len() > 256 {
            return Err(RegistryError::InvalidArgument("claim holder must be 1 to 256 characters".into()));
        }
        let max_ttl = self.inner.config.limits.max_claim_ttl;
        if ttl > max_ttl {
            return Err(RegistryError::LimitExceeded {
                what: "the claim's TTL in seconds",
                value: Some(ttl.as_secs()),
                max: max_ttl.as_secs(),
                flag: "max-claim-ttl-seconds",
            });
        }
        self.require(job_id).await?;
        let key = format!("{CLAIMS_PREFIX}{purpose}/{job_id}.json");
        let expires_at = Utc::now() + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::seconds(60));
        let record = |holder: &str| {
            let mut object = PyObject::new();
            object.insert("holder", holder.into());
            object.insert("expires_at", py_isoformat(expires_at).into());
            object.insert("nonce", uuid_hex8().into());
            Bytes::from(pyjson::to_indent2(&PyValue::Object(object)))
        };
        let store = self.inner.store.as_ref();
        for _ in 0..self.policy().max_attempts {
            match store.get(&key).await? {
                None => {
                    if store.create_if_absent(&key, record(holder)).await?.is_some() {
                        return Ok(Claim {
                            granted: true,
                            holder: holder.to_owned(),
                            expires_at,
                        });
                    }
                }
                Some(current) => {
                    let parsed = pyjson::parse(&current.value).ok();
                    let object = parsed.as_ref().and_then(PyValue::as_object);
                    let current_holder = object.and_then(|o| o.get("holder")).and_then(PyValue::as_str).unwrap_or_default().to_owned();
                    let current_expiry = object
                        .and_then(|o| o.get("expires_at"))
                        .and_then(PyValue::as_str)
                        .and_then(parse_iso)
                        .unwrap_or_default();
                    if current_holder != holder && current_expiry > Utc::now() {
                        return Ok(Claim {
                            granted: false,
                            holder: current_holder,
                            expires_at: current_expiry,
                        });
                    }
                    if store.put_if_version(&key, record(holder), &current.version).await?.is_some() {
                        return Ok(Claim {
                            granted: true,
                            holder: holder.to_owned(),
                            expires_at,
                        });
                    }
                }
            }
            self.inner.metrics.cas_conflicts.with_label_values(&["claim"]).inc();
        }
        Err(RegistryError::Conflict {
            job: job_id.to_string(),
            attempts: self.policy().max_attempts,
        })
    }

    /// Releases a claim held by `holder`; returns whether one was released.
    pub async fn release_claim(&self, job_id: &JobId, purpose: &str, holder: &str) -> Result<bool, RegistryError> {
        let purpose = JobId::new(purpose).map_err(|e| RegistryError::InvalidArgument(format!("claim purpose: {e}")))?;
        let key = format!("{CLAIMS_PREFIX}{purpose}/{job_id}.json");
        let store = self.inner.store.as_ref();
        let Some(current) = store.get(&key).await? else { return Ok(false) };
        let parsed = pyjson::parse(&current.value).ok();
        let current_holder = parsed.as_ref().and_then(PyValue::as_object).and_then(|o| o.get("holder")).and_then(PyValue::as_str);
        if current_holder != Some(holder) {
            return Ok(false);
        }
        // Expire it in place (a conditional write), so a claim taken over meanwhile is untouched.
        let mut object = PyObject::new();
        object.insert("holder", "".into());
        object.insert("expires_at", py_isoformat(DateTime::<Utc>::UNIX_EPOCH).into());
        object.insert("nonce", uuid_hex8().into());
        let bytes = Bytes::from(pyjson::to_indent2(&PyValue::Object(object)));
        Ok(store.put_if_version(&key, bytes, &current.version).await?.is_some())
    }
}
