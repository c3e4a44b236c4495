use std::sync::{Arc, Mutex};

use super::*;

/// A log writer that keeps what a formatter wrote.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn lines(&self) -> Vec<String> {
        let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
        text.lines().map(str::to_owned).collect()
    }
}

/// Events of every shape the canonical line has (and a few it has not), inside a span with
/// fields and outside any, and one event of another target.
fn emit() {
    let client: std::net::SocketAddr = "10.0.0.1:40000".parse().unwrap();
    let none: Option<&str> = None;
    let span = tracing::info_span!("conn", client = %client, peer = tracing::field::Empty, listener = "proxy");
    span.in_scope(|| {
        tracing::info!(
            target: "splitway::access",
            kind = "connect",
            client = %client,
            peer = none.map(tracing::field::display),
            detail = Some(r#"evil "quoted" \ and	tab é"#),
            status = 200u16,
            bytes_up = 0u64,
            bytes_down = u64::MAX,
            skew = -5i64,
            sni = "",
            ok = true,
            "tunnel closed"
        );
        tracing::warn!(target: "splitway::access", route = "api", "tunnel closed by SNI pinning");
        tracing::info!(target: "splitway::access", "control \x1b[31m \u{85} chars");
        tracing::info!(target: "splitway::other", n = 1u64, "not the canonical line");
    });
    tracing::info!(target: "splitway::access", r#type = "raw", "outside any span");
}

/// `emit`'s lines through `Text` and through the default formatter, timestamps apart.
fn both() -> (Vec<String>, Vec<String>) {
    let run = |fast: bool| {
        let captured = Captured::default();
        let writer = captured.clone();
        let builder = tracing_subscriber::fmt()
            .with_max_level(Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone());
        match fast {
            true => tracing::subscriber::with_default(builder.event_format(Text::default()).finish(), emit),
            false => tracing::subscriber::with_default(builder.finish(), emit),
        }
        captured.lines()
    };
    (run(true), run(false))
}

fn after_timestamp(line: &str) -> &str {
    line.split_once(' ').map_or("", |(_, rest)| rest)
}

#[test]
fn canonical_line_is_the_default_formatters_byte_for_byte() {
    let (fast, default) = both();
    assert_eq!(fast.len(), 5, "{fast:#?}");
    assert_eq!(fast.len(), default.len(), "{fast:#?}\n{default:#?}");
    for (f, d) in fast.iter().zip(&default) {
        assert_eq!(after_timestamp(f), after_timestamp(d), "\nText:    {f}\ndefault: {d}");
        let (f_time, d_time) = (&f[..f.find(' ').unwrap()], &d[..d.find(' ').unwrap()]);
        assert_eq!(f_time.len(), d_time.len(), "{f_time} vs {d_time}");
        assert!(f_time.ends_with('Z') && f_time.as_bytes()[19] == b'.', "{f_time}");
    }
    // The fields are really there (a formatter that wrote nothing would pass the comparison
    // only if the default wrote nothing too).
    assert!(
        fast[0].ends_with(
            r#"conn{client=10.0.0.1:40000 listener="proxy"}: splitway::access: tunnel closed kind="connect" client=10.0.0.1:40000 detail="evil \"quoted\" \\ and\ttab é" status=200 bytes_up=0 bytes_down=18446744073709551615 skew=-5 sni="" ok=true"#
        ),
        "{}",
        fast[0]
    );
    assert!(fast[1].contains(" WARN conn{"), "{}", fast[1]);
    assert!(fast[2].ends_with(r"control \x1b[31m \u{85} chars"), "{}", fast[2]);
}

#[test]
fn timestamp_is_the_default_timers_to_the_second() {
    // The two are read at different instants: equal within a few tries, unless a second
    // boundary falls between them every time.
    let mut last = (String::new(), String::new());
    for _ in 0..5 {
        let mut fast = String::new();
        timestamp(&mut Writer::new(&mut fast)).unwrap();
        let mut default = String::new();
        tracing_subscriber::fmt::time::SystemTime
            .format_time(&mut Writer::new(&mut default))
            .unwrap();
        if fast[..19] == default[..19] {
            assert_eq!(
                fast.len(),
                default.len() + 1,
                "{fast:?} vs {default:?}: the same shape, and a space"
            );
            return;
        }
        last = (fast, default);
    }
    panic!("Text's timestamp {:?} is not the default timer's {:?}", last.0, last.1);
}

#[test]
fn date_and_time_of_known_seconds() {
    for (secs, want) in [
        (0, "1970-01-01T00:00:00"),
        (951_782_400, "2000-02-29T00:00:00"),
        (1_709_164_800, "2024-02-29T00:00:00"),
        (1_709_251_199, "2024-02-29T23:59:59"),
        (1_796_295_415, "2026-12-03T10:56:55"),
        (4_102_444_799, "2099-12-31T23:59:59"),
        (253_402_300_799, "9999-12-31T23:59:59"),
    ] {
        let mut out = String::new();
        date_time(&mut out, secs).unwrap();
        assert_eq!(out, want, "{secs}");
    }
}

#[test]
fn decimal_writes_every_width() {
    for n in [0, 7, 10, 99, 100, 12_345, u64::MAX] {
        let mut out = String::new();
        decimal(&mut Writer::new(&mut out), n).unwrap();
        assert_eq!(out, n.to_string());
    }
}

thread_local! {
    static WRITTEN: std::cell::RefCell<Vec<Vec<u8>>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn record(lines: &[u8]) {
    WRITTEN.with_borrow_mut(|w| w.push(lines.to_vec()));
}

fn written() -> Vec<Vec<u8>> {
    WRITTEN.with_borrow_mut(std::mem::take)
}

/// A serving thread's lines wait for its flush (its runtime parking) and go out in one write;
/// 16 KiB of them go out without waiting.
#[test]
fn a_serving_threads_lines_go_out_together_at_its_flush_or_when_many() {
    std::thread::spawn(|| {
        hold_into(record);
        let mut w = Stderr.make_writer();
        std::io::Write::write_all(&mut w, b"one\n").unwrap();
        std::io::Write::write_all(&mut w, b"two\n").unwrap();
        assert!(written().is_empty(), "held until the flush");
        flush();
        assert_eq!(written(), vec![b"one\ntwo\n".to_vec()], "one write for both");
        flush();
        assert!(written().is_empty(), "nothing held: no write");

        let line = [b'x'; 1000];
        for _ in 0..17 {
            std::io::Write::write_all(&mut w, &line).unwrap();
        }
        let out = written();
        assert_eq!(out.len(), 1, "written once past 16 KiB, without a flush");
        assert_eq!(out[0].len(), 17 * 1000);
    })
    .join()
    .expect("the test thread");
}

static AT_THREAD_END: std::sync::Mutex<Vec<u8>> = std::sync::Mutex::new(Vec::new());

fn record_at_end(lines: &[u8]) {
    AT_THREAD_END.lock().unwrap().extend_from_slice(lines);
}

/// A serving thread that ends without its last flush (a panic) still writes what it held.
#[test]
fn a_serving_thread_that_ends_unflushed_writes_what_it_held() {
    let ended = std::thread::spawn(|| {
        hold_into(record_at_end);
        std::io::Write::write_all(&mut Stderr.make_writer(), b"last words\n").unwrap();
        panic!("the thread ends before its flush");
    })
    .join();
    assert!(ended.is_err(), "the thread panicked");
    assert_eq!(AT_THREAD_END.lock().unwrap().as_slice(), b"last words\n");
}
