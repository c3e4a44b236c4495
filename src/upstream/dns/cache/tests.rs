use super::*;
use crate::upstream::dns::{Answer, DnsError};

fn answer(now: Instant, ttl: Duration) -> Entry {
    let a = Answer {
        addrs: Arc::from(vec!["192.0.2.1".parse::<std::net::IpAddr>().unwrap()]),
        cnames: Arc::from(Vec::<String>::new()),
        ttl,
    };
    Entry {
        result: Ok(a),
        expires: now + ttl,
        refresh_at: now + ttl,
        recheck_at: None,
    }
}

fn negative(now: Instant, ttl: Duration) -> Entry {
    Entry {
        result: Err(DnsError::NotFound {
            reason: "NXDOMAIN".into(),
            negative_ttl: Some(ttl),
        }),
        ..answer(now, ttl)
    }
}

const MIN: Duration = Duration::from_secs(60);
const STALE: Duration = Duration::from_secs(3600);

fn cache(size: usize) -> (Cache, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::new());
    (Cache::new(&Arc::from("r"), size, STALE, metrics.clone()), metrics)
}

fn gauge(metrics: &Metrics, name: &str) -> f64 {
    let text = metrics.encode();
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("{name}{{resolver=\"r\"}}")))
        .unwrap_or_else(|| panic!("{name} missing: {text}"));
    line.rsplit_once(' ').unwrap().1.parse().unwrap()
}

#[test]
fn the_bounded_part_never_holds_more_than_its_size() {
    for size in [1, 20, 33, 65, 100, 1000, 10_000] {
        let (c, m) = cache(size);
        assert!(
            c.capacity() <= size as u64 && c.capacity() * 10 >= size as u64 * 9,
            "{size}: {}",
            c.capacity()
        );
        let now = Instant::now();
        for i in 0..size * 3 {
            c.insert(&format!("h{i}.example"), answer(now, MIN));
            assert!(c.len() <= size, "size {size}: {} after {i}", c.len());
        }
        assert_eq!(gauge(&m, "splitway_dns_cache_entries") as usize, c.len());
        let evicted = gauge(&m, "splitway_dns_cache_evictions_total") as usize;
        assert_eq!(
            evicted,
            size * 3 - c.len(),
            "size {size}: every entry not kept was evicted"
        );
    }
}

#[test]
fn pinned_names_survive_a_flood_and_move_back_when_unpinned() {
    let (c, _) = cache(20);
    let now = Instant::now();
    c.pin(["route.example".into()].into());
    c.insert("route.example", answer(now, MIN));
    for i in 0..1000 {
        c.insert(&format!("nx{i}.example"), negative(now, MIN));
    }
    assert!(c.get("route.example", now).is_some_and(|e| e.result.is_ok()));
    assert!(c.len() <= 21);
    // Unpinned, the entry joins the bounded part (and can be evicted from there).
    c.pin(HashSet::new());
    assert!(c.get("route.example", now).is_some());
    assert!(c.len() <= 20);
}

#[test]
fn pinning_moves_a_cached_entry_out_of_the_bounded_part() {
    let (c, _) = cache(20);
    let now = Instant::now();
    c.insert("later-a-route.example", answer(now, MIN));
    c.pin(["later-a-route.example".into()].into());
    for i in 0..1000 {
        c.insert(&format!("h{i}.example"), answer(now, MIN));
    }
    assert!(c.get("later-a-route.example", now).is_some());
}

#[test]
fn entries_past_their_time_are_dropped_on_access() {
    let (c, m) = cache(20);
    let now = Instant::now();
    c.pin(["pinned.example".into()].into());
    c.insert("pinned.example", answer(now, MIN));
    c.insert("answer.example", answer(now, MIN));
    c.insert("negative.example", negative(now, MIN));
    // Past the TTL an answer is still served stale; a negative answer is gone.
    let later = now + MIN + Duration::from_secs(1);
    assert!(c.get("answer.example", later).is_some());
    assert!(c.get("negative.example", later).is_none());
    assert_eq!(c.len(), 2);
    // Past TTL + serve_stale nothing is left.
    let much_later = now + MIN + STALE;
    assert!(c.get("answer.example", much_later).is_none());
    assert!(c.get("pinned.example", much_later).is_none());
    assert_eq!(c.len(), 0);
    assert_eq!(gauge(&m, "splitway_dns_cache_entries"), 0.0);
    assert_eq!(
        gauge(&m, "splitway_dns_cache_evictions_total"),
        0.0,
        "expiry is not an eviction"
    );
}

#[test]
fn update_changes_an_entry_in_either_part() {
    let (c, _) = cache(20);
    let now = Instant::now();
    c.pin(["pinned.example".into()].into());
    for host in ["pinned.example", "other.example"] {
        c.insert(host, answer(now, MIN));
        c.update(host, |e| e.recheck_at = Some(now));
        assert_eq!(c.get(host, now).and_then(|e| e.recheck_at), Some(now), "{host}");
    }
    c.update("absent.example", |e| e.recheck_at = Some(now));
    assert!(c.get("absent.example", now).is_none());
}
