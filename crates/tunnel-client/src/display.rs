//! What the client prints: the public URL, one line per request, connection changes.
//! Coloured when stdout is a terminal and `NO_COLOR` is unset.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::Duration;

/// Prints user-facing lines.
#[derive(Debug, Clone)]
pub struct Printer {
    color: bool,
    requests: bool,
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
        let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        Self {
            color,
            requests,
            label: None,
        }
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
            self.paint(DIM, &format!("(expires {expires_at})"))
        ));
        self.line(&format!(
            "  {}  {} -> http://{local}",
            self.paint(BOLD, "Forwarding"),
            self.paint(&format!("{BOLD}{CYAN}"), public_url)
        ));
        self.line("");
    }

    /// The banner of a TCP tunnel: its public port (if the server gave it one) and the
    /// command a consumer runs to reach it through the front door.
    pub fn online_tcp(&self, local: &str, address: Option<&str>, connect: &str, expires_at: &str) {
        self.line("");
        self.line(&format!(
            "  {}  {}",
            self.paint(&format!("{BOLD}{GREEN}"), "TCP tunnel online"),
            self.paint(DIM, &format!("(expires {expires_at})"))
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

    /// A status message.
    pub fn info(&self, msg: &str) {
        self.line(&format!(
            "{} {}{}",
            self.paint(DIM, &now()),
            self.tag(),
            msg
        ));
    }

    /// A WebSocket session through the tunnel began (its end is a [`Printer::request`] line).
    pub fn websocket_opened(&self, path: &str) {
        if self.requests {
            self.info(&format!("WS      {path} websocket opened"));
        }
    }

    /// A warning.
    pub fn warn(&self, msg: &str) {
        self.line(&format!(
            "{} {}{}",
            self.paint(DIM, &now()),
            self.tag(),
            self.paint(YELLOW, msg)
        ));
    }

    /// One finished request.
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
        let path: String = path.chars().take(120).collect();
        self.line(&format!(
            "{} {}{:<7} {:<40} {} {:>8} {:>10}{}{}",
            self.paint(DIM, &now()),
            self.tag(),
            method,
            path,
            self.paint(colour, &status_text),
            format_duration(took),
            format_bytes(bytes),
            request_id.map_or_else(String::new, |id| format!("  {}", self.paint(DIM, id))),
            if note.is_empty() {
                String::new()
            } else {
                format!("  {}", self.paint(DIM, note))
            }
        ));
    }
}

/// What the line of one finished request shows.
#[derive(Debug, Clone, Copy)]
pub struct RequestLine<'a> {
    /// The method, or `WS` for a WebSocket session.
    pub method: &'a str,
    /// The path (without the query).
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
