//! `pyjson::parse`, the reader under every stored JSON file (state, specs, records): whatever it
//! accepts, each of its three writers writes as text that reads back to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use modelops_core::pyjson::{self, PyValue};

fuzz_target!(|data: &[u8]| {
    let Ok(value) = pyjson::parse(data) else { return };
    let indented = pyjson::to_indent2(&value);
    assert!(indented.is_ascii(), "json.dumps escapes non-ASCII: {indented}");
    // Compared as their indent-2 text, which tells every value apart except NaN from NaN.
    let same = |written: &str, writer: &str| {
        let reread: PyValue = pyjson::parse(written.as_bytes()).unwrap_or_else(|e| panic!("{writer} output does not parse ({e}): {written}"));
        assert_eq!(pyjson::to_indent2(&reread), indented, "{writer} changed the value");
    };
    same(&indented, "to_indent2");
    same(&pyjson::to_canonical(&value), "to_canonical");
    same(&pyjson::to_default(&value), "to_default");
});
