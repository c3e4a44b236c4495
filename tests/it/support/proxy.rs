//! Running splitway in-process on port 0 with a given config, and configs for the emulated
//! AWS network's scenarios.

use std::net::SocketAddr;

use splitway::Limits;
use splitway::{Config, Proxy, ProxyHandle};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::config::ConfigBuilder;
use super::net::AwsNet;
use super::*;

/// A proxy serving on its own tokio task until stopped.
pub(crate) struct TestProxy {
    pub(crate) addr: SocketAddr,
    pub(crate) admin: Option<SocketAddr>,
    /// The `[transparent]` listeners, when the config has the table.
    pub(crate) transparent: Vec<SocketAddr>,
    pub(crate) handle: ProxyHandle,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl TestProxy {
    pub(crate) async fn start(toml: &str) -> TestProxy {
        Self::start_with(toml, Limits::default()).await
    }

    /// `start` with limits the config file does not set (e.g. a short header timeout).
    pub(crate) async fn start_with(toml: &str, limits: Limits) -> TestProxy {
        let config = Config::from_toml(toml, "test.toml").unwrap_or_else(|e| panic!("test config: {e}\n{toml}"));
        super::config::assert_hermetic(&config);
        let proxy = within(HANG_SECS, "the proxy to bind", Proxy::bind_with(config, limits))
            .await
            .expect("proxy binds");
        let addr = proxy.local_addr();
        let admin = proxy.admin_addr();
        let transparent = proxy.transparent_addrs();
        let handle = proxy.handle();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(proxy.serve(async move {
            let _ = stopped.await;
        }));
        TestProxy {
            addr,
            admin,
            transparent,
            handle,
            stop: Some(stop),
            task,
        }
    }

    /// Waits until every client connection has closed and its task has finished, then checks
    /// that nothing is left: no connection, no tunnel, no task.
    pub(crate) async fn assert_no_leaks(&self) {
        tokio::time::timeout(std::time::Duration::from_secs(20), self.handle.wait_idle())
            .await
            .expect("client connections still open 20s after the clients finished");
        // The last guard drops inside its task; wait for that task to finish too.
        tokio::time::timeout(std::time::Duration::from_secs(20), self.handle.wait_tasks_done())
            .await
            .expect("proxy tasks still running 20s after the clients finished");
        assert_eq!(self.handle.open_connections(), 0, "open client connections");
        assert_eq!(self.handle.tasks(), 0, "proxy tasks left running");
    }

    /// Starts a proxy on `toml`, runs `exercise` against it, checks that nothing is left open
    /// and stops it: a test is its exercise, composed from support, not a copy of this frame.
    pub(crate) async fn exercise<T>(toml: &str, exercise: impl AsyncFnOnce(&TestProxy) -> T) -> T {
        let proxy = TestProxy::start(toml).await;
        let out = exercise(&proxy).await;
        proxy.assert_no_leaks().await;
        proxy.stop().await;
        out
    }

    /// Signals shutdown (as SIGTERM does) and waits until the proxy is draining.
    pub(crate) async fn begin_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        within(HANG_SECS, "the proxy to start draining", self.handle.wait_draining()).await;
    }

    /// Signals shutdown and waits for the drain to finish.
    pub(crate) async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // The drain itself is bounded by drain_timeout (30 s by default): allow for it.
        within(HANG_SECS * 3, "the proxy to finish its drain", &mut self.task)
            .await
            .expect("proxy task");
    }
}

/// Which VPC resolver the proxy's `system` resolver is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PrivateDns {
    On,
    Off,
}

/// `[proxy]` for tests: port 0, the emulated network's port allowed, loopback not denied
/// (the emulated AWS network lives on 127.0.0.0/8).
pub(crate) fn proxy_section(net: &AwsNet) -> String {
    ConfigBuilder::new(net).render_proxy()
}

/// `[resolver.system]` (the VPC resolver) and `[resolver.public]`.
pub(crate) fn resolver_sections(net: &AwsNet, dns: PrivateDns) -> String {
    ConfigBuilder::with_resolvers(net, dns).render_resolvers()
}

/// The hand-written config that fixes all three failures (see [`ConfigBuilder::scenario`]).
pub(crate) fn scenario_config(net: &AwsNet, dns: PrivateDns) -> String {
    ConfigBuilder::scenario(net, dns).build()
}

impl TestProxy {
    /// Reads from a tunnel's client side until the proxy closes it, checks that nothing leaked
    /// and that exactly one tunnel of `route` ended as `end`, then stops the proxy.
    pub(crate) async fn expect_tunnel_end<S>(self, mut client: S, route: &str, end: &str)
    where
        S: tokio::io::AsyncRead + Unpin,
    {
        let mut buf = [0u8; 64];
        let read = within(
            HANG_SECS,
            "the proxy to close the tunnel",
            tokio::io::AsyncReadExt::read(&mut client, &mut buf),
        )
        .await;
        assert!(
            matches!(read, Ok(0) | Err(_)),
            "the proxy must close the tunnel, read {read:?}"
        );
        drop(client);
        self.assert_no_leaks().await;
        let m = self.handle.metrics_text();
        let ended = super::metrics::metric(&m, "splitway_tunnels_total", &[("route", route), ("end", end)]);
        assert_eq!(ended, 1.0, "{m}");
        self.stop().await;
    }
}
