//! Happy Eyeballs (RFC 8305): address ordering (§4) and the connection race (§5), for the one
//! connector, which hands the race its way of opening a socket. The race reports which
//! attempts it abandoned unanswered, so the connector can remember them (`address_backoff`).

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep, sleep_until, timeout_at};

/// RFC 8305 §5 "Connection Attempt Delay": the recommended 250 ms.
pub(crate) const ATTEMPT_DELAY: Duration = Duration::from_millis(250);

/// How one race ended.
#[derive(Debug)]
pub(super) enum Race {
    /// `addr` accepted; `slow` are the attempts started before it that were still unanswered
    /// (each had waited at least the attempt delay: they timed out as far as this race goes).
    Won {
        stream: TcpStream,
        addr: SocketAddr,
        slow: Vec<SocketAddr>,
    },
    /// Every address failed.
    Lost(Vec<(SocketAddr, io::Error)>),
    /// The deadline came first; `unanswered` were still being tried.
    TimedOut { unanswered: Vec<SocketAddr> },
}

/// RFC 8305 §4: alternate address families, IPv6 first, keeping each family's order.
pub(super) fn interleave(ips: Vec<IpAddr>, port: u16) -> Vec<SocketAddr> {
    let (v6, v4): (Vec<IpAddr>, Vec<IpAddr>) = ips.into_iter().partition(IpAddr::is_ipv6);
    let mut out = Vec::with_capacity(v6.len() + v4.len());
    let (mut a, mut b) = (v6.into_iter(), v4.into_iter());
    loop {
        match (a.next(), b.next()) {
            (None, None) => return out,
            (x, y) => out.extend(x.into_iter().chain(y).map(|ip| SocketAddr::new(ip, port))),
        }
    }
}

/// RFC 8305 §5: start the next attempt when the previous one fails or after [`ATTEMPT_DELAY`];
/// the first to connect wins and the rest are dropped (the JoinSet aborts them).
pub(super) async fn race<C, F>(addrs: &[SocketAddr], deadline: Instant, connect: C) -> Race
where
    C: Fn(SocketAddr) -> F,
    F: Future<Output = io::Result<TcpStream>> + Send + 'static,
{
    if let [addr] = addrs {
        return match timeout_at(deadline, connect(*addr)).await {
            Ok(Ok(stream)) => Race::Won {
                stream,
                addr: *addr,
                slow: vec![],
            },
            Ok(Err(e)) => Race::Lost(vec![(*addr, e)]),
            Err(_) => Race::TimedOut {
                unanswered: vec![*addr],
            },
        };
    }
    let mut next = addrs.iter().copied().enumerate();
    let mut running = JoinSet::new();
    // Which attempts have answered (succeeded or failed), by their place in `addrs`.
    let mut answered = vec![false; addrs.len()];
    let mut started = 0;
    let mut failures = Vec::new();
    let mut start = |running: &mut JoinSet<_>, started: &mut usize| match next.next() {
        Some((i, addr)) => {
            *started = i + 1;
            let attempt = connect(addr);
            running.spawn(async move { (i, attempt.await) });
            true
        }
        None => false,
    };
    let unanswered = |answered: &[bool], upto: usize| -> Vec<SocketAddr> {
        (0..upto).filter(|i| !answered[*i]).map(|i| addrs[i]).collect()
    };
    loop {
        if running.is_empty() && !start(&mut running, &mut started) {
            return Race::Lost(failures);
        }
        tokio::select! {
            Some(joined) = running.join_next() => match joined {
                Ok((i, Ok(stream))) => {
                    answered[i] = true;
                    return Race::Won { stream, addr: addrs[i], slow: unanswered(&answered, i) };
                }
                Ok((i, Err(e))) => {
                    answered[i] = true;
                    failures.push((addrs[i], e));
                    // §5: a failed attempt starts the next one at once.
                    start(&mut running, &mut started);
                }
                Err(e) => failures.push((addrs[0], io::Error::other(e))),
            },
            () = sleep(ATTEMPT_DELAY), if started < addrs.len() => {
                start(&mut running, &mut started);
            }
            () = sleep_until(deadline) => {
                return Race::TimedOut { unanswered: unanswered(&answered, started) };
            }
        }
    }
}

#[cfg(test)]
mod tests;
