//! File descriptors: the process's open-file limit, and the descriptor each accept loop keeps
//! in reserve for when that limit is reached.
//!
//! A tunnel holds two descriptors (client and upstream). At the limit, `accept` fails with
//! `EMFILE` and leaves the connection in the listener's backlog. If every open descriptor is
//! a tunnel that stays open, no retry ever succeeds, and that client waits out its own
//! timeout with no answer. So each accept loop holds one spare descriptor (`/dev/null`): at
//! the limit it gives the spare up for one `accept`, the client gets a `503` it can read, and
//! the loop takes the spare back once a descriptor is free again (libev's advice; nginx stops
//! accepting for a while instead).

use std::fs::File;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::task::Poll;

use tokio::net::{TcpListener, TcpStream};

pub(super) use crate::error::out_of_descriptors as exhausted;

/// One accept loop's reserve descriptor.
pub(super) struct Spare(Option<File>);

impl Spare {
    pub(super) fn new() -> Self {
        Self(open())
    }

    /// Closes the spare, freeing one descriptor for an `accept`; false when none was held.
    pub(super) fn release(&mut self) -> bool {
        self.0.take().is_some()
    }

    /// Takes a descriptor back if none is held; stays without one while none is free.
    pub(super) fn restore(&mut self) {
        if self.0.is_none() {
            self.0 = open();
        }
    }
}

/// The connection waiting in `listener`'s backlog, if one is, without waiting for one (its
/// readiness is then cleared, and the caller's task woken by the next connection).
pub(super) fn accept_waiting(
    listener: &TcpListener,
) -> impl Future<Output = Option<io::Result<(TcpStream, SocketAddr)>>> + '_ {
    std::future::poll_fn(|cx| {
        Poll::Ready(match listener.poll_accept(cx) {
            Poll::Ready(accepted) => Some(accepted),
            Poll::Pending => None,
        })
    })
}

fn open() -> Option<File> {
    File::open("/dev/null").ok()
}

/// Descriptors a tunnel needs: its client and its upstream socket.
const PER_TUNNEL: u64 = 2;
/// Descriptors the process holds besides its tunnels: the forwarding pool (at most 128), the
/// splice pipes (`proxy::pipe::splice`, at most 128, when enabled), listeners, resolver sockets, the log,
/// the spares, and room for forwarded requests (docs/operations.md sizes it the same).
const RESERVED: u64 = 400;

/// Raises the open-file limit's soft value to its hard one, as Go's runtime does for every
/// program: a service manager's default soft limit (systemd: 1,024) holds about 500 tunnels,
/// far below `max_connections`. Logs the raise, and warns when even the hard limit holds fewer
/// tunnels than `max_connections`: past it, clients get `503` (out of file descriptors).
#[cfg(target_os = "linux")]
pub fn raise_open_file_limit(max_connections: usize) {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let was = getrlimit(Resource::Nofile);
    let mut now = was.current;
    if let (Some(soft), hard) = (was.current, was.maximum)
        && hard.is_none_or(|h| h > soft)
    {
        // An unlimited hard limit is not a value the kernel takes for the soft one:
        // `fs.nr_open` caps it, so ask for that.
        let want = hard.unwrap_or_else(nr_open);
        let raised = Rlimit {
            current: Some(want),
            maximum: was.maximum,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => {
                tracing::info!(from = soft, to = want, "open-file limit raised to its hard limit");
                now = Some(want);
            }
            Err(e) => tracing::warn!(limit = soft, error = %e, "cannot raise the open-file limit"),
        }
    }
    if let Some(limit) = now
        && tunnels_held(limit) < max_connections as u64
    {
        tracing::warn!(
            limit,
            max_connections,
            "the open-file limit holds about {} tunnels, fewer than [proxy] max_connections: \
             past it clients get 503 (out of file descriptors); raise the limit (systemd LimitNOFILE=, \
             docker --ulimit nofile=, an ECS task's ulimits) or lower max_connections",
            tunnels_held(limit)
        );
    }
}

/// Other systems: the limit is left as it is.
#[cfg(not(target_os = "linux"))]
pub fn raise_open_file_limit(_max_connections: usize) {}

/// The tunnels an open-file limit holds, beside what the process reserves.
fn tunnels_held(limit: u64) -> u64 {
    limit.saturating_sub(RESERVED) / PER_TUNNEL
}

/// The kernel's ceiling on any process's open-file limit (`fs.nr_open`, 1,048,576 by default).
#[cfg(target_os = "linux")]
fn nr_open() -> u64 {
    std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1 << 20)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limit_holds_two_descriptors_a_tunnel_beside_the_reserve() {
        assert_eq!(tunnels_held(1_024), 312);
        assert_eq!(tunnels_held(20_400), 10_000);
        assert_eq!(tunnels_held(100), 0);
    }

    #[test]
    fn the_spare_is_given_up_once_and_taken_back() {
        let mut spare = Spare::new();
        assert!(spare.release(), "a new spare holds a descriptor");
        assert!(!spare.release(), "a released spare has none to give");
        spare.restore();
        assert!(spare.release(), "restored, it holds one again");
    }
}
