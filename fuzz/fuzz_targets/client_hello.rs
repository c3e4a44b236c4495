//! The ClientHello reader on a tunnel's first bytes: never panics, and its verdict on a
//! complete hello does not change when more bytes follow it (a pipelined first flight).
#![no_main]

use libfuzzer_sys::fuzz_target;
use splitway::sni::{self, Hello};

fuzz_target!(|data: &[u8]| {
    let verdict = sni::parse_client_hello(data, sni::MAX_CLIENT_HELLO);
    if let Hello::Complete { .. } = &verdict {
        let mut longer = data.to_vec();
        longer.extend_from_slice(b"\x17\x03\x03\x00\x01x");
        assert_eq!(sni::parse_client_hello(&longer, sni::MAX_CLIENT_HELLO), verdict);
    }
    // Every prefix is undecided or the same kind of refusal, never a panic.
    for cut in [0, 1, 5, 9, data.len() / 2] {
        let _ = sni::parse_client_hello(&data[..cut.min(data.len())], sni::MAX_CLIENT_HELLO);
    }
});
