//! The identifiers and hashes of upstream ModelOps, bit for bit (UPSTREAM-FORMAT.md §1).
//!
//! Every hash is unkeyed BLAKE2b written as lowercase hex. The digest size is a parameter of
//! BLAKE2b itself, so `blake2b(digest_size=16)` is not `blake2b(digest_size=32)` cut short;
//! upstream mixes both and each function here names the one it uses.

use crate::pyjson::{self, PyObject, PyValue};

/// Prefix of the param_id preimage.
pub const PARAM_ID_PREFIX: &str = "contracts:param:v1|";

/// Why parameters cannot be hashed into a param_id.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParamIdError {
    /// A float that is NaN or infinite (upstream raises ContractViolationError).
    #[error("parameter {name:?} is not a finite float")]
    NonFinite {
        /// Dotted path of the offending value.
        name: String,
    },
}

/// BLAKE2b with the given digest size (1..=64 bytes), as lowercase hex.
pub fn blake2b_hex(data: &[u8], digest_size: usize) -> String {
    blake2b_simd::Params::new()
        .hash_length(digest_size)
        .hash(data)
        .to_hex()
        .to_string()
}

/// The first `n` characters of `s` (Python `s[:n]`), safe on any input.
pub fn py_prefix(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((index, _)) => &s[..index],
        None => s,
    }
}

fn check_finite(value: &PyValue, path: &str) -> Result<(), ParamIdError> {
    match value {
        PyValue::Float(f) if !f.is_finite() => Err(ParamIdError::NonFinite {
            name: path.to_owned(),
        }),
        PyValue::List(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, item)| check_finite(item, &format!("{path}[{i}]"))),
        PyValue::Object(object) => object
            .iter()
            .try_for_each(|(k, v)| check_finite(v, &format!("{path}.{k}"))),
        _ => Ok(()),
    }
}

/// The canonical preimage of a parameter mapping: `contracts:param:v1|` followed by the compact,
/// recursively key-sorted, raw-UTF-8 JSON. `-0.0` stays `-0.0` and `1` differs from `1.0`, as in
/// `make_param_id`.
pub fn param_preimage(params: &PyObject) -> Result<String, ParamIdError> {
    for (name, value) in params.iter() {
        check_finite(value, name)?;
    }
    let sorted = PyValue::Object(params.sorted());
    Ok(format!("{PARAM_ID_PREFIX}{}", pyjson::to_canonical(&sorted)))
}

/// `make_param_id`: BLAKE2b-256 of [`param_preimage`], 64 hex characters.
pub fn param_id(params: &PyObject) -> Result<String, ParamIdError> {
    Ok(blake2b_hex(param_preimage(params)?.as_bytes(), 32))
}

fn blake2b_u64(data: &[u8]) -> u64 {
    let hash = blake2b_simd::Params::new().hash_length(8).hash(data);
    u64::from_be_bytes(hash.as_bytes().try_into().expect("8-byte digest"))
}

/// Seed of replicate `i` of a study entry without an explicit seed (`SimulationStudy.to_simjob`):
/// BLAKE2b-64 of `"{param_id}:{i}"`, big-endian, modulo 2^32.
pub fn replicate_seed(param_id: &str, replicate: u64) -> u64 {
    blake2b_u64(format!("{param_id}:{replicate}").as_bytes()) % (1 << 32)
}

/// Calabaria's per-trial seed: BLAKE2b-64 over `"{param_id}:trial"` followed by the decimal
/// `base_seed`, big-endian, masked to 31 bits. Replicate `i` then runs with `trial_seed + i`.
pub fn calibration_trial_seed(param_id: &str, base_seed: i128) -> u64 {
    blake2b_u64(format!("{param_id}:trial{base_seed}").as_bytes()) & 0x7FFF_FFFF
}

/// The task id the workers actually compute for a successful simulation: BLAKE2b-256 of
/// `"{param_id[:16]}-{seed}-{sorted output names joined by ','}"`. The output names are the keys
/// of the produced artifact map, `metadata` included.
pub fn runner_task_id<'a>(param_id: &str, seed: u64, output_names: impl IntoIterator<Item = &'a str>) -> String {
    let mut names: Vec<&str> = output_names.into_iter().collect();
    names.sort_unstable();
    let preimage = format!("{}-{seed}-{}", py_prefix(param_id, 16), names.join(","));
    blake2b_hex(preimage.as_bytes(), 32)
}

/// The task id of a failed simulation: BLAKE2b-256 of `"{param_id[:16]}-{seed}-error"`.
pub fn runner_error_task_id(param_id: &str, seed: u64) -> String {
    let preimage = format!("{}-{seed}-error", py_prefix(param_id, 16));
    blake2b_hex(preimage.as_bytes(), 32)
}

/// The contracts' `canonical_task_id` (BLAKE2b-128 of `sim:v1|bundle|entrypoint|param_id|seed`).
/// Nothing upstream calls it; it is here so readers of old indexes can recompute it.
pub fn canonical_task_id(bundle_ref: &str, entrypoint: &str, param_id: &str, seed: u64) -> String {
    let preimage = format!("sim:v1|{bundle_ref}|{entrypoint}|{param_id}|{seed}");
    blake2b_hex(preimage.as_bytes(), 16)
}

fn aggregation_key<'a>(target_entrypoint: &str, task_ids: impl IntoIterator<Item = &'a str>) -> String {
    let mut ids: Vec<&str> = task_ids.into_iter().collect();
    ids.sort_unstable();
    format!("{target_entrypoint}:{}", ids.join(","))
}

/// The aggregation id the provenance store uses (`AggregationTask.aggregation_id()`):
/// BLAKE2b-256 of `"{target_entrypoint}:{sorted task ids joined by ','}"`, hex cut to 16.
pub fn aggregation_id<'a>(target_entrypoint: &str, task_ids: impl IntoIterator<Item = &'a str>) -> String {
    let mut hex = blake2b_hex(aggregation_key(target_entrypoint, task_ids).as_bytes(), 32);
    hex.truncate(16);
    hex
}

/// The contracts' unused `utils.aggregation_id` (BLAKE2b-128 of the same key, cut to 16). It never
/// matches a directory the store wrote; kept only to recognise paths from the deleted indexer.
pub fn legacy_aggregation_id<'a>(target_entrypoint: &str, task_ids: impl IntoIterator<Item = &'a str>) -> String {
    let mut hex = blake2b_hex(aggregation_key(target_entrypoint, task_ids).as_bytes(), 16);
    hex.truncate(16);
    hex
}

/// The two-level shard of a sim directory: BLAKE2b-256 of the param_id text, `h[0:2]/h[2:4]`.
pub fn shard(param_id: &str) -> String {
    let hex = blake2b_hex(param_id.as_bytes(), 32);
    format!("{}/{}", &hex[0..2], &hex[2..4])
}

/// The digest the store puts in paths: everything after the first `:` of the bundle ref, or the
/// whole ref when it has none (`sha256:<hex>` and `repo@sha256:<hex>` both give `<hex>`).
pub fn bundle_digest(bundle_ref: &str) -> &str {
    bundle_ref.split_once(':').map_or(bundle_ref, |(_, rest)| rest)
}

/// The first 12 characters of [`bundle_digest`], as used in provenance paths (no re-hashing).
pub fn bundle12(bundle_ref: &str) -> &str {
    py_prefix(bundle_digest(bundle_ref), 12)
}

/// Whether `bundle_ref` is valid for a task or job: `sha256:` and 64 lowercase hex characters,
/// optionally preceded by a non-empty `repo@`.
pub fn is_valid_bundle_ref(bundle_ref: &str) -> bool {
    let digest = match bundle_ref.rsplit_once('@') {
        Some((repo, digest)) if !repo.is_empty() => digest,
        Some(_) => return false,
        None => bundle_ref,
    };
    digest
        .strip_prefix("sha256:")
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

/// The checksum of an inline artifact: BLAKE2b-256 of its bytes.
pub fn artifact_checksum(bytes: &[u8]) -> String {
    blake2b_hex(bytes, 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(json: &str) -> PyObject {
        pyjson::parse(json.as_bytes()).unwrap().as_object().unwrap().clone()
    }

    const BUNDLE: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const PARAM_ID: &str = "761edf35ca1634d79a760bfa7030cf07e72a3559b3cdb0c56d20557de35b1e07";

    /// UPSTREAM-FORMAT.md §1.1, every row of the worked-example table.
    #[test]
    fn param_id_worked_examples() {
        let cases = [
            (r#"{"beta":0.3,"gamma":0.1}"#, r#"{"beta":0.3,"gamma":0.1}"#, PARAM_ID),
            (r#"{"gamma":0.1,"beta":0.3}"#, r#"{"beta":0.3,"gamma":0.1}"#, PARAM_ID),
            (
                r#"{"R0":2.5,"incubation_days":5,"name":"base","flag":true}"#,
                r#"{"R0":2.5,"flag":true,"incubation_days":5,"name":"base"}"#,
                "7a7ab8a0b3f05bbe343bb7d021e94b77f100afe2a117c920a65085de35e6f7c0",
            ),
            (r#"{"x":1}"#, r#"{"x":1}"#, "4560ff738e380536d589079a5e24b30713f9257440dfb2f0134f7350c0985942"),
            (r#"{"x":1.0}"#, r#"{"x":1.0}"#, "3f1b615cf1dab4bfd2505c195f18fe8d70035f80beb5b0056c93844204158684"),
            (
                r#"{"lr":1e-05,"big":1e16,"neg0":-0.0,"u":"é"}"#,
                r#"{"big":1e+16,"lr":1e-05,"neg0":-0.0,"u":"é"}"#,
                "bb04dc2ed3305d7a395b3ea279925880348fa3c7de914f92e803210d054ec565",
            ),
            ("{}", "{}", "02a98351d516148f91f93bb0ce4b4cb6468cb40e04263fb6f257e9ba37365b44"),
            (
                r#"{"s":"a\"b\\c\nd\u0001\u007fé😀"}"#,
                "{\"s\":\"a\\\"b\\\\c\\nd\\u0001\u{7f}é😀\"}",
                "f52a64b91207ba296081fc40ce71b7d2a9d78150ab0fa1cab1999cb9c8d2500f",
            ),
            (
                r#"{"big":12345678901234567890,"f":123456789012345678.0,"g":0.0001,"h":1e-7,"n":null}"#,
                r#"{"big":12345678901234567890,"f":1.2345678901234568e+17,"g":0.0001,"h":1e-07,"n":null}"#,
                "122a271f5fe1aa1d5bc6aa43a53a9ca956e4a581a3b867685bb3ea36735f3891",
            ),
            (
                r#"{"nested":{"b":1,"a":[1,2.5,"x"]}}"#,
                r#"{"nested":{"a":[1,2.5,"x"],"b":1}}"#,
                "e65df1c0ef3c2879c1606d9415e99199c82b53e53274da939c0e47b1e485835a",
            ),
        ];
        for (input, canonical, expected) in cases {
            let p = params(input);
            assert_eq!(param_preimage(&p).unwrap(), format!("{PARAM_ID_PREFIX}{canonical}"), "{input}");
            assert_eq!(param_id(&p).unwrap(), expected, "{input}");
        }
    }

    #[test]
    fn param_id_rejects_non_finite() {
        let err = param_id(&params(r#"{"a":{"b":[1,NaN]}}"#)).unwrap_err();
        assert_eq!(err, ParamIdError::NonFinite { name: "a.b[1]".into() });
        assert!(param_id(&params(r#"{"x":Infinity}"#)).is_err());
    }

    /// UPSTREAM-FORMAT.md §1.8, the verified end-to-end example.
    #[test]
    fn end_to_end_worked_example() {
        let seeds: Vec<u64> = (0..3).map(|i| replicate_seed(PARAM_ID, i)).collect();
        assert_eq!(seeds, [751131435, 2264224431, 472503505]);
        let r0 = blake2b_simd::Params::new().hash_length(8).hash(format!("{PARAM_ID}:0").as_bytes());
        assert_eq!(r0.to_hex().as_str(), "1007210e2cc55b2b");

        let outputs = ["prevalence", "metadata", "incidence"];
        let task_ids: Vec<String> = seeds.iter().map(|s| runner_task_id(PARAM_ID, *s, outputs)).collect();
        assert_eq!(
            task_ids,
            [
                "3c34003dd56d6a8521b251083422ef60c6f229c926d968961096cf4e6e1599af",
                "8e7c97e0d8d35917177d32156e1e648678c6bc7e835564b87585ab573b233ba9",
                "959096b6183bf2defecf39c9f20c590c235659d56bc54eb13ab65fe12a8e4af2",
            ]
        );
        assert_eq!(
            runner_error_task_id(PARAM_ID, 751131435),
            "412e623c0339e8e50b57990cf731db5dba49167a62d5c56be92f6b208eb92cad"
        );
        assert_eq!(
            canonical_task_id(BUNDLE, "models.seir.SEIR/baseline", PARAM_ID, 751131435),
            "78fdeef176bbb04a0f6bb14bfbe8b3b4"
        );
        assert_eq!(shard(PARAM_ID), "9a/db");

        let target = "targets.prev:prevalence_target";
        let ids = task_ids.iter().map(String::as_str);
        assert_eq!(aggregation_id(target, ids.clone()), "4efec569a17ca9ef");
        assert_eq!(aggregation_id(target, ids.clone().rev()), "4efec569a17ca9ef", "inputs are sorted");
        assert_eq!(legacy_aggregation_id(target, ids), "e7496ae42e236e0b");
        assert_eq!(aggregation_id(target, [&*"ab".repeat(32)]), "2252fb0ece6717f6");

        let explicit = param_id(&params(r#"{"beta":0.5,"gamma":0.1}"#)).unwrap();
        assert!(explicit.starts_with("4dcc7ab13573314d"), "{explicit}");

        assert_eq!(calibration_trial_seed(PARAM_ID, 42), 1374562924);
    }

    #[test]
    fn bundle_digest_slices() {
        assert_eq!(bundle12(BUNDLE), "0123456789ab");
        assert_eq!(bundle12(&format!("repo@{BUNDLE}")), "0123456789ab");
        assert_eq!(bundle12("plainstring"), "plainstring");
        assert!(is_valid_bundle_ref(BUNDLE));
        assert!(is_valid_bundle_ref(&format!("ghcr.io/org/m@{BUNDLE}")));
        assert!(!is_valid_bundle_ref(&format!("@{BUNDLE}")));
        assert!(!is_valid_bundle_ref("sha512:abcd"));
        assert!(!is_valid_bundle_ref(&BUNDLE.to_uppercase()));
    }

    #[test]
    fn py_prefix_counts_characters() {
        assert_eq!(py_prefix("éé-abc", 2), "éé");
        assert_eq!(py_prefix("ab", 16), "ab");
    }
}
