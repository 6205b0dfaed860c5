//! Reading a job spec blob without holding it: the top-level members are parsed one at a time
//! from a byte stream, and the elements of one list member (a SimJob's `tasks`) are handed to a
//! callback as they are read, so a spec of a million tasks (hundreds of megabytes of JSON) costs
//! the largest single task in memory, not the blob.
//!
//! The scanner only finds where each value ends (brackets outside strings); every value is then
//! parsed by [`pyjson::parse`], so the values are exactly what a whole-blob parse gives.

use std::io::BufRead;

use crate::pyjson::{self, ParseError, PyObject, PyValue};

/// The largest single value (a task, or any other top-level member) the scanner buffers.
pub const MAX_VALUE_BYTES: usize = 64 * 1024 * 1024;

/// Why a scan stopped.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// The reader failed.
    #[error("cannot read the spec: {0}")]
    Read(#[from] std::io::Error),
    /// The bytes are not a JSON object (offset into the whole blob).
    #[error("invalid JSON: {0}")]
    Json(ParseError),
}

fn syntax(message: &'static str, offset: u64) -> ScanError {
    ScanError::Json(ParseError {
        message,
        offset: usize::try_from(offset).unwrap_or(usize::MAX),
    })
}

/// A byte stream with its offset.
struct Input<R> {
    reader: R,
    offset: u64,
}

impl<R: BufRead> Input<R> {
    fn peek(&mut self) -> Result<Option<u8>, ScanError> {
        Ok(self.reader.fill_buf()?.first().copied())
    }

    fn bump(&mut self) {
        self.reader.consume(1);
        self.offset += 1;
    }

    fn skip_ws(&mut self) -> Result<Option<u8>, ScanError> {
        loop {
            match self.peek()? {
                Some(b' ' | b'\t' | b'\n' | b'\r') => self.bump(),
                other => return Ok(other),
            }
        }
    }

    fn expect(&mut self, byte: u8, message: &'static str) -> Result<(), ScanError> {
        if self.skip_ws()? == Some(byte) {
            self.bump();
            Ok(())
        } else {
            Err(syntax(message, self.offset))
        }
    }

    /// Right after an opening bracket: consumes `close` and returns true when the container is
    /// empty.
    fn closes(&mut self, close: u8) -> Result<bool, ScanError> {
        let empty = self.skip_ws()? == Some(close);
        if empty {
            self.bump();
        }
        Ok(empty)
    }

    /// After an item: consumes the `,` and returns true when another item follows, consumes
    /// `close` and returns false at the end.
    fn another(&mut self, close: u8, message: &'static str) -> Result<bool, ScanError> {
        match self.skip_ws()? {
            Some(b',') => {
                self.bump();
                Ok(true)
            }
            Some(byte) if byte == close => {
                self.bump();
                Ok(false)
            }
            _ => Err(syntax(message, self.offset)),
        }
    }

    /// Copies one JSON value into `out` (cleared first) and returns its offset; the value is
    /// not checked beyond its extent, which [`pyjson::parse`] does next.
    fn capture(&mut self, out: &mut Vec<u8>) -> Result<u64, ScanError> {
        out.clear();
        let first = self.skip_ws()?.ok_or_else(|| syntax("expected a value", self.offset))?;
        let start = self.offset;
        let mut depth = 0usize;
        let mut in_string = false;
        let mut escaped = false;
        let container = matches!(first, b'{' | b'[' | b'"');
        loop {
            let chunk = self.reader.fill_buf()?;
            if chunk.is_empty() {
                return if container {
                    Err(syntax("unterminated value", self.offset))
                } else {
                    Ok(start)
                };
            }
            let mut end = None;
            for (i, &byte) in chunk.iter().enumerate() {
                if !container {
                    if matches!(byte, b',' | b':' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r') {
                        end = Some(i);
                        break;
                    }
                    continue;
                }
                if in_string {
                    if escaped {
                        escaped = false;
                    } else if byte == b'\\' {
                        escaped = true;
                    } else if byte == b'"' {
                        in_string = false;
                        if depth == 0 {
                            end = Some(i + 1);
                            break;
                        }
                    }
                    continue;
                }
                match byte {
                    b'"' => in_string = true,
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth = depth.saturating_sub(1);
                        if depth == 0 {
                            end = Some(i + 1);
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let taken = end.unwrap_or(chunk.len());
            if out.len() + taken > MAX_VALUE_BYTES {
                return Err(syntax("a value larger than 64 MiB", self.offset));
            }
            out.extend_from_slice(&chunk[..taken]);
            self.reader.consume(taken);
            self.offset += taken as u64;
            if end.is_some() {
                return Ok(start);
            }
        }
    }
}

/// Parses captured bytes found `depth` containers deep, with errors at their offset in the
/// whole blob.
fn parse_at(bytes: &[u8], start: u64, depth: usize) -> Result<PyValue, ScanError> {
    pyjson::parse_nested(bytes, depth).map_err(|e| {
        ScanError::Json(ParseError {
            message: e.message,
            offset: usize::try_from(start).unwrap_or(usize::MAX).saturating_add(e.offset),
        })
    })
}

/// Reads a JSON object from `reader`. The elements of the list member named `streamed` are
/// handed to `on_element(index, element, members_so_far)` in order and that member is kept as
/// an empty list; every other member is returned. A `streamed` member that is not a list is
/// returned like the others. A value reads as in a whole parse of the blob, except that a
/// `streamed` key repeated after its list was streamed is an error (a whole parse would keep the
/// last, but the first list's elements are already handed out).
pub fn scan_object<E: From<ScanError>>(
    reader: impl BufRead,
    streamed: &str,
    mut on_element: impl FnMut(usize, PyValue, &PyObject) -> Result<(), E>,
) -> Result<PyObject, E> {
    let mut input = Input { reader, offset: 0 };
    let mut members = PyObject::new();
    let mut buffer = Vec::new();
    let mut streamed_once = false;
    input.expect(b'{', "expected an object")?;
    let mut more = !input.closes(b'}')?;
    while more {
        let start = input.capture(&mut buffer)?;
        let PyValue::Str(key) = parse_at(&buffer, start, 1)? else {
            return Err(syntax("expected a string key", start).into());
        };
        if key == streamed && streamed_once {
            return Err(syntax("a repeated key whose list was already streamed", start).into());
        }
        input.expect(b':', "expected ':'")?;
        if key == streamed && input.skip_ws()? == Some(b'[') {
            input.bump();
            streamed_once = true;
            let mut index = 0;
            let mut more_elements = !input.closes(b']')?;
            while more_elements {
                let start = input.capture(&mut buffer)?;
                on_element(index, parse_at(&buffer, start, 2)?, &members)?;
                index += 1;
                more_elements = input.another(b']', "expected ',' or ']'")?;
            }
            members.insert(key, PyValue::List(Vec::new()));
        } else {
            let start = input.capture(&mut buffer)?;
            members.insert(key, parse_at(&buffer, start, 1)?);
        }
        more = input.another(b'}', "expected ',' or '}'")?;
    }
    if input.skip_ws()?.is_some() {
        return Err(syntax("unexpected data after the value", input.offset).into());
    }
    Ok(members)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(text: &str) -> Result<(PyObject, Vec<PyValue>), ScanError> {
        let mut elements = Vec::new();
        // A tiny buffer, so values straddle refills.
        let reader = std::io::BufReader::with_capacity(3, text.as_bytes());
        let members = scan_object(reader, "tasks", |index, element, _: &PyObject| {
            assert_eq!(index, elements.len());
            elements.push(element);
            Ok::<(), ScanError>(())
        })?;
        Ok((members, elements))
    }

    #[test]
    fn members_and_elements_equal_a_whole_parse() {
        let text = r#" { "job_type": "simulation", "a]": "x\"}]", "n": -1.5e-05, "nan": NaN, "inf": -Infinity,
            "tasks": [ {"p": {"q": [1, 2, {"r": "]}"}]}}, 7 , "\\" , [] ,{}, null ],
            "after": [true, false, null], "t": true } "#;
        let (members, elements) = scan(text).unwrap();
        let PyValue::Object(mut whole) = pyjson::parse(text.as_bytes()).unwrap() else {
            panic!()
        };
        let Some(PyValue::List(tasks)) = whole.remove("tasks") else { panic!() };
        assert_eq!(elements, tasks);
        let mut expected = PyObject::new();
        for (key, value) in whole.iter() {
            if key == "after" {
                expected.insert("tasks", PyValue::List(Vec::new()));
            }
            expected.insert(key, value.clone());
        }
        // Compared as text: NaN is not equal to itself.
        assert_eq!(format!("{members:?}"), format!("{expected:?}"));
        assert_eq!(members.keys().collect::<Vec<_>>(), ["job_type", "a]", "n", "nan", "inf", "tasks", "after", "t"]);
    }

    #[test]
    fn the_streamed_member_is_kept_when_not_a_list() {
        let (members, elements) = scan(r#"{"tasks": {"a": 1}}"#).unwrap();
        assert!(elements.is_empty());
        assert_eq!(
            members.get("tasks").and_then(PyValue::as_object).and_then(|o| o.get("a")),
            Some(&PyValue::Int(1))
        );
        let (members, elements) = scan(r#"{"tasks": []}"#).unwrap();
        assert!(elements.is_empty());
        assert_eq!(members.get("tasks"), Some(&PyValue::List(Vec::new())));
        assert!(scan("{}").unwrap().0.is_empty());
    }

    #[test]
    fn malformed_blobs_are_errors_with_offsets() {
        for (text, offset) in [
            (r#"[1]"#, 0),
            (r#"{"tasks": [1,]}"#, 13),
            (r#"{"tasks": [1 2]}"#, 13),
            (r#"{"a": 1 "b": 2}"#, 8),
            (r#"{"a": [1, 2}"#, 11),
            (r#"{"a": "x"#, 8),
            (r#"{1: 2}"#, 1),
            (r#"{"a": 1} x"#, 9),
            (r#"{"a": tru}"#, 6),
        ] {
            match scan(text) {
                Err(ScanError::Json(e)) => assert_eq!(e.offset, offset, "{text}: {e}"),
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn values_nest_as_deep_as_in_a_whole_parse() {
        // The job_spec fuzz target's property (the scanner reads what a whole parse reads) failed
        // here: each value was parsed as a document of its own, so it could nest one level (a
        // task: two) deeper than the whole blob may.
        let nested = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        for (text, whole_ok) in [
            (format!(r#"{{"a": {}}}"#, nested(128)), true),
            (format!(r#"{{"a": {}}}"#, nested(129)), false),
            (format!(r#"{{"tasks": [{}]}}"#, nested(127)), true),
            (format!(r#"{{"tasks": [{}]}}"#, nested(128)), false),
        ] {
            assert_eq!(pyjson::parse(text.as_bytes()).is_ok(), whole_ok);
            assert_eq!(scan(&text).is_ok(), whole_ok, "{text}");
        }
    }

    #[test]
    fn a_streamed_key_repeated_after_its_list_is_an_error() {
        // The job_spec fuzz target's property failed here: the second list was streamed too, its
        // indexes starting again at 0, where a whole parse keeps only the last list.
        assert!(matches!(scan(r#"{"tasks": [1], "tasks": [2, 3]}"#), Err(ScanError::Json(e)) if e.offset == 15));
        assert!(scan(r#"{"tasks": [1], "tasks": 5}"#).is_err());
        let (members, elements) = scan(r#"{"tasks": 5, "tasks": [1]}"#).unwrap();
        assert_eq!((members.get("tasks"), elements), (Some(&PyValue::List(Vec::new())), vec![PyValue::Int(1)]));
    }

    #[test]
    fn the_callback_sees_the_members_before_the_list_and_can_stop_the_scan() {
        let text = r#"{"bundle_ref": "b", "tasks": [1, 2, 3], "late": 1}"#;
        let mut seen = Vec::new();
        let result = scan_object(text.as_bytes(), "tasks", |index, _, members: &PyObject| {
            seen.push((members.get("bundle_ref").cloned(), members.contains_key("late")));
            if index == 1 {
                Err(ScanError::Json(ParseError { message: "stop", offset: 0 }))
            } else {
                Ok(())
            }
        });
        assert!(matches!(result, Err(ScanError::Json(ParseError { message: "stop", .. }))));
        assert_eq!(seen, [(Some(PyValue::Str("b".into())), false), (Some(PyValue::Str("b".into())), false)]);
    }
}
