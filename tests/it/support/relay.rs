//! A TCP relay placed between the proxy and an upstream to inject faults: slow or sliced
//! forwarding, a reset, a blackhole, half-closes passed through both ways.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinSet};

/// What the relay does with each connection it accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    /// Forward both ways; each side's end of stream is passed on as a half-close.
    Pass,
    /// Forward in pieces of at most this many bytes, one write each.
    Slice(usize),
    /// Wait this long before forwarding each read.
    Delay(Duration),
    /// Accept, then never read nor answer (until `reset_all`).
    Blackhole,
    /// Accept and reset at once (RST, not FIN).
    ResetOnAccept,
}

/// A running relay; dropping it stops it and every connection it holds.
pub(crate) struct Relay {
    addr: SocketAddr,
    reset: watch::Sender<bool>,
    accepted: Arc<AtomicUsize>,
    task: AbortHandle,
}

impl Relay {
    /// Listens on `ip` (port 0) and relays to `target` with `fault`.
    pub(crate) async fn start(ip: IpAddr, target: SocketAddr, fault: Fault) -> Relay {
        let listener = TcpListener::bind((ip, 0)).await.expect("bind relay");
        let addr = listener.local_addr().expect("relay address");
        let (reset, _) = watch::channel(false);
        let accepted = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(accept_loop(
            listener,
            target,
            fault,
            reset.subscribe(),
            accepted.clone(),
        ))
        .abort_handle();
        Relay {
            addr,
            reset,
            accepted,
            task,
        }
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far.
    pub(crate) fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Resets (RST) the proxy-side socket of every open connection.
    pub(crate) fn reset_all(&self) {
        self.reset.send_replace(true);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    target: SocketAddr,
    fault: Fault,
    reset: watch::Receiver<bool>,
    accepted: Arc<AtomicUsize>,
) {
    // Owned here so aborting this task drops every connection too.
    let mut connections = JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        accepted.fetch_add(1, Ordering::SeqCst);
        while connections.try_join_next().is_some() {}
        connections.spawn(relay_one(stream, target, fault, reset.clone()));
    }
}

fn rst(stream: TcpStream) {
    // SO_LINGER 0: close() sends RST. Zero linger never blocks the thread on drop.
    let _ = stream.set_zero_linger();
    drop(stream);
}

async fn relay_one(mut down: TcpStream, target: SocketAddr, fault: Fault, mut reset: watch::Receiver<bool>) {
    match fault {
        Fault::ResetOnAccept => return rst(down),
        Fault::Blackhole => {
            let _ = reset.wait_for(|r| *r).await;
            return rst(down);
        }
        Fault::Pass | Fault::Slice(_) | Fault::Delay(_) => {}
    }
    let Ok(mut up) = TcpStream::connect(target).await else {
        return rst(down);
    };
    let _ = (down.set_nodelay(true), up.set_nodelay(true));
    let reset_now = {
        let (mut dr, mut dw) = down.split();
        let (mut ur, mut uw) = up.split();
        let both = async { tokio::join!(pump(&mut dr, &mut uw, fault), pump(&mut ur, &mut dw, fault)) };
        tokio::select! {
            _ = both => false,
            _ = reset.wait_for(|r| *r) => true,
        }
    };
    if reset_now {
        rst(down);
    }
}

/// Copies one direction; end of stream becomes a half-close (shutdown of the write side).
async fn pump<R: AsyncReadExt + Unpin, W: AsyncWriteExt + Unpin>(from: &mut R, to: &mut W, fault: Fault) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Fault::Delay(d) = fault {
            tokio::time::sleep(d).await;
        }
        let piece = if let Fault::Slice(size) = fault { size.max(1) } else { n };
        for chunk in buf[..n].chunks(piece) {
            if to.write_all(chunk).await.is_err() || to.flush().await.is_err() {
                return;
            }
        }
    }
    let _ = to.shutdown().await;
}
