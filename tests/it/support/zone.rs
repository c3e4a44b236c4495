//! The data of one emulated DNS resolver and how it answers a question: pure, no network.
//!
//! It answers like a recursive resolver would: a CNAME chain is followed inside the zone and
//! returned whole, CNAMEs first, then the addresses of the last name.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

/// TTL of a record unless `Zone::ttl` says otherwise.
pub(crate) const DEFAULT_TTL: u32 = 60;
/// Longest CNAME chain followed; a longer one is answered SERVFAIL, like a loop.
const MAX_CHAIN: usize = 8;

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum RecordData {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Cname(String),
}

impl RecordData {
    pub(crate) fn record_type(&self) -> RecordType {
        match self {
            Self::A(_) => RecordType::A,
            Self::Aaaa(_) => RecordType::AAAA,
            Self::Cname(_) => RecordType::CNAME,
        }
    }
}

/// One record; `name` is lowercase without a trailing dot, `*.suffix` for a wildcard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ZoneRecord {
    pub(crate) name: String,
    pub(crate) ttl: u32,
    pub(crate) data: RecordData,
}

/// What the zone says about one question.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Resolution {
    pub(crate) rcode: ResponseCode,
    /// The CNAME chain, then the records of the asked type; owners are the names asked about
    /// (a wildcard record appears under the name that matched it).
    pub(crate) answers: Vec<ZoneRecord>,
}

impl Resolution {
    pub(crate) fn addresses(&self) -> Vec<IpAddr> {
        let ip = |r: &ZoneRecord| match r.data {
            RecordData::A(v4) => Some(IpAddr::V4(v4)),
            RecordData::Aaaa(v6) => Some(IpAddr::V6(v6)),
            RecordData::Cname(_) => None,
        };
        self.answers.iter().filter_map(ip).collect()
    }

    /// The name the chain ended on: the owner of the last answer, else the question.
    pub(crate) fn last_name<'a>(&'a self, qname: &'a str) -> &'a str {
        match self.answers.last() {
            Some(ZoneRecord {
                data: RecordData::Cname(target),
                ..
            }) => target,
            Some(last) => &last.name,
            None => qname,
        }
    }
}

/// A resolver's view of the world, built with chained calls:
/// `Zone::new().cname(CUSTOM_DOMAIN, APIGW_DOMAIN).addr("*.execute-api.us-east-1.amazonaws.com", ip)`.
#[derive(Clone, Debug)]
pub(crate) struct Zone {
    records: Vec<ZoneRecord>,
    negative_ttl: u32,
}

impl Default for Zone {
    fn default() -> Self {
        Self {
            records: Vec::new(),
            negative_ttl: DEFAULT_TTL,
        }
    }
}

impl Zone {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// An A record; `name` may be `*.suffix`, matching any depth below the suffix.
    pub(crate) fn a(self, name: &str, ip: Ipv4Addr) -> Self {
        self.push(name, RecordData::A(ip))
    }

    pub(crate) fn aaaa(self, name: &str, ip: Ipv6Addr) -> Self {
        self.push(name, RecordData::Aaaa(ip))
    }

    /// An A or AAAA record, whichever fits `ip`.
    pub(crate) fn addr(self, name: &str, ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => self.a(name, v4),
            IpAddr::V6(v6) => self.aaaa(name, v6),
        }
    }

    pub(crate) fn cname(self, name: &str, target: &str) -> Self {
        self.push(name, RecordData::Cname(normalize(target)))
    }

    /// Sets the TTL of the record added last.
    pub(crate) fn ttl(mut self, secs: u32) -> Self {
        self.records.last_mut().expect("Zone::ttl after a record").ttl = secs;
        self
    }

    /// TTL a resolver may cache NXDOMAIN and NODATA for: the SOA minimum (RFC 2308).
    pub(crate) fn negative_ttl(mut self, secs: u32) -> Self {
        self.negative_ttl = secs;
        self
    }

    pub(crate) fn get_negative_ttl(&self) -> u32 {
        self.negative_ttl
    }

    fn push(mut self, name: &str, data: RecordData) -> Self {
        let record = ZoneRecord {
            name: normalize(name),
            ttl: DEFAULT_TTL,
            data,
        };
        self.records.push(record);
        self
    }

    /// The first address `host` resolves to (A before AAAA), following CNAMEs.
    pub(crate) fn lookup(&self, host: &str) -> Option<IpAddr> {
        [RecordType::A, RecordType::AAAA]
            .into_iter()
            .find_map(|qtype| self.resolve(host, qtype).addresses().first().copied())
    }

    /// Answers `qname`/`qtype` as a recursive resolver would: NXDOMAIN when no name in the
    /// chain exists, NODATA (NOERROR, no records of `qtype`) when the last name exists but
    /// has no records of that type.
    pub(crate) fn resolve(&self, qname: &str, qtype: RecordType) -> Resolution {
        let mut name = normalize(qname);
        let mut answers = Vec::new();
        for _ in 0..MAX_CHAIN {
            let here = self.records_at(&name);
            if here.is_empty() {
                return Resolution {
                    rcode: ResponseCode::NXDomain,
                    answers,
                };
            }
            let owned = |r: &ZoneRecord| ZoneRecord {
                name: name.clone(),
                ..r.clone()
            };
            let matching: Vec<_> = here
                .iter()
                .filter(|r| r.data.record_type() == qtype)
                .map(|r| owned(r))
                .collect();
            if !matching.is_empty() {
                answers.extend(matching);
                return Resolution {
                    rcode: ResponseCode::NoError,
                    answers,
                };
            }
            let Some(cname) = here.iter().find(|r| matches!(r.data, RecordData::Cname(_))) else {
                return Resolution {
                    rcode: ResponseCode::NoError,
                    answers,
                };
            };
            answers.push(owned(cname));
            let RecordData::Cname(target) = &cname.data else {
                unreachable!("found as a CNAME")
            };
            name = target.clone();
        }
        Resolution {
            rcode: ResponseCode::ServFail,
            answers: Vec::new(),
        }
    }

    /// The records at `name`: its own, else those of the longest wildcard covering it.
    fn records_at(&self, name: &str) -> Vec<&ZoneRecord> {
        let exact: Vec<_> = self.records.iter().filter(|r| r.name == name).collect();
        if !exact.is_empty() {
            return exact;
        }
        let covers = |r: &&ZoneRecord| {
            r.name.strip_prefix("*.").is_some_and(|suffix| {
                name.strip_suffix(suffix)
                    .is_some_and(|head| head.len() > 1 && head.ends_with('.'))
            })
        };
        let Some(best) = self
            .records
            .iter()
            .filter(covers)
            .map(|r| &r.name)
            .max_by_key(|n| n.len())
        else {
            return Vec::new();
        };
        self.records.iter().filter(|r| &r.name == best).collect()
    }
}

/// Lowercase without the trailing dot: how names are stored, matched and logged.
pub(crate) fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}
