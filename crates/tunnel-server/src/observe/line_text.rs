//! The access line of a proxied request, written straight into the log buffer when the log is
//! JSON lines: the same text as the [`tracing`] event through [`JsonLines`], byte for byte
//! (see the test in `proxy::log`), without the event.
//!
//! One line is written per request. Through `tracing`, the event went through the filter and
//! the subscriber's layers, each of its eight fields was visited through `dyn Visit`, each
//! string escaped through a `fmt::Write` adapter and the line formatted into the
//! subscriber's buffer, then copied into the log buffer. Here the line is written into a
//! reused buffer of the thread and appended to the log buffer in one call: the access line
//! went from 8,300 to 4,200 instructions per request (callgrind, `bench/instructions.sh`).
//!
//! The event stays the way when this one cannot give the same line: plain text logs, a log
//! thread that did not start, a level filter that leaves the line out (asked of `tracing`,
//! so `RUST_LOG` decides as before), or a current span (whose fields the line would carry).
//!
//! [`JsonLines`]: super::logging::JsonLines

use std::cell::RefCell;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use super::logging::{direct_lines, write_json_str, write_timestamp, write_u64};

/// The fields of one access line, in their order on the line.
pub struct AccessLine<'a> {
    /// The request's id.
    pub request_id: &'a str,
    /// The tunnel's id.
    pub tunnel: &'a str,
    /// The HTTP method.
    pub method: &'a str,
    /// The path, as far as it is logged.
    pub path: &'a str,
    /// The response status (0 when none was sent).
    pub status: u16,
    /// Response body bytes (both ways for a WebSocket session).
    pub bytes: u64,
    /// Milliseconds from the request to its end.
    pub ms: u64,
    /// How it ended.
    pub outcome: &'a str,
}

thread_local! {
    /// A line's text, kept between lines (an allocation per line otherwise).
    static LINE: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Lines longer than this do not keep their buffer for the next line.
const KEPT_CAPACITY: usize = 4096;

/// Writes `line` (target `target`, level INFO) into the log buffer, if it can be written
/// directly and `enabled` (the caller's `tracing::enabled!`, asked only then) says it is
/// wanted. `false`: nothing was written, the caller logs the event.
pub fn write(line: &AccessLine<'_>, target: &str, enabled: impl FnOnce() -> bool) -> bool {
    let Some(direct) = direct_lines() else {
        return false;
    };
    // `id()`, not `is_known()`: "no span" is a known current span too.
    if tracing::dispatcher::get_default(|d| d.current_span().id().is_some()) || !enabled() {
        return false;
    }
    LINE.try_with(|buf| {
        let Ok(mut buf) = buf.try_borrow_mut() else {
            return false;
        };
        buf.clear();
        if format(&mut *buf, line, target, Utc::now(), direct.tz).is_err() {
            return false;
        }
        direct.writer.append(buf.as_bytes());
        if buf.capacity() > KEPT_CAPACITY {
            *buf = String::new();
        }
        true
    })
    .unwrap_or(false)
}

/// The line as [`super::logging::JsonLines`] writes the event: timestamp, level, the
/// message, the fields in order, the target; newline-terminated.
pub fn format(
    w: &mut impl std::fmt::Write,
    line: &AccessLine<'_>,
    target: &str,
    now: DateTime<Utc>,
    tz: Tz,
) -> std::fmt::Result {
    w.write_str("{\"timestamp\":\"")?;
    write_timestamp(w, now, tz)?;
    w.write_str("\",\"level\":\"INFO\",\"message\":\"request\",\"request_id\":")?;
    write_json_str(w, line.request_id)?;
    w.write_str(",\"tunnel\":")?;
    write_json_str(w, line.tunnel)?;
    w.write_str(",\"method\":")?;
    write_json_str(w, line.method)?;
    w.write_str(",\"path\":")?;
    write_json_str(w, line.path)?;
    w.write_str(",\"status\":")?;
    write_u64(w, u64::from(line.status))?;
    w.write_str(",\"bytes\":")?;
    write_u64(w, line.bytes)?;
    w.write_str(",\"ms\":")?;
    write_u64(w, line.ms)?;
    w.write_str(",\"outcome\":")?;
    write_json_str(w, line.outcome)?;
    w.write_str(",\"target\":")?;
    write_json_str(w, target)?;
    w.write_str("}\n")
}
