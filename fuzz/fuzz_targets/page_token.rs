//! `page_token::PageToken`, the registry's `ListJobs` page token: any string a client sends is
//! read without a panic, a token that reads is written back as itself (up to hex case), and any
//! (created_at, job id) pair written into a token of readable length reads back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use modelops_core::job::JobId;
use modelops_core::page_token::{MAX_TOKEN_LEN, PageToken};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(token) = PageToken::decode(text) {
        assert_eq!(PageToken::encode(&token.created_at, &token.job_id), text.to_ascii_lowercase());
    }
    // The same bytes as a job's `created_at` and id, split at the last space.
    let Some((created_at, job_id)) = text.rsplit_once(' ') else { return };
    let Ok(job_id) = JobId::new(job_id) else { return };
    let token = PageToken::encode(created_at, &job_id);
    if token.len() <= MAX_TOKEN_LEN {
        let expected = PageToken {
            created_at: created_at.to_owned(),
            job_id,
        };
        assert_eq!(PageToken::decode(&token), Ok(expected));
    }
});
