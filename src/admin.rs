//! The admin listener: `/healthz`, `/readyz`, and the `splitway health` client.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Why `splitway health` failed.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    #[error("admin listener {addr}: {source}; is splitway running with [admin] listen = \"{addr}\"?")]
    Io {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("admin listener {addr} answered `{status}` for /healthz")]
    Unhealthy { addr: SocketAddr, status: String },
    #[error("admin listener {0} did not answer within 2s")]
    Timeout(SocketAddr),
}

/// GETs `/healthz` on the admin listener; Ok when it answers 200.
pub async fn health(addr: SocketAddr) -> Result<(), HealthError> {
    let io = |source| HealthError::Io { addr, source };
    let probe = async {
        let mut s = TcpStream::connect(addr).await.map_err(io)?;
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: splitway\r\nConnection: close\r\n\r\n").await.map_err(io)?;
        let mut head = Vec::new();
        s.read_to_end(&mut head).await.map_err(io)?;
        let status = String::from_utf8_lossy(&head).lines().next().unwrap_or_default().to_owned();
        if status.starts_with("HTTP/1.1 200") { Ok(()) } else { Err(HealthError::Unhealthy { addr, status }) }
    };
    tokio::time::timeout(Duration::from_secs(2), probe).await.unwrap_or(Err(HealthError::Timeout(addr)))
}
