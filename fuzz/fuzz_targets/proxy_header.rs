//! The PROXY protocol header reader: framing never panics, a header it frames lies within the
//! bytes and the size cap, parsing a framed header never panics, and once framing has decided,
//! more bytes after them (the first request head) never change the decision.
#![no_main]

use libfuzzer_sys::fuzz_target;
use splitway::proxy_header::{Frame, V2_MAX, frame, parse};

fuzz_target!(|data: &[u8]| {
    let peer = std::net::SocketAddr::from(([10, 0, 0, 1], 40000));
    let framed = frame(data);
    if let Frame::Header(len) = framed {
        assert!(len <= data.len() && len <= V2_MAX, "{len}");
        let _ = parse(&data[..len], peer);
    }
    if framed != Frame::Incomplete {
        let mut longer = data.to_vec();
        longer.extend_from_slice(b"CONNECT a:443 HTTP/1.1\r\n\r\n");
        assert_eq!(frame(&longer), framed, "{:?}", data.escape_ascii().to_string());
    }
});
