//! The pipe pool's accounting, and a burst moving bytes intact through a real pipe.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::{Burst, Pool, Splicing};
use crate::test_util::within;

#[test]
fn the_pool_lends_at_most_its_max_and_reuses_empty_pipes() {
    let pool = Pool::new(2);
    let a = pool.take().expect("first pipe");
    let b = pool.take().expect("second pipe");
    assert!(pool.take().is_none(), "a third pipe beyond max");
    drop(a);
    assert_eq!(pool.idle_count(), 1, "an empty pipe goes back to the pool");
    let c = pool.take().expect("the pooled pipe again");
    assert_eq!(pool.idle_count(), 0);
    assert_eq!(pool.live.load(std::sync::atomic::Ordering::Relaxed), 2);
    drop((b, c));
    assert_eq!(pool.idle_count(), 2);
}

#[test]
fn a_pipe_dropped_with_bytes_in_it_is_closed_not_pooled() {
    let pool = Pool::new(1);
    let dirty = pool.take().expect("pipe");
    dirty.pending.set(100);
    drop(dirty);
    assert_eq!(pool.idle_count(), 0, "a pipe holding bytes must never be lent again");
    assert_eq!(pool.live.load(std::sync::atomic::Ordering::Relaxed), 0);
    assert!(pool.take().is_some(), "its place is free for a new pipe");
}

async fn pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (outer, accepted) = within("a connected loopback pair", async {
        tokio::join!(TcpStream::connect(addr), listener.accept())
    })
    .await;
    (outer.expect("connect"), accepted.expect("accept").0)
}

#[tokio::test]
async fn a_burst_splices_every_byte_in_order_until_end_of_stream() {
    let (mut source, from) = pair().await;
    let (to, mut sink) = pair().await;
    let data: Vec<u8> = (0..4 * 1024 * 1024u32).map(|i| (i % 253) as u8).collect();
    let sent = data.clone();
    let writer = tokio::spawn(async move {
        within("source writes", source.write_all(&sent))
            .await
            .expect("source writes");
        within("close", source.shutdown()).await.expect("close");
    });
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        within("sink reads", sink.read_to_end(&mut got))
            .await
            .expect("sink reads");
        got
    });
    let mut moved = 0;
    // A burst ends when a read comes up short, which a loaded machine's scheduling can cause
    // before the writer is done: then the relay waits for readiness and bursts again.
    let bursts = async {
        loop {
            let mut splicing = Splicing::start();
            let mut count = |n| moved += n;
            let burst = std::future::poll_fn(|cx| splicing.poll(cx, &from, &to, &mut count));
            match within("burst", burst).await.expect("burst") {
                Burst::Eof => return,
                Burst::Done => within("readable", from.readable()).await.expect("readable"),
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(20), bursts)
        .await
        .expect("the bursts reach the source's end within 20 s");
    assert_eq!(moved, data.len(), "every byte counted");
    within("writer", writer).await.expect("writer");
    drop(to);
    let got = within("reader", reader).await.expect("reader");
    assert!(got == data, "bytes differ: {} received of {}", got.len(), data.len());
}
