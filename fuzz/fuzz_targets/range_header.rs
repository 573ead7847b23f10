//! The HTTP Range parser: never panics, and a partial range always lies within the
//! representation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use medley_client::gateway::range::{RangeRequest, parse};

fuzz_target!(|input: (&str, u64)| {
    let (header, len) = input;
    match parse(Some(header), len) {
        RangeRequest::Partial { start, end } => {
            assert!(start <= end, "{header:?} of {len}: {start}..={end}");
            assert!(end < len, "{header:?} of {len}: {start}..={end}");
        }
        RangeRequest::Full | RangeRequest::Unsatisfiable => {}
    }
    assert_eq!(parse(None, len), RangeRequest::Full);
});
