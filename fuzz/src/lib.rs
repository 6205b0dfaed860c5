//! Helpers shared by the fuzz targets in `fuzz_targets/`: one target per parser of outside bytes
//! in `modelops-core` (see README.md).

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

/// A valid bundle reference, for expanding and writing what a target has read.
pub const BUNDLE: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// The output of a future that completes on its first poll, as every read of an in-memory
/// object store does.
pub fn ready<F: Future>(future: F) -> F::Output {
    match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("an in-memory store read completes at once"),
    }
}

/// Equal floats, with every NaN equal to every other.
pub fn same_float(a: f64, b: f64) -> bool {
    a == b || (a.is_nan() && b.is_nan())
}
