//! What a client may read in an error message: no absolute path or store URL of the server's
//! machine, and at most [`MAX_MESSAGE_LEN`] bytes. Every service's error → status mapping sends
//! its messages through [`scrubbed`]; the full error goes to the server's log.

/// Longest message sent to clients.
pub const MAX_MESSAGE_LEN: usize = 1024;

/// `message` with what would tell a client about the server's machine removed: absolute file
/// paths and store URLs become `…`, and the whole is cut to [`MAX_MESSAGE_LEN`].
pub fn scrubbed(message: &str) -> String {
    let mut out = String::with_capacity(message.len().min(MAX_MESSAGE_LEN));
    for (i, token) in message.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let bare = token.trim_start_matches(['"', '\'', '(', '[', '`']);
        let is_path = bare.starts_with('/') && bare[1..].contains('/');
        if is_path || bare.contains("://") {
            // Keep the last segment (`losses.parquet`), which tells which file without where.
            let tail = bare.trim_end_matches(['"', '\'', ')', ']', '`', ',', ':', '.']);
            let last = tail.rsplit('/').next().unwrap_or_default();
            out.push_str(&token[..token.len() - bare.len()]);
            out.push('…');
            out.push('/');
            out.push_str(last);
            out.push_str(&bare[tail.len()..]);
        } else {
            out.push_str(token);
        }
    }
    if out.len() > MAX_MESSAGE_LEN {
        let mut end = MAX_MESSAGE_LEN;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
        out.push('…');
    }
    out
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_urls_lose_their_location_and_long_messages_are_cut() {
        assert_eq!(
            scrubbed("Object at location /srv/data/results/job-1/losses.parquet not found"),
            "Object at location …/losses.parquet not found"
        );
        assert_eq!(scrubbed("cannot open \"/home/u/.modelops/jobs/x.json\": denied"), "cannot open \"…/x.json\": denied");
        assert_eq!(scrubbed("GET http://127.0.0.1:10000/devstoreaccount1/c/a.json failed"), "GET …/a.json failed");
        assert_eq!(scrubbed("job a/b is invalid: 1/2"), "job a/b is invalid: 1/2");
        let long = scrubbed(&"x".repeat(5000));
        assert!(long.len() <= MAX_MESSAGE_LEN + '…'.len_utf8());
    }
}
