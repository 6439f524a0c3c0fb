//! Log output: plain or JSON lines, level from `RUST_LOG`, timestamps in a chosen time zone.

use std::io::IsTerminal;

use chrono::Utc;
use chrono_tz::Tz;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Formats timestamps in a fixed IANA time zone, with the offset, so that lines stay
/// unambiguous across daylight-saving changes.
#[derive(Debug, Clone, Copy)]
pub struct ZonedTimer(pub Tz);

impl FormatTime for ZonedTimer {
    fn format_time(&self, w: &mut Writer<'_>) -> std::fmt::Result {
        let now = Utc::now().with_timezone(&self.0);
        write!(w, "{}", now.format("%Y-%m-%dT%H:%M:%S%.3f%:z"))
    }
}

/// Installs the global subscriber (once; later calls are ignored, which suits tests).
///
/// Lines are written to stderr by a background thread, so that the one-line-per-request log
/// costs the request path a queue push instead of a `write` syscall. The queue is not lossy: if
/// it ever fills, logging waits rather than drops lines. Keep the returned guard alive until
/// exit: dropping it flushes what is queued.
pub fn init(format: LogFormat, tz: Tz) -> tracing_appender::non_blocking::WorkerGuard {
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        // The queue is allocated up front: 128k lines (the default) cost ~4 MiB of RSS.
        .buffered_lines_limit(4096)
        .thread_name("tunnel-log")
        .finish(std::io::BufWriter::with_capacity(
            64 * 1024,
            std::io::stderr(),
        ));
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_timer(ZonedTimer(tz))
        // Colours only for a person at a terminal, never into files or log collectors.
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(writer);
    let _ = match format {
        LogFormat::Plain => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    guard
}
