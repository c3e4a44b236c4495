use super::*;
use crate::config::Config;

fn table(toml: &str) -> RouteTable {
    let config = Config::from_toml(toml, "test.toml").expect("valid config");
    RouteTable::new(&config.routes).expect("no clash")
}

const ROUTES: &str = r#"
[resolver.public]
nameservers = ["127.0.0.1:53"]
[[route]]
name = "exact"
hosts = ["api.example.com", "API.Other.com."]
resolver = "public"
[[route]]
name = "short-wild"
hosts = ["*.example.com"]
[[route]]
name = "long-wild"
hosts = ["*.execute-api.us-east-1.amazonaws.com"]
[[route]]
name = "mid-wild"
hosts = ["*.amazonaws.com"]
[[route]]
name = "ip"
hosts = ["10.1.2.3", "2001:db8::1"]
[[route]]
name = "cidr16"
hosts = ["10.1.0.0/16"]
[[route]]
name = "cidr8"
hosts = ["10.0.0.0/8", "2001:db8::/32"]
"#;

#[test]
fn most_specific_route_wins() {
    let t = table(ROUTES);
    let cases: &[(&str, &str)] = &[
        ("api.example.com", "exact"),
        ("api.other.com", "exact"),
        ("x.api.example.com", "short-wild"),
        ("example.com", "default"),
        ("deep.a.b.example.com", "short-wild"),
        ("abc.execute-api.us-east-1.amazonaws.com", "long-wild"),
        ("a.b.execute-api.us-east-1.amazonaws.com", "long-wild"),
        ("execute-api.us-east-1.amazonaws.com", "mid-wild"),
        ("abc.execute-api.us-west-2.amazonaws.com", "mid-wild"),
        ("amazonaws.com", "default"),
        ("notexample.com", "default"),
        ("xexample.com", "default"),
    ];
    for (host, want) in cases {
        assert_eq!(&*t.lookup_name(host).name, *want, "{host}");
    }
    let ips: &[(&str, &str)] = &[
        ("10.1.2.3", "ip"),
        ("10.1.2.4", "cidr16"),
        ("10.2.0.1", "cidr8"),
        ("11.0.0.1", "default"),
        ("2001:db8::1", "ip"),
        ("2001:db8::2", "cidr8"),
        ("2001:db9::1", "default"),
        ("::ffff:10.1.2.3", "ip"),
        ("::ffff:10.2.0.1", "cidr8"),
        ("::ffff:11.0.0.1", "default"),
        // NAT64, IPv4-compatible and 6to4 spellings route as the IPv4 address they stand for.
        ("64:ff9b::a09:909", "cidr8"),
        ("64:ff9b::10.1.2.3", "ip"),
        ("::10.1.2.4", "cidr16"),
        ("2002:a09:909::1", "cidr8"),
        ("64:ff9b::b00:1", "default"),
    ];
    for (ip, want) in ips {
        assert_eq!(&*t.lookup_ip(ip.parse().unwrap()).name, *want, "{ip}");
    }
}

#[test]
fn file_order_never_matters() {
    let reversed: String = {
        let mut parts: Vec<&str> = ROUTES.split("[[route]]").collect();
        let head = parts.remove(0);
        parts.reverse();
        std::iter::once(head.to_owned())
            .chain(parts.iter().map(|p| format!("[[route]]{p}")))
            .collect()
    };
    let (a, b) = (table(ROUTES), table(&reversed));
    for host in [
        "api.example.com",
        "x.example.com",
        "q.execute-api.us-east-1.amazonaws.com",
        "z.amazonaws.com",
    ] {
        assert_eq!(a.lookup_name(host).name, b.lookup_name(host).name, "{host}");
    }
}

#[test]
fn explicit_catch_all_replaces_default() {
    let t = table("[[route]]\nname = \"everything-else\"\nhosts = [\"*\"]\ndeny = true\n");
    assert_eq!(&*t.lookup_name("anything.example").name, "everything-else");
    assert_eq!(&*t.lookup_ip("192.0.2.1".parse().unwrap()).name, "everything-else");
    assert!(t.routes().iter().all(|r| &*r.name != DEFAULT_ROUTE));
}

#[test]
fn duplicate_pattern_is_a_clash_naming_both_routes() {
    let config = Config::from_toml(
        "[[route]]\nname = \"a\"\nhosts = [\"x.example.com\"]\n[[route]]\nname = \"b\"\nhosts = [\"X.example.com.\"]\n",
        "dup.toml",
    )
    .expect("each route is valid alone");
    let err = RouteTable::new(&config.routes)
        .unwrap_err()
        .located("dup.toml")
        .to_string();
    assert!(err.contains("dup.toml:6"), "{err}");
    assert!(err.contains("route `a`") && err.contains("route `b`"), "{err}");
}
