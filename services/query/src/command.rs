//! The JSON commands of `proto/modelops/query/v1/FLIGHT_COMMANDS.md`, parsed strictly: an
//! unknown `type` or field, or a field of the wrong type, is an error naming the field.
//! Tickets are commands too, so any replica can serve any ticket.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::error::QueryError;

/// Row order of a losses query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    /// Whatever order the scan gives (a single job: its table order).
    #[default]
    None,
    /// Lowest loss first.
    LossAsc,
    /// Highest loss first.
    LossDesc,
}

/// Row status filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LossesQuery {
    /// Only these jobs.
    pub job_ids: Option<Vec<String>>,
    /// Only jobs of this bundle.
    pub bundle_digest: Option<String>,
    /// Only this target.
    pub target: Option<String>,
    /// Only rows of this status.
    pub status: Option<StatusFilter>,
    /// loss ≥ this.
    pub min_loss: Option<f64>,
    /// loss ≤ this.
    pub max_loss: Option<f64>,
    /// computed_at ≥ this.
    pub since: Option<DateTime<Utc>>,
    /// computed_at < this.
    pub until: Option<DateTime<Utc>>,
    /// Row order.
    pub order: Order,
    /// At most this many rows.
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
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Rows of the loss tables of many jobs.
    Losses(LossesQuery),
    /// The best parameter sets of a target across jobs.
    BestParameters {
        /// The target.
        target: String,
        /// How many.
        n: usize,
        /// Only jobs of this bundle.
        bundle_digest: Option<String>,
    },
    /// Two jobs side by side.
    Compare {
        /// The first job.
        job_a: String,
        /// The second job.
        job_b: String,
        /// Only this target.
        target: Option<String>,
    },
    /// One row per indexed job.
    Jobs,
    /// SQL over `losses` and `jobs`.
    Sql {
        /// The statement.
        query: String,
    },
}

/// The largest `n` of `best_parameters`.
pub const MAX_BEST: usize = 100_000;

struct Fields {
    object: Map<String, Value>,
}

impl Fields {
    fn take(&mut self, name: &str) -> Option<Value> {
        self.object.remove(name).filter(|v| !v.is_null())
    }

    fn string(&mut self, name: &str) -> Result<Option<String>, QueryError> {
        match self.take(name) {
            None => Ok(None),
            Some(Value::String(text)) => Ok(Some(text)),
            Some(other) => Err(QueryError::invalid(name, format!("expected a string, got {other}"))),
        }
    }

    fn required_string(&mut self, name: &str) -> Result<String, QueryError> {
        self.string(name)?.ok_or_else(|| QueryError::invalid(name, "required"))
    }

    fn number(&mut self, name: &str) -> Result<Option<f64>, QueryError> {
        match self.take(name) {
            None => Ok(None),
            Some(Value::Number(number)) => number.as_f64().map(Some).ok_or_else(|| QueryError::invalid(name, "not a finite number")),
            Some(other) => Err(QueryError::invalid(name, format!("expected a number, got {other}"))),
        }
    }

    fn count(&mut self, name: &str) -> Result<Option<usize>, QueryError> {
        match self.take(name) {
            None => Ok(None),
            Some(Value::Number(number)) => number
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| QueryError::invalid(name, format!("expected a non-negative integer, got {number}"))),
            Some(other) => Err(QueryError::invalid(name, format!("expected a non-negative integer, got {other}"))),
        }
    }

    fn time(&mut self, name: &str) -> Result<Option<DateTime<Utc>>, QueryError> {
        let Some(text) = self.string(name)? else { return Ok(None) };
        DateTime::parse_from_rfc3339(&text)
            .map(|t| Some(t.with_timezone(&Utc)))
            .map_err(|e| QueryError::invalid(name, format!("expected an RFC 3339 time like 2026-11-22T20:05:11Z, got {text:?}: {e}")))
    }

    fn strings(&mut self, name: &str) -> Result<Option<Vec<String>>, QueryError> {
        match self.take(name) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .into_iter()
                .map(|item| match item {
                    Value::String(text) => Ok(text),
                    other => Err(QueryError::invalid(name, format!("expected a list of strings, found {other}"))),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(other) => Err(QueryError::invalid(name, format!("expected a list of strings, got {other}"))),
        }
    }

    fn finish(self) -> Result<(), QueryError> {
        match self.object.keys().next() {
            None => Ok(()),
            Some(unknown) => Err(QueryError::invalid(unknown.clone(), "unknown field")),
        }
    }
}

impl Command {
    /// Parses a command from its JSON bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self, QueryError> {
        let value: Value = serde_json::from_slice(bytes).map_err(|e| QueryError::invalid("command", format!("not valid JSON: {e}")))?;
        let Value::Object(object) = value else {
            return Err(QueryError::invalid("command", "expected a JSON object with a \"type\" field"));
        };
        let mut fields = Fields { object };
        let kind = fields.required_string("type")?;
        let command = match kind.as_str() {
            "losses" => {
                let query = LossesQuery {
                    job_ids: fields.strings("job_ids")?,
                    bundle_digest: fields.string("bundle_digest")?,
                    target: fields.string("target")?,
                    status: match fields.string("status")?.as_deref() {
                        None => None,
                        Some("ok") => Some(StatusFilter::Ok),
                        Some("missing") => Some(StatusFilter::Missing),
                        Some("failed") => Some(StatusFilter::Failed),
                        Some(other) => return Err(QueryError::invalid("status", format!("expected ok, missing or failed, got {other:?}"))),
                    },
                    min_loss: fields.number("min_loss")?,
                    max_loss: fields.number("max_loss")?,
                    since: fields.time("since")?,
                    until: fields.time("until")?,
                    order: match fields.string("order")?.as_deref() {
                        None | Some("none") => Order::None,
                        Some("loss_asc") => Order::LossAsc,
                        Some("loss_desc") => Order::LossDesc,
                        Some(other) => return Err(QueryError::invalid("order", format!("expected none, loss_asc or loss_desc, got {other:?}"))),
                    },
                    limit: fields.count("limit")?,
                };
                Self::Losses(query)
            }
            "best_parameters" => {
                let target = fields.required_string("target")?;
                let n = fields.count("n")?.unwrap_or(10);
                if n == 0 || n > MAX_BEST {
                    return Err(QueryError::invalid("n", format!("expected 1 to {MAX_BEST}, got {n}")));
                }
                Self::BestParameters {
                    target,
                    n,
                    bundle_digest: fields.string("bundle_digest")?,
                }
            }
            "compare" => Self::Compare {
                job_a: fields.required_string("job_a")?,
                job_b: fields.required_string("job_b")?,
                target: fields.string("target")?,
            },
            "jobs" => Self::Jobs,
            "sql" => Self::Sql {
                query: fields.required_string("query")?,
            },
            other => {
                return Err(QueryError::invalid(
                    "type",
                    format!("unknown command {other:?}; expected losses, best_parameters, compare, jobs or sql"),
                ));
            }
        };
        fields.finish()?;
        Ok(command)
    }

    /// The command as JSON bytes (what tickets carry); [`Command::parse`] reads it back.
    pub fn to_json(&self) -> Vec<u8> {
        let mut object = Map::new();
        let mut put = |key: &str, value: Value| {
            if !value.is_null() {
                object.insert(key.to_owned(), value);
            }
        };
        match self {
            Self::Losses(query) => {
                put("type", "losses".into());
                put("job_ids", query.job_ids.clone().into());
                put("bundle_digest", query.bundle_digest.clone().into());
                put("target", query.target.clone().into());
                put("status", query.status.map(|s| s.as_str()).into());
                put("min_loss", query.min_loss.into());
                put("max_loss", query.max_loss.into());
                put("since", query.since.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)).into());
                put("until", query.until.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)).into());
                put(
                    "order",
                    match query.order {
                        Order::None => Value::Null,
                        Order::LossAsc => "loss_asc".into(),
                        Order::LossDesc => "loss_desc".into(),
                    },
                );
                put("limit", query.limit.into());
            }
            Self::BestParameters { target, n, bundle_digest } => {
                put("type", "best_parameters".into());
                put("target", target.clone().into());
                put("n", (*n).into());
                put("bundle_digest", bundle_digest.clone().into());
            }
            Self::Compare { job_a, job_b, target } => {
                put("type", "compare".into());
                put("job_a", job_a.clone().into());
                put("job_b", job_b.clone().into());
                put("target", target.clone().into());
            }
            Self::Jobs => put("type", "jobs".into()),
            Self::Sql { query } => {
                put("type", "sql".into());
                put("query", query.clone().into());
            }
        }
        serde_json::to_vec(&Value::Object(object)).expect("a JSON value serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(bytes: &[u8]) -> String {
        match Command::parse(bytes) {
            Err(QueryError::InvalidArgument { field, .. }) => field,
            other => panic!("expected InvalidArgument, got {other:?}"),
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
        ];
        for bytes in commands {
            let command = Command::parse(bytes).unwrap();
            assert_eq!(Command::parse(&command.to_json()).unwrap(), command, "{}", String::from_utf8_lossy(bytes));
        }
        let Command::BestParameters { n, .. } = Command::parse(br#"{"type":"best_parameters","target":"t"}"#).unwrap() else { panic!() };
        assert_eq!(n, 10, "n defaults to 10");
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(field_of(b"not json"), "command");
        assert_eq!(field_of(b"[1]"), "command");
        assert_eq!(field_of(br#"{"job_ids":[]}"#), "type");
        assert_eq!(field_of(br#"{"type":"nope"}"#), "type");
        assert_eq!(field_of(br#"{"type":"losses","min_loss":"low"}"#), "min_loss");
        assert_eq!(field_of(br#"{"type":"losses","limit":-1}"#), "limit");
        assert_eq!(field_of(br#"{"type":"losses","job_ids":"a"}"#), "job_ids");
        assert_eq!(field_of(br#"{"type":"losses","job_ids":[1]}"#), "job_ids");
        assert_eq!(field_of(br#"{"type":"losses","since":"yesterday"}"#), "since");
        assert_eq!(field_of(br#"{"type":"losses","status":"great"}"#), "status");
        assert_eq!(field_of(br#"{"type":"losses","order":"random"}"#), "order");
        assert_eq!(field_of(br#"{"type":"losses","colour":"red"}"#), "colour");
        assert_eq!(field_of(br#"{"type":"best_parameters"}"#), "target");
        assert_eq!(field_of(br#"{"type":"best_parameters","target":"t","n":0}"#), "n");
        assert_eq!(field_of(br#"{"type":"compare","job_a":"a"}"#), "job_b");
        assert_eq!(field_of(br#"{"type":"sql"}"#), "query");
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
