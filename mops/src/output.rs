//! Output: the `--format table|json|csv` convention, and for people aligned tables, relative
//! times as upstream's CLI shows them, progress text.

use chrono::{DateTime, Local, Utc};

/// The output convention of `mops` commands: `--format table|json|csv` (the results commands,
/// whose answers are Arrow tables, add `parquet`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Text and aligned tables for people.
    #[default]
    Table,
    /// JSON lines: one object per line.
    Json,
    /// CSV with a header.
    Csv,
}

/// `--format`, with the older `--json` kept (hidden) as `--format json`.
#[derive(Debug, Clone, Copy, Default, clap::Args)]
pub struct FormatArg {
    /// Output: text for people (table), JSON lines (json) or CSV with a header (csv).
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// The same as `--format json`.
    #[arg(long, hide = true)]
    json: bool,
}

impl FormatArg {
    /// The format asked for.
    pub fn get(self) -> Format {
        if self.json { Format::Json } else { self.format }
    }
}

/// One CSV record (RFC 4180: a field holding a comma, quote or line break is quoted).
pub fn csv_record<S: AsRef<str>>(cells: &[S]) -> String {
    cells
        .iter()
        .map(|cell| {
            let cell = cell.as_ref();
            if cell.contains([',', '"', '\n', '\r']) { format!("\"{}\"", cell.replace('"', "\"\"")) } else { cell.to_owned() }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// A plain text table with a header row; columns are padded to their widest cell.
#[derive(Debug, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles.
    pub fn new<const N: usize>(header: [&str; N]) -> Self {
        Self {
            header: header.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    /// A table with these column titles, known only at run time.
    pub fn with_header(header: Vec<String>) -> Self {
        Self { header, rows: Vec::new() }
    }

    /// Adds a row.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Whether no row was added.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The rendered table.
    pub fn render(&self) -> String {
        let columns = self.header.len();
        let width = |i: usize| {
            std::iter::once(&self.header)
                .chain(&self.rows)
                .map(|row| row.get(i).map_or(0, |c| c.chars().count()))
                .max()
                .unwrap_or(0)
        };
        let widths: Vec<usize> = (0..columns).map(width).collect();
        let line = |row: &Vec<String>| {
            let cells: Vec<String> = (0..columns)
                .map(|i| format!("{:<w$}", row.get(i).map_or("", String::as_str), w = widths[i]))
                .collect();
            cells.join("  ").trim_end().to_owned()
        };
        let mut out = vec![line(&self.header), widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>().join("  ")];
        out.extend(self.rows.iter().map(line));
        out.join("\n")
    }
}

/// A timestamp relative to `now`, as upstream's `mops jobs list` shows it: "just now", "5
/// minutes ago", "3 hours ago", "yesterday 14:30", "Mar 15 14:30" (local time).
pub fn relative_time(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let seconds = (now - at).num_seconds();
    let local = at.with_timezone(&Local);
    let plural = |n: i64, unit: &str| format!("{n} {unit}{} ago", if n == 1 { "" } else { "s" });
    match seconds {
        s if s < 10 => "just now".to_owned(),
        s if s < 60 => plural(s, "second"),
        s if s < 3600 => plural(s / 60, "minute"),
        s if s < 86_400 && local.date_naive() == now.with_timezone(&Local).date_naive() => plural(s / 3600, "hour"),
        s if s < 2 * 86_400 && local.date_naive() == (now - chrono::Duration::days(1)).with_timezone(&Local).date_naive() => {
            format!("yesterday {}", local.format("%H:%M"))
        }
        _ => local.format("%b %d %H:%M").to_string(),
    }
}

/// How a column of numbers is shown to people: four significant digits, in one notation for the
/// whole column (machine formats keep full precision).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notation {
    /// Positional, `0.001234`, `12.35`, `123457`.
    Fixed,
    /// Scientific, `2.600e-6`.
    Scientific,
}

/// Significant digits of numbers in tables.
const SIGNIFICANT_DIGITS: i32 = 4;

impl Notation {
    /// The notation for a column holding `values`: scientific when a nonzero finite value is
    /// below 0.001 or at least 1,000,000 in magnitude, positional otherwise.
    pub fn for_values(values: impl IntoIterator<Item = f64>) -> Self {
        let scientific = values
            .into_iter()
            .filter(|v| v.is_finite() && *v != 0.0)
            .any(|v| !(1e-3..1e6).contains(&v.abs()));
        if scientific { Self::Scientific } else { Self::Fixed }
    }

    /// `value` to four significant digits in this notation.
    pub fn format(self, value: f64) -> String {
        if !value.is_finite() {
            return value.to_string();
        }
        match self {
            Self::Scientific => format!("{value:.prec$e}", prec = (SIGNIFICANT_DIGITS - 1) as usize),
            Self::Fixed if value == 0.0 => "0".to_owned(),
            Self::Fixed => {
                let magnitude = value.abs().log10().floor() as i32;
                let decimals = (SIGNIFICANT_DIGITS - 1 - magnitude).max(0) as usize;
                format!("{value:.decimals$}")
            }
        }
    }
}

/// A duration as `1h 02m 03s`, `2m 03s` or `3s`.
pub fn duration(seconds: i64) -> String {
    let (h, m, s) = (seconds / 3600, seconds % 3600 / 60, seconds % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m {s:02}s"),
        _ => format!("{h}h {m:02}m {s:02}s"),
    }
}

/// Helpers for the tests of the commands' output.
#[cfg(test)]
pub(crate) mod testing {
    /// A terminal that keeps what is drawn on it.
    #[derive(Debug, Clone, Default)]
    pub(crate) struct Screen(std::sync::Arc<std::sync::Mutex<String>>);

    impl indicatif::TermLike for Screen {
        fn width(&self) -> u16 {
            100
        }
        fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn write_line(&self, s: &str) -> std::io::Result<()> {
            self.write_str(&format!("{s}\n"))
        }
        fn write_str(&self, s: &str) -> std::io::Result<()> {
            self.0.lock().unwrap().push_str(s);
            Ok(())
        }
        fn clear_line(&self) -> std::io::Result<()> {
            Ok(())
        }
        fn flush(&self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Screen {
        /// What was drawn since the last call.
        pub(crate) fn take(&self) -> String {
            std::mem::take(&mut self.0.lock().unwrap())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_lists_a_command_s_own_options_before_the_server_and_logging_ones() {
        use clap::CommandFactory as _;
        let mut cli = crate::Cli::command();
        cli.build();
        let list = cli.find_subcommand_mut("jobs").and_then(|jobs| jobs.find_subcommand_mut("list")).unwrap();
        let help = list.render_help().to_string();
        let at = |text: &str| help.find(text).unwrap_or_else(|| panic!("{text} not in {help}"));
        assert!(at("--format") < at("Server:") && at("Server:") < at("--endpoint"), "{help}");
        assert!(at("--endpoint") < at("Logging and tracing:") && at("Logging and tracing:") < at("--log-filter"), "{help}");
    }

    #[test]
    fn csv_records_quote_what_needs_it() {
        assert_eq!(csv_record(&["a", "b c", "d,e", "say \"hi\"", "two\nlines"]), "a,b c,\"d,e\",\"say \"\"hi\"\"\",\"two\nlines\"");
    }

    #[test]
    fn every_jobs_command_takes_one_format_flag_and_json_stays_an_alias() {
        use clap::Parser as _;
        let format_of = |args: &[&str]| match crate::Cli::try_parse_from(args).unwrap().command {
            crate::Command::Jobs { command, .. } => match command {
                crate::jobs::JobsCommand::List { format, .. } | crate::jobs::JobsCommand::Status { format, .. } => format.get(),
                other => panic!("{other:?}"),
            },
            _ => panic!("a jobs command"),
        };
        assert_eq!(format_of(&["mops", "jobs", "list"]), Format::Table);
        assert_eq!(format_of(&["mops", "jobs", "list", "--format", "csv"]), Format::Csv);
        assert_eq!(format_of(&["mops", "jobs", "status", "j", "--json"]), Format::Json);
        assert!(crate::Cli::try_parse_from(["mops", "jobs", "list", "--format", "xml"]).is_err());
    }

    #[test]
    fn tables_align() {
        let mut table = Table::new(["Job ID", "Status"]);
        table.row(vec!["job-1".into(), "running".into()]);
        table.row(vec!["job-22222".into(), "failed".into()]);
        assert_eq!(table.render(), "Job ID     Status\n---------  -------\njob-1      running\njob-22222  failed");
    }

    #[test]
    fn numbers_have_four_significant_digits_and_one_notation_per_column() {
        let small = [2.6e-6, 0.0000286123456789, 0.5];
        assert_eq!(Notation::for_values(small), Notation::Scientific);
        let shown: Vec<String> = small.iter().map(|v| Notation::Scientific.format(*v)).collect();
        assert_eq!(shown, ["2.600e-6", "2.861e-5", "5.000e-1"]);
        let plain = [0.1234567890123, 12.3456789, 0.0, 1234.56789, 0.00123456];
        assert_eq!(Notation::for_values(plain), Notation::Fixed);
        let shown: Vec<String> = plain.iter().map(|v| Notation::Fixed.format(*v)).collect();
        assert_eq!(shown, ["0.1235", "12.35", "0", "1235", "0.001235"]);
        assert_eq!(Notation::for_values([3.0e7, 1.0]), Notation::Scientific);
        assert_eq!(Notation::Fixed.format(f64::NAN), "NaN");
        assert_eq!(Notation::Fixed.format(-0.25), "-0.2500");
    }

    #[test]
    fn relative_times() {
        let now = Utc::now();
        assert_eq!(relative_time(now, now), "just now");
        assert_eq!(relative_time(now - chrono::Duration::seconds(30), now), "30 seconds ago");
        assert_eq!(relative_time(now - chrono::Duration::minutes(5), now), "5 minutes ago");
        assert_eq!(relative_time(now - chrono::Duration::minutes(1), now), "1 minute ago");
        let old = relative_time(now - chrono::Duration::days(40), now);
        assert!(old.len() == 12, "{old}");
        assert_eq!(duration(3723), "1h 02m 03s");
        assert_eq!(duration(63), "1m 03s");
    }
}
