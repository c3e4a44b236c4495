//! The first-head check: never panics, and once it has decided (a complete good head, or an
//! error), more bytes after them never change the decision: what the client sends next (a
//! pipelined ClientHello, a body) cannot turn a refusal into a pass or a pass into a refusal.
#![no_main]

use libfuzzer_sys::fuzz_target;
use splitway::head::check;

fn status(data: &[u8]) -> Option<Result<(), u16>> {
    check(data).map(|r| r.map_err(|e| e.status().as_u16()))
}

fuzz_target!(|data: &[u8]| {
    let verdict = status(data);
    if verdict.is_some() {
        let mut longer = data.to_vec();
        longer.extend_from_slice(b"\x16\x03\x01\x00\x05hello GET / HTTP/1.1\r\n\r\n");
        assert_eq!(status(&longer), verdict, "{:?}", data.escape_ascii().to_string());
    }
});
