//! The echo upstream of the binary load test (hardening_load.rs) in a process of its own: the
//! test binary re-executed to run [`echo_upstream_process`] alone, with [`ENV`] set. Kept out
//! of `hardening_load` so that that filter runs only the load tests themselves.

use tokio::net::TcpListener;

/// Set in the environment of the re-executed test binary: the address its upstream binds.
pub(crate) const ENV: &str = "SPLITWAY_LOAD_UPSTREAM";
/// The libtest name of [`echo_upstream_process`], for `--exact`.
pub(crate) const TEST_NAME: &str = "support::echo_process::echo_upstream_process";

/// Not a test: the upstream process itself. It echoes every connection until EOF, prints
/// `upstream-port=N` once bound, and exits when its stdin closes (the parent has gone).
/// Without [`ENV`] (a run of every ignored test) it has nothing to do and returns.
#[test]
#[ignore = "not a test: the echo upstream process of hardening_load's binary test (runs only with SPLITWAY_LOAD_UPSTREAM set)"]
fn echo_upstream_process() {
    let Ok(ip) = std::env::var(ENV) else { return };
    let ip: std::net::IpAddr = ip.parse().expect("SPLITWAY_LOAD_UPSTREAM is an IP address");
    std::thread::spawn(|| {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        std::process::exit(0);
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let listener = TcpListener::bind((ip, 0)).await.expect("bind the upstream");
        println!("upstream-port={}", listener.local_addr().expect("addr").port());
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
}
