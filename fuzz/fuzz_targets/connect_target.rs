//! CONNECT request targets (RFC 9112 §3.2.3) from the network: parsing never panics, and a
//! parsed target prints back to an authority that parses to the same target.
#![no_main]

use libfuzzer_sys::fuzz_target;
use splitway::target::Target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(target) = Target::parse_authority(s) {
        let again = Target::parse_authority(&target.to_string());
        assert_eq!(again.as_ref().ok(), Some(&target), "{s:?} -> {target} does not round-trip");
    }
    let _ = Target::parse_host_port(s, 443);
});
