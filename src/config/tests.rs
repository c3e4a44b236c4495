use super::*;

fn err(toml: &str) -> String {
    Config::from_toml(toml, "bad.toml")
        .expect_err("config must be rejected")
        .to_string()
}

#[test]
fn embedded_default_is_a_plain_forward_proxy() {
    let c = Config::embedded();
    assert_eq!(c.proxy.listen.to_string(), DEFAULT_LISTEN);
    assert_eq!(
        c.admin.as_ref().map(|a| a.listen.to_string()).as_deref(),
        Some(DEFAULT_ADMIN_LISTEN)
    );
    assert!(c.routes.is_empty());
    assert_eq!(c.resolvers.keys().collect::<Vec<_>>(), ["system"]);
    assert_eq!(c.proxy.connect_ports, [443]);
    assert_eq!(c.proxy.deny_destinations.len(), DEFAULT_DENY_DESTINATIONS.len());
}

#[test]
fn durations_and_lists_parse() {
    let c = Config::from_toml(
        r#"
[proxy]
listen = "127.0.0.1:0"
connect_timeout = "500ms"
idle_timeout = "2m"
connect_ports = [443, 8443]
[resolver.public]
nameservers = ["1.1.1.1", "8.8.8.8:5353", "tcp://9.9.9.9", "tls://1.1.1.1#cloudflare-dns.com", "https://8.8.8.8/dns-query#dns.google"]
min_ttl = "1s"
[resolver.system]
cache_size = 50
[[route]]
hosts = ["*.execute-api.us-east-1.amazonaws.com"]
connect = ["zonal.example:8443", "regional.example"]
sni = "any"
[[route]]
hosts = ["*.execute-api.us-west-2.amazonaws.com"]
addresses = ["10.1.5.20", "[fd00::1]:443"]
"#,
        "ok.toml",
    )
    .expect("valid");
    assert_eq!(c.proxy.connect_timeout, Duration::from_millis(500));
    assert_eq!(c.proxy.idle_timeout, Duration::from_secs(120));
    let public = &c.resolvers["public"];
    let ns = public.nameservers.as_ref().unwrap();
    assert_eq!(public.ca_file, None);
    assert_eq!(ns[1], Nameserver::UdpTcp("8.8.8.8:5353".parse().unwrap()));
    assert_eq!(
        ns[3],
        Nameserver::Tls {
            addr: "1.1.1.1:853".parse().unwrap(),
            name: "cloudflare-dns.com".into()
        }
    );
    assert!(!public.hosts_file);
    assert_eq!(public.cache_size, DEFAULT_CACHE_SIZE);
    assert_eq!(c.resolvers["system"].cache_size, 50);
    assert_eq!(
        c.routes[0].name, "*.execute-api.us-east-1.amazonaws.com",
        "name defaults to the first host"
    );
    assert_eq!(c.routes[0].sni, SniMode::Any);
    match &c.routes[0].action {
        Action::Connect(names) => {
            assert_eq!(names[0].port, Some(8443));
            assert_eq!(names[1].port, None);
        }
        other => panic!("{other:?}"),
    }
    match &c.routes[1].action {
        Action::Addresses(a) => assert_eq!(a[1].port, Some(443)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn errors_name_file_line_route_and_key() {
    let cases: &[(&str, &[&str])] = &[
        (
            "[proxy]\nlisten = \"127.0.0.1:0\"\nconect_timeout = \"5s\"\n",
            &["bad.toml:3", "conect_timeout"],
        ),
        ("[proxy]\nconnect_timeout = \"five\"\n", &["bad.toml:2", "five"]),
        ("[bogus]\nx = 1\n", &["bad.toml:1", "bogus"]),
        (
            "[[route]]\nname = \"r1\"\nhosts = [\"a.example\"]\nresolvr = \"public\"\n",
            &["bad.toml:4", "route `r1`", "key `resolvr`", "unknown key"],
        ),
        (
            "[[route]]\nname = \"r1\"\nhosts = [\"a.example\"]\nresolver = \"public\"\n",
            &[
                "bad.toml:4",
                "route `r1`",
                "key `resolver`",
                "unknown resolver `public`",
                "[resolver.public]",
            ],
        ),
        (
            "[[route]]\nname = \"r2\"\n\nhosts = []\n",
            &["bad.toml:4", "route `r2`", "key `hosts`"],
        ),
        ("[[route]]\nname = \"r3\"\n", &["bad.toml:1", "route `r3`", "missing"]),
        (
            "[[route]]\nname = \"r4\"\nhosts = [\"a.example\"]\naddresses = [\"10.0.0.999\"]\n",
            &["bad.toml:4", "route `r4`", "key `addresses`", "10.0.0.999"],
        ),
        (
            "[[route]]\nname = \"r5\"\nhosts = [\"a.example\"]\naddresses = [\"10.0.0.1\"]\ndeny = true\n",
            &["bad.toml:5", "route `r5`", "at most one"],
        ),
        (
            "[[route]]\nname = \"r6\"\nhosts = [\"bad host!\"]\n",
            &["bad.toml:3", "route `r6`", "bad host!"],
        ),
        (
            "[[route]]\nname = \"r7\"\nhosts = [\"a.example\"]\nsni = \"sometimes\"\n",
            &["bad.toml:4", "key `sni`"],
        ),
        (
            "[resolver.public]\ntimeout = \"1s\"\n",
            &["bad.toml:1", "resolver.public.nameservers", "missing"],
        ),
        (
            "[resolver.public]\nnameservers = [\"dns.google\"]\n",
            &["bad.toml:2", "resolver.public.nameservers", "dns.google"],
        ),
        (
            "[resolver.public]\nnameservers = [\"tls://1.1.1.1\"]\n",
            &["bad.toml:2", "#NAME"],
        ),
        (
            "[[route]]\nname = \"r8\"\nhosts = [\"*\"]\non_cname = [{ match = \"d-*.example.com\", resolver = \"pub\" }]\n",
            &[
                "bad.toml:4",
                "route `r8`",
                "key `on_cname`",
                "unknown resolver `pub`",
                "d-*.example.com",
            ],
        ),
        (
            "[[route]]\nname = \"r9\"\nhosts = [\"*\"]\ndeny = true\non_cname = [{ match = \"d-*.example.com\", resolver = \"system\" }]\n",
            &[
                "bad.toml:5",
                "route `r9`",
                "key `on_cname`",
                "resolves the requested host",
            ],
        ),
        (
            "[[route]]\nname = \"r10\"\nhosts = [\"*\"]\non_cname = [{ match = \"d-**.example.com\", resolver = \"system\" }]\n",
            &["bad.toml:4", "key `on_cname`", "at most one `*`"],
        ),
        (
            "[[route]]\nname = \"r11\"\nhosts = [\"*\"]\non_cname = [{ pattern = \"d-*.example.com\", resolver = \"system\" }]\n",
            &["route `r11`", "on_cname", "pattern"],
        ),
        (
            "[resolver.public]\nnameservers = [\"1.1.1.1\"]\nca_file = \"/etc/corp-ca.pem\"\n",
            &[
                "bad.toml:3",
                "resolver.public.ca_file",
                "does nothing: no tls:// or https://",
            ],
        ),
        (
            "[resolver.system]\nca_file = \"/etc/corp-ca.pem\"\n",
            &["bad.toml:2", "resolver.system.ca_file", "does nothing"],
        ),
        (
            "[resolver.corp]\nnameservers = [\"tls://10.0.0.2#dns.corp\"]\nca_file = \"\"\n",
            &["bad.toml:3", "resolver.corp.ca_file", "is empty"],
        ),
        ("[proxy]\nmax_connections = 0\n", &["proxy.max_connections"]),
        (
            "[resolver.system]\ncache_size = 0\n",
            &["bad.toml:2", "resolver.system.cache_size", "at least 1"],
        ),
        (
            "[resolver.public]\nnameservers = [\"1.1.1.1\"]\ncache_size = -5\n",
            &["bad.toml:3", "resolver.public.cache_size", "at least 1"],
        ),
        (
            "[resolver.public]\nnameservers = [\"1.1.1.1\"]\ncache_size = \"big\"\n",
            &["bad.toml:3", "resolver.public.cache_size"],
        ),
        ("[proxy]\ndeny_destinations = [\"10.0.0.0/33\"]\n", &["bad.toml:2"]),
    ];
    for (toml, wants) in cases {
        let e = err(toml);
        for want in *wants {
            assert!(e.contains(want), "error for {toml:?} should contain {want:?}, got: {e}");
        }
    }
}

#[test]
fn example_config_parses() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/splitway.toml");
    let c = Config::load(std::path::Path::new(path)).unwrap_or_else(|e| panic!("{e}"));
    assert!(c.routes.len() >= 4, "the example covers the three AWS scenarios");
    assert!(c.resolvers.contains_key("public"));
}

#[test]
fn transparent_is_off_without_its_table_and_takes_defaults_with_it() {
    assert_eq!(Config::embedded().transparent, None);
    let c = Config::from_toml("[transparent]\n", "t.toml").unwrap();
    let t = c.transparent.expect("an empty table turns it on");
    assert_eq!(t.listen.to_string(), DEFAULT_TRANSPARENT_LISTEN);
    assert_eq!((t.mark, t.exclude_uid, t.no_sni), (None, None, NoSni::Original));
    assert!(t.capture.is_empty() && t.http_ports.is_empty());
}

#[test]
fn transparent_keys_parse_mark_in_hex() {
    let c = Config::from_toml(
        "[transparent]\nlisten = \"127.0.0.1:15002\"\nmark = 0x539\nexclude_uid = 1337\nno_sni = \"refuse\"\ncapture = [\"10.0.0.0/8\", \"fd00::/8\"]\nhttp_ports = [80]\n",
        "t.toml",
    )
    .unwrap();
    let t = c.transparent.unwrap();
    assert_eq!(
        (t.mark, t.exclude_uid, t.no_sni),
        (Some(1337), Some(1337), NoSni::Refuse)
    );
    assert_eq!(t.capture.len(), 2);
    let described = describe(&Config::from_toml("[transparent]\nmark = 0x539\n", "t.toml").unwrap());
    assert!(
        described.contains("transparent listen 127.0.0.1:15001 (mark 0x539, exclude_uid none, no_sni original"),
        "{described}"
    );
}

#[test]
fn transparent_mistakes_name_the_key() {
    let e = err("[transparent]\nmarc = 1\n");
    assert!(e.contains("unknown field `marc`"), "{e}");
    let e = err("[transparent]\nno_sni = \"drop\"\n");
    assert!(e.contains("unknown variant `drop`"), "{e}");
    let e = err("[proxy]\nlisten = \"127.0.0.1:15001\"\n[transparent]\n");
    assert!(
        e.contains("key `transparent.listen`") && e.contains("[proxy] listen too"),
        "{e}"
    );
    let e = err("[transparent]\nmark = 0\n");
    assert!(e.contains("key `transparent.mark`"), "{e}");
    let e = err("[transparent]\nmark = -1\n");
    assert!(e.contains("bad.toml:2"), "{e}");
}

#[test]
fn via_errors_name_the_route_and_key_and_never_the_password() {
    let route = |keys: &str| format!("[[route]]\nname = \"egress\"\nhosts = [\"a.example\"]\n{keys}");
    let cases: &[(String, &[&str])] = &[
        (
            route("via = \"http://alice:hunter2@10.0.0.5:3128\"\n"),
            &[
                "bad.toml:4",
                "route `egress`",
                "key `via`",
                "via_password_env",
                "alice:***@",
            ],
        ),
        (
            route("via = \"http://alice@10.0.0.5:3128\"\nvia_password_env = \"SPLITWAY_TEST_NEVER_SET_7f3a\"\n"),
            &[
                "bad.toml:5",
                "route `egress`",
                "key `via_password_env`",
                "`SPLITWAY_TEST_NEVER_SET_7f3a` is not set",
            ],
        ),
        (
            route("via = \"http://alice@10.0.0.5:3128\"\nvia_password_file = \"/nonexistent/splitway-pw\"\n"),
            &[
                "bad.toml:5",
                "key `via_password_file`",
                "cannot read `/nonexistent/splitway-pw`",
            ],
        ),
        (
            route("via = \"http://alice@10.0.0.5:3128\"\n"),
            &["key `via`", "names a user but no password"],
        ),
        (
            route("via = [\"http://alice@10.0.0.5:3128\", \"http://10.0.0.6:3128\"]\n"),
            &["key `via`", "same user"],
        ),
        (route("via_target = \"name\"\n"), &["key `via_target`", "without `via`"]),
        (
            route("via = \"http://10.0.0.5:3128\"\nvia_target = \"ip\"\n"),
            &["key `via_target`"],
        ),
        (
            route("via = \"https://10.0.0.5:3128\"\n"),
            &["key `via`", "only http://"],
        ),
        (
            route("deny = true\nvia = \"http://10.0.0.5:3128\"\n"),
            &["key `via`", "deny = true"],
        ),
        (
            route("via = \"http://127.0.0.1:3128\"\n"),
            &[
                "route `egress`",
                "key `via`",
                "127.0.0.1 is inside [proxy] deny_destinations",
            ],
        ),
    ];
    for (toml, wants) in cases {
        let e = err(toml);
        for want in *wants {
            assert!(e.contains(want), "{toml}\n-> {e}\nmissing {want:?}");
        }
        assert!(!e.contains("hunter2"), "{e}");
    }
}

#[test]
fn public_via_goes_on_the_public_routes_only_with_the_password_file_trimmed() {
    let dir = std::env::temp_dir().join(format!("splitway-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("pw");
    std::fs::write(&file, "s3cret\n").expect("write");
    let toml = format!(
        "[resolver.public]\nnameservers = [\"10.0.0.2\"]\n\n[aws]\nregion = \"us-east-1\"\n\
         vpc_endpoint = \"vpce-0123456789abcdef0-abcd1234.execute-api.us-east-1.vpce.amazonaws.com\"\n\
         public_api_ids = [\"bmf11pk5je\"]\npublic_domains = [\"api.mydomain.com\"]\npublic_resolver = \"public\"\n\
         public_via = \"http://svc@egress.corp.example:3128\"\npublic_via_password_file = \"{}\"\n",
        file.display()
    );
    let config = Config::from_toml(&toml, "ok.toml").expect("valid");
    let via_of = |name: &str| {
        config
            .routes
            .iter()
            .find(|r| r.name == name)
            .and_then(|r| r.via.clone())
    };
    let via = via_of("aws-public-domains").expect("public domains through the parent");
    assert_eq!(via.password.as_ref().map(Secret::expose), Some("s3cret"));
    assert_eq!(via.target, ViaTarget::Address);
    assert!(via_of("aws-public-api-ids").is_some());
    assert!(
        via_of("aws-private-apis").is_none(),
        "the private APIs stay inside the VPC"
    );
    let shown = describe(&config);
    assert!(
        shown.contains("through http://svc:***@egress.corp.example:3128"),
        "{shown}"
    );
    assert!(
        !shown.contains("s3cret") && !format!("{config:?}").contains("s3cret"),
        "{shown}"
    );
}
