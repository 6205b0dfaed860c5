//! Model outputs of simulations, read on demand from the provenance store with a bounded budget,
//! and drawn as a band over replicates: for each output (`artifact_{name}.arrow`, an Arrow IPC
//! file, as upstream writes every output but `metadata`) and each numeric column, the lowest and
//! highest value over the replicates at each row, and their mean.
//!
//! Bounds: at most [`MAX_SIMS`] simulations and [`MAX_OUTPUTS`] outputs of [`MAX_COLUMNS`]
//! columns; no artifact over [`MAX_ARTIFACT_BYTES`] or [`MAX_ARTIFACT_ROWS`] rows, and
//! [`MAX_TOTAL_BYTES`] read in all (what is skipped is said); at most [`MAX_POINTS`] points per
//! line. An artifact is decoded only after its footer and messages are checked (see
//! `check_ipc_file`), so what it declares cannot make the decoder allocate more than it holds. The x axis is the output's first
//! column when it is named like time (`day`, `t`, `time`, `step`, `date`, `week`) and numeric, else
//! the row number.

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type};
use futures::TryStreamExt;
use maud::{Markup, html};
use modelops_core::store::Store;
use object_store::ObjectStoreExt;
use object_store::path::Path;

use crate::error::DashboardError;

/// Simulations read, at most.
pub const MAX_SIMS: usize = 32;
/// Outputs drawn per simulation, at most.
pub const MAX_OUTPUTS: usize = 4;
/// Numeric columns drawn per output, at most.
pub const MAX_COLUMNS: usize = 8;
/// The largest artifact read.
pub const MAX_ARTIFACT_BYTES: u64 = 16 << 20;
/// Bytes read in all, at most.
pub const MAX_TOTAL_BYTES: u64 = 64 << 20;
/// Points per drawn line, at most (longer series are thinned evenly).
pub const MAX_POINTS: usize = 1_000;

/// One simulation's outputs to read: its directory and a label (its seed).
#[derive(Debug, Clone)]
pub struct SimSource {
    /// The simulation directory, relative to the provenance root.
    pub dir: String,
    /// A group the band belongs to (a parameter set), for overlays.
    pub group: usize,
}

/// The band of one column of one output over the replicates of one group.
#[derive(Debug, Clone, PartialEq)]
pub struct Band {
    /// The group (parameter set) it belongs to.
    pub group: usize,
    /// The output's name.
    pub output: String,
    /// The column.
    pub column: String,
    /// The x axis's name (`None`: the row number).
    pub x_name: Option<String>,
    /// x of each point.
    pub x: Vec<f64>,
    /// Lowest value over the replicates.
    pub lo: Vec<f64>,
    /// Highest value over the replicates.
    pub hi: Vec<f64>,
    /// Mean over the replicates.
    pub mean: Vec<f64>,
    /// Replicates in the band.
    pub replicates: usize,
}

/// The bands of some simulations, and what was left out.
#[derive(Debug, Default)]
pub struct Bands {
    /// One band per (group, output, column), in that order.
    pub bands: Vec<Band>,
    /// What was not read or not drawn, and why.
    pub skipped: Vec<String>,
    /// Bytes read.
    pub bytes: u64,
}

/// One output of one simulation, as columns.
struct Series {
    x_name: Option<String>,
    x: Vec<f64>,
    columns: Vec<(String, Vec<f64>)>,
}

const TIME_NAMES: [&str; 6] = ["day", "t", "time", "step", "date", "week"];

/// Reads the outputs of `sims` (at most [`MAX_SIMS`]) and makes their bands per group.
pub async fn read_bands(provenance: &Store, sims: &[SimSource]) -> Result<Bands, DashboardError> {
    let mut out = Bands::default();
    if sims.len() > MAX_SIMS {
        out.skipped.push(format!("{} of {} simulations read (the first {MAX_SIMS})", MAX_SIMS, sims.len()));
    }
    let sims = &sims[..sims.len().min(MAX_SIMS)];
    let Some(first) = sims.first() else { return Ok(out) };
    let names = output_names(provenance, &first.dir).await?;
    // (group, output) → the series of each replicate.
    let mut read: Vec<((usize, String), Vec<Series>)> = Vec::new();
    for sim in sims {
        for name in &names {
            let path = Path::parse(&sim.dir).map_err(|e| DashboardError::BadRequest(format!("result path {:?}: {e}", sim.dir)))?.join(format!("artifact_{name}.arrow"));
            let got = match provenance.object_store.get(&path).await {
                Ok(got) => got,
                Err(object_store::Error::NotFound { .. }) => {
                    out.skipped.push(format!("{path}: not in the provenance store"));
                    continue;
                }
                Err(error) => return Err(error.into()),
            };
            if got.meta.size > MAX_ARTIFACT_BYTES {
                out.skipped.push(format!("{path}: {} bytes, over the {} MiB read per artifact", got.meta.size, MAX_ARTIFACT_BYTES >> 20));
                continue;
            }
            if out.bytes + got.meta.size > MAX_TOTAL_BYTES {
                out.skipped.push(format!("{path}: over the {} MiB read per page", MAX_TOTAL_BYTES >> 20));
                continue;
            }
            let bytes = got.bytes().await?;
            out.bytes += bytes.len() as u64;
            match tokio::task::spawn_blocking(move || decode(&bytes)).await.map_err(|e| DashboardError::Plot(format!("decoding task failed: {e}")))? {
                Ok(series) => match read.iter_mut().find(|(key, _)| key.0 == sim.group && key.1 == *name) {
                    Some((_, all)) => all.push(series),
                    None => read.push(((sim.group, name.clone()), vec![series])),
                },
                Err(reason) => out.skipped.push(format!("{path}: {reason}")),
            }
        }
    }
    for ((group, output), replicates) in read {
        let first = &replicates[0];
        for (column, _) in &first.columns {
            let values: Vec<&Vec<f64>> = replicates.iter().filter_map(|s| s.columns.iter().find(|(c, _)| c == column).map(|(_, v)| v)).collect();
            let rows = values.iter().map(|v| v.len()).max().unwrap_or(0);
            let step = rows.div_ceil(MAX_POINTS).max(1);
            let mut band = Band {
                group,
                output: output.clone(),
                column: column.clone(),
                x_name: first.x_name.clone(),
                x: Vec::new(),
                lo: Vec::new(),
                hi: Vec::new(),
                mean: Vec::new(),
                replicates: values.len(),
            };
            for row in (0..rows).step_by(step) {
                let at: Vec<f64> = values.iter().filter_map(|v| v.get(row).copied()).filter(|v| v.is_finite()).collect();
                if at.is_empty() {
                    continue;
                }
                band.x.push(first.x.get(row).copied().unwrap_or(row as f64));
                band.lo.push(at.iter().copied().fold(f64::INFINITY, f64::min));
                band.hi.push(at.iter().copied().fold(f64::NEG_INFINITY, f64::max));
                band.mean.push(at.iter().sum::<f64>() / at.len() as f64);
            }
            out.bands.push(band);
        }
    }
    Ok(out)
}

/// The outputs of the simulation at `dir`: its `artifact_*.arrow` files but `metadata`, at most
/// [`MAX_OUTPUTS`], by name.
async fn output_names(provenance: &Store, dir: &str) -> Result<Vec<String>, DashboardError> {
    let prefix = Path::parse(dir).map_err(|e| DashboardError::BadRequest(format!("result path {dir:?}: {e}")))?;
    let listed: Vec<_> = provenance.object_store.list(Some(&prefix)).try_collect().await?;
    let mut names: Vec<String> = listed
        .iter()
        .filter_map(|meta| meta.location.filename()?.strip_prefix("artifact_")?.strip_suffix(".arrow").map(str::to_owned))
        .filter(|name| name != "metadata")
        .collect();
    names.sort();
    names.truncate(MAX_OUTPUTS);
    Ok(names)
}

/// Rows of one artifact decoded, at most (each numeric column becomes 8 bytes a row).
pub const MAX_ARTIFACT_ROWS: i64 = 200_000;

/// Checks that `bytes` are an Arrow IPC file the decoder can read within what the file holds: its
/// blocks lie inside it without overlapping (a block's declared length is allocated before it is
/// read, so a lying or repeating footer could ask for gigabytes), no message is compressed (a
/// compressed buffer declares the size it is inflated to), and its record batches hold at most
/// [`MAX_ARTIFACT_ROWS`] rows in all.
fn check_ipc_file(bytes: &[u8]) -> Result<(), String> {
    const MAGIC: &[u8] = b"ARROW1";
    let n = bytes.len();
    if n < 18 || !bytes.starts_with(MAGIC) || !bytes.ends_with(MAGIC) {
        return Err("not an Arrow IPC file".into());
    }
    let footer_len = i32::from_le_bytes(bytes[n - 10..n - 6].try_into().map_err(|_| "no footer length")?);
    let footer_start = usize::try_from(footer_len).ok().and_then(|len| (n - 10).checked_sub(len)).filter(|&start| start >= 8).ok_or("not an Arrow IPC file: its footer length is out of range")?;
    let footer = arrow::ipc::root_as_footer(&bytes[footer_start..n - 10]).map_err(|e| format!("not an Arrow IPC file: its footer is unreadable: {e}"))?;
    let mut spans: Vec<(usize, usize, usize)> = Vec::new();
    for block in footer.recordBatches().into_iter().flatten().chain(footer.dictionaries().into_iter().flatten()) {
        let start = usize::try_from(block.offset()).ok();
        let meta = usize::try_from(block.metaDataLength()).ok();
        let body = usize::try_from(block.bodyLength()).ok();
        let (Some(start), Some(meta), Some(body)) = (start, meta, body) else { return Err("not an Arrow IPC file: a block has a negative length".into()) };
        match start.checked_add(meta).and_then(|end| end.checked_add(body)) {
            Some(end) if end <= footer_start && meta >= 8 => spans.push((start, meta, end)),
            _ => return Err("not an Arrow IPC file: a block lies outside it".into()),
        }
    }
    spans.sort_unstable();
    if spans.windows(2).any(|w| w[1].0 < w[0].2) {
        return Err("not an Arrow IPC file: its blocks overlap".into());
    }
    let mut rows = 0i64;
    for &(start, meta, _) in &spans {
        // The message: a continuation marker and its length (or the length alone), then the
        // flatbuffer.
        let at = if bytes[start..start + 4] == [0xff; 4] { start + 8 } else { start + 4 };
        let message = arrow::ipc::root_as_message(&bytes[at.min(start + meta)..start + meta]).map_err(|e| format!("not an Arrow IPC file: a message is unreadable: {e}"))?;
        let (compressed, length) = match (message.header_as_record_batch(), message.header_as_dictionary_batch()) {
            (Some(batch), _) => (batch.compression().is_some(), batch.length()),
            (None, Some(dictionary)) => (dictionary.data().is_some_and(|d| d.compression().is_some()), 0),
            (None, None) => return Err("not an Arrow IPC file: a block is not a batch".into()),
        };
        if compressed {
            return Err("a compressed Arrow IPC file (not read: it declares the size it inflates to)".into());
        }
        rows = rows.saturating_add(length.max(0));
        if rows > MAX_ARTIFACT_ROWS {
            return Err(format!("over {MAX_ARTIFACT_ROWS} rows"));
        }
    }
    Ok(())
}

/// The numeric columns of an Arrow IPC file, as floats.
fn decode(bytes: &[u8]) -> Result<Series, String> {
    check_ipc_file(bytes)?;
    let batches: Vec<RecordBatch> = arrow::ipc::reader::FileReader::try_new(std::io::Cursor::new(bytes), None)
        .map_err(|e| format!("not a readable Arrow IPC file: {e}"))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("not a readable Arrow IPC file: {e}"))?;
    let Some(schema) = batches.first().map(RecordBatch::schema) else { return Err("no rows".into()) };
    let numeric = |t: &DataType| t.is_numeric() || matches!(t, DataType::Boolean);
    let x_index = schema.fields().first().filter(|f| numeric(f.data_type()) && TIME_NAMES.contains(&f.name().to_lowercase().as_str())).map(|_| 0);
    let column = |index: usize| -> Result<Vec<f64>, String> {
        let mut values = Vec::new();
        for batch in &batches {
            let cast = arrow::compute::cast(batch.column(index), &DataType::Float64).map_err(|e| e.to_string())?;
            let floats = cast.as_primitive::<Float64Type>();
            values.extend((0..floats.len()).map(|i| if floats.is_null(i) { f64::NAN } else { floats.value(i) }));
        }
        Ok(values)
    };
    let columns = schema
        .fields()
        .iter()
        .enumerate()
        .filter(|(i, f)| Some(*i) != x_index && numeric(f.data_type()))
        .take(MAX_COLUMNS)
        .map(|(i, f)| Ok((f.name().clone(), column(i)?)))
        .collect::<Result<Vec<_>, String>>()?;
    Ok(Series {
        x_name: x_index.map(|i| schema.field(i).name().clone()),
        x: match x_index {
            Some(i) => column(i)?,
            None => Vec::new(),
        },
        columns,
    })
}

const WIDTH: f64 = 440.0;
const HEIGHT: f64 = 220.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 24.0;
const BOTTOM: f64 = 34.0;

/// One column of one output: the bands of every group on shared axes, each in its group's colour.
pub fn svg(bands: &[&Band]) -> Markup {
    let fold = |f: fn(&Band) -> &Vec<f64>| {
        bands.iter().flat_map(|b| f(b).iter().copied()).filter(|v| v.is_finite()).fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)))
    };
    let (x0, x1) = fold(|b| &b.x);
    let (y0, _) = fold(|b| &b.lo);
    let (_, y1) = fold(|b| &b.hi);
    let span = |lo: f64, hi: f64| if hi > lo { (lo, hi) } else { (lo - 0.5, hi + 0.5) };
    let ((x0, x1), (y0, y1)) = (span(x0, x1), span(y0, y1));
    let px = |x: f64| LEFT + (x - x0) / (x1 - x0) * (WIDTH - LEFT - RIGHT);
    let py = |y: f64| TOP + (1.0 - (y - y0) / (y1 - y0)) * (HEIGHT - TOP - BOTTOM);
    let first = bands[0];
    html! {
        svg.band xmlns="http://www.w3.org/2000/svg" viewBox={ "0 0 " (WIDTH) " " (HEIGHT) } width=(WIDTH) height=(HEIGHT)
            data-output=(first.output) data-column=(first.column) {
            text.title x=(WIDTH / 2.0) y="15" text-anchor="middle" { (first.output) " · " (first.column) }
            line.axis x1=(LEFT) y1=(HEIGHT - BOTTOM) x2=(WIDTH - RIGHT) y2=(HEIGHT - BOTTOM) {}
            line.axis x1=(LEFT) y1=(TOP) x2=(LEFT) y2=(HEIGHT - BOTTOM) {}
            @for (value, anchor) in [(y0, HEIGHT - BOTTOM), (y1, TOP + 8.0)] {
                text.tick x=(LEFT - 4.0) y=(anchor) text-anchor="end" { (crate::heatmap::short(value)) }
            }
            @for (value, anchor) in [(x0, "start"), (x1, "end")] {
                text.tick x=(px(value)) y=(HEIGHT - BOTTOM + 14.0) text-anchor=(anchor) { (crate::heatmap::short(value)) }
            }
            text.label x=(WIDTH / 2.0) y=(HEIGHT - 4.0) text-anchor="middle" { (first.x_name.as_deref().unwrap_or("row")) }
            @for band in bands {
                @let colour = crate::plots::colour_hex(band.group);
                @let upper = band.x.iter().zip(&band.hi).map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y)));
                @let lower = band.x.iter().zip(&band.lo).rev().map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y)));
                @let outline = upper.chain(lower).collect::<Vec<_>>().join(" ");
                @let mean = band.x.iter().zip(&band.mean).map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y))).collect::<Vec<_>>().join(" ");
                polygon.spread points=(outline) fill=(colour) fill-opacity="0.25" stroke="none"
                    data-group=(band.group) data-replicates=(band.replicates) {}
                polyline.mean points=(mean) fill="none" stroke=(colour) stroke-width="1.5" data-group=(band.group)
                    data-lo=(band.lo.iter().copied().fold(f64::INFINITY, f64::min)) data-hi=(band.hi.iter().copied().fold(f64::NEG_INFINITY, f64::max))
                    data-hover={ "set " (band.group + 1) ": mean of " (band.replicates) " replicates; band from the lowest to the highest" } {}
            }
        }
    }
}

/// The bands as figures, one per (output, column), every group overlaid.
pub fn figures(bands: &Bands) -> Markup {
    let mut keys: Vec<(&str, &str)> = Vec::new();
    for band in &bands.bands {
        if !keys.contains(&(band.output.as_str(), band.column.as_str())) {
            keys.push((band.output.as_str(), band.column.as_str()));
        }
    }
    html! {
        div.bands {
            @for (output, column) in &keys {
                @let of: Vec<&Band> = bands.bands.iter().filter(|b| b.output == *output && b.column == *column && !b.x.is_empty()).collect();
                @if !of.is_empty() { figure.band { (svg(&of)) } }
            }
        }
        @if !bands.skipped.is_empty() {
            details.skipped {
                summary { (bands.skipped.len()) " not drawn" }
                ul { @for reason in &bands.skipped { li { (reason) } } }
            }
        }
    }
}

/// Best sets overlaid on the outputs page, at most.
pub const MAX_BEST_SETS: usize = 5;

/// The query of `/jobs/{job_id}/outputs`.
#[derive(Debug, Default, serde::Deserialize)]
pub struct OutputsParams {
    /// The target whose best sets are drawn (the first target by default).
    pub target: Option<String>,
    /// How many of its best sets (1 to [`MAX_BEST_SETS`], 3 by default).
    pub k: Option<String>,
}

/// `GET /jobs/{job_id}/outputs?target=…&k=…`: the model outputs of a target's k best sets, each
/// a band over its replicates in its own colour, overlaid per output column.
#[tracing::instrument(name = "dashboard_outputs", skip(dashboard))]
pub async fn page(
    axum::extract::State(dashboard): axum::extract::State<crate::Dashboard>,
    axum::extract::Path(raw): axum::extract::Path<String>,
    axum::extract::Query(params): axum::extract::Query<OutputsParams>,
) -> Result<Markup, DashboardError> {
    let job = crate::job::job_id(&raw)?;
    let k = match params.k.as_deref() {
        None => 3,
        Some(raw) => raw.parse::<usize>().ok().filter(|k| (1..=MAX_BEST_SETS).contains(k)).ok_or_else(|| DashboardError::BadRequest(format!("k {raw:?}: expected a whole number from 1 to {MAX_BEST_SETS}")))?,
    };
    let engine = dashboard.engine.as_ref().ok_or(DashboardError::ServiceNotRunning("query service"))?;
    let attribution = dashboard.attribution.as_ref().ok_or(DashboardError::ServiceNotRunning("attribution service"))?;
    let provenance = dashboard.provenance.as_ref().ok_or(DashboardError::ServiceNotRunning("provenance store"))?;
    let entry = match engine.catalog().job(job.as_str()).await {
        Ok(entry) => entry,
        Err(modelops_query::QueryError::JobNotFound(_)) => return Err(DashboardError::NotFound(format!("job {:?} has no loss table yet", job.as_str()))),
        Err(error) => return Err(error.into()),
    };
    let landscape = dashboard.landscapes.get(engine, &entry).await?;
    let target = match params.target {
        Some(target) if landscape.targets.contains(&target) => target,
        Some(target) => return Err(DashboardError::BadRequest(format!("target {target:?}: expected one of {}", landscape.targets.join(", ")))),
        None => landscape.targets.first().cloned().ok_or_else(|| DashboardError::NotFound(format!("job {:?} has no rows", job.as_str())))?,
    };
    let best: Vec<&crate::landscape::BestRow> = landscape.best.iter().filter(|row| row.target == target).take(k).collect();
    // Each set gets its share of the simulations read, so every set in the legend is drawn.
    let share = (MAX_SIMS / best.len().max(1)).max(1);
    let mut sims = Vec::new();
    for (group, row) in best.iter().enumerate() {
        let results = attribution.param_set_results(&job, &row.param_id).await.map_err(DashboardError::Attribution)?;
        sims.extend(results.into_iter().filter(|r| !r.aggregation).take(share).map(|r| SimSource { dir: r.path, group }));
    }
    let bands = read_bands(provenance, &sims).await?;
    Ok(crate::layout::page(
        &format!("outputs · {}", job.as_str()),
        "jobs",
        html! {
            section.outputs data-job=(job.as_str()) data-target=(target) data-k=(k) {
                h1 { "Model outputs of the best sets of job " a href={ "/jobs/" (job.as_str()) } { code { (job.as_str()) } } }
                p.note {
                    "The " (best.len()) " lowest losses of " code { (target) } ", each a band from the lowest to the highest value of its replicates with their mean as a line ("
                    (bands.bytes / 1024) " KiB read from the provenance store)."
                }
                ol.legend {
                    @for (group, row) in best.iter().enumerate() {
                        li data-param-id=(row.param_id) {
                            (crate::job::swatch(group)) " "
                            a href={ "/jobs/" (job.as_str()) "/sets/" (row.param_id) } { code { (row.param_id.get(..12).unwrap_or(&row.param_id)) } }
                            " loss " (crate::layout::number(row.loss))
                        }
                    }
                }
                @if bands.bands.is_empty() { p.note { "No simulation output of these sets could be read." } }
                (figures(&bands))
            }
        },
    ))
}
