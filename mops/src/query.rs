//! `mops results losses|best|query|compare|sql|jobs`: the query service from the command line.
//! Every answer streams from the server's Flight endpoints straight into the chosen format; only
//! the table format for people keeps (at most `--max-rows`) rows in memory.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use arrow::array::{Array, ArrayRef, Float64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::error::FlightError;
use arrow_flight::FlightDescriptor;
use futures::{StreamExt, TryStreamExt};
use modelops_query::command::{Command, LossesQuery, Order, StatusFilter};

use crate::client::{AuthedChannel, status_error};
use crate::output::{Notation, Table};

/// Output formats of query answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// An aligned table for people (the first `--max-rows` rows, long ids shortened).
    Table,
    /// CSV with a header.
    Csv,
    /// JSON lines, one object per row.
    Json,
    /// Parquet (zstd); needs `-o` or a redirected stdout.
    Parquet,
}

/// Where and how to write an answer.
#[derive(Debug, Clone, clap::Args)]
pub struct OutputArgs {
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    /// Write to this file instead of stdout.
    #[arg(short = 'o', long = "output")]
    pub output: Option<PathBuf>,
    /// Rows shown by the table format.
    #[arg(long, default_value_t = 50)]
    pub max_rows: usize,
}

/// `--status` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StatusArg {
    /// Rows with a loss.
    Ok,
    /// Rows without an aggregation.
    Missing,
    /// Rows whose aggregation failed.
    Failed,
}

/// `--order` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OrderArg {
    /// Lowest loss first.
    LossAsc,
    /// Highest loss first.
    LossDesc,
}

/// The filters of `mops results query`.
#[derive(Debug, Clone, clap::Args)]
pub struct QueryArgs {
    /// Only these jobs (repeat the flag for several).
    #[arg(long = "job")]
    pub jobs: Vec<String>,
    /// Only jobs of this bundle (full ref, digest hex, or ≥ 12 hex digits of it).
    #[arg(long, value_parser = parse_bundle)]
    pub bundle: Option<String>,
    /// Only this target (entrypoint, or the name after its last `:`).
    #[arg(long)]
    pub target: Option<String>,
    /// Only rows of this status.
    #[arg(long, value_enum)]
    pub status: Option<StatusArg>,
    /// Only losses ≥ this.
    #[arg(long)]
    pub min_loss: Option<f64>,
    /// Only losses ≤ this.
    #[arg(long)]
    pub max_loss: Option<f64>,
    /// Only results computed at or after this time (RFC 3339, or a UTC date `YYYY-MM-DD`).
    #[arg(long, value_parser = parse_time)]
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// Only results computed before this time (RFC 3339, or a UTC date `YYYY-MM-DD`).
    #[arg(long, value_parser = parse_time)]
    pub until: Option<chrono::DateTime<chrono::Utc>>,
    /// Row order.
    #[arg(long, value_enum)]
    pub order: Option<OrderArg>,
    /// At most this many rows.
    #[arg(long)]
    pub limit: Option<usize>,
}

/// Parses a bundle as `--bundle` takes it: a full ref (`sha256:<hex>`, `repo@sha256:<hex>`), its
/// digest hex, or a prefix of at least 12 hex digits of it; anything else would match no job.
pub fn parse_bundle(text: &str) -> Result<String, String> {
    let (algorithm, hex) = text.rsplit_once(':').map_or(("sha256", text), |(algorithm, hex)| (algorithm, hex));
    let algorithm_ok = algorithm == "sha256" || algorithm.ends_with("@sha256");
    if algorithm_ok && (12..=64).contains(&hex.len()) && hex.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(text.to_ascii_lowercase())
    } else {
        Err(format!(
            "{text:?} names no bundle: give at least 12 hex digits of its digest, optionally prefixed with `sha256:` \
             (e.g. 0123456789ab or sha256:0123456789ab…)"
        ))
    }
}

/// Parses a time as `--since`/`--until` take it: RFC 3339 (`2026-11-29T08:00:00Z`), the same
/// without an offset (UTC), or a date (`2026-11-29`, its midnight UTC).
pub fn parse_time(text: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    use chrono::{NaiveDate, NaiveDateTime, TimeZone as _, Utc};
    if let Ok(at) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&Utc));
    }
    if let Ok(at) = NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f") {
        return Ok(Utc.from_utc_datetime(&at));
    }
    if let Ok(day) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(Utc.from_utc_datetime(&day.and_time(chrono::NaiveTime::MIN)));
    }
    Err(format!("{text:?} is not a time: give a date (2026-11-29) or an RFC 3339 time (2026-11-29T08:00:00Z)"))
}

impl QueryArgs {
    fn to_query(&self) -> LossesQuery {
        LossesQuery {
            job_ids: (!self.jobs.is_empty()).then(|| self.jobs.clone()),
            bundle_digest: self.bundle.clone(),
            target: self.target.clone(),
            status: self.status.map(|s| match s {
                StatusArg::Ok => StatusFilter::Ok,
                StatusArg::Missing => StatusFilter::Missing,
                StatusArg::Failed => StatusFilter::Failed,
            }),
            min_loss: self.min_loss,
            max_loss: self.max_loss,
            since: self.since,
            until: self.until,
            order: match self.order {
                None => Order::None,
                Some(OrderArg::LossAsc) => Order::LossAsc,
                Some(OrderArg::LossDesc) => Order::LossDesc,
            },
            limit: self.limit,
        }
    }
}

/// What to ask the query service.
#[derive(Debug, Clone)]
pub enum Question {
    /// A descriptor path (`["losses", job]`).
    Path(Vec<String>),
    /// A JSON command.
    Command(Command),
}

/// Builds the question of a `mops results` query subcommand.
pub fn losses_of(job: &str) -> Question {
    Question::Path(vec!["losses".into(), job.into()])
}

/// The `losses` command for `args`.
pub fn query_of(args: &QueryArgs) -> Question {
    Question::Command(Command::Losses(args.to_query()))
}

/// Asks the service and writes every endpoint's batches to `output`. A reader that goes away
/// (`mops results … | head`) ends the command quietly and successfully.
pub async fn answer(channel: AuthedChannel, question: Question, output: &OutputArgs) -> anyhow::Result<()> {
    let mut client = crate::client::flight(channel);
    let descriptor = match question {
        Question::Path(path) => FlightDescriptor::new_path(path),
        Question::Command(command) => FlightDescriptor::new_cmd(command.to_json()),
    };
    let info = client.get_flight_info(descriptor).await.map_err(status_error)?.into_inner();
    let schema: SchemaRef = std::sync::Arc::new(info.clone().try_decode_schema().context("decoding the answer's schema")?);
    if output.format == Format::Parquet && output.output.is_none() && std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        anyhow::bail!("Parquet is binary: give -o FILE or redirect stdout");
    }
    let destination: Box<dyn Write + Send> = match &output.output {
        Some(path) => Box::new(std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?),
        None => Box::new(std::io::stdout()),
    };
    let (destination, closed) = Closable::wrap(destination);
    let written = async {
        let mut writer = Writer::new(output.format, output.max_rows, destination, &schema)?;
        for endpoint in info.endpoint {
            let ticket = endpoint.ticket.context("the server sent an endpoint without a ticket")?;
            let response = client.do_get(ticket).await.map_err(status_error)?.into_inner();
            let mut batches = FlightRecordBatchStream::new_from_flight_data(response.map_err(FlightError::from));
            while let Some(batch) = batches.next().await {
                let batch = batch.map_err(|e| match e {
                    FlightError::Tonic(status) => status_error(*status),
                    other => anyhow::anyhow!(other),
                })?;
                writer.write(&batch)?;
            }
        }
        writer.finish()
    }
    .await;
    match written {
        Err(_) if closed.load(Ordering::Relaxed) => Ok(()),
        Err(error) => {
            if let Some(path) = &output.output {
                // Leave no half-written (or header-only) file behind.
                let _ = std::fs::remove_file(path);
            }
            Err(error)
        }
        Ok(()) => Ok(()),
    }
}

/// A writer that notes when its reader went away (a broken pipe), so that a closed stdout ends
/// the command quietly instead of failing it.
struct Closable {
    inner: std::io::BufWriter<Box<dyn Write + Send>>,
    closed: Arc<AtomicBool>,
}

impl Closable {
    fn wrap(inner: Box<dyn Write + Send>) -> (Box<dyn Write + Send>, Arc<AtomicBool>) {
        let closed = Arc::new(AtomicBool::new(false));
        let writer = Self {
            inner: std::io::BufWriter::new(inner),
            closed: Arc::clone(&closed),
        };
        (Box::new(writer), closed)
    }

    fn note<T>(&self, result: std::io::Result<T>) -> std::io::Result<T> {
        if let Err(error) = &result
            && error.kind() == std::io::ErrorKind::BrokenPipe
        {
            self.closed.store(true, Ordering::Relaxed);
        }
        result
    }
}

impl Write for Closable {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let result = self.inner.write(buf);
        self.note(result)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let result = self.inner.flush();
        self.note(result)
    }
}

enum Sink {
    Table {
        out: Box<dyn Write + Send>,
        batches: Vec<RecordBatch>,
        rows: usize,
        dropped: usize,
        max_rows: usize,
    },
    Csv(arrow::csv::Writer<Box<dyn Write + Send>>),
    Json(arrow::json::LineDelimitedWriter<Box<dyn Write + Send>>),
    Parquet(parquet::arrow::ArrowWriter<Box<dyn Write + Send>>),
}

/// Writes batches in one format to one destination.
struct Writer {
    sink: Sink,
}

impl Writer {
    fn new(format: Format, max_rows: usize, out: Box<dyn Write + Send>, schema: &SchemaRef) -> anyhow::Result<Self> {
        let sink = match format {
            Format::Table => Sink::Table {
                out,
                batches: Vec::new(),
                rows: 0,
                dropped: 0,
                max_rows,
            },
            Format::Csv => Sink::Csv(arrow::csv::WriterBuilder::new().with_header(true).build(out)),
            Format::Json => Sink::Json(arrow::json::LineDelimitedWriter::new(out)),
            Format::Parquet => {
                let properties = parquet::file::properties::WriterProperties::builder()
                    .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
                    .build();
                Sink::Parquet(parquet::arrow::ArrowWriter::try_new(out, Arc::new(modelops_query::engine::expanded_schema(schema)), Some(properties))?)
            }
        };
        Ok(Self { sink })
    }

    /// Writes a batch (the table format keeps what it shows and counts the rest).
    fn write(&mut self, batch: &RecordBatch) -> anyhow::Result<()> {
        match &mut self.sink {
            Sink::Table {
                batches, rows, dropped, max_rows, ..
            } => {
                let keep = batch.num_rows().min(max_rows.saturating_sub(*rows));
                if keep > 0 {
                    batches.push(batch.slice(0, keep));
                }
                *rows += keep;
                *dropped += batch.num_rows() - keep;
            }
            Sink::Csv(writer) => writer.write(&flatten_lists(batch)?)?,
            Sink::Json(writer) => writer.write(batch)?,
            // A whole loss table comes with a few text columns as dictionaries: the file written
            // is the table as the results store holds it.
            Sink::Parquet(writer) => writer.write(&modelops_query::engine::expanded(batch)?)?,
        }
        Ok(())
    }

    fn finish(self) -> anyhow::Result<()> {
        match self.sink {
            Sink::Table {
                mut out, batches, rows, dropped, ..
            } => {
                if rows + dropped == 0 {
                    writeln!(out, "(0 rows)")?;
                } else {
                    writeln!(out, "{}", render(&batches)?)?;
                    if dropped > 0 {
                        writeln!(out, "… {dropped} more rows ({} in all); use --max-rows, or --format csv|json|parquet -o FILE", rows + dropped)?;
                    } else {
                        writeln!(out, "({rows} rows)")?;
                    }
                }
                out.flush()?;
            }
            Sink::Csv(writer) => writer.into_inner().flush()?,
            Sink::Json(mut writer) => {
                writer.finish()?;
                writer.into_inner().flush()?;
            }
            Sink::Parquet(writer) => {
                writer.close()?;
            }
        }
        Ok(())
    }
}

/// `batch` with every nested column (a list, a struct) as text, `[a, b]`: CSV has no lists.
fn flatten_lists(batch: &RecordBatch) -> anyhow::Result<RecordBatch> {
    let schema = batch.schema();
    if !schema.fields().iter().any(|f| f.data_type().is_nested()) {
        return Ok(batch.clone());
    }
    let options = FormatOptions::default().with_null("");
    let mut fields = Vec::with_capacity(batch.num_columns());
    let mut columns = Vec::with_capacity(batch.num_columns());
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        if field.data_type().is_nested() {
            let formatter = ArrayFormatter::try_new(column.as_ref(), &options)?;
            let text: StringArray = (0..column.len()).map(|row| column.is_valid(row).then(|| formatter.value(row).to_string())).collect();
            fields.push(Field::new(field.name(), DataType::Utf8, true));
            columns.push(Arc::new(text) as ArrayRef);
        } else {
            fields.push(field.as_ref().clone());
            columns.push(Arc::clone(column));
        }
    }
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?)
}

/// Columns people do not need in a table (constant per job, or too long).
const HIDDEN_IN_TABLES: [&str; 2] = ["bundle_digest", "computed_at"];

/// Batches as an aligned table: long hex ids shortened to 12 digits, targets to their name,
/// floating-point numbers to four significant digits in one notation per column.
fn render(batches: &[RecordBatch]) -> anyhow::Result<String> {
    let Some(first) = batches.first() else { return Ok(String::new()) };
    let schema = first.schema();
    let shown: Vec<usize> = (0..schema.fields().len())
        .filter(|i| !HIDDEN_IN_TABLES.contains(&schema.field(*i).name().as_str()))
        .collect();
    let header: Vec<String> = shown.iter().map(|i| schema.field(*i).name().clone()).collect();
    let mut table = Table::with_header(header);
    let options = FormatOptions::default().with_null("");
    let floats = |batch: &RecordBatch, i: usize| -> anyhow::Result<Option<Float64Array>> {
        if !schema.field(i).data_type().is_floating() {
            return Ok(None);
        }
        let column = arrow::compute::cast(batch.column(i), &DataType::Float64)?;
        Ok(Some(column.as_any().downcast_ref::<Float64Array>().context("a float column cast to Float64")?.clone()))
    };
    let mut notations = Vec::with_capacity(shown.len());
    for i in &shown {
        let mut values = Vec::new();
        for batch in batches {
            if let Some(column) = floats(batch, *i)? {
                values.extend(column.iter().flatten());
            }
        }
        notations.push(Notation::for_values(values));
    }
    for batch in batches {
        let formatters = shown
            .iter()
            .map(|i| ArrayFormatter::try_new(batch.column(*i).as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()?;
        let numbers = shown.iter().map(|i| floats(batch, *i)).collect::<anyhow::Result<Vec<_>>>()?;
        for row in 0..batch.num_rows() {
            let cells = shown
                .iter()
                .enumerate()
                .map(|(n, i)| match &numbers[n] {
                    Some(column) if column.is_valid(row) => notations[n].format(column.value(row)),
                    Some(_) => String::new(),
                    None => shorten(schema.field(*i).name(), formatters[n].value(row).to_string()),
                })
                .collect();
            table.row(cells);
        }
    }
    Ok(table.render())
}

fn shorten(column: &str, text: String) -> String {
    match column {
        "param_id" if text.len() > 12 => text[..12].to_owned(),
        "target" => text.rsplit_once([':', '/']).map_or(text.clone(), |(_, name)| name.to_owned()),
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use arrow::array::{Float64Array, ListBuilder, StringBuilder};

    use super::*;

    /// A destination tests can read back.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Shared {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    /// A reader that went away: every write is a broken pipe.
    struct ClosedPipe;

    impl Write for ClosedPipe {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
    }

    /// A `jobs`-like batch: an id, a list of targets, and losses of very different sizes.
    fn jobs_batch() -> RecordBatch {
        let mut targets = ListBuilder::new(StringBuilder::new());
        for names in [vec!["a:prev", "b:deaths"], vec!["a:prev"]] {
            for name in names {
                targets.values().append_value(name);
            }
            targets.append(true);
        }
        let targets = targets.finish();
        let schema = Schema::new(vec![
            Field::new("job_id", DataType::Utf8, false),
            Field::new("targets", targets.data_type().clone(), true),
            Field::new("loss", DataType::Float64, true),
        ]);
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(vec!["job-1", "job-2"])),
            Arc::new(targets),
            Arc::new(Float64Array::from(vec![2.6e-6, 0.0000286123456789012])),
        ];
        RecordBatch::try_new(Arc::new(schema), columns).unwrap()
    }

    fn write_all(format: Format, out: Box<dyn Write + Send>, batches: &[RecordBatch]) -> anyhow::Result<()> {
        let mut writer = Writer::new(format, 50, out, &batches[0].schema())?;
        for batch in batches {
            writer.write(batch)?;
        }
        writer.finish()
    }

    /// `mops results ARGS…` as the command line parses it.
    fn parse(args: &[&str]) -> Result<crate::Cli, clap::Error> {
        use clap::Parser as _;
        crate::Cli::try_parse_from(["mops", "results"].iter().chain(args))
    }

    #[test]
    fn bundles_that_would_match_nothing_are_refused_naming_the_rule() {
        for bad in ["xyz", "012345678", "sha256:0123456789a", "md5:0123456789abcdef", "0123456789abcdeg"] {
            for command in [&["query", "--bundle", bad][..], &["best", "--target", "t", "--bundle", bad][..]] {
                let error = parse(command).expect_err(bad);
                assert_eq!(error.kind(), clap::error::ErrorKind::ValueValidation, "{bad}");
                assert!(error.to_string().contains("at least 12 hex digits"), "{error}");
            }
        }
        let full = format!("sha256:{}", "0123456789abcdef".repeat(4));
        for good in ["0123456789ab", "sha256:0123456789AB", full.as_str(), "repo@sha256:0123456789ab"] {
            assert!(parse(&["query", "--bundle", good]).is_ok(), "{good}");
            assert!(parse(&["best", "--target", "t", "--bundle", good]).is_ok(), "{good}");
        }
        assert_eq!(parse_bundle("sha256:0123456789AB").unwrap(), "sha256:0123456789ab");
    }

    #[test]
    fn times_are_dates_or_rfc_3339() {
        let midnight = parse_time("2026-11-29").unwrap();
        assert_eq!(midnight.to_rfc3339(), "2026-11-29T00:00:00+00:00");
        assert_eq!(parse_time("2026-11-29T08:30:00+02:00").unwrap().to_rfc3339(), "2026-11-29T06:30:00+00:00");
        assert_eq!(parse_time("2026-11-29T08:30:00").unwrap().to_rfc3339(), "2026-11-29T08:30:00+00:00");
        assert!(parse(&["query", "--since", "2026-11-29", "--until", "2026-11-30T00:00:00Z"]).is_ok());
        let error = parse(&["query", "--since", "yesterday"]).unwrap_err();
        assert!(error.to_string().contains("give a date (2026-11-29)"), "{error}");
    }

    #[test]
    fn csv_writes_list_columns_as_text() {
        let out = Shared::default();
        write_all(Format::Csv, Box::new(out.clone()), &[jobs_batch()]).expect("a list column is written");
        let text = out.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "job_id,targets,loss");
        assert_eq!(lines[1], r#"job-1,"[a:prev, b:deaths]",2.6e-6"#);
        let loss: f64 = lines[2].strip_prefix("job-2,[a:prev],").unwrap().parse().unwrap();
        assert_eq!(loss, 0.0000286123456789012, "full precision in csv");
    }

    #[test]
    fn the_table_format_writes_to_its_destination_with_readable_numbers() {
        let out = Shared::default();
        write_all(Format::Table, Box::new(out.clone()), &[jobs_batch()]).unwrap();
        let text = out.text();
        let rows: Vec<&str> = text.lines().collect();
        assert!(rows[2].ends_with("2.600e-6"), "{text}");
        assert!(rows[3].ends_with("2.861e-5"), "{text}");
        assert_eq!(rows[4], "(2 rows)");
    }

    #[test]
    fn an_empty_table_says_so_once() {
        let out = Shared::default();
        let empty = jobs_batch().slice(0, 0);
        write_all(Format::Table, Box::new(out.clone()), &[empty]).unwrap();
        assert_eq!(out.text(), "(0 rows)\n");
    }

    #[test]
    fn a_closed_reader_is_noted_so_the_command_ends_quietly() {
        for format in [Format::Table, Format::Csv, Format::Json] {
            let (out, closed) = Closable::wrap(Box::new(ClosedPipe));
            let written = write_all(format, out, &[jobs_batch()]);
            assert!(written.is_err(), "{format:?}: nothing can be written");
            assert!(closed.load(Ordering::Relaxed), "{format:?}: the broken pipe is noted");
        }
        let (out, closed) = Closable::wrap(Box::new(Shared::default()));
        write_all(Format::Csv, out, &[jobs_batch()]).unwrap();
        assert!(!closed.load(Ordering::Relaxed));
    }
}
