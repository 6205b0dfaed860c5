//! The page token of the registry's `ListJobs`: where the previous page ended, as the lowercase
//! hex of `{created_at}\n{job_id}`. Clients pass it back as they got it; [`PageToken::decode`]
//! reads whatever they send.

use crate::job::JobId;

/// The longest token read, in characters.
pub const MAX_TOKEN_LEN: usize = 1024;

/// The last job of a page: the next page starts after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageToken {
    /// The job's `created_at`, as stored.
    pub created_at: String,
    /// The job.
    pub job_id: JobId,
}

/// Why a string is not a page token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid page_token: {0}")]
pub struct PageTokenError(&'static str);

impl PageToken {
    /// The token of the page that ends at the job created at `created_at`.
    pub fn encode(created_at: &str, job_id: &JobId) -> String {
        format!("{created_at}\n{job_id}").bytes().map(|b| format!("{b:02x}")).collect()
    }

    /// Reads a token written by [`PageToken::encode`].
    pub fn decode(token: &str) -> Result<Self, PageTokenError> {
        if !token.len().is_multiple_of(2) || token.len() > MAX_TOKEN_LEN {
            return Err(PageTokenError("not an even number of hex digits up to 1024"));
        }
        // By bytes, not by `&token[i..i + 2]`: a client's token may hold any character, and a
        // slice through one panics.
        let bytes = token
            .as_bytes()
            .chunks(2)
            .map(|pair| Some((hex_digit(pair[0])? << 4) | hex_digit(pair[1])?))
            .collect::<Option<Vec<u8>>>()
            .ok_or(PageTokenError("not hex"))?;
        let text = String::from_utf8(bytes).map_err(|_| PageTokenError("not UTF-8"))?;
        // At the last newline: a job id has none, a stored `created_at` may.
        let (created_at, job_id) = text.rsplit_once('\n').ok_or(PageTokenError("no job id"))?;
        Ok(Self {
            created_at: created_at.to_owned(),
            job_id: JobId::new(job_id).map_err(|_| PageTokenError("not a job id"))?,
        })
    }
}

fn hex_digit(byte: u8) -> Option<u8> {
    char::from(byte).to_digit(16).map(|digit| digit as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip() {
        let job = JobId::new("job-5b718dc8").unwrap();
        let token = PageToken::encode("2026-11-22T20:05:11.123456", &job);
        assert!(token.bytes().all(|b| b.is_ascii_hexdigit()), "{token}");
        assert_eq!(
            PageToken::decode(&token).unwrap(),
            PageToken {
                created_at: "2026-11-22T20:05:11.123456".into(),
                job_id: job,
            }
        );
    }

    #[test]
    fn anything_else_is_an_error() {
        let hex = |text: &str| text.bytes().map(|b| format!("{b:02x}")).collect::<String>();
        for bad in ["zz".to_owned(), "abc".to_owned(), "0".repeat(MAX_TOKEN_LEN + 2), hex("no newline"), hex("2026\n../x"), "c3".to_owned()] {
            assert!(PageToken::decode(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_token_with_multibyte_characters_is_an_error_not_a_panic() {
        // Found by the page_token fuzz target: slicing at a byte that is not a char boundary.
        assert!(PageToken::decode("032362d3131\u{21e}31312e325A6").is_err());
        assert!(PageToken::decode("aéb").is_err());
    }

    #[test]
    fn a_created_at_with_a_newline_round_trips() {
        // Found by the page_token fuzz target: the token was split at the first newline.
        let job = JobId::new("jo0-").unwrap();
        let token = PageToken::encode("2\u{1}\0\0\n0:00", &job);
        assert_eq!(PageToken::decode(&token).unwrap().created_at, "2\u{1}\0\0\n0:00");
    }
}
