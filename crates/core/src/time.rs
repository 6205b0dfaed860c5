//! Timestamps as upstream writes them: Python `datetime.now(UTC).isoformat()`, e.g.
//! `2026-11-22T20:05:11.254227+00:00`, with the fraction left out when the microsecond is 0.

use chrono::{DateTime, NaiveDateTime, SecondsFormat, Timelike, Utc};

/// Python `isoformat()` of an aware UTC datetime (microsecond precision, `+00:00` offset).
pub fn py_isoformat(at: DateTime<Utc>) -> String {
    let micros = at.nanosecond() / 1_000 % 1_000_000;
    let at = at.with_nanosecond(micros * 1_000).expect("micros are in range");
    let format = if micros == 0 { SecondsFormat::Secs } else { SecondsFormat::Micros };
    at.to_rfc3339_opts(format, false)
}

/// The current time in upstream's form.
pub fn now_iso() -> String {
    py_isoformat(Utc::now())
}

/// Parses what Python `datetime.fromisoformat` accepts for the timestamps upstream writes: an
/// offset (`+00:00` or `Z`), or none, which is read as UTC.
pub fn parse_iso(text: &str) -> Option<DateTime<Utc>> {
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Some(at.with_timezone(&Utc));
    }
    NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|naive| naive.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn isoformat_like_python() {
        let at = Utc.with_ymd_and_hms(2026, 11, 22, 20, 5, 11).unwrap();
        assert_eq!(py_isoformat(at), "2026-11-22T20:05:11+00:00");
        let at = at.with_nanosecond(254_227_999).unwrap();
        assert_eq!(py_isoformat(at), "2026-11-22T20:05:11.254227+00:00");
        let at = at.with_nanosecond(1_000).unwrap();
        assert_eq!(py_isoformat(at), "2026-11-22T20:05:11.000001+00:00");
        assert_eq!(parse_iso("2026-11-22T20:05:11.000001+00:00"), Some(at));
        assert_eq!(parse_iso("2026-11-22T20:05:11.000001Z"), Some(at));
        assert_eq!(parse_iso("2026-11-22T20:05:11.000001"), Some(at));
        assert_eq!(parse_iso("yesterday"), None);
    }
}
