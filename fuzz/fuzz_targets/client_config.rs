//! Configuration parsing: any TOML text either fails with an error or gives a config whose
//! validation answers, and a valid config survives a round trip through TOML.
#![no_main]

use libfuzzer_sys::fuzz_target;
use medley_client::ClientConfig;

fuzz_target!(|text: &str| {
    if let Ok(c) = toml::from_str::<ClientConfig>(text)
        && c.validate().is_ok()
    {
        let again = toml::to_string(&c).expect("a parsed config serializes");
        let back: ClientConfig = toml::from_str(&again).expect("and parses back");
        assert_eq!(back, c);
    }
});
