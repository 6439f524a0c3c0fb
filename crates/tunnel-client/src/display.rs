//! What the client prints: the public URL, one line per request, connection changes.
//! Coloured when stdout is a terminal and `NO_COLOR` is unset. Every line fits 80 columns
//! (`fit`), unless `--verbose` adds the request id.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::Duration;

mod fit;

pub use self::fit::{expiry, human_duration, truncate_middle, WIDTH};

/// Prints user-facing lines.
#[derive(Debug, Clone)]
pub struct Printer {
    color: bool,
    /// Messages wrap at 80 columns (on a terminal; piped, each stays one line for grep).
    wrap: bool,
    requests: bool,
    /// Request lines carry the request id (`--verbose`).
    verbose: bool,
    /// The tunnel's name, when the client runs several ([`Printer::for_tunnel`]).
    label: Option<Arc<str>>,
}

/// One tunnel's row in the banner of a client with several.
#[derive(Debug, Clone, Copy)]
pub struct BannerRow<'a> {
    /// The tunnel's name in the config file.
    pub name: &'a str,
    /// Its public URL, once online.
    pub url: Option<&'a str>,
    /// The local service (`localhost:3000`), or why the tunnel is not online.
    pub target: &'a str,
    /// Its traffic inspector's page, if it has one.
    pub inspector: Option<&'a str>,
}

const RESET: &str = "\x1b[0m";
const BOLD: &str = "\x1b[1m";
const DIM: &str = "\x1b[2m";
const GREEN: &str = "\x1b[32m";
const YELLOW: &str = "\x1b[33m";
const RED: &str = "\x1b[31m";
const CYAN: &str = "\x1b[36m";

impl Printer {
    /// A printer; `requests` turns per-request lines on.
    pub fn new(requests: bool) -> Self {
        let terminal = std::io::stdout().is_terminal();
        let color = terminal && std::env::var_os("NO_COLOR").is_none();
        Self {
            color,
            wrap: terminal,
            requests,
            verbose: false,
            label: None,
        }
    }

    /// The same printer, with request ids on the request lines or not (`--verbose`).
    pub fn with_verbose(self, verbose: bool) -> Self {
        Self { verbose, ..self }
    }

    /// A printer for one of several tunnels: its lines start with the tunnel's name, and it
    /// prints no banner of its own (the client prints one for all, [`Printer::banner`]).
    pub fn for_tunnel(&self, name: &str) -> Self {
        Self {
            label: Some(name.into()),
            ..self.clone()
        }
    }

    /// The name column of a labelled printer's lines.
    fn tag(&self) -> String {
        match &self.label {
            Some(l) => format!("{} ", self.paint(BOLD, &format!("{l:<10}"))),
            None => String::new(),
        }
    }

    /// The banner of a client with several tunnels: one row each.
    pub fn banner(&self, rows: &[BannerRow<'_>]) {
        self.line("");
        self.line(&format!(
            "  {}",
            self.paint(&format!("{BOLD}{GREEN}"), "Tunnels")
        ));
        let width = rows.iter().map(|r| r.name.len()).max().unwrap_or(0);
        for r in rows {
            let url = match r.url {
                Some(u) => format!(
                    "{} -> {}",
                    self.paint(&format!("{BOLD}{CYAN}"), u),
                    r.target
                ),
                None => self.paint(YELLOW, r.target),
            };
            self.line(&format!(
                "  {}  {url}",
                self.paint(BOLD, &format!("{:<width$}", r.name))
            ));
            if let Some(i) = r.inspector {
                let pad = " ".repeat(width);
                self.line(&format!(
                    "  {pad}  {} {}",
                    self.paint(DIM, "inspector"),
                    self.paint(CYAN, i)
                ));
            }
        }
        self.line("");
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("{code}{text}{RESET}")
        } else {
            text.to_string()
        }
    }

    fn line(&self, s: &str) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{s}"); // a closed stdout must not kill the tunnel
        let _ = out.flush();
    }

    /// The banner once the tunnel is online.
    pub fn online(&self, public_url: &str, local: &str, expires_at: &str) {
        if self.label.is_some() {
            return;
        }
        self.line("");
        self.line(&format!(
            "  {}  {}",
            self.paint(&format!("{BOLD}{GREEN}"), "Tunnel online"),
            self.paint(DIM, &format!("({})", expiry(expires_at)))
        ));
        self.forwarding(public_url, &format!("http://{local}"));
        self.line("");
    }

    /// `Forwarding  URL -> LOCAL`, the local side on a line of its own when both do not fit.
    fn forwarding(&self, public: &str, local: &str) {
        let label = self.paint(BOLD, "Forwarding");
        let url = self.paint(&format!("{BOLD}{CYAN}"), public);
        if 2 + 10 + 2 + fit::width(public) + 4 + fit::width(local) <= WIDTH {
            self.line(&format!("  {label}  {url} -> {local}"));
        } else {
            self.line(&format!("  {label}  {url}"));
            self.line(&format!("  {}  -> {local}", " ".repeat(10)));
        }
    }

    /// The banner of a TCP tunnel: its public port (if the server gave it one) and the
    /// command a consumer runs to reach it through the front door.
    pub fn online_tcp(&self, local: &str, address: Option<&str>, connect: &str, expires_at: &str) {
        self.line("");
        self.line(&format!(
            "  {}  {}",
            self.paint(&format!("{BOLD}{GREEN}"), "TCP tunnel online"),
            self.paint(DIM, &format!("({})", expiry(expires_at)))
        ));
        if let Some(address) = address {
            self.line(&format!(
                "  {}  {} -> {local}",
                self.paint(BOLD, "Forwarding"),
                self.paint(&format!("{BOLD}{CYAN}"), &format!("tcp://{address}"))
            ));
        } else {
            self.line(&format!("  {}  -> {local}", self.paint(BOLD, "Forwarding")));
        }
        self.line(&format!(
            "  {}  {}",
            self.paint(BOLD, "Connect   "),
            self.paint(CYAN, connect)
        ));
        self.line("");
    }

    /// A carried TCP connection ended (unless per-request lines are off).
    pub fn tcp(&self, line: &str) {
        if self.requests {
            self.info(line);
        }
    }

    /// The traffic inspector's address, under the banner.
    pub fn inspector(&self, url: &str) {
        if self.label.is_some() {
            return;
        }
        self.line(&format!(
            "  {}  {}",
            self.paint(BOLD, "Inspector "),
            self.paint(CYAN, url)
        ));
        self.line("");
    }

    /// A status message (on a terminal wrapped at 80 columns, the continuation under the
    /// text).
    pub fn info(&self, msg: &str) {
        self.message(msg, None);
    }

    /// A WebSocket session through the tunnel began (its end is a [`Printer::request`] line).
    pub fn websocket_opened(&self, path: &str) {
        if self.requests {
            let path = truncate_middle(path, WIDTH - 9 - self.tag_width() - 8 - 17);
            self.info(&format!("WS      {path} websocket opened"));
        }
    }

    /// A warning.
    pub fn warn(&self, msg: &str) {
        self.message(msg, Some(YELLOW));
    }

    fn message(&self, msg: &str, colour: Option<&str>) {
        let indent = 9 + self.tag_width();
        let paint = |t: &str| colour.map_or_else(|| t.to_string(), |c| self.paint(c, t));
        let parts = if self.wrap {
            fit::wrap(msg, WIDTH - indent)
        } else {
            vec![msg.to_string()]
        };
        for (i, part) in parts.iter().enumerate() {
            if i == 0 {
                let stamp = self.paint(DIM, &now());
                self.line(&format!("{stamp} {}{}", self.tag(), paint(part)));
            } else {
                self.line(&format!("{}{}", " ".repeat(indent), paint(part)));
            }
        }
    }

    /// The columns of [`Printer::tag`].
    fn tag_width(&self) -> usize {
        self.label.as_ref().map_or(0, |l| fit::width(l).max(10) + 1)
    }

    /// One finished request: time, method, path (with its query, cut from the middle to fit
    /// 80 columns), status, duration, size; a failure's note on a line of its own below, and
    /// the request id only with `--verbose`.
    pub fn request(&self, line: &RequestLine<'_>) {
        if !self.requests {
            return;
        }
        let RequestLine {
            method,
            path,
            status,
            took,
            bytes,
            request_id,
            note,
        } = *line;
        let status_text = status.map_or_else(|| "---".to_string(), |s| s.to_string());
        let colour = match status {
            Some(s) if s < 300 => GREEN,
            Some(s) if s < 400 => CYAN,
            Some(s) if s < 500 => YELLOW,
            _ => RED,
        };
        let tag = self.tag();
        let tag_width = self.tag_width();
        let method = format!("{method:<7}");
        let tail = format!("{:>6} {:>9}", format_duration(took), format_bytes(bytes));
        // time, spaces, method, status and the tail: all but the path.
        let fixed = 8 + 1 + tag_width + fit::width(&method) + 1 + 1 + 3 + 1 + fit::width(&tail);
        let mut text = format!(
            "{} {tag}{method} {} {} {tail}",
            self.paint(DIM, &now()),
            fit::path_column(path, fixed),
            self.paint(colour, &format!("{status_text:>3}")),
        );
        let mut below = String::new();
        if self.verbose {
            for extra in [request_id.unwrap_or(""), note] {
                if !extra.is_empty() {
                    text.push_str(&format!("  {}", self.paint(DIM, extra)));
                }
            }
        } else if !note.is_empty() {
            let indent = 8 + 1 + tag_width + fit::width(&method) + 1;
            let room = WIDTH.saturating_sub(indent + 2);
            below = format!(
                "{}└ {}",
                " ".repeat(indent),
                self.paint(DIM, &truncate_middle(note, room))
            );
        }
        self.line(text.trim_end());
        if !below.is_empty() {
            self.line(&below);
        }
    }
}

/// What the line of one finished request shows.
#[derive(Debug, Clone, Copy)]
pub struct RequestLine<'a> {
    /// The method, or `WS` for a WebSocket session.
    pub method: &'a str,
    /// The path, with its query.
    pub path: &'a str,
    /// The status the public client got, if one was sent.
    pub status: Option<u16>,
    /// How long it took.
    pub took: Duration,
    /// Body bytes (both ways for a WebSocket session).
    pub bytes: u64,
    /// The server's id for the request (the `X-Request-Id` its log lines and the local
    /// service see), shown so that the three logs can be joined.
    pub request_id: Option<&'a str>,
    /// Why it failed, or how a session ended.
    pub note: &'a str,
}

fn now() -> String {
    chrono::Local::now().format("%H:%M:%S").to_string()
}

/// `12ms`, `1.4s`.
pub fn format_duration(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// `512 B`, `1.2 KB`, `3.4 MB`.
pub fn format_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KB", "MB", "GB", "TB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = UNITS[0];
    for u in &UNITS[1..] {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = u;
    }
    format!("{v:.1} {unit}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations() {
        assert_eq!(format_bytes(10), "10 B");
        assert_eq!(format_bytes(1536), "1.5 KB");
        assert_eq!(format_bytes(5 * 1024 * 1024), "5.0 MB");
        assert_eq!(format_duration(Duration::from_millis(12)), "12ms");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1.5s");
    }
}
