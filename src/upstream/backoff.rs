//! `[proxy] address_backoff`: the connector's memory of upstream addresses that timed out or
//! refused. RFC 8305 §4 lets a client order addresses by history; an address in backoff is
//! tried after the healthy ones until its time is over, and a success clears it at once.
//!
//! When one availability zone's ENI of a VPC endpoint stops answering, this is what keeps every
//! new tunnel from waiting the Happy Eyeballs attempt delay on it first.
//!
//! The memory belongs to one runtime's connector (a reload starts it afresh), is keyed by
//! `SocketAddr`, and holds at most [`MAX_ENTRIES`]: past that, expired entries go first, then
//! the one ending soonest.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

/// Addresses remembered at once; an endpoint has one ENI per zone, so this is plenty for any
/// sane number of routes and keeps a flood of failing destinations from growing memory.
pub(crate) const MAX_ENTRIES: usize = 1024;

/// Why an address was put into backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// The connection attempt was refused (RST).
    Refused,
    /// No answer: the attempt outlived the attempt delay and another address won, or the
    /// connect timeout ended it.
    TimedOut,
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Cause::Refused => "refused",
            Cause::TimedOut => "timed out",
        })
    }
}

/// One address in backoff, as `/readyz?verbose` and `explain` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Backoff {
    pub address: SocketAddr,
    /// The route whose connection found it failing.
    pub route: String,
    pub cause: Cause,
    /// How much longer it is tried after the others.
    pub remaining_ms: u64,
}

impl std::fmt::Display for Backoff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} (route {}), tried after the others for {}ms more",
            self.address, self.cause, self.route, self.remaining_ms
        )
    }
}

struct Entry {
    until: Instant,
    route: Arc<str>,
    cause: Cause,
}

/// The addresses in backoff, for one runtime's connector.
pub struct Backoffs {
    period: Duration,
    entries: Mutex<HashMap<SocketAddr, Entry>>,
}

impl Backoffs {
    /// `period` is `address_backoff`; zero turns the memory off.
    pub fn new(period: Duration) -> Self {
        Self {
            period,
            entries: Mutex::new(HashMap::new()),
        }
    }

    pub fn period(&self) -> Duration {
        self.period
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<SocketAddr, Entry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `addrs` with the ones in backoff moved after the others, each group in its own order
    /// (the caller's RFC 8305 interleaving is kept); among those in backoff, the one whose
    /// time ends first goes first.
    pub fn order(&self, addrs: &[SocketAddr]) -> Vec<SocketAddr> {
        let entries = self.lock();
        if entries.is_empty() {
            return addrs.to_vec();
        }
        let now = Instant::now();
        let until = |a: &SocketAddr| entries.get(a).map(|e| e.until).filter(|u| *u > now);
        let (mut late, healthy): (Vec<SocketAddr>, Vec<SocketAddr>) = addrs.iter().partition(|a| until(a).is_some());
        late.sort_by_key(|a| until(a));
        healthy.into_iter().chain(late).collect()
    }

    /// Whether `addr` is in backoff now.
    pub fn contains(&self, addr: SocketAddr) -> bool {
        self.lock().get(&addr).is_some_and(|e| e.until > Instant::now())
    }

    /// `addr` failed for `route`: it goes after the others for `period`. Returns true when it
    /// was not in backoff already (what the metric counts).
    pub fn failed(&self, addr: SocketAddr, route: &Arc<str>, cause: Cause) -> bool {
        if self.period.is_zero() {
            return false;
        }
        let now = Instant::now();
        let mut entries = self.lock();
        let fresh = entries.get(&addr).is_none_or(|e| e.until <= now);
        if fresh && entries.len() >= MAX_ENTRIES {
            entries.retain(|_, e| e.until > now);
            if entries.len() >= MAX_ENTRIES
                && let Some(soonest) = entries.iter().min_by_key(|(_, e)| e.until).map(|(a, _)| *a)
            {
                entries.remove(&soonest);
            }
        }
        let entry = Entry {
            until: now + self.period,
            route: route.clone(),
            cause,
        };
        entries.insert(addr, entry);
        fresh
    }

    /// `addr` accepted a connection: it is healthy again at once.
    pub fn succeeded(&self, addr: SocketAddr) {
        let mut entries = self.lock();
        if !entries.is_empty() {
            entries.remove(&addr);
        }
    }

    /// The addresses in backoff now, soonest to end first.
    pub fn snapshot(&self) -> Vec<Backoff> {
        let now = Instant::now();
        let mut out: Vec<Backoff> = self
            .lock()
            .iter()
            .filter(|(_, e)| e.until > now)
            .map(|(addr, e)| Backoff {
                address: *addr,
                route: e.route.to_string(),
                cause: e.cause,
                remaining_ms: u64::try_from((e.until - now).as_millis()).unwrap_or(u64::MAX),
            })
            .collect();
        out.sort_by_key(|b| (b.remaining_ms, b.address));
        out
    }

    /// Entries held, expired ones included (for the bound's test).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(last: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, last], 443))
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_address_goes_last_until_its_time_is_over() {
        let b = Backoffs::new(Duration::from_secs(30));
        let route: Arc<str> = "r".into();
        let all = [addr(1), addr(2), addr(3)];
        assert!(b.failed(addr(1), &route, Cause::TimedOut));
        assert!(
            !b.failed(addr(1), &route, Cause::TimedOut),
            "already in backoff: counted once"
        );
        assert_eq!(b.order(&all), [addr(2), addr(3), addr(1)]);
        assert_eq!(b.snapshot()[0].cause, Cause::TimedOut);
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(b.order(&all), all, "the time is over");
        assert!(b.snapshot().is_empty());
        assert!(
            b.failed(addr(1), &route, Cause::Refused),
            "counted again after it expired"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_resets_it_and_the_soonest_to_end_goes_first() {
        let b = Backoffs::new(Duration::from_secs(30));
        let route: Arc<str> = "r".into();
        b.failed(addr(1), &route, Cause::Refused);
        tokio::time::advance(Duration::from_secs(1)).await;
        b.failed(addr(2), &route, Cause::Refused);
        assert_eq!(b.order(&[addr(2), addr(3), addr(1)]), [addr(3), addr(1), addr(2)]);
        b.succeeded(addr(1));
        assert!(!b.contains(addr(1)));
        assert_eq!(b.order(&[addr(1), addr(2)]), [addr(1), addr(2)]);
    }

    #[tokio::test(start_paused = true)]
    async fn memory_is_bounded_and_zero_turns_it_off() {
        let b = Backoffs::new(Duration::from_secs(30));
        let route: Arc<str> = "r".into();
        for i in 0..(MAX_ENTRIES + 10) {
            let port = u16::try_from(i).unwrap();
            b.failed(SocketAddr::from(([10, 0, 0, 1], port)), &route, Cause::TimedOut);
        }
        assert_eq!(b.len(), MAX_ENTRIES);
        let off = Backoffs::new(Duration::ZERO);
        assert!(!off.failed(addr(1), &route, Cause::Refused));
        assert_eq!(off.order(&[addr(1), addr(2)]), [addr(1), addr(2)]);
    }
}
