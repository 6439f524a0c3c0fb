//! Log output: plain or JSON lines, level from `RUST_LOG`, timestamps in a chosen time zone.

use std::io::IsTerminal;

use chrono::Utc;
use chrono_tz::Tz;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;
use crate::log_writer::{self, LogGuard};

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
/// Lines go to stderr through [`log_writer`]: the request path appends to a buffer, and a
/// background thread writes batches (see there for why and for the bounds). Keep the returned
/// guard alive until exit: dropping it writes what is buffered. `None` if the thread could not
/// be started; lines are then written directly.
pub fn init(format: LogFormat, tz: Tz) -> Option<LogGuard> {
    match log_writer::spawn(std::io::stderr()) {
        Ok((writer, guard)) => {
            install(format, tz, writer);
            Some(guard)
        }
        Err(e) => {
            eprintln!("tunnel-server: cannot start the log thread ({e}); logging synchronously");
            install(format, tz, std::io::stderr);
            None
        }
    }
}

fn install<W>(format: LogFormat, tz: Tz, writer: W)
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
    let _ = match format {
        LogFormat::Plain => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
