//! JSON exactly as Python's `json` module reads and writes it.
//!
//! Upstream ModelOps writes every JSON file with `json.dumps(obj, indent=2)` and hashes parameters
//! over a compact, key-sorted, raw-UTF-8 form. Matching those bytes needs three things that
//! `serde_json` does not give: keys kept in insertion order with Python's "last duplicate wins in
//! the first position" rule, ints kept apart from floats (`1` ≠ `1.0`, ints of any size), and
//! `NaN`/`Infinity`, which Python accepts and writes (diagnostics may hold them). [`PyValue`] is
//! that data model; [`parse`] reads the dialect, [`to_indent2`] and [`to_canonical`] write it, and
//! [`float_repr`] reproduces Python's `repr(float)`.

use std::fmt::Write as _;

/// A JSON value as Python's `json.loads` produces it.
#[derive(Debug, Clone, PartialEq)]
pub enum PyValue {
    /// `null` / `None`.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer that fits in an `i64`.
    Int(i64),
    /// An integer outside the `i64` range, kept as its decimal text (Python ints are unbounded).
    BigInt(String),
    /// A float, including NaN and the infinities.
    Float(f64),
    /// A string.
    Str(String),
    /// A list.
    List(Vec<PyValue>),
    /// An object, with its keys in insertion order.
    Object(PyObject),
}

/// A JSON object with keys kept in insertion order, like a Python `dict`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PyObject {
    entries: Vec<(String, PyValue)>,
}

impl PyObject {
    /// An empty object.
    pub fn new() -> Self {
        Self::default()
    }

    /// The value under `key`, if any.
    pub fn get(&self, key: &str) -> Option<&PyValue> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Whether `key` is present.
    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Sets `key` like Python `d[key] = value`: an existing key keeps its position, a new key is
    /// appended.
    pub fn insert(&mut self, key: impl Into<String>, value: PyValue) {
        let key = key.into();
        match self.entries.iter_mut().find(|(k, _)| *k == key) {
            Some((_, slot)) => *slot = value,
            None => self.entries.push((key, value)),
        }
    }

    /// Removes `key`, returning its value.
    pub fn remove(&mut self, key: &str) -> Option<PyValue> {
        let index = self.entries.iter().position(|(k, _)| k == key)?;
        Some(self.entries.remove(index).1)
    }

    /// The entries in insertion order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &PyValue)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The keys in insertion order.
    pub fn keys(&self) -> impl ExactSizeIterator<Item = &str> {
        self.entries.iter().map(|(k, _)| k.as_str())
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the object has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// A copy with keys sorted by code point, recursively (Python `sort_keys=True`).
    pub fn sorted(&self) -> Self {
        let mut entries: Vec<(String, PyValue)> = self
            .entries
            .iter()
            .map(|(k, v)| (k.clone(), v.sorted_keys()))
            .collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        Self { entries }
    }
}

impl FromIterator<(String, PyValue)> for PyObject {
    fn from_iter<T: IntoIterator<Item = (String, PyValue)>>(iter: T) -> Self {
        let mut object = Self::new();
        for (k, v) in iter {
            object.insert(k, v);
        }
        object
    }
}

impl IntoIterator for PyObject {
    type Item = (String, PyValue);
    type IntoIter = std::vec::IntoIter<(String, PyValue)>;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}

impl PyValue {
    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The value as an `i64`, if it is an int in range.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Self::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The value as a `u64`, if it is a non-negative int in range (seeds go up to 2^64-1).
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Self::Int(i) => u64::try_from(*i).ok(),
            Self::BigInt(s) => s.parse().ok(),
            _ => None,
        }
    }

    /// The value as an `f64`: floats as they are, ints converted (Python `float(x)`).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Self::Float(f) => Some(*f),
            Self::Int(i) => Some(*i as f64),
            Self::BigInt(s) => s.parse().ok(),
            _ => None,
        }
    }

    /// The bool, if this is one.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Self::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The object, if this is one.
    pub fn as_object(&self) -> Option<&PyObject> {
        match self {
            Self::Object(o) => Some(o),
            _ => None,
        }
    }

    /// The list, if this is one.
    pub fn as_list(&self) -> Option<&[PyValue]> {
        match self {
            Self::List(l) => Some(l),
            _ => None,
        }
    }

    /// Whether this is `null`.
    pub fn is_null(&self) -> bool {
        matches!(self, Self::Null)
    }

    /// The Python type name, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Null => "null",
            Self::Bool(_) => "bool",
            Self::Int(_) | Self::BigInt(_) => "int",
            Self::Float(_) => "float",
            Self::Str(_) => "str",
            Self::List(_) => "list",
            Self::Object(_) => "object",
        }
    }

    /// A copy with every object's keys sorted by code point.
    pub fn sorted_keys(&self) -> Self {
        match self {
            Self::Object(o) => Self::Object(o.sorted()),
            Self::List(l) => Self::List(l.iter().map(Self::sorted_keys).collect()),
            other => other.clone(),
        }
    }
}

impl From<&str> for PyValue {
    fn from(s: &str) -> Self {
        Self::Str(s.to_owned())
    }
}

impl From<String> for PyValue {
    fn from(s: String) -> Self {
        Self::Str(s)
    }
}

impl From<i64> for PyValue {
    fn from(i: i64) -> Self {
        Self::Int(i)
    }
}

impl From<u64> for PyValue {
    fn from(u: u64) -> Self {
        match i64::try_from(u) {
            Ok(i) => Self::Int(i),
            Err(_) => Self::BigInt(u.to_string()),
        }
    }
}

impl From<f64> for PyValue {
    fn from(f: f64) -> Self {
        Self::Float(f)
    }
}

impl From<bool> for PyValue {
    fn from(b: bool) -> Self {
        Self::Bool(b)
    }
}

impl From<PyObject> for PyValue {
    fn from(o: PyObject) -> Self {
        Self::Object(o)
    }
}

impl<T: Into<PyValue>> From<Option<T>> for PyValue {
    fn from(v: Option<T>) -> Self {
        v.map_or(Self::Null, Into::into)
    }
}

// ---------------------------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------------------------

/// Python `repr(float)`: the shortest digits that round-trip, exponent form when the decimal
/// exponent is < -4 or >= 16 (`1e-05`, `1e+16`), and `.0` on whole numbers. Non-finite values are
/// written as `json.dumps` writes them: `NaN`, `Infinity`, `-Infinity`.
pub fn float_repr(value: f64) -> String {
    let mut out = String::with_capacity(24);
    write_float(&mut out, value);
    out
}

fn write_float(out: &mut String, value: f64) {
    if value.is_nan() {
        out.push_str("NaN");
        return;
    }
    if value.is_infinite() {
        out.push_str(if value > 0.0 { "Infinity" } else { "-Infinity" });
        return;
    }
    // Rust's `{:e}` prints the shortest round-tripping digits, as Python's repr does; only the
    // layout differs. It looks like `-1.2345e-7`, `5e-324` or `0e0`.
    let sci = format!("{value:e}");
    let (mantissa, exponent) = sci.split_once('e').expect("`{:e}` always has an exponent");
    let exponent: i32 = exponent.parse().expect("`{:e}` exponent is an integer");
    let (negative, mantissa) = match mantissa.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    if negative {
        out.push('-');
    }
    if !(-4..16).contains(&exponent) {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let sign = if exponent < 0 { '-' } else { '+' };
        let _ = write!(out, "e{sign}{:02}", exponent.unsigned_abs());
        return;
    }
    // Fixed notation. `point` is where the decimal point goes inside `digits`.
    let point = exponent + 1;
    if point <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', point.unsigned_abs() as usize));
        out.push_str(&digits);
    } else {
        let point = point as usize;
        if point < digits.len() {
            out.push_str(&digits[..point]);
            out.push('.');
            out.push_str(&digits[point..]);
        } else {
            out.push_str(&digits);
            out.extend(std::iter::repeat_n('0', point - digits.len()));
            out.push_str(".0");
        }
    }
}

/// Writes `s` as a JSON string literal. With `ensure_ascii` every character outside printable
/// ASCII (space to `~`) is escaped as `\uXXXX` (lowercase hex, surrogate pairs above U+FFFF);
/// without it only `"`, `\` and control characters below U+0020 are escaped and the rest is raw
/// UTF-8, as Python does for `ensure_ascii=False`.
fn write_str(out: &mut String, s: &str, ensure_ascii: bool) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if ensure_ascii && !(' '..='~').contains(&c) => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn write_scalar(out: &mut String, value: &PyValue, ensure_ascii: bool) -> bool {
    match value {
        PyValue::Null => out.push_str("null"),
        PyValue::Bool(true) => out.push_str("true"),
        PyValue::Bool(false) => out.push_str("false"),
        PyValue::Int(i) => {
            let _ = write!(out, "{i}");
        }
        PyValue::BigInt(s) => out.push_str(s),
        PyValue::Float(f) => write_float(out, *f),
        PyValue::Str(s) => write_str(out, s, ensure_ascii),
        PyValue::List(_) | PyValue::Object(_) => return false,
    }
    true
}

/// `json.dumps(value, indent=2)`: two-space indent, `": "` after keys, keys in insertion order,
/// ASCII only, no trailing newline.
pub fn to_indent2(value: &PyValue) -> String {
    let mut out = String::with_capacity(256);
    write_indented(&mut out, value, 0);
    out
}

fn newline(out: &mut String, depth: usize) {
    out.push('\n');
    out.extend(std::iter::repeat_n(' ', depth * 2));
}

fn write_indented(out: &mut String, value: &PyValue, depth: usize) {
    if write_scalar(out, value, true) {
        return;
    }
    match value {
        PyValue::List(items) if items.is_empty() => out.push_str("[]"),
        PyValue::List(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                newline(out, depth + 1);
                write_indented(out, item, depth + 1);
            }
            newline(out, depth);
            out.push(']');
        }
        PyValue::Object(object) if object.is_empty() => out.push_str("{}"),
        PyValue::Object(object) => {
            out.push('{');
            for (i, (key, item)) in object.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                newline(out, depth + 1);
                write_str(out, key, true);
                out.push_str(": ");
                write_indented(out, item, depth + 1);
            }
            newline(out, depth);
            out.push('}');
        }
        _ => unreachable!("scalars are written above"),
    }
}

/// The compact form used for hashing: separators `,` and `:`, keys in the order given (callers
/// sort first), raw UTF-8 (`ensure_ascii=False`).
pub fn to_canonical(value: &PyValue) -> String {
    let mut out = String::with_capacity(128);
    write_compact(&mut out, value, false, ",", ":");
    out
}

/// `json.dumps(value)` with default options: separators `", "` and `": "`, ASCII only. Upstream
/// writes the `metadata` artifact of a simulation this way.
pub fn to_default(value: &PyValue) -> String {
    let mut out = String::with_capacity(128);
    write_compact(&mut out, value, true, ", ", ": ");
    out
}

fn write_compact(out: &mut String, value: &PyValue, ensure_ascii: bool, item_sep: &str, key_sep: &str) {
    if write_scalar(out, value, ensure_ascii) {
        return;
    }
    match value {
        PyValue::List(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                write_compact(out, item, ensure_ascii, item_sep, key_sep);
            }
            out.push(']');
        }
        PyValue::Object(object) => {
            out.push('{');
            for (i, (key, item)) in object.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                write_str(out, key, ensure_ascii);
                out.push_str(key_sep);
                write_compact(out, item, ensure_ascii, item_sep, key_sep);
            }
            out.push('}');
        }
        _ => unreachable!("scalars are written above"),
    }
}

// ---------------------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------------------

/// Why a document is not valid JSON, with the byte offset where reading stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} at byte {offset}")]
pub struct ParseError {
    /// What was wrong.
    pub message: &'static str,
    /// Byte offset into the input.
    pub offset: usize,
}

/// Deepest nesting accepted, so hostile input cannot overflow the stack.
const MAX_DEPTH: usize = 128;

/// Parses `input` as Python's `json.loads` does: standard JSON plus `NaN`, `Infinity` and
/// `-Infinity`; numbers with a fraction or exponent are floats, others ints of any size; a
/// repeated key keeps its first position and takes the last value. Surrounding whitespace is
/// allowed, anything else after the value is an error.
pub fn parse(input: &[u8]) -> Result<PyValue, ParseError> {
    parse_nested(input, 0)
}

/// [`parse`] for a value that sits `depth` containers deep in a larger document (the spec
/// scanner reads one member at a time), so the nesting limit counts from that document's root
/// and the value reads as it would in a whole parse.
pub fn parse_nested(input: &[u8], depth: usize) -> Result<PyValue, ParseError> {
    let mut parser = Parser { input, pos: 0 };
    parser.skip_ws();
    let value = parser.value(depth)?;
    parser.skip_ws();
    if parser.pos != input.len() {
        return Err(parser.error("unexpected data after the value"));
    }
    Ok(value)
}

struct Parser<'a> {
    input: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn error(&self, message: &'static str) -> ParseError {
        ParseError {
            message,
            offset: self.pos,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.input.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    fn eat_literal(&mut self, literal: &[u8]) -> bool {
        if self.input[self.pos..].starts_with(literal) {
            self.pos += literal.len();
            true
        } else {
            false
        }
    }

    fn value(&mut self, depth: usize) -> Result<PyValue, ParseError> {
        if depth > MAX_DEPTH {
            return Err(self.error("nesting too deep"));
        }
        match self.peek() {
            None => Err(self.error("unexpected end of input")),
            Some(b'{') => self.object(depth),
            Some(b'[') => self.list(depth),
            Some(b'"') => Ok(PyValue::Str(self.string()?)),
            Some(b'n') if self.eat_literal(b"null") => Ok(PyValue::Null),
            Some(b't') if self.eat_literal(b"true") => Ok(PyValue::Bool(true)),
            Some(b'f') if self.eat_literal(b"false") => Ok(PyValue::Bool(false)),
            Some(b'N') if self.eat_literal(b"NaN") => Ok(PyValue::Float(f64::NAN)),
            Some(b'I') if self.eat_literal(b"Infinity") => Ok(PyValue::Float(f64::INFINITY)),
            Some(b'-') if self.eat_literal(b"-Infinity") => Ok(PyValue::Float(f64::NEG_INFINITY)),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => Err(self.error("unexpected character")),
        }
    }

    fn object(&mut self, depth: usize) -> Result<PyValue, ParseError> {
        self.pos += 1;
        let mut object = PyObject::new();
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(PyValue::Object(object));
        }
        loop {
            self.skip_ws();
            if self.peek() != Some(b'"') {
                return Err(self.error("expected a string key"));
            }
            let key = self.string()?;
            self.skip_ws();
            if self.peek() != Some(b':') {
                return Err(self.error("expected ':'"));
            }
            self.pos += 1;
            self.skip_ws();
            let value = self.value(depth + 1)?;
            object.insert(key, value);
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(PyValue::Object(object));
                }
                _ => return Err(self.error("expected ',' or '}'")),
            }
        }
    }

    fn list(&mut self, depth: usize) -> Result<PyValue, ParseError> {
        self.pos += 1;
        let mut items = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(PyValue::List(items));
        }
        loop {
            self.skip_ws();
            items.push(self.value(depth + 1)?);
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(PyValue::List(items));
                }
                _ => return Err(self.error("expected ',' or ']'")),
            }
        }
    }

    fn hex4(&mut self) -> Result<u32, ParseError> {
        let digits = self
            .input
            .get(self.pos..self.pos + 4)
            .ok_or_else(|| self.error("truncated \\u escape"))?;
        let text = std::str::from_utf8(digits).map_err(|_| self.error("invalid \\u escape"))?;
        let value = u32::from_str_radix(text, 16).map_err(|_| self.error("invalid \\u escape"))?;
        self.pos += 4;
        Ok(value)
    }

    fn string(&mut self) -> Result<String, ParseError> {
        self.pos += 1;
        let mut out = String::new();
        loop {
            let start = self.pos;
            while let Some(b) = self.peek() {
                if b == b'"' || b == b'\\' || b < 0x20 {
                    break;
                }
                self.pos += 1;
            }
            let chunk = std::str::from_utf8(&self.input[start..self.pos]).map_err(|e| ParseError {
                message: "invalid UTF-8 in string",
                offset: start + e.valid_up_to(),
            })?;
            out.push_str(chunk);
            match self.peek() {
                None => return Err(self.error("unterminated string")),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.pos += 1;
                    let escape = self.peek().ok_or_else(|| self.error("unterminated string"))?;
                    self.pos += 1;
                    match escape {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{08}'),
                        b'f' => out.push('\u{0c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let unit = self.hex4()?;
                            let code = if (0xD800..0xDC00).contains(&unit)
                                && self.input[self.pos..].starts_with(b"\\u")
                            {
                                let save = self.pos;
                                self.pos += 2;
                                let low = self.hex4()?;
                                if (0xDC00..0xE000).contains(&low) {
                                    0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00)
                                } else {
                                    self.pos = save;
                                    unit
                                }
                            } else {
                                unit
                            };
                            // Python keeps lone surrogates; Rust strings cannot hold them, and
                            // replacing them would change the value (and every id hashed from
                            // it), so they are refused. No upstream writer produces them.
                            out.push(char::from_u32(code).ok_or_else(|| self.error("lone UTF-16 surrogate in a \\u escape"))?);
                        }
                        _ => return Err(self.error("invalid escape")),
                    }
                }
                Some(_) => return Err(self.error("control character in string")),
            }
        }
    }

    fn number(&mut self) -> Result<PyValue, ParseError> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => {
                while let Some(b'0'..=b'9') = self.peek() {
                    self.pos += 1;
                }
            }
            _ => return Err(self.error("invalid number")),
        }
        let mut is_float = false;
        if self.peek() == Some(b'.') {
            let dot = self.pos;
            self.pos += 1;
            let digits_start = self.pos;
            while let Some(b'0'..=b'9') = self.peek() {
                self.pos += 1;
            }
            if self.pos == digits_start {
                // Python reads `1.` as the int 1 followed by junk; reject the same way.
                self.pos = dot;
                return Err(self.error("invalid number"));
            }
            is_float = true;
        }
        if let Some(b'e' | b'E') = self.peek() {
            let save = self.pos;
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            let digits_start = self.pos;
            while let Some(b'0'..=b'9') = self.peek() {
                self.pos += 1;
            }
            if self.pos == digits_start {
                self.pos = save;
                return Err(self.error("invalid number"));
            }
            is_float = true;
        }
        let text = std::str::from_utf8(&self.input[start..self.pos]).expect("ASCII digits");
        if is_float {
            text.parse::<f64>()
                .map(PyValue::Float)
                .map_err(|_| self.error("invalid number"))
        } else {
            Ok(match text.parse::<i64>() {
                Ok(i) => PyValue::Int(i),
                Err(_) => PyValue::BigInt(text.to_owned()),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lone_surrogates_are_refused_and_pairs_decode() {
        assert_eq!(parse(br#""\ud83d\ude00""#).unwrap(), PyValue::Str("\u{1f600}".into()));
        for lone in [r#""\ud83d""#, r#""\ude00""#, r#""\ud83dx""#, r#""\ud83d\u0041""#, r#"{"k\udc00": 1}"#] {
            let err = parse(lone.as_bytes()).unwrap_err();
            assert!(err.message.contains("surrogate"), "{lone}: {err:?}");
        }
    }

    #[test]
    fn float_repr_matches_python() {
        let cases = [
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (1.0, "1.0"),
            (0.1, "0.1"),
            (0.3, "0.3"),
            (1e-05, "1e-05"),
            (0.0001, "0.0001"),
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (123456789012345678.0, "1.2345678901234568e+17"),
            (1e22, "1e+22"),
            (5e-324, "5e-324"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (2.5e-7, "2.5e-07"),
            (1234.5678, "1234.5678"),
            (100.0, "100.0"),
            (0.123456789, "0.123456789"),
            (9999999999999998.0, "9999999999999998.0"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "Infinity"),
            (f64::NEG_INFINITY, "-Infinity"),
        ];
        for (value, expected) in cases {
            assert_eq!(float_repr(value), expected, "repr of {value:?}");
        }
    }

    #[test]
    fn indent2_matches_python_layout() {
        let value = parse(br#"{"b": [1, 2.0, {}], "a": {"x": [], "y": null}, "s": "\u00e9\ud83d\ude00\u007f"}"#)
            .unwrap();
        let expected = "{\n  \"b\": [\n    1,\n    2.0,\n    {}\n  ],\n  \"a\": {\n    \"x\": [],\n    \"y\": null\n  },\n  \"s\": \"\\u00e9\\ud83d\\ude00\\u007f\"\n}";
        assert_eq!(to_indent2(&value), expected);
    }

    #[test]
    fn canonical_is_compact_raw_utf8() {
        let value = parse(br#"{"s": "a\"b\\c\nd\u0001\u007f\u00e9\ud83d\ude00"}"#).unwrap();
        assert_eq!(to_canonical(&value), "{\"s\":\"a\\\"b\\\\c\\nd\\u0001\u{7f}é😀\"}");
        let default = parse(br#"{"entrypoint": "m.x/s", "seed": 7, "params": {"b": 0.5, "a": [1, "\u00e9"]}}"#).unwrap();
        assert_eq!(to_default(&default), r#"{"entrypoint": "m.x/s", "seed": 7, "params": {"b": 0.5, "a": [1, "\u00e9"]}}"#);
    }

    #[test]
    fn parse_keeps_order_ints_and_non_finite() {
        let value = parse(b" {\"z\": 1, \"a\": 1.0, \"z\": NaN, \"big\": 12345678901234567890, \"n\": -Infinity} ").unwrap();
        let object = value.as_object().unwrap();
        assert_eq!(object.keys().collect::<Vec<_>>(), ["z", "a", "big", "n"]);
        assert!(object.get("z").unwrap().as_f64().unwrap().is_nan());
        assert_eq!(object.get("a"), Some(&PyValue::Float(1.0)));
        assert_eq!(object.get("big"), Some(&PyValue::BigInt("12345678901234567890".into())));
        assert_eq!(to_indent2(&value), "{\n  \"z\": NaN,\n  \"a\": 1.0,\n  \"big\": 12345678901234567890,\n  \"n\": -Infinity\n}");
    }

    #[test]
    fn parse_rejects_malformed_input_without_panicking() {
        for bad in [
            &b""[..],
            b"{",
            b"{\"a\" 1}",
            b"[1,]",
            b"\"abc",
            b"1.",
            b"01",
            b"{\"a\": 1} x",
            b"\"\\x\"",
            b"\"\\u12\"",
            b"\xff",
            b"-",
            b"tru",
        ] {
            assert!(parse(bad).is_err(), "{:?} should not parse", String::from_utf8_lossy(bad));
        }
        let deep = "[".repeat(MAX_DEPTH + 10);
        assert!(parse(deep.as_bytes()).is_err());
    }
}
