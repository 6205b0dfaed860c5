//! `mops results losses|best|query|compare|sql|jobs`: the query service from the command line.
//! Every answer streams from the server's Flight endpoints straight into the chosen format; only
//! the table format for people keeps (at most `--max-rows`) rows in memory.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context as _;
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::error::FlightError;
use arrow_flight::FlightDescriptor;
use futures::{StreamExt, TryStreamExt};
use modelops_query::command::{Command, LossesQuery, Order, StatusFilter};

use crate::client::{AuthedChannel, status_error};
use crate::output::Table;

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
    #[arg(long)]
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
    /// Only results computed at or after this time (RFC 3339).
    #[arg(long)]
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// Only results computed before this time (RFC 3339).
    #[arg(long)]
    pub until: Option<chrono::DateTime<chrono::Utc>>,
    /// Row order.
    #[arg(long, value_enum)]
    pub order: Option<OrderArg>,
    /// At most this many rows.
    #[arg(long)]
    pub limit: Option<usize>,
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

/// Asks the service and writes every endpoint's batches to `output`.
pub async fn answer(channel: AuthedChannel, question: Question, output: &OutputArgs) -> anyhow::Result<()> {
    let mut client = crate::client::flight(channel);
    let descriptor = match question {
        Question::Path(path) => FlightDescriptor::new_path(path),
        Question::Command(command) => FlightDescriptor::new_cmd(command.to_json()),
    };
    let info = client.get_flight_info(descriptor).await.map_err(status_error)?.into_inner();
    let schema: SchemaRef = std::sync::Arc::new(info.clone().try_decode_schema().context("decoding the answer's schema")?);
    let mut writer = Writer::open(output, &schema)?;
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

enum Sink {
    Table { batches: Vec<RecordBatch>, rows: usize, dropped: usize, max_rows: usize },
    Csv(arrow::csv::Writer<Box<dyn Write>>),
    Json(arrow::json::LineDelimitedWriter<Box<dyn Write>>),
    Parquet(parquet::arrow::ArrowWriter<Box<dyn Write + Send>>),
}

struct Writer {
    sink: Sink,
}

impl Writer {
    fn open(output: &OutputArgs, schema: &SchemaRef) -> anyhow::Result<Self> {
        let file = |path: &PathBuf| std::fs::File::create(path).with_context(|| format!("creating {}", path.display()));
        let boxed = || -> anyhow::Result<Box<dyn Write + Send>> {
            Ok(match &output.output {
                Some(path) => Box::new(std::io::BufWriter::new(file(path)?)),
                None => Box::new(std::io::BufWriter::new(std::io::stdout())),
            })
        };
        let sink = match output.format {
            Format::Table => Sink::Table {
                batches: Vec::new(),
                rows: 0,
                dropped: 0,
                max_rows: output.max_rows,
            },
            Format::Csv => Sink::Csv(arrow::csv::WriterBuilder::new().with_header(true).build(boxed()? as Box<dyn Write>)),
            Format::Json => Sink::Json(arrow::json::LineDelimitedWriter::new(boxed()? as Box<dyn Write>)),
            Format::Parquet => {
                if output.output.is_none() && std::io::IsTerminal::is_terminal(&std::io::stdout()) {
                    anyhow::bail!("Parquet is binary: give -o FILE or redirect stdout");
                }
                let properties = parquet::file::properties::WriterProperties::builder()
                    .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
                    .build();
                Sink::Parquet(parquet::arrow::ArrowWriter::try_new(boxed()?, std::sync::Arc::clone(schema), Some(properties))?)
            }
        };
        Ok(Self { sink })
    }

    /// Writes a batch (the table format keeps what it shows and counts the rest).
    fn write(&mut self, batch: &RecordBatch) -> anyhow::Result<()> {
        match &mut self.sink {
            Sink::Table { batches, rows, dropped, max_rows } => {
                let keep = batch.num_rows().min(max_rows.saturating_sub(*rows));
                if keep > 0 {
                    batches.push(batch.slice(0, keep));
                }
                *rows += keep;
                *dropped += batch.num_rows() - keep;
            }
            Sink::Csv(writer) => writer.write(batch)?,
            Sink::Json(writer) => writer.write(batch)?,
            Sink::Parquet(writer) => writer.write(batch)?,
        }
        Ok(())
    }

    fn finish(self) -> anyhow::Result<()> {
        match self.sink {
            Sink::Table { batches, rows, dropped, .. } => {
                println!("{}", render(&batches)?);
                if dropped > 0 {
                    println!("… {dropped} more rows ({} in all); use --max-rows, or --format csv|json|parquet -o FILE", rows + dropped);
                } else {
                    println!("({rows} rows)");
                }
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

/// Columns people do not need in a table (constant per job, or too long).
const HIDDEN_IN_TABLES: [&str; 2] = ["bundle_digest", "computed_at"];

/// Batches as an aligned table: long hex ids shortened to 12 digits, targets to their name.
fn render(batches: &[RecordBatch]) -> anyhow::Result<String> {
    let Some(first) = batches.first() else { return Ok("(no rows)".to_owned()) };
    let schema = first.schema();
    let shown: Vec<usize> = (0..schema.fields().len())
        .filter(|i| !HIDDEN_IN_TABLES.contains(&schema.field(*i).name().as_str()))
        .collect();
    let header: Vec<String> = shown.iter().map(|i| schema.field(*i).name().clone()).collect();
    let mut table = Table::with_header(header);
    let options = FormatOptions::default().with_null("");
    for batch in batches {
        let formatters = shown
            .iter()
            .map(|i| ArrayFormatter::try_new(batch.column(*i).as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()?;
        for row in 0..batch.num_rows() {
            let cells = shown
                .iter()
                .zip(&formatters)
                .map(|(i, formatter)| shorten(schema.field(*i).name(), formatter.value(row).to_string()))
                .collect();
            table.row(cells);
        }
    }
    Ok(table.render())
}

fn shorten(column: &str, text: String) -> String {
    match column {
        "param_id" if text.len() > 12 => text[..12].to_owned(),
        "target" => text.rsplit_once(':').map_or(text.clone(), |(_, name)| name.to_owned()),
        _ => text,
    }
}
