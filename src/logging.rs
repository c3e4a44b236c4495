//! The log's format and its writer.
//!
//! The text format is `tracing_subscriber`'s default (`Full`) line, with the canonical line
//! written by a formatter of its own.
//!
//! Every tunnel and request writes one canonical line (`splitway::access`, about 25 fields),
//! and formatting it was the largest user-space item of a fresh tunnel: the default visitor
//! writes each field name through three `Display` layers (styles that are empty without
//! colours) and the timestamp from the calendar every time. [`Text`] writes the same bytes for
//! that line straight into the line buffer, with the date and time of the current second
//! kept per thread; every other event, and every line on a terminal (colours), goes to the
//! default formatter. A unit test holds the two to the same output.
//!
//! The writer, [`Stderr`], collects the lines of a serving thread and writes them when the
//! thread goes idle (its runtime parks: [`flush`]) or 16 KiB have gathered: one `write` for
//! every line of a busy moment instead of one a tunnel, as nginx's `access_log … buffer=` and
//! Envoy's access log flush do. A line reaches stderr as soon as its thread has nothing else
//! to do; only a thread that never idles holds up to 16 KiB. Other threads write at once.

use std::cell::RefCell;
use std::fmt::{self, Write};
use std::io;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{self, FormatEvent, FormatFields, Full, Writer};
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::fmt::{FmtContext, FormattedFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

/// The target of the canonical line.
pub const ACCESS_TARGET: &str = "splitway::access";

/// The text format: the default one, the canonical line written fast (see the module).
#[derive(Debug, Default)]
pub struct Text {
    default: format::Format<Full>,
}

impl<S, N> FormatEvent<S, N> for Text
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let meta = event.metadata();
        if writer.has_ansi_escapes() || meta.target() != ACCESS_TARGET {
            return self.default.format_event(ctx, writer, event);
        }
        timestamp(&mut writer)?;
        writer.write_str(match *meta.level() {
            Level::TRACE => "TRACE ",
            Level::DEBUG => "DEBUG ",
            Level::INFO => " INFO ",
            Level::WARN => " WARN ",
            Level::ERROR => "ERROR ",
        })?;
        if let Some(scope) = ctx.event_scope() {
            let mut seen = false;
            for span in scope.from_root() {
                writer.write_str(span.metadata().name())?;
                seen = true;
                let ext = span.extensions();
                if let Some(fields) = ext.get::<FormattedFields<N>>().filter(|f| !f.is_empty()) {
                    writer.write_char('{')?;
                    writer.write_str(&fields.fields)?;
                    writer.write_char('}')?;
                }
                writer.write_char(':')?;
            }
            if seen {
                writer.write_char(' ')?;
            }
        }
        writer.write_str(meta.target())?;
        writer.write_str(": ")?;
        let mut fields = Fields {
            writer: &mut writer,
            first: true,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        writer.write_char('\n')
    }
}

/// The event's fields as the default visitor writes them without colours: `message` first,
/// bare (control characters escaped), then ` name=value` with the value's `Debug` (strings
/// quoted and escaped; `%` fields are their `Display`).
struct Fields<'a, 'w> {
    writer: &'a mut Writer<'w>,
    first: bool,
    result: fmt::Result,
}

impl Fields<'_, '_> {
    fn field(&mut self, field: &Field, value: impl FnOnce(&mut Writer<'_>) -> fmt::Result) {
        if self.result.is_ok() {
            let first = std::mem::take(&mut self.first);
            self.result = write_field(self.writer, first, field.name(), value);
        }
    }
}

fn write_field(
    w: &mut Writer<'_>,
    first: bool,
    name: &str,
    value: impl FnOnce(&mut Writer<'_>) -> fmt::Result,
) -> fmt::Result {
    if !first {
        w.write_char(' ')?;
    }
    if name != "message" {
        w.write_str(name.strip_prefix("r#").unwrap_or(name))?;
        w.write_char('=')?;
    }
    value(w)
}

impl Visit for Fields<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.field(field, |w| escaped(w, value)),
            _ => self.field(field, |w| write!(w, "{value:?}")),
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.field(field, |w| decimal(w, value))
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        match field.name() {
            "message" => self.field(field, |w| escaped(w, &format!("{value:?}"))),
            _ => self.field(field, |w| write!(w, "{value:?}")),
        }
    }
}

/// `s` with the control characters a terminal acts on escaped, as the default formatter
/// writes a message.
fn escaped(w: &mut Writer<'_>, s: &str) -> fmt::Result {
    let unsafe_char = |c: char| matches!(c, '\x1b' | '\x07' | '\x08' | '\x0c' | '\x7f' | '\u{80}'..='\u{9f}');
    if !s.contains(unsafe_char) {
        return w.write_str(s);
    }
    for c in s.chars() {
        match c {
            '\u{80}'..='\u{9f}' => write!(w, "\\u{{{:x}}}", c as u32)?,
            c if unsafe_char(c) => write!(w, "\\x{:02x}", c as u32)?,
            c => w.write_char(c)?,
        }
    }
    Ok(())
}

/// `n` in decimal, without the formatting machinery.
fn decimal(w: &mut Writer<'_>, mut n: u64) -> fmt::Result {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    w.write_str(std::str::from_utf8(&digits[at..]).map_err(|_| fmt::Error)?)
}

thread_local! {
    /// The current second, and its date and time as the default timer writes them
    /// (`2026-12-03T11:46:55`).
    static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

/// The time now as the default timer writes it (`2026-12-03T11:46:55.123456Z `), the date and
/// time of day formatted once a second.
fn timestamp(w: &mut Writer<'_>) -> fmt::Result {
    let Ok(now) = SystemTime::now().duration_since(UNIX_EPOCH) else {
        // Before 1970: the default timer's own output.
        tracing_subscriber::fmt::time::SystemTime.format_time(w)?;
        return w.write_char(' ');
    };
    let secs = now.as_secs();
    SECOND.with_borrow_mut(|(second, text)| {
        if *second != secs {
            text.clear();
            date_time(text, secs)?;
            *second = secs;
        }
        w.write_str(text)
    })?;
    let mut frac = *b".000000Z ";
    let mut micros = now.subsec_micros();
    for digit in frac[1..7].iter_mut().rev() {
        *digit = b'0' + (micros % 10) as u8;
        micros /= 10;
    }
    w.write_str(std::str::from_utf8(&frac).map_err(|_| fmt::Error)?)
}

/// `secs` after the Unix epoch as `YYYY-MM-DDTHH:MM:SS` (UTC, proleptic Gregorian calendar:
/// Howard Hinnant's `civil_from_days`).
fn date_time(out: &mut String, secs: u64) -> fmt::Result {
    let days = (secs / 86_400) as i64;
    let of_day = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    if year > 9999 {
        out.push('+');
    }
    write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        of_day / 3_600,
        of_day / 60 % 60,
        of_day % 60
    )
}

/// The most a serving thread holds before it writes (see the module).
const FLUSH_AT: usize = 16 * 1024;

/// A serving thread's lines, and where they go.
struct Held {
    lines: Vec<u8>,
    out: fn(&[u8]),
}

impl Held {
    fn write_out(&mut self) {
        (self.out)(&self.lines);
        self.lines.clear();
    }
}

impl Drop for Held {
    /// A thread that ends without its last [`flush`] (a panic) still writes what it held.
    fn drop(&mut self) {
        if !self.lines.is_empty() {
            self.write_out();
        }
    }
}

thread_local! {
    /// The lines a serving thread holds: `None` on other threads (they write at once).
    static HELD: RefCell<Option<Held>> = const { RefCell::new(None) };
}

/// The log writer: stderr, through the serving thread's buffer (see the module).
#[derive(Debug, Clone, Copy, Default)]
pub struct Stderr;

impl<'a> MakeWriter<'a> for Stderr {
    type Writer = Stderr;

    fn make_writer(&'a self) -> Self::Writer {
        Stderr
    }
}

impl io::Write for Stderr {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        self.write_all(line).map(|()| line.len())
    }

    fn write_all(&mut self, line: &[u8]) -> io::Result<()> {
        // `try_with`: an event while the thread's locals are torn down is written at once.
        let held = HELD
            .try_with(|held| match &mut *held.borrow_mut() {
                Some(held) => {
                    held.lines.extend_from_slice(line);
                    if held.lines.len() >= FLUSH_AT {
                        held.write_out();
                    }
                    true
                }
                None => false,
            })
            .unwrap_or(false);
        match held {
            true => Ok(()),
            false => io::Write::write_all(&mut io::stderr(), line),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Makes this thread a serving thread: its log lines are held until [`flush`]. Its runtime
/// calls [`flush`] when it parks, and the thread once more before it ends.
pub fn hold_on_this_thread() {
    hold_into(to_stderr);
}

/// [`hold_on_this_thread`], the lines going to `out`.
fn hold_into(out: fn(&[u8])) {
    HELD.with_borrow_mut(|held| {
        held.get_or_insert_with(|| Held {
            lines: Vec::with_capacity(FLUSH_AT),
            out,
        });
    });
}

/// Writes the lines this thread holds (a runtime's `on_thread_park`, and a serving thread's
/// end).
pub fn flush() {
    let _ = HELD.try_with(|held| {
        if let Some(held) = held.borrow_mut().as_mut().filter(|h| !h.lines.is_empty()) {
            held.write_out();
        }
    });
}

/// A failed write loses the lines, as an unbuffered one would: the log has nowhere to report
/// its own failure.
fn to_stderr(lines: &[u8]) {
    let _ = io::Write::write_all(&mut io::stderr().lock(), lines);
}

#[cfg(test)]
mod tests;
