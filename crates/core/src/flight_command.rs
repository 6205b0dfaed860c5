//! The JSON commands of the query service's Flight API (`proto/modelops/query/v1/FLIGHT_COMMANDS.md`),
//! typed once here so the service and the fuzz targets read them the same way.
//!
//! A command is a JSON object whose `"type"` names it. It is read strictly, by serde in two steps:
//! the object and its `type`, then the other fields into that command's struct
//! (`deny_unknown_fields`) through `serde_path_to_error`. An unknown `type` or field, a field of
//! the wrong type or a missing required one is a [`CommandError`] naming the field; a `null`
//! field is an absent one. (One `#[serde(tag = "type")]` enum reads the same JSON, but serde
//! buffers a tagged enum's fields before typing them, so a type error no longer knows its field.)
//! Tickets are commands too, so any replica can serve any ticket: [`Command::to_json`] writes
//! one, as a `#[serde(tag = "type")]` enum, and [`Command::parse`] reads it back.

use chrono::{DateTime, Datelike, SecondsFormat, Utc};
use serde::de::{DeserializeOwned, Error as _, IntoDeserializer};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

/// The largest `n` of `best_parameters`.
pub const MAX_BEST: usize = 100_000;

/// The `n` of `best_parameters` when it is not given.
pub const DEFAULT_BEST: usize = 10;

/// Why bytes are not a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct CommandError {
    /// The field at fault, or `command` when the bytes are not a JSON object.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl CommandError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Row order of a losses query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    /// Whatever order the scan gives (a single job: its table order).
    #[default]
    None,
    /// Lowest loss first.
    LossAsc,
    /// Highest loss first.
    LossDesc,
}

impl Order {
    fn is_none(&self) -> bool {
        *self == Self::None
    }
}

/// Row status filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatusFilter {
    /// Rows with a loss.
    Ok,
    /// Rows without an aggregation.
    Missing,
    /// Rows whose aggregation failed.
    Failed,
}

impl StatusFilter {
    /// The value stored in the `status` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Missing => "missing",
            Self::Failed => "failed",
        }
    }
}

/// The `losses` command: rows of many jobs' tables.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LossesQuery {
    /// Only these jobs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_ids: Option<Vec<String>>,
    /// Only jobs of this bundle.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bundle_digest: Option<String>,
    /// Only this target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Only rows of this status.
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "variant_by_name")]
    pub status: Option<StatusFilter>,
    /// loss ≥ this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_loss: Option<f64>,
    /// loss ≤ this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_loss: Option<f64>,
    /// computed_at ≥ this.
    #[serde(skip_serializing_if = "Option::is_none", with = "rfc3339")]
    pub since: Option<DateTime<Utc>>,
    /// computed_at < this.
    #[serde(skip_serializing_if = "Option::is_none", with = "rfc3339")]
    pub until: Option<DateTime<Utc>>,
    /// Row order.
    #[serde(skip_serializing_if = "Order::is_none", deserialize_with = "variant_or_default")]
    pub order: Order,
    /// At most this many rows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

impl LossesQuery {
    /// The whole table of one job.
    pub fn whole_table(job_id: &str) -> Self {
        Self {
            job_ids: Some(vec![job_id.to_owned()]),
            ..Self::default()
        }
    }

    /// True when this asks for exactly one job's table as stored.
    pub fn single_table(&self) -> Option<&str> {
        match self.job_ids.as_deref() {
            Some([job]) if *self == Self::whole_table(job) => Some(job.as_str()),
            _ => None,
        }
    }
}

/// A query the service answers.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Command {
    /// Rows of the loss tables of many jobs.
    Losses(LossesQuery),
    /// The best parameter sets of a target across jobs.
    BestParameters {
        /// The target.
        target: String,
        /// How many, 1 to [`MAX_BEST`].
        n: usize,
        /// Only jobs of this bundle.
        #[serde(skip_serializing_if = "Option::is_none")]
        bundle_digest: Option<String>,
    },
    /// Two jobs side by side.
    Compare {
        /// The first job.
        job_a: String,
        /// The second job.
        job_b: String,
        /// Only this target.
        #[serde(skip_serializing_if = "Option::is_none")]
        target: Option<String>,
    },
    /// One row per indexed job.
    Jobs,
    /// SQL over `losses` and `jobs`.
    Sql {
        /// The statement.
        query: String,
    },
    /// One job's per-replicate table as stored (`replicates.parquet`).
    Replicates {
        /// The job.
        job_id: String,
    },
}

/// A command's `type`, read before its fields.
#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum Kind {
    Losses,
    BestParameters,
    Compare,
    Jobs,
    Sql,
    Replicates,
}

/// The fields of `best_parameters`; the required one is optional here so that a missing one is
/// reported by its name.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BestParametersFields {
    target: Option<String>,
    n: Option<usize>,
    bundle_digest: Option<String>,
}

/// The fields of `compare`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CompareFields {
    job_a: Option<String>,
    job_b: Option<String>,
    target: Option<String>,
}

/// The fields of `sql`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SqlFields {
    query: Option<String>,
}

/// The fields of `replicates`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplicatesFields {
    job_id: Option<String>,
}

/// The fields of `jobs`: none.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoFields {}

impl Command {
    /// Parses a command from its JSON bytes. Generic over the caller's error type, as
    /// [`crate::study::JobSpec::scan`] is, so a service reads a command straight into its own
    /// error (`Command::parse::<CommandError>` names this module's).
    pub fn parse<E: From<CommandError>>(bytes: &[u8]) -> Result<Self, E> {
        Self::read(bytes).map_err(E::from)
    }

    fn read(bytes: &[u8]) -> Result<Self, CommandError> {
        let value: Value = serde_json::from_slice(bytes).map_err(|e| CommandError::new("command", format!("not valid JSON: {e}")))?;
        let Value::Object(mut fields) = value else {
            return Err(CommandError::new("command", "expected a JSON object with a \"type\" field"));
        };
        let kind = match fields.remove("type") {
            None | Some(Value::Null) => return Err(CommandError::new("type", "required")),
            Some(Value::String(name)) => variant::<Kind>(&name).map_err(|e| CommandError::new("type", e.to_string()))?,
            Some(other) => return Err(CommandError::new("type", format!("expected a string, got {other}"))),
        };
        Ok(match kind {
            Kind::Losses => Self::Losses(typed(fields)?),
            Kind::BestParameters => {
                let BestParametersFields { target, n, bundle_digest } = typed(fields)?;
                let n = n.unwrap_or(DEFAULT_BEST);
                if n == 0 || n > MAX_BEST {
                    return Err(CommandError::new("n", format!("expected 1 to {MAX_BEST}, got {n}")));
                }
                Self::BestParameters {
                    target: required("target", target)?,
                    n,
                    bundle_digest,
                }
            }
            Kind::Compare => {
                let CompareFields { job_a, job_b, target } = typed(fields)?;
                Self::Compare {
                    job_a: required("job_a", job_a)?,
                    job_b: required("job_b", job_b)?,
                    target,
                }
            }
            Kind::Jobs => {
                let NoFields {} = typed(fields)?;
                Self::Jobs
            }
            Kind::Sql => {
                let SqlFields { query } = typed(fields)?;
                Self::Sql {
                    query: required("query", query)?,
                }
            }
            Kind::Replicates => {
                let ReplicatesFields { job_id } = typed(fields)?;
                Self::Replicates {
                    job_id: required("job_id", job_id)?,
                }
            }
        })
    }

    /// The command as JSON bytes (what tickets carry); [`Command::parse`] reads it back.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a command serializes: its maps have string keys")
    }
}

/// Reads a command's fields (the object without `type`) into `T`, naming the field of an error.
fn typed<T: DeserializeOwned>(fields: Map<String, Value>) -> Result<T, CommandError> {
    serde_path_to_error::deserialize(Value::Object(fields)).map_err(|error| {
        let field = match error.path().iter().next() {
            Some(serde_path_to_error::Segment::Map { key }) => key.clone(),
            _ => "command".to_owned(),
        };
        CommandError::new(field, error.into_inner().to_string())
    })
}

fn required(field: &str, value: Option<String>) -> Result<String, CommandError> {
    value.ok_or_else(|| CommandError::new(field, "required"))
}

/// A unit variant read from its name alone (serde_json would also read `{"ok": null}` as one).
fn variant<T: DeserializeOwned>(name: &str) -> Result<T, serde::de::value::Error> {
    T::deserialize(name.into_deserializer())
}

/// An optional unit variant, read from its name alone.
fn variant_by_name<'de, D: Deserializer<'de>, T: DeserializeOwned>(deserializer: D) -> Result<Option<T>, D::Error> {
    match Option::<String>::deserialize(deserializer)? {
        None => Ok(None),
        Some(name) => variant(&name).map(Some).map_err(D::Error::custom),
    }
}

/// A unit variant read from its name alone, the default when absent or `null`.
fn variant_or_default<'de, D: Deserializer<'de>, T: DeserializeOwned + Default>(deserializer: D) -> Result<T, D::Error> {
    variant_by_name(deserializer).map(Option::unwrap_or_default)
}

/// Optional RFC 3339 times (`2026-11-22T20:05:11Z`), written in UTC. A time whose UTC year is
/// outside 0000 to 9999 is refused: RFC 3339 cannot write it, so its ticket would not read back.
mod rfc3339 {
    use super::*;

    pub(super) fn serialize<S: serde::Serializer>(time: &Option<DateTime<Utc>>, serializer: S) -> Result<S::Ok, S::Error> {
        match time {
            Some(time) => serializer.serialize_str(&time.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
            None => serializer.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        let Some(text) = Option::<String>::deserialize(deserializer)? else {
            return Ok(None);
        };
        let time = DateTime::parse_from_rfc3339(&text)
            .map_err(|e| D::Error::custom(format!("expected an RFC 3339 time like 2026-11-22T20:05:11Z, got {text:?}: {e}")))?
            .with_timezone(&Utc);
        if !(0..=9999).contains(&time.year()) {
            return Err(D::Error::custom(format!("{text:?} is outside the years 0000 to 9999 in UTC")));
        }
        Ok(Some(time))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> Result<Command, CommandError> {
        Command::parse(bytes)
    }

    fn field_of(bytes: &[u8]) -> String {
        match parse(bytes) {
            Err(CommandError { field, .. }) => field,
            Ok(command) => panic!("{} parsed as {command:?}", String::from_utf8_lossy(bytes)),
        }
    }

    #[test]
    fn commands_round_trip_through_their_json() {
        let commands = [
            br#"{"type":"losses","job_ids":["a","b"],"bundle_digest":"sha256:00","target":"t","status":"ok","min_loss":0.5,"max_loss":2,"since":"2026-11-01T00:00:00Z","until":"2026-12-01T00:00:00.5Z","order":"loss_asc","limit":7}"#.as_slice(),
            br#"{"type":"best_parameters","target":"t","n":3}"#,
            br#"{"type":"compare","job_a":"a","job_b":"b","target":null}"#,
            br#"{"type":"jobs"}"#,
            br#"{"type":"sql","query":"SELECT 1"}"#,
            br#"{"type":"replicates","job_id":"job-1"}"#,
        ];
        for bytes in commands {
            let command = parse(bytes).unwrap();
            assert_eq!(parse(&command.to_json()).unwrap(), command, "{}", String::from_utf8_lossy(bytes));
        }
        let Command::BestParameters { n, .. } = parse(br#"{"type":"best_parameters","target":"t"}"#).unwrap() else { panic!() };
        assert_eq!(n, DEFAULT_BEST, "n defaults to 10");
    }

    #[test]
    fn tickets_name_the_type_first_and_leave_out_what_is_absent() {
        assert_eq!(Command::Jobs.to_json(), br#"{"type":"jobs"}"#);
        assert_eq!(Command::Replicates { job_id: "job-1".into() }.to_json(), br#"{"type":"replicates","job_id":"job-1"}"#);
        assert_eq!(Command::Losses(LossesQuery::whole_table("job-1")).to_json(), br#"{"type":"losses","job_ids":["job-1"]}"#);
        let since = DateTime::parse_from_rfc3339("2026-11-01T01:00:00+01:00").unwrap().with_timezone(&Utc);
        let query = LossesQuery {
            since: Some(since),
            order: Order::LossDesc,
            ..LossesQuery::default()
        };
        assert_eq!(Command::Losses(query).to_json(), br#"{"type":"losses","since":"2026-11-01T00:00:00Z","order":"loss_desc"}"#);
    }

    #[test]
    fn null_is_absent() {
        let query = parse(br#"{"type":"losses","job_ids":null,"status":null,"since":null,"order":null,"limit":null}"#).unwrap();
        assert_eq!(query, Command::Losses(LossesQuery::default()));
        assert_eq!(field_of(br#"{"type":"sql","query":null}"#), "query", "a required field that is null is missing");
        assert_eq!(field_of(br#"{"type":null}"#), "type");
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(field_of(b"not json"), "command");
        assert_eq!(field_of(b"[1]"), "command");
        assert_eq!(field_of(br#"{"job_ids":[]}"#), "type");
        assert_eq!(field_of(br#"{"type":"nope"}"#), "type");
        assert_eq!(field_of(br#"{"type":["losses"]}"#), "type");
        assert_eq!(field_of(br#"{"type":"losses","min_loss":"low"}"#), "min_loss");
        assert_eq!(field_of(br#"{"type":"losses","limit":-1}"#), "limit");
        assert_eq!(field_of(br#"{"type":"losses","limit":1.5}"#), "limit");
        assert_eq!(field_of(br#"{"type":"losses","job_ids":"a"}"#), "job_ids");
        assert_eq!(field_of(br#"{"type":"losses","job_ids":[1]}"#), "job_ids");
        assert_eq!(field_of(br#"{"type":"losses","since":"yesterday"}"#), "since");
        assert_eq!(field_of(br#"{"type":"losses","status":"great"}"#), "status");
        assert_eq!(field_of(br#"{"type":"losses","status":{"ok":null}}"#), "status", "a variant is its name, not a map");
        assert_eq!(field_of(br#"{"type":"losses","order":"random"}"#), "order");
        assert_eq!(field_of(br#"{"type":"losses","colour":"red"}"#), "colour");
        assert_eq!(field_of(br#"{"type":"jobs","colour":null}"#), "colour");
        assert_eq!(field_of(br#"{"type":"best_parameters"}"#), "target");
        assert_eq!(field_of(br#"{"type":"best_parameters","target":"t","n":0}"#), "n");
        assert_eq!(field_of(br#"{"type":"best_parameters","target":"t","n":100001}"#), "n");
        assert_eq!(field_of(br#"{"type":"compare","job_a":"a"}"#), "job_b");
        assert_eq!(field_of(br#"{"type":"sql"}"#), "query");
        assert_eq!(field_of(br#"{"type":"replicates"}"#), "job_id");
        assert_eq!(field_of(br#"{"type":"replicates","job_id":1}"#), "job_id");
        assert_eq!(field_of(br#"{"type":"replicates","job_id":"a","limit":1}"#), "limit");
    }

    #[test]
    fn times_a_ticket_cannot_write_are_refused() {
        // The flight_command fuzz target's property (a command's ticket reads back as the command)
        // failed here: the UTC time is in year -1, written as "-0001-12-31T23:00:00Z", which
        // RFC 3339 does not allow, so GetFlightInfo answered with a ticket DoGet refused.
        assert_eq!(field_of(br#"{"type":"losses","since":"0000-01-01T00:00:00+01:00"}"#), "since");
        assert_eq!(field_of(br#"{"type":"losses","until":"9999-12-31T23:00:00-01:00"}"#), "until");
        for edge in ["0000-01-01T00:00:00Z", "9999-12-31T23:59:59.999999999Z", "0000-01-01T00:30:00+00:30"] {
            let bytes = format!(r#"{{"type":"losses","since":"{edge}"}}"#);
            let command = parse(bytes.as_bytes()).unwrap();
            assert_eq!(parse(&command.to_json()).unwrap(), command, "{edge}");
        }
    }

    #[test]
    fn only_an_unfiltered_one_job_query_is_a_single_table() {
        assert_eq!(LossesQuery::whole_table("a").single_table(), Some("a"));
        let filtered = LossesQuery {
            limit: Some(1),
            ..LossesQuery::whole_table("a")
        };
        assert_eq!(filtered.single_table(), None);
        let two = LossesQuery {
            job_ids: Some(vec!["a".into(), "b".into()]),
            ..LossesQuery::default()
        };
        assert_eq!(two.single_table(), None);
    }
}
