//! Compacted parts: the rows of many small jobs of one bundle and one table schema merged into
//! one Parquet file sorted by loss, so a query across thousands of small jobs reads a few row
//! groups of one file instead of thousands of files. Each job's own files stay where they are
//! ([`crate::loss_table`]); a part is a copy that readers may use in their place.
//!
//! ```text
//! results/_compacted/{part_id}.parquet   the members' rows (the loss table's schema), by loss
//! results/_compacted/{part_id}.json      PartManifest: the commit point, written after the rows
//! ```
//!
//! The consistency rules, which every reader follows:
//! - A part exists once its manifest does; a Parquet file without one is ignored.
//! - A member's rows in a part stand for the job only while the job's own manifest still names
//!   the table version (file and size) the part copied: re-indexed, the job is read from its
//!   own table again, and the part's rows of it are skipped.
//! - Each job's rows are read from one place: its own table, or the first part (by id) whose
//!   member it is at its current version.
//! - A part never changes: its id is the hash of its members (job, table version, size), so
//!   two writers of the same members write the same name, and a part with other members is
//!   another part. Job ids start with `[a-z0-9]`, so `_compacted` is no job's directory.

use serde::{Deserialize, Serialize};

use crate::job::JobId;
use crate::loss_table::{self, RESULTS_PREFIX, SCHEMA_VERSION};

/// The directory of the parts, under the results store's `results/`.
pub const COMPACTED_DIR: &str = "_compacted";

/// The prefix the parts live under: `results/_compacted`.
pub fn compacted_prefix() -> String {
    format!("{RESULTS_PREFIX}/{COMPACTED_DIR}")
}

/// The key of part `part_id`'s rows: `results/_compacted/{part_id}.parquet`.
pub fn part_rows_file(part_id: &str) -> String {
    format!("{}/{part_id}.parquet", compacted_prefix())
}

/// The key of part `part_id`'s manifest: `results/_compacted/{part_id}.json`.
pub fn part_manifest_file(part_id: &str) -> String {
    format!("{}/{part_id}.json", compacted_prefix())
}

/// The part id of a manifest's key (`results/_compacted/{part_id}.json`), when it is one: 32
/// lowercase hex digits.
pub fn part_id_of_manifest(key: &str) -> Option<&str> {
    let id = key.strip_prefix(&compacted_prefix())?.strip_prefix('/')?.strip_suffix(".json")?;
    is_part_id(id).then_some(id)
}

/// True when `id` has the form of a part id: 32 lowercase hex digits.
pub fn is_part_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// One job whose rows a part holds, and the table version they were copied from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartMember {
    /// The job.
    pub job_id: String,
    /// The table version copied, as the job's manifest names it (`tables/losses-{v}.parquet`).
    pub losses: String,
    /// Its size in bytes, as the job's manifest gives it.
    pub losses_bytes: u64,
    /// The job's rows in the part.
    pub rows: u64,
}

impl PartMember {
    /// The key of the table version this member's rows were copied from.
    pub fn table_key(&self) -> Result<String, PartError> {
        let job = JobId::new(self.job_id.as_str()).map_err(|e| PartError(format!("member {:?}: {e}", self.job_id)))?;
        Ok(loss_table::results_file(&job, &self.losses))
    }
}

/// `results/_compacted/{part_id}.json`: what a part holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartManifest {
    /// The loss table's schema version of the rows.
    pub schema_version: u64,
    /// The bundle ref every member job is of.
    pub bundle_digest: String,
    /// The rows' Arrow schema, as the members' Parquet footers hold it (`ARROW:schema`).
    pub arrow_schema: String,
    /// The Parquet file's size in bytes.
    pub rows_bytes: u64,
    /// Rows in all.
    pub rows: u64,
    /// The member jobs, by job id.
    pub members: Vec<PartMember>,
}

/// Why bytes are not a part manifest, or a manifest does not hold together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a compacted part manifest: {0}")]
pub struct PartError(pub String);

impl PartManifest {
    /// The manifest as written: pretty JSON, two-space indent.
    pub fn to_json_bytes(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("a part manifest serializes: its keys are strings")
    }

    /// Reads a manifest and checks that it holds together: a known schema version, valid member
    /// job ids each once, table versions under the job's `tables/`, and rows adding up.
    pub fn from_json_bytes(bytes: &[u8]) -> Result<Self, PartError> {
        let manifest: Self = serde_json::from_slice(bytes).map_err(|e| PartError(e.to_string()))?;
        if manifest.schema_version != SCHEMA_VERSION {
            return Err(PartError(format!("schema version {} (this reader knows {SCHEMA_VERSION})", manifest.schema_version)));
        }
        let mut seen = std::collections::HashSet::new();
        let mut rows: u64 = 0;
        for member in &manifest.members {
            member.table_key()?;
            let version = member.losses.strip_prefix("tables/losses-").and_then(|v| v.strip_suffix(".parquet"));
            if !version.is_some_and(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')) {
                return Err(PartError(format!("member {:?}: {:?} is not a table version", member.job_id, member.losses)));
            }
            if !seen.insert(member.job_id.as_str()) {
                return Err(PartError(format!("member {:?} listed twice", member.job_id)));
            }
            rows = rows.checked_add(member.rows).ok_or_else(|| PartError("member rows overflow".into()))?;
        }
        if rows != manifest.rows {
            return Err(PartError(format!("members hold {rows} rows, the part says {}", manifest.rows)));
        }
        Ok(manifest)
    }

    /// The id of a part of `members`: the hash of each member's job, table version and size
    /// (in job order), 32 hex digits.
    pub fn id_of(members: &[PartMember]) -> String {
        let mut sorted: Vec<&PartMember> = members.iter().collect();
        sorted.sort_by(|a, b| a.job_id.cmp(&b.job_id));
        let mut preimage = String::new();
        for member in sorted {
            preimage.push_str(&format!("{}\n{}\n{}\n", member.job_id, member.losses, member.losses_bytes));
        }
        crate::ids::blake2b_hex(preimage.as_bytes(), 16)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(job: &str, rows: u64) -> PartMember {
        PartMember {
            job_id: job.into(),
            losses: "tables/losses-0123abcd.parquet".into(),
            losses_bytes: 1000,
            rows,
        }
    }

    fn manifest(members: Vec<PartMember>) -> PartManifest {
        PartManifest {
            schema_version: SCHEMA_VERSION,
            bundle_digest: "sha256:00".into(),
            arrow_schema: String::new(),
            rows_bytes: 10,
            rows: members.iter().fold(0, |sum: u64, m| sum.wrapping_add(m.rows)),
            members,
        }
    }

    #[test]
    fn a_manifest_reads_back_and_its_id_depends_on_members_only() {
        let written = manifest(vec![member("job-b", 2), member("job-a", 3)]);
        assert_eq!(PartManifest::from_json_bytes(&written.to_json_bytes()).unwrap(), written);
        let id = PartManifest::id_of(&written.members);
        assert!(is_part_id(&id), "{id}");
        assert_eq!(id, PartManifest::id_of(&[member("job-a", 3), member("job-b", 2)]), "member order does not matter");
        let mut other = member("job-a", 3);
        other.losses_bytes += 1;
        assert_ne!(id, PartManifest::id_of(&[other, member("job-b", 2)]), "another table version is another part");
        assert_eq!(part_id_of_manifest(&part_manifest_file(&id)), Some(id.as_str()));
        assert_eq!(part_id_of_manifest(&part_rows_file(&id)), None);
        assert_eq!(part_id_of_manifest("results/_compacted/../x.json"), None);
        assert_eq!(part_id_of_manifest("results/job-a/manifest.json"), None);
    }

    #[test]
    fn hostile_manifests_are_refused() {
        let good = manifest(vec![member("job-a", 3)]);
        let cases: Vec<(&str, PartManifest)> = vec![
            ("escaping job", manifest(vec![member("../x", 3)])),
            ("uppercase job", manifest(vec![member("Job", 3)])),
            ("listed twice", manifest(vec![member("job-a", 3), member("job-a", 3)])),
            ("escaping version", {
                let mut m = member("job-a", 3);
                m.losses = "tables/losses-../../x.parquet".into();
                manifest(vec![m])
            }),
            ("not a version", {
                let mut m = member("job-a", 3);
                m.losses = "losses.parquet".into();
                manifest(vec![m])
            }),
            ("rows lie", PartManifest { rows: 4, ..good.clone() }),
            ("rows overflow", manifest(vec![member("job-a", u64::MAX), member("job-b", 1)])),
            ("future schema", PartManifest { schema_version: 99, ..good.clone() }),
        ];
        for (case, bad) in cases {
            assert!(PartManifest::from_json_bytes(&serde_json::to_vec(&bad).unwrap()).is_err(), "{case}");
        }
        for bytes in [&b""[..], b"[]", b"{\"members\": 1}", b"\xff"] {
            assert!(PartManifest::from_json_bytes(bytes).is_err());
        }
    }
}
