use super::*;

/// RFC 8448 §3 "Simple 1-RTT Handshake": the client's ClientHello handshake message,
/// SNI "server", as the trace prints it (handshake header included, record header not).
const RFC8448_CLIENT_HELLO: [u8; 196] = [
    0x01, 0x00, 0x00, 0xc0, 0x03, 0x03, 0xcb, 0x34, 0xec, 0xb1, 0xe7, 0x81, 0x63, 0xba, 0x1c, 0x38, 0xc6, 0xda, 0xcb,
    0x19, 0x6a, 0x6d, 0xff, 0xa2, 0x1a, 0x8d, 0x99, 0x12, 0xec, 0x18, 0xa2, 0xef, 0x62, 0x83, 0x02, 0x4d, 0xec, 0xe7,
    0x00, 0x00, 0x06, 0x13, 0x01, 0x13, 0x03, 0x13, 0x02, 0x01, 0x00, 0x00, 0x91, 0x00, 0x00, 0x00, 0x0b, 0x00, 0x09,
    0x00, 0x00, 0x06, 0x73, 0x65, 0x72, 0x76, 0x65, 0x72, 0xff, 0x01, 0x00, 0x01, 0x00, 0x00, 0x0a, 0x00, 0x14, 0x00,
    0x12, 0x00, 0x1d, 0x00, 0x17, 0x00, 0x18, 0x00, 0x19, 0x01, 0x00, 0x01, 0x01, 0x01, 0x02, 0x01, 0x03, 0x01, 0x04,
    0x00, 0x23, 0x00, 0x00, 0x00, 0x33, 0x00, 0x26, 0x00, 0x24, 0x00, 0x1d, 0x00, 0x20, 0x99, 0x38, 0x1d, 0xe5, 0x60,
    0xe4, 0xbd, 0x43, 0xd2, 0x3d, 0x8e, 0x43, 0x5a, 0x7d, 0xba, 0xfe, 0xb3, 0xc0, 0x6e, 0x51, 0xc1, 0x3c, 0xae, 0x4d,
    0x54, 0x13, 0x69, 0x1e, 0x52, 0x9a, 0xaf, 0x2c, 0x00, 0x2b, 0x00, 0x03, 0x02, 0x03, 0x04, 0x00, 0x0d, 0x00, 0x20,
    0x00, 0x1e, 0x04, 0x03, 0x05, 0x03, 0x06, 0x03, 0x02, 0x03, 0x08, 0x04, 0x08, 0x05, 0x08, 0x06, 0x04, 0x01, 0x05,
    0x01, 0x06, 0x01, 0x02, 0x01, 0x04, 0x02, 0x05, 0x02, 0x06, 0x02, 0x02, 0x02, 0x00, 0x2d, 0x00, 0x02, 0x01, 0x01,
    0x00, 0x1c, 0x00, 0x02, 0x40, 0x01,
];

/// A TLS 1.2 ClientHello without SNI, as a client connecting to an IP address sends it.
#[rustfmt::skip]
const TLS12_NO_SNI: [u8; 104] = [
    0x16, 0x03, 0x01, 0x00, 0x63,                   // handshake record, 99 bytes
    0x01, 0x00, 0x00, 0x5f,                         // client_hello, 95 bytes
    0x03, 0x03,                                     // TLS 1.2
    0x5b, 0x1f, 0x8e, 0x42, 0x07, 0xa9, 0x3c, 0xd0, 0x11, 0x6e, 0xf2, 0x88, 0x9d, 0x04, 0x77, 0xc3,
    0x2a, 0x5e, 0xb1, 0x69, 0x0f, 0xe4, 0x38, 0x92, 0xcd, 0x1b, 0x70, 0xa6, 0x53, 0x8f, 0x26, 0xde,
    0x00,                                           // no session id
    0x00, 0x0c, 0xc0, 0x2f, 0xc0, 0x2b, 0xc0, 0x30, 0xc0, 0x2c, 0x00, 0x9e, 0x00, 0xff,
    0x01, 0x00,                                     // null compression
    0x00, 0x2a,                                     // 42 bytes of extensions
    0x00, 0x0b, 0x00, 0x04, 0x03, 0x00, 0x01, 0x02, // ec_point_formats
    0x00, 0x0a, 0x00, 0x08, 0x00, 0x06, 0x00, 0x1d, 0x00, 0x17, 0x00, 0x18, // supported_groups
    0x00, 0x23, 0x00, 0x00,                         // session_ticket
    0x00, 0x0d, 0x00, 0x0a, 0x00, 0x08, 0x04, 0x01, 0x04, 0x03, 0x05, 0x01, 0x05, 0x03, // signature_algorithms
    0x00, 0x17, 0x00, 0x00,                         // extended_master_secret
];

/// A TLS 1.0-era ClientHello that ends after compression_methods: no extensions block.
#[rustfmt::skip]
const TLS10_NO_EXTENSIONS: [u8; 52] = [
    0x16, 0x03, 0x01, 0x00, 0x2f,
    0x01, 0x00, 0x00, 0x2b,
    0x03, 0x01,
    0xa1, 0x02, 0xb3, 0x04, 0xc5, 0x06, 0xd7, 0x08, 0xe9, 0x0a, 0xfb, 0x0c, 0x1d, 0x0e, 0x2f, 0x10,
    0x31, 0x12, 0x43, 0x14, 0x55, 0x16, 0x67, 0x18, 0x79, 0x1a, 0x8b, 0x1c, 0x9d, 0x1e, 0xaf, 0x20,
    0x00,
    0x00, 0x04, 0x00, 0x2f, 0x00, 0x35,
    0x01, 0x00,
];

const ALERT: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28];

fn parse(buf: &[u8]) -> Hello {
    parse_client_hello(buf, MAX_CLIENT_HELLO)
}

fn sni(name: &str) -> Hello {
    Hello::Complete {
        sni: Some(name.to_owned()),
        ech: false,
    }
}

fn be16(n: usize) -> [u8; 2] {
    u16::try_from(n).expect("test vector fits u16").to_be_bytes()
}

fn record(content_type: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![content_type, 0x03, 0x01];
    out.extend(be16(payload.len()));
    out.extend(payload);
    out
}

/// Frames a handshake message into handshake records carrying `n` bytes each.
fn frame(message: &[u8], n: usize) -> Vec<u8> {
    message.chunks(n).flat_map(|c| record(22, c)).collect()
}

/// The handshake message carried by well-formed records.
fn unframe(mut records: &[u8]) -> Vec<u8> {
    let mut message = Vec::new();
    while let [_, _, _, hi, lo, rest @ ..] = records {
        let len = usize::from(u16::from_be_bytes([*hi, *lo]));
        message.extend(&rest[..len]);
        records = &rest[len..];
    }
    message
}

/// Re-frames a hello into records of `n`-byte payloads, as a hostile or odd client may.
fn refragment(hello: &[u8], n: usize) -> Vec<u8> {
    frame(&unframe(hello), n)
}

fn extension(ext_type: u16, data: &[u8]) -> Vec<u8> {
    let mut out = ext_type.to_be_bytes().to_vec();
    out.extend(be16(data.len()));
    out.extend(data);
    out
}

/// server_name extension data holding these (name_type, name) entries (RFC 6066 §3).
fn server_names(entries: &[(u8, &[u8])]) -> Vec<u8> {
    let list: Vec<u8> = entries
        .iter()
        .flat_map(|(t, name)| [vec![*t], be16(name.len()).to_vec(), name.to_vec()].concat())
        .collect();
    [be16(list.len()).to_vec(), list].concat()
}

/// A ClientHello handshake message with these raw extensions bytes (RFC 8446 §4.1.2).
fn client_hello_message(extensions: &[u8]) -> Vec<u8> {
    let mut body = vec![0x03, 0x03];
    body.extend((0u8..32).map(|i| i.wrapping_mul(37)));
    body.push(32);
    body.extend([0xab; 32]); // middlebox-compatibility session id
    body.extend([0x00, 0x06, 0x13, 0x01, 0x13, 0x02, 0x13, 0x03]);
    body.extend([0x01, 0x00]);
    body.extend(be16(extensions.len()));
    body.extend(extensions);
    let mut message = vec![1, 0];
    message.extend(be16(body.len()));
    message.extend(body);
    message
}

/// A TLS 1.3 ClientHello in one record, shaped like a browser's, with `sni` (unchecked, so
/// tests can send invalid names) as its only server name.
fn build_client_hello(sni: Option<&str>) -> Vec<u8> {
    let mut extensions = Vec::new();
    if let Some(name) = sni {
        extensions.extend(extension(0, &server_names(&[(0, name.as_bytes())])));
    }
    extensions.extend(extension(10, &[0x00, 0x04, 0x00, 0x1d, 0x00, 0x17]));
    extensions.extend(extension(13, &[0x00, 0x04, 0x04, 0x03, 0x08, 0x04]));
    extensions.extend(extension(16, b"\x00\x0c\x02h2\x08http/1.1"));
    extensions.extend(extension(43, &[0x02, 0x03, 0x04]));
    extensions.extend(extension(45, &[0x01, 0x01]));
    let mut key_share = vec![0x00, 0x24, 0x00, 0x1d, 0x00, 0x20];
    key_share.extend([0x5a; 32]);
    extensions.extend(extension(51, &key_share));
    frame(&client_hello_message(&extensions), MAX_RECORD_LEN)
}

/// A hello whose only extension is the given server_name extension data.
fn hello_with_server_name(data: &[u8]) -> Vec<u8> {
    frame(&client_hello_message(&extension(0, data)), MAX_RECORD_LEN)
}

#[test]
fn an_encrypted_client_hello_extension_is_reported_beside_the_outer_name() {
    let mut extensions = extension(0, &server_names(&[(0, b"cloudflare-ech.com")]));
    // ECHClientHello (draft-ietf-tls-esni-22 §5): outer, HPKE suite, config id, enc, payload.
    let mut ech = vec![0x00, 0x00, 0x01, 0x00, 0x01, 0x2a, 0x00, 0x02, 0xaa, 0xbb, 0x00, 0x03];
    ech.extend([0x5a; 3]);
    extensions.extend(extension(0xfe0d, &ech));
    let hello = frame(&client_hello_message(&extensions), MAX_RECORD_LEN);
    assert_eq!(
        parse(&hello),
        Hello::Complete {
            sni: Some("cloudflare-ech.com".into()),
            ech: true
        }
    );
    assert_eq!(
        parse(&build_client_hello(Some("api.example.com"))),
        sni("api.example.com")
    );
}

#[test]
fn rfc8448_hello_names_server() {
    let hello = frame(&RFC8448_CLIENT_HELLO, MAX_RECORD_LEN);
    assert_eq!(hello.len(), 201);
    assert_eq!(parse(&hello), sni("server"));
}

#[test]
fn tls12_hello_without_sni() {
    assert_eq!(parse(&TLS12_NO_SNI), Hello::Complete { sni: None, ech: false });
}

#[test]
fn hello_without_extensions_block() {
    assert_eq!(parse(&TLS10_NO_EXTENSIONS), Hello::Complete { sni: None, ech: false });
    let mut ssl3 = TLS10_NO_EXTENSIONS;
    (ssl3[2], ssl3[10]) = (0x00, 0x00);
    assert_eq!(parse(&ssl3), Hello::Complete { sni: None, ech: false });
}

#[test]
fn built_hellos() {
    assert_eq!(parse(&build_client_hello(Some("example.com"))), sni("example.com"));
    assert_eq!(
        parse(&build_client_hello(None)),
        Hello::Complete { sni: None, ech: false }
    );
}

#[test]
fn every_prefix_is_incomplete() {
    let one_byte_records = refragment(&build_client_hello(Some("a.example")), 1);
    for hello in [
        frame(&RFC8448_CLIENT_HELLO, MAX_RECORD_LEN),
        TLS12_NO_SNI.to_vec(),
        one_byte_records,
    ] {
        for end in 0..hello.len() {
            assert_eq!(parse(&hello[..end]), Hello::Incomplete, "prefix of {end} bytes");
        }
        assert!(matches!(parse(&hello), Hello::Complete { .. }));
    }
}

#[test]
fn hello_split_across_records() {
    let hello = frame(&RFC8448_CLIENT_HELLO, MAX_RECORD_LEN);
    for n in [1, 2, 3, 4, 5, 7, 40, 100, 195] {
        let fragmented = refragment(&hello, n);
        assert_eq!(parse(&fragmented), sni("server"), "{n}-byte records");
    }
}

#[test]
fn bytes_after_the_hello_are_ignored() {
    let mut hello = build_client_hello(Some("example.com"));
    hello.extend(record(23, &[0xee; 64])); // 0-RTT application data
    assert_eq!(parse(&hello), sni("example.com"));
    hello.extend(b"garbage");
    assert_eq!(parse(&hello), sni("example.com"));
}

#[test]
fn sni_is_normalised() {
    let cases = [
        ("Example.COM", "example.com"),
        ("example.com.", "example.com"),
        ("_acme-challenge.Example.org.", "_acme-challenge.example.org"),
        ("-odd-.host-", "-odd-.host-"),
        ("localhost", "localhost"),
        ("192.0.2.1", "192.0.2.1"),
        ("2001:DB8::1", "2001:db8::1"),
        ("::ffff:192.0.2.1", "::ffff:192.0.2.1"),
    ];
    for (sent, seen) in cases {
        assert_eq!(parse(&build_client_hello(Some(sent))), sni(seen), "{sent}");
    }
    let longest = ["a".repeat(63), "b".repeat(63), "c".repeat(63), "d".repeat(61)].join(".");
    assert_eq!(longest.len(), 253);
    assert_eq!(parse(&build_client_hello(Some(&longest))), sni(&longest));
    assert_eq!(parse(&build_client_hello(Some(&format!("{longest}.")))), sni(&longest));
}

#[test]
fn invalid_sni_is_malformed() {
    let too_long = ["a".repeat(63), "b".repeat(63), "c".repeat(63), "d".repeat(62)].join(".");
    let long_label = format!("{}.com", "a".repeat(64));
    let bad = [
        "",
        ".",
        "a..b",
        ".example.com",
        "example.com..",
        "exa mple.com",
        "*.example.com",
        "ex\u{e4}mple.com",
        "example.com\0",
        "[::1]",
        "1::2::3",
        "fe80::1%eth0",
        "host:443",
        &too_long,
        &long_label,
    ];
    for name in bad {
        assert_eq!(parse(&build_client_hello(Some(name))), Hello::Malformed, "{name:?}");
    }
}

#[test]
fn server_name_list_rules() {
    let other_then_host = server_names(&[(1, b"opaque"), (0, b"Host.example")]);
    assert_eq!(parse(&hello_with_server_name(&other_then_host)), sni("host.example"));
    let only_other = server_names(&[(7, b"opaque")]);
    assert_eq!(
        parse(&hello_with_server_name(&only_other)),
        Hello::Complete { sni: None, ech: false }
    );
    let two_hosts = server_names(&[(0, b"a.example"), (0, b"b.example")]);
    assert_eq!(parse(&hello_with_server_name(&two_hosts)), Hello::Malformed);
    for data in [&[][..], &[0x00, 0x00], &[0x00, 0x05, 0x00, 0x00, 0x01, b'a']] {
        assert_eq!(parse(&hello_with_server_name(data)), Hello::Malformed, "{data:?}");
    }
}

#[test]
fn duplicate_server_name_extension_is_malformed() {
    let ext = extension(0, &server_names(&[(0, b"a.example")]));
    let hello = frame(&client_hello_message(&[ext.clone(), ext].concat()), MAX_RECORD_LEN);
    assert_eq!(parse(&hello), Hello::Malformed);
}

#[test]
fn not_tls() {
    let cases: [&[u8]; 9] = [
        b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
        b"G",
        b"SSH-2.0-OpenSSH_9.6\r\n",
        b"PRI * HTTP/2.0\r\n",
        &ALERT,
        &[0x15],
        &[0x16, 0x02],                         // record major version 2
        &[0x16, 0x03, 0x05],                   // unknown record minor version
        &[0x16, 0x03, 0x03, 0x00, 0x04, 0x02], // a ServerHello, not a ClientHello
    ];
    for bytes in cases {
        assert_eq!(parse(bytes), Hello::NotTls, "{bytes:?}");
    }
    assert_eq!(parse(&[0x80, 0x2e, 0x01]), Hello::NotTls, "SSLv2-compatible hello");
}

#[test]
fn too_large() {
    let hello = frame(&RFC8448_CLIENT_HELLO, MAX_RECORD_LEN);
    assert_eq!(parse_client_hello(&hello, 200), Hello::TooLarge);
    assert_eq!(parse_client_hello(&hello[..9], 200), Hello::TooLarge);
    assert_eq!(parse_client_hello(&hello, 201), sni("server"));
    assert_eq!(parse_client_hello(&hello, usize::MAX), sni("server"));
    assert_eq!(parse_client_hello(&[], 0), Hello::TooLarge);

    // A declared length over the cap is refused from the handshake header alone.
    let padding = extension(21, &vec![0; MAX_CLIENT_HELLO]);
    let huge = frame(&client_hello_message(&padding), MAX_RECORD_LEN);
    assert_eq!(parse(&huge[..9]), Hello::TooLarge);
    assert_eq!(parse(&huge), Hello::TooLarge);

    // Framing overhead counts: a hello that fits only unframed fills the buffer and stops.
    let tiny_records = refragment(&hello, 1);
    assert_eq!(parse_client_hello(&tiny_records, 500), Hello::TooLarge);
    assert_eq!(parse_client_hello(&tiny_records[..499], 500), Hello::Incomplete);
    assert_eq!(parse_client_hello(&tiny_records[..500], 500), Hello::TooLarge);
}

#[test]
fn broken_records_are_malformed() {
    let hello = frame(&RFC8448_CLIENT_HELLO, MAX_RECORD_LEN);
    assert_eq!(parse(&[0x16, 0x03, 0x01, 0x00, 0x00]), Hello::Malformed, "empty record");
    assert_eq!(
        parse(&[0x16, 0x03, 0x01, 0x40, 0x01]),
        Hello::Malformed,
        "record over 2^14"
    );

    let mut with_empty = frame(&RFC8448_CLIENT_HELLO[..10], 10);
    with_empty.extend([0x16, 0x03, 0x01, 0x00, 0x00]);
    assert_eq!(parse(&with_empty), Hello::Malformed, "empty record mid-hello");

    let mut interleaved = frame(&RFC8448_CLIENT_HELLO[..50], 50);
    interleaved.extend(record(20, &[1])); // change_cipher_spec
    interleaved.extend(frame(&RFC8448_CLIENT_HELLO[50..], MAX_RECORD_LEN));
    assert_eq!(parse(&interleaved), Hello::Malformed, "interleaved record");
    assert_eq!(parse(&interleaved[..52]), Hello::Incomplete);
    assert_eq!(parse(&interleaved[..55]), Hello::Incomplete);
    assert_eq!(parse(&interleaved[..56]), Hello::Malformed);
    assert_eq!(parse(&refragment(&hello, 1)[..10]), Hello::Incomplete);
}

#[test]
fn broken_hellos() {
    let base = frame(&RFC8448_CLIENT_HELLO, MAX_RECORD_LEN);
    // (offset into the record, new byte, expected)
    let cases = [
        (8, 0x20, Hello::Malformed),  // body shorter than any ClientHello
        (8, 0xc8, Hello::Malformed),  // body longer than its extensions
        (9, 0x02, Hello::Malformed),  // legacy_version 2.3
        (43, 33, Hello::Malformed),   // session id over 32 bytes
        (45, 0x05, Hello::Malformed), // odd cipher_suites length
        (45, 0x00, Hello::Malformed), // no cipher suites
        (52, 0x00, Hello::Malformed), // no compression methods
        (55, 0x92, Hello::Malformed), // extensions overrun the message
        (55, 0x90, Hello::Malformed), // extensions stop short of the message
        (59, 0xff, Hello::Malformed), // server_name extension overruns the extensions
        (61, 0x08, Hello::Malformed), // server_name_list shorter than its extension
        (64, 0x07, Hello::Malformed), // host name overruns its list
        (65, b'S', sni("server")),
        (67, b'/', Hello::Malformed), // not a host name byte
    ];
    for (at, byte, expected) in cases {
        let mut hello = base.clone();
        hello[at] = byte;
        assert_eq!(parse(&hello), expected, "byte {at} = {byte:#04x}");
    }
}

/// Every verdict other than `Incomplete` must survive more bytes arriving; prefixes shorter
/// than `from` are known to be `Incomplete`.
fn assert_prefix_stable(buf: &[u8], cap: usize, from: usize) -> Hello {
    let full = parse_client_hello(buf, cap);
    for end in from..=buf.len() {
        let verdict = parse_client_hello(&buf[..end], cap);
        if verdict != Hello::Incomplete {
            assert_eq!(verdict, full, "prefix {end} of {buf:02x?}");
            break;
        }
        assert!(end < cap, "Incomplete with a full buffer");
    }
    full
}

fn is_normalised(name: &str) -> bool {
    !name.is_empty()
        && !name.ends_with('.')
        && name
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b':'))
}

#[test]
fn corruptions_never_panic() {
    let bases = [
        frame(&RFC8448_CLIENT_HELLO, MAX_RECORD_LEN),
        TLS12_NO_SNI.to_vec(),
        TLS10_NO_EXTENSIONS.to_vec(),
        refragment(&build_client_hello(Some("x.example")), 16),
    ];
    for base in &bases {
        for at in 0..base.len() {
            for value in 0..=u8::MAX {
                let mut bytes = base.clone();
                bytes[at] = value;
                if let Hello::Complete { sni: Some(name), .. } = parse(&bytes) {
                    assert!(is_normalised(&name), "{name:?}");
                }
            }
            for value in [0x00, 0x01, 0x7f, 0xff, base[at] ^ 0x80, base[at].wrapping_add(1)] {
                let mut bytes = base.clone();
                bytes[at] = value;
                assert_prefix_stable(&bytes, MAX_CLIENT_HELLO, at);
                assert_prefix_stable(&bytes, 64, at.min(63));
            }
        }
    }
}

#[test]
fn random_mutations_never_panic() {
    let bases = [
        frame(&RFC8448_CLIENT_HELLO, MAX_RECORD_LEN),
        refragment(&build_client_hello(Some("y.example")), 1),
        TLS12_NO_SNI.to_vec(),
    ];
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move |bound: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        usize::try_from(seed % bound as u64).expect("bounded")
    };
    for _ in 0..3_000 {
        let mut bytes = bases[next(bases.len())].clone();
        for _ in 0..=next(4) {
            let at = next(bytes.len() + 1);
            match next(4) {
                0 if at < bytes.len() => bytes[at] = next(256) as u8,
                1 => bytes.insert(at, next(256) as u8),
                2 if at < bytes.len() => {
                    bytes.remove(at);
                }
                _ => bytes.truncate(at),
            }
        }
        assert_prefix_stable(&bytes, next(400) + 1, 0);
    }
}
