//! Manifest decoding: never panics; whatever decodes is canonical (encodes to the same bytes,
//! so one manifest has one song id) and verified.
#![no_main]

use libfuzzer_sys::fuzz_target;
use medley_core::Manifest;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Manifest::decode(data) {
        assert_eq!(m.encoded(), data, "a decoded manifest is its own encoding");
        assert!(m.id().matches(data));
        assert!(Manifest::decode_expecting(data, m.id()).is_ok());
    }
});
