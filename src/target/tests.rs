use super::*;
use TargetError as E;

fn name(s: &str) -> Host {
    Host::Name(s.to_owned())
}

fn ip(s: &str) -> Host {
    Host::Ip(s.parse().expect("test address"))
}

fn ok(host: Host, port: u16) -> Result<Target, TargetError> {
    Ok(Target { host, port })
}

fn text(s: &str) -> String {
    s.to_owned()
}

#[test]
fn authority_form() {
    let label63 = "a".repeat(63);
    let name253 = [&*label63, &*label63, &*label63, &"b".repeat(61)].join(".");
    let name254 = format!("x{name253}");
    let cases: Vec<(String, Result<Target, TargetError>)> = vec![
        // Valid.
        ("example.com:443".into(), ok(name("example.com"), 443)),
        ("EXAMPLE.Com:443".into(), ok(name("example.com"), 443)),
        ("example.com.:443".into(), ok(name("example.com"), 443)),
        (
            "bmf11pk5je.execute-api.us-east-1.amazonaws.com:443".into(),
            ok(name("bmf11pk5je.execute-api.us-east-1.amazonaws.com"), 443),
        ),
        ("_dmarc.example.com:443".into(), ok(name("_dmarc.example.com"), 443)),
        ("-odd-.example-:443".into(), ok(name("-odd-.example-"), 443)),
        (
            "xn--bcher-kva.example:443".into(),
            ok(name("xn--bcher-kva.example"), 443),
        ),
        ("123.example:443".into(), ok(name("123.example"), 443)),
        ("1.2.3.4a:443".into(), ok(name("1.2.3.4a"), 443)),
        ("localhost:3128".into(), ok(name("localhost"), 3128)),
        ("a:1".into(), ok(name("a"), 1)),
        ("a:65535".into(), ok(name("a"), 65535)),
        ("a:00443".into(), ok(name("a"), 443)),
        (format!("{label63}.com:443"), ok(name(&format!("{label63}.com")), 443)),
        (format!("{name253}:443"), ok(name(&name253), 443)),
        (format!("{name253}.:443"), ok(name(&name253), 443)),
        ("1.2.3.4:443".into(), ok(ip("1.2.3.4"), 443)),
        ("0.0.0.0:80".into(), ok(ip("0.0.0.0"), 80)),
        ("255.255.255.255:1".into(), ok(ip("255.255.255.255"), 1)),
        ("[::1]:443".into(), ok(ip("::1"), 443)),
        ("[2001:DB8::1]:8443".into(), ok(ip("2001:db8::1"), 8443)),
        ("[::ffff:192.0.2.1]:443".into(), ok(ip("::ffff:192.0.2.1"), 443)),
        // Port.
        ("example.com".into(), Err(E::MissingPort(text("example.com")))),
        ("example.com:".into(), Err(E::MissingPort(text("example.com:")))),
        ("[::1]".into(), Err(E::MissingPort(text("[::1]")))),
        ("example.com:0".into(), Err(E::PortOutOfRange(text("0")))),
        ("example.com:65536".into(), Err(E::PortOutOfRange(text("65536")))),
        ("example.com:99999".into(), Err(E::PortOutOfRange(text("99999")))),
        ("example.com:000443".into(), Err(E::InvalidPort(text("000443")))),
        ("example.com:+443".into(), Err(E::InvalidPort(text("+443")))),
        ("example.com:-1".into(), Err(E::InvalidPort(text("-1")))),
        ("example.com: 443".into(), Err(E::InvalidPort(text(" 443")))),
        ("example.com:https".into(), Err(E::InvalidPort(text("https")))),
        (
            "example.com:\u{664}\u{664}\u{663}".into(),
            Err(E::InvalidPort(text("\u{664}\u{664}\u{663}"))),
        ),
        // Not an authority.
        ("user@example.com:443".into(), Err(E::Userinfo)),
        ("user:secret@example.com:443".into(), Err(E::Userinfo)),
        (
            "example.com:443/".into(),
            Err(E::NotAuthority(text("example.com:443/"))),
        ),
        (
            "example.com:443?q".into(),
            Err(E::NotAuthority(text("example.com:443?q"))),
        ),
        (
            "example.com:443#f".into(),
            Err(E::NotAuthority(text("example.com:443#f"))),
        ),
        (
            "https://example.com:443".into(),
            Err(E::NotAuthority(text("https://example.com:443"))),
        ),
        // IPv6.
        ("::1".into(), Err(E::UnbracketedIpv6(text("::1")))),
        (
            "2001:db8::1:443".into(),
            Err(E::UnbracketedIpv6(text("2001:db8::1:443"))),
        ),
        ("[::1]443".into(), Err(E::InvalidIpv6(text("[::1]443")))),
        ("[::1:443".into(), Err(E::InvalidIpv6(text("[::1:443")))),
        ("[fe80::1%25eth0]:443".into(), Err(E::Ipv6Zone(text("fe80::1%25eth0")))),
        ("[fe80::1%eth0]:443".into(), Err(E::Ipv6Zone(text("fe80::1%eth0")))),
        ("[1.2.3.4]:443".into(), Err(E::InvalidIpv6(text("1.2.3.4")))),
        ("[]:443".into(), Err(E::InvalidIpv6(text("")))),
        ("[v1.fe]:443".into(), Err(E::InvalidIpv6(text("v1.fe")))),
        ("[::g]:443".into(), Err(E::InvalidIpv6(text("::g")))),
        // Names.
        ("".into(), Err(E::EmptyHost)),
        (":443".into(), Err(E::EmptyHost)),
        ("1.2.3.999:443".into(), Err(E::InvalidName(text("1.2.3.999")))),
        ("1.2.3:443".into(), Err(E::InvalidName(text("1.2.3")))),
        ("127.1:443".into(), Err(E::InvalidName(text("127.1")))),
        ("01.2.3.4:443".into(), Err(E::InvalidName(text("01.2.3.4")))),
        ("2130706433:443".into(), Err(E::InvalidName(text("2130706433")))),
        ("1.2.3.4.:443".into(), Err(E::InvalidName(text("1.2.3.4.")))),
        ("a..b:443".into(), Err(E::InvalidName(text("a..b")))),
        (".example.com:443".into(), Err(E::InvalidName(text(".example.com")))),
        ("example.com..:443".into(), Err(E::InvalidName(text("example.com..")))),
        (".:443".into(), Err(E::InvalidName(text(".")))),
        ("exa mple.com:443".into(), Err(E::InvalidName(text("exa mple.com")))),
        ("example.com :443".into(), Err(E::InvalidName(text("example.com ")))),
        ("*.example.com:443".into(), Err(E::InvalidName(text("*.example.com")))),
        (
            "b\u{fc}cher.example:443".into(),
            Err(E::InvalidName(text("b\u{fc}cher.example"))),
        ),
        ("a:b:443".into(), Err(E::InvalidName(text("a:b")))),
        (
            format!("{label63}a.com:443"),
            Err(E::InvalidName(format!("{label63}a.com"))),
        ),
        (format!("{name254}:443"), Err(E::NameTooLong(254))),
    ];
    for (input, expected) in &cases {
        assert_eq!(&Target::parse_authority(input), expected, "{input:?}");
    }
}

#[test]
fn host_port_with_default() {
    let cases = [
        ("example.com", ok(name("example.com"), 80)),
        ("Example.com:8080", ok(name("example.com"), 8080)),
        ("example.com:", ok(name("example.com"), 80)),
        ("[::1]", ok(ip("::1"), 80)),
        ("[::1]:", ok(ip("::1"), 80)),
        ("192.0.2.7", ok(ip("192.0.2.7"), 80)),
        ("::1", Err(E::UnbracketedIpv6(text("::1")))),
        ("example.com:0", Err(E::PortOutOfRange(text("0")))),
        ("", Err(E::EmptyHost)),
        ("u@example.com", Err(E::Userinfo)),
    ];
    for (input, expected) in cases {
        assert_eq!(Target::parse_host_port(input, 80), expected, "{input:?}");
    }
}

#[test]
fn display_round_trips() {
    let cases = [
        ("Example.COM.:443", "example.com:443", "example.com"),
        ("1.2.3.4:80", "1.2.3.4:80", "1.2.3.4"),
        ("[::1]:443", "[::1]:443", "[::1]"),
        ("[2001:DB8:0::1]:8443", "[2001:db8::1]:8443", "[2001:db8::1]"),
        ("[::FFFF:192.0.2.1]:443", "[::ffff:192.0.2.1]:443", "[::ffff:192.0.2.1]"),
    ];
    for (input, target_text, host_text) in cases {
        let target = Target::parse_authority(input).expect(input);
        assert_eq!(target.to_string(), target_text);
        assert_eq!(target.host.to_string(), host_text);
        assert_eq!(Target::parse_authority(&target.to_string()), Ok(target.clone()));
        let host = Target::parse_host_port(&target.host.to_string(), 1).expect(host_text);
        assert_eq!(host.host, target.host);
    }
}

#[test]
fn as_name() {
    assert_eq!(name("example.com").as_name(), Some("example.com"));
    assert_eq!(ip("::1").as_name(), None);
}

#[test]
fn error_messages() {
    let cases = [
        ("example.com", "missing port in `example.com`"),
        ("example.com:70000", "port `70000` out of range 1-65535"),
        ("u:p@example.com:443", "userinfo is not allowed in a request target"),
        (
            "[fe80::1%eth0]:443",
            "IPv6 zone identifier is not allowed in `fe80::1%eth0`",
        ),
        ("[1.2.3.4]:443", "invalid IPv6 literal `1.2.3.4`"),
        ("bad_host!:443", "invalid host name `bad_host!`"),
        (":443", "empty host"),
    ];
    for (input, message) in cases {
        let error = Target::parse_authority(input).expect_err(input);
        assert_eq!(error.to_string(), message);
    }
    // Quoted input is cut short, here inside a two-byte character.
    let long = format!("{}\u{e9}{}/", "a".repeat(255), "b".repeat(300));
    let Err(E::NotAuthority(quoted)) = Target::parse_authority(&long) else {
        panic!("expected a path error");
    };
    assert_eq!(quoted, format!("{}...", "a".repeat(255)));
}

#[test]
fn random_inputs_never_panic() {
    const ALPHABET: &[&str] = &[
        "a", "Z", "0", "9", "-", "_", ".", ":", "[", "]", "%", "@", "/", "+", " ", "\u{e9}", "::", "1.2.3.4", "443",
        "65535", "example", "ffff",
    ];
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move |bound: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        usize::try_from(seed % bound as u64).expect("bounded")
    };
    for _ in 0..20_000 {
        let len = next(12);
        let input: String = (0..len).map(|_| ALPHABET[next(ALPHABET.len())]).collect();
        let parsed = [Target::parse_authority(&input), Target::parse_host_port(&input, 443)];
        for target in parsed.into_iter().flatten() {
            assert_eq!(Target::parse_authority(&target.to_string()), Ok(target));
        }
    }
}
