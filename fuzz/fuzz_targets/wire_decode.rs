//! Data-plane message decoding: never panics; whatever decodes re-encodes to the same bytes
//! and stays within the protocol's bounds; the streaming length reader agrees with it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use medley_core::protocol::{MAX_HAS_IDS, MAX_MESSAGE_SIZE, Request, Response, VarintReader};

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = Request::decode(data) {
        assert!(data.len() <= MAX_MESSAGE_SIZE);
        if let Request::Has { ids } = &r {
            assert!(ids.len() <= MAX_HAS_IDS);
        }
        assert_eq!(Request::decode(&r.encode()).as_ref(), Ok(&r));
    }
    if let Ok(r) = Response::decode(data) {
        let (mut header, payload) = r.encode_parts();
        if let Some(p) = payload {
            header.extend_from_slice(p);
        }
        assert_eq!(header, r.encode(), "split encoding equals the whole");
        assert_eq!(Response::decode(&r.encode()).as_ref(), Ok(&r));
    }
    let mut v = VarintReader::default();
    for &b in data.iter().take(8) {
        match v.push(b) {
            Ok(None) => {}
            Ok(Some(n)) => {
                // A minimal varint re-encodes to exactly the bytes read.
                let re = postcard::to_allocvec(&n).unwrap_or_default();
                assert_eq!(&re[..], &data[..v.len()]);
                break;
            }
            Err(_) => break,
        }
    }
});
