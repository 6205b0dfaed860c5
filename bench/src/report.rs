//! Rows of results and their section in BENCHMARKS.md (between `<!-- {area}:begin -->` and
//! `<!-- {area}:end -->`, so each area is rewritten without touching the others).

use std::path::Path;

/// One measured figure.
#[derive(Debug, Clone)]
pub struct Row {
    /// What was run.
    pub workload: String,
    /// The project's figure, with its unit.
    pub measured: String,
    /// The baseline's figure, with its unit (or "—" when the target is absolute).
    pub baseline: String,
    /// measured ÷ baseline in the direction where larger is better, if there is a baseline.
    pub ratio: Option<f64>,
    /// The target from TARGETS.md.
    pub target: String,
    /// Whether the target was met.
    pub met: bool,
}

impl Row {
    /// A one-line summary for the terminal.
    pub fn line(&self) -> String {
        let ratio = self.ratio.map_or_else(|| "—".to_owned(), |r| format!("{r:.2}×"));
        format!(
            "{}: {} vs {} → {} (target {}) {}",
            self.workload,
            self.measured,
            self.baseline,
            ratio,
            self.target,
            if self.met { "met" } else { "NOT MET" }
        )
    }
}

/// A description of this machine: CPU model, cores, memory, OS.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| text.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned()))
        .unwrap_or_else(|| "unknown CPU".into());
    let memory_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| text.lines().next().and_then(|l| l.split_whitespace().nth(1)).and_then(|kb| kb.parse::<f64>().ok()))
        .map_or_else(|| "?".into(), |kb| format!("{:.0}", kb / 1024.0 / 1024.0));
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZeroUsize::get);
    format!("{cpu}, {cores} cores, {memory_gib} GiB, {} {}", std::env::consts::OS, std::env::consts::ARCH)
}

/// Rewrites the `area` section of the report at `path`, creating the file if needed.
pub fn update(path: &Path, area: &str, title: &str, rows: &[Row]) -> anyhow::Result<()> {
    let mut section = format!(
        "<!-- {area}:begin -->\n## {title}\n\nRun {} on {}.\n\n| workload | measured | baseline | ratio | target | met |\n|---|---|---|---|---|---|\n",
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
        machine()
    );
    for row in rows {
        let ratio = row.ratio.map_or_else(|| "—".to_owned(), |r| format!("{r:.2}×"));
        section.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            row.workload,
            row.measured,
            row.baseline,
            ratio,
            row.target,
            if row.met { "yes" } else { "**no**" }
        ));
    }
    section.push_str(&format!("<!-- {area}:end -->"));
    let existing = std::fs::read_to_string(path).unwrap_or_else(|_| {
        "# Benchmarks\n\nWritten by `scripts/bench` (see TARGETS.md for what each row must show). Every figure is\ncompared with a baseline run in the same invocation on the same machine.\n".to_owned()
    });
    let begin = format!("<!-- {area}:begin -->");
    let end = format!("<!-- {area}:end -->");
    let updated = match (existing.find(&begin), existing.find(&end)) {
        (Some(start), Some(stop)) if stop > start => format!("{}{section}{}", &existing[..start], &existing[stop + end.len()..]),
        _ => format!("{}\n{section}\n", existing.trim_end()),
    };
    std::fs::write(path, updated)?;
    Ok(())
}
