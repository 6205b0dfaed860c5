//! `flight_command::Command::parse`, the query service's reader of Flight descriptors and
//! tickets: a command that reads is written as a ticket that reads as the same command, and an
//! error names `command`, a field of the input, or a required field it lacks.
#![no_main]

use libfuzzer_sys::fuzz_target;
use modelops_core::flight_command::{Command, CommandError};

/// The fields an error may name without the input having them: the document, and the required
/// fields of the commands.
const NAMED_WHEN_ABSENT: [&str; 6] = ["command", "type", "target", "job_a", "job_b", "query"];

fuzz_target!(|data: &[u8]| {
    match Command::parse::<CommandError>(data) {
        Ok(command) => {
            let ticket = command.to_json();
            let reread = Command::parse::<CommandError>(&ticket)
                .unwrap_or_else(|e| panic!("the ticket of {command:?} does not read back ({e}): {}", String::from_utf8_lossy(&ticket)));
            assert_eq!(reread, command);
        }
        Err(CommandError { field, message }) => {
            let in_input = match serde_json::from_slice::<serde_json::Value>(data) {
                Ok(serde_json::Value::Object(object)) => object.contains_key(&field),
                _ => false,
            };
            assert!(in_input || NAMED_WHEN_ABSENT.contains(&field.as_str()), "{field:?}: {message}");
        }
    }
});
