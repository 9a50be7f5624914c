//! libFuzzer target: `KeyUri::parse` and `base32::decode` never panic, and every parsed URI round-trips.
#![no_main]

use ichido_otp::{base32, uri::KeyUri};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = base32::decode(&text);
    if let Ok(parsed) = KeyUri::parse(&text) {
        let again = KeyUri::parse(&parsed.to_uri());
        assert_eq!(again.as_ref(), Ok(&parsed), "to_uri/parse round trip");
    }
});
