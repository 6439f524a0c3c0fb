//! Log output: plain or JSON lines, level from `RUST_LOG`, timestamps in a chosen time zone.

use std::io::IsTerminal;
use std::sync::LazyLock;

use chrono::format::{Item, StrftimeItems};
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use std::fmt::Write as _;

use tracing::field::{Field, Visit};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;
use tunnel_protocol::json_scan::first_to_escape_or_del;

use super::log_writer::{self, BatchWriter, LogGuard};
use crate::config::LogFormat;

/// Formats timestamps in a fixed IANA time zone, with the offset, so that lines stay
/// unambiguous across daylight-saving changes.
#[derive(Debug, Clone, Copy)]
pub struct ZonedTimer(pub Tz);

/// The timestamp format, parsed once: chrono would parse the pattern again for every line.
static TIMESTAMP: LazyLock<Vec<Item<'static>>> = LazyLock::new(|| {
    StrftimeItems::new("%Y-%m-%dT%H:%M:%S%.3f%:z")
        .parse()
        .unwrap_or_default()
});

impl FormatTime for ZonedTimer {
    fn format_time(&self, w: &mut Writer<'_>) -> std::fmt::Result {
        write_timestamp(w, Utc::now(), self.0)
    }
}

/// [`TIMESTAMP`] in two parts, around the milliseconds: what stays the same for a second.
static SECOND_PART: LazyLock<Vec<Item<'static>>> = LazyLock::new(|| {
    StrftimeItems::new("%Y-%m-%dT%H:%M:%S")
        .parse()
        .unwrap_or_default()
});
static OFFSET_PART: LazyLock<Vec<Item<'static>>> =
    LazyLock::new(|| StrftimeItems::new("%:z").parse().unwrap_or_default());

/// The formatted parts of the last second a line of this thread was written in.
struct SecondCache {
    tz: Tz,
    second: i64,
    /// `2025-01-31T12:00:05`
    date_time: String,
    /// `+01:00`
    offset: String,
}

thread_local! {
    static LAST_SECOND: std::cell::RefCell<Option<SecondCache>> =
        const { std::cell::RefCell::new(None) };
}

/// Writes `now` in `tz` as [`TIMESTAMP`] says. The date, time and offset are formatted once
/// per second and thread (an offset only changes on a second's boundary): converting to the
/// zone and formatting every field for each line was 3,300 instructions of each access line
/// (callgrind), a sixth of the line's cost.
pub(super) fn write_timestamp(
    w: &mut impl std::fmt::Write,
    now: DateTime<Utc>,
    tz: Tz,
) -> std::fmt::Result {
    // As chrono's `%.3f`: a leap second's nanoseconds count past 1,000,000,000.
    let millis = (now.timestamp_subsec_nanos() % 1_000_000_000) / 1_000_000;
    let second = now.timestamp();
    let written = LAST_SECOND.try_with(|slot| {
        let Ok(mut slot) = slot.try_borrow_mut() else {
            return None;
        };
        if !matches!(&*slot, Some(c) if c.second == second && c.tz == tz) {
            let local = now.with_timezone(&tz);
            *slot = Some(SecondCache {
                tz,
                second,
                date_time: local.format_with_items(SECOND_PART.iter()).to_string(),
                offset: local.format_with_items(OFFSET_PART.iter()).to_string(),
            });
        }
        slot.as_ref()
            .map(|c| write!(w, "{}.{millis:03}{}", c.date_time, c.offset))
    });
    match written {
        Ok(Some(result)) => result,
        // The thread is going away, or this is a line written while formatting one.
        _ => write!(
            w,
            "{}",
            now.with_timezone(&tz).format_with_items(TIMESTAMP.iter())
        ),
    }
}

/// Where a line may be written without the `tracing` event (see [`super::line_text`]): the
/// log thread's buffer of the subscriber installed, when it writes JSON lines.
pub(super) struct DirectLines {
    pub(super) writer: BatchWriter,
    /// Time zone of the timestamps.
    pub(super) tz: Tz,
}

static DIRECT: std::sync::OnceLock<DirectLines> = std::sync::OnceLock::new();

/// The buffer JSON lines go to, if lines may be written there directly.
pub(super) fn direct_lines() -> Option<&'static DirectLines> {
    DIRECT.get()
}

/// Installs the global subscriber (once; later calls are ignored, which suits tests).
///
/// Lines go to stderr through [`log_writer`]: the request path appends to a buffer, and a
/// background thread writes batches (see there for why and for the bounds). Keep the returned
/// guard alive until exit: dropping it writes what is buffered. `None` if the thread could not
/// be started; lines are then written directly.
pub fn init(format: LogFormat, tz: Tz) -> Option<LogGuard> {
    match log_writer::spawn(std::io::stderr()) {
        Ok((writer, guard)) => {
            if install(format, tz, writer.clone()) && format == LogFormat::Json {
                let _ = DIRECT.set(DirectLines { writer, tz }); // the first one is installed
            }
            Some(guard)
        }
        Err(e) => {
            eprintln!("tunnel-server: cannot start the log thread ({e}); logging synchronously");
            install(format, tz, std::io::stderr);
            None
        }
    }
}

/// Whether the subscriber was installed (the first one is; later ones are ignored).
fn install<W>(format: LogFormat, tz: Tz, writer: W) -> bool
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_timer(ZonedTimer(tz))
        // Colours only for a person at a terminal, never into files or log collectors.
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(writer);
    match format {
        LogFormat::Plain => builder.try_init(),
        LogFormat::Json => builder
            .fmt_fields(JsonFields::new())
            .event_format(JsonLines { tz })
            .try_init(),
    }
    .is_ok()
}

/// JSON lines, written straight into the output: `tracing-subscriber`'s own JSON format
/// collects every event's fields into a map of JSON values and re-parses the current span's
/// fields, about 3 µs and a dozen allocations per line, which for the one-line-per-request log
/// was a tenth of the server's CPU time per small request.
///
/// Shape: `{"timestamp":…,"level":…,<the event's fields, "message" first>,"target":…,
/// "span":{"name":…,<its fields>}}`, the last only inside a span; one object per line.
#[derive(Debug, Clone, Copy)]
pub struct JsonLines {
    /// Time zone of the timestamps.
    pub tz: Tz,
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let meta = event.metadata();
        w.write_str("{\"timestamp\":\"")?;
        ZonedTimer(self.tz).format_time(&mut w)?;
        w.write_str("\",\"level\":\"")?;
        w.write_str(meta.level().as_str())?;
        w.write_char('"')?;
        let mut fields = JsonFieldWriter {
            w: &mut w,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        w.write_str(",\"target\":")?;
        write_json_str(&mut w, meta.target())?;
        if let Some(span) = ctx.lookup_current() {
            w.write_str(",\"span\":{\"name\":")?;
            write_json_str(&mut w, span.name())?;
            let ext = span.extensions();
            if let Some(stored) = ext.get::<FormattedFields<N>>() {
                // Stored by `JsonFields` as one JSON object: splice its members in.
                let inner = stored
                    .fields
                    .trim()
                    .strip_prefix('{')
                    .and_then(|s| s.strip_suffix('}'))
                    .unwrap_or("")
                    .trim();
                if !inner.is_empty() {
                    w.write_char(',')?;
                    w.write_str(inner)?;
                }
            }
            w.write_char('}')?;
        }
        w.write_str("}\n")
    }
}

/// Writes an event's fields as `,"name":value` members.
struct JsonFieldWriter<'a, 'w> {
    w: &'a mut Writer<'w>,
    result: std::fmt::Result,
}

impl JsonFieldWriter<'_, '_> {
    fn member(&mut self, field: &Field, value: impl FnOnce(&mut Writer<'_>) -> std::fmt::Result) {
        if self.result.is_err() {
            return;
        }
        self.result = (|| {
            self.w.write_char(',')?;
            write_json_str(self.w, field.name())?;
            self.w.write_char(':')?;
            value(self.w)
        })();
    }
}

impl Visit for JsonFieldWriter<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.member(field, |w| write_json_str(w, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.member(field, |w| {
            w.write_char('"')?;
            write!(JsonEscaper(w), "{value:?}")?;
            w.write_char('"')
        });
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.member(field, |w| write_u64(w, value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.member(field, |w| write!(w, "{value}"));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.member(field, |w| write!(w, "{value}"));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if value.is_finite() {
            self.member(field, |w| write!(w, "{value}"));
        } else {
            self.member(field, |w| write!(w, "\"{value}\""));
        }
    }
}

/// `value` in decimal, without the formatting machinery `write!` goes through (three numbers
/// on every access line).
pub(super) fn write_u64(w: &mut impl std::fmt::Write, mut value: u64) -> std::fmt::Result {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    // Digit by digit: a `str` of them was a UTF-8 check per number (about 55 instructions,
    // callgrind) for at most 20 characters.
    for &d in &digits[at..] {
        w.write_char(char::from(d))?;
    }
    Ok(())
}

/// `s` as a JSON string.
pub(super) fn write_json_str(w: &mut impl std::fmt::Write, s: &str) -> std::fmt::Result {
    w.write_char('"')?;
    JsonEscaper(w).write_str(s)?;
    w.write_char('"')
}

/// Escapes what passes through it for the inside of a JSON string.
struct JsonEscaper<'a, W>(&'a mut W);

impl<W: std::fmt::Write> std::fmt::Write for JsonEscaper<'_, W> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        // Almost every value needs no escape: one light pass (a word at a time) and one
        // write. The loop below, byte by byte through a `match`, was 2,200 instructions of
        // each access line; it starts at the first byte to escape.
        let first = first_to_escape_or_del(s.as_bytes());
        if first == s.len() {
            return self.0.write_str(s);
        }
        let mut clean = 0;
        for (i, b) in s.bytes().enumerate().skip(first) {
            let escaped = match b {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0..=0x1F | 0x7F => "",
                _ => continue,
            };
            self.0.write_str(&s[clean..i])?;
            if escaped.is_empty() {
                write!(self.0, "\\u{:04x}", b)?;
            } else {
                self.0.write_str(escaped)?;
            }
            clean = i + 1;
        }
        self.0.write_str(&s[clean..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn timestamps_cached_per_second_read_as_formatted_whole() {
        let berlin: Tz = "Europe/Berlin".parse().expect("zone");
        // Around the switch to summer time (01:00 UTC, 31 March 2024), and millis apart
        // within one second.
        let base = DateTime::parse_from_rfc3339("2024-03-31T00:59:58.001Z")
            .expect("instant")
            .with_timezone(&Utc);
        for ms in [0, 1, 998, 999, 1000, 1001, 1999, 2000, 2500, 3_600_000] {
            let now = base + chrono::Duration::milliseconds(ms);
            for tz in [berlin, chrono_tz::UTC, berlin] {
                let mut cached = String::new();
                write_timestamp(&mut cached, now, tz).expect("formats");
                let whole = now
                    .with_timezone(&tz)
                    .format_with_items(TIMESTAMP.iter())
                    .to_string();
                assert_eq!(cached, whole, "{now} in {tz}");
            }
        }
    }

    #[test]
    fn json_lines_are_valid_json_with_every_field() {
        let out = Capture::default();
        let sink = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .event_format(JsonLines { tz: chrono_tz::UTC })
            .with_writer(move || sink.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let tricky = "quote \" back \\ nl \n tab \t bell \u{7} é";
            tracing::info!(request_id = %"abc", status = 200u16, ms = 3u64, zero = 0u64, big = u64::MAX, neg = -4i64, ok = true, ratio = 0.5f64, text = tricky, "request");
            let span = tracing::info_span!("client", tunnel = "demo", peer = %"127.0.0.1:9");
            span.in_scope(|| tracing::warn!(why = ?Some("x"), "inside"));
        });
        let text = String::from_utf8(out.0.lock().expect("capture").clone()).expect("utf-8");
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        let first = &lines[0];
        assert_eq!(first["level"], "INFO");
        assert_eq!(first["message"], "request");
        assert_eq!(first["request_id"], "abc");
        assert_eq!(first["status"], 200);
        assert_eq!(first["ms"], 3);
        assert_eq!(first["zero"], 0);
        assert_eq!(first["big"], u64::MAX);
        assert_eq!(first["neg"], -4);
        assert_eq!(first["ok"], true);
        assert_eq!(first["ratio"], 0.5);
        assert_eq!(first["text"], "quote \" back \\ nl \n tab \t bell \u{7} é");
        assert_eq!(first["target"], module_path!());
        assert!(first["timestamp"]
            .as_str()
            .is_some_and(|t| t.ends_with("+00:00")));
        assert!(first.get("span").is_none());
        let second = &lines[1];
        assert_eq!(second["level"], "WARN");
        assert_eq!(second["why"], "Some(\"x\")");
        assert_eq!(second["span"]["name"], "client");
        assert_eq!(second["span"]["tunnel"], "demo");
        assert_eq!(second["span"]["peer"], "127.0.0.1:9");
    }
}
