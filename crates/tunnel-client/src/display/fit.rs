//! Fitting lines into an 80-column terminal: a request line's path, truncated from the middle,
//! and human durations and times (the tunnel's expiry).

use std::time::Duration;

use chrono::{DateTime, Local, Utc};

/// The width every line fits into (unless `--verbose` asks for more).
pub const WIDTH: usize = 80;

/// The shortest path column a request line keeps, however long its other fields.
const MIN_PATH: usize = 16;

/// How many columns `s` takes (one per character: paths are ASCII, percent-encoded).
pub(super) fn width(s: &str) -> usize {
    s.chars().count()
}

/// `s` in at most `max` columns: its start and end, with `…` for what is cut from the middle
/// (where a long path or query differs least usefully).
pub fn truncate_middle(s: &str, max: usize) -> String {
    let n = width(s);
    if n <= max {
        return s.to_string();
    }
    if max == 0 {
        return String::new();
    }
    let keep = max - 1;
    let head = keep.div_ceil(2);
    let tail = keep - head;
    let start: String = s.chars().take(head).collect();
    let end: String = s.chars().skip(n - tail).collect();
    format!("{start}…{end}")
}

/// The path column of a request line whose other fields take `fixed` columns: `path` cut
/// to fit [`WIDTH`] and padded so that the columns after it line up.
pub(super) fn path_column(path: &str, fixed: usize) -> String {
    let col = WIDTH.saturating_sub(fixed).max(MIN_PATH);
    let cut = truncate_middle(path, col);
    let pad = col - width(&cut);
    format!("{cut}{}", " ".repeat(pad))
}

/// `text` in lines of at most `max` columns, broken at spaces (a word longer than a line is
/// cut from the middle).
pub(super) fn wrap(text: &str, max: usize) -> Vec<String> {
    let max = max.max(MIN_PATH);
    let mut lines = Vec::new();
    let mut cur = String::new();
    for word in text.split(' ') {
        let word = truncate_middle(word, max);
        if !cur.is_empty() && width(&cur) + 1 + width(&word) > max {
            lines.push(std::mem::take(&mut cur));
        }
        if !cur.is_empty() {
            cur.push(' ');
        }
        cur.push_str(&word);
    }
    lines.push(cur);
    lines
}

/// `45 s`, `12 min`, `24 h`, `1 h 30 min`, `3 d 4 h`, rounded to the minute past a minute.
pub fn human_duration(d: Duration) -> String {
    let secs = d.as_secs_f64().round() as u64;
    if secs < 60 {
        return format!("{secs} s");
    }
    let mins = (secs + 30) / 60;
    match (mins / 60, mins % 60) {
        (0, m) => format!("{m} min"),
        (h, 0) if h < 48 => format!("{h} h"),
        (h, m) if h < 48 => format!("{h} h {m} min"),
        (h, _) if h % 24 == 0 => format!("{} d", h / 24),
        (h, _) => format!("{} d {} h", h / 24, h % 24),
    }
}

/// `expires in 24 h, at 20:19` for an RFC 3339 time (the local time with its day when it is
/// more than a day away); the text as it is if it does not parse.
pub fn expiry(expires_at: &str) -> String {
    let Ok(at) = DateTime::parse_from_rfc3339(expires_at) else {
        return format!("expires {expires_at}");
    };
    let at = at.with_timezone(&Utc);
    expiry_from(at, Utc::now())
}

fn expiry_from(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let left = (at - now).to_std().unwrap_or_default();
    let local = at.with_timezone(&Local);
    let when = if left <= Duration::from_secs(24 * 3600 + 30) {
        local.format("%H:%M").to_string()
    } else {
        local.format("%a %-d %b %H:%M").to_string()
    };
    format!("expires in {}, at {when}", human_duration(left))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_paths_lose_their_middle() {
        assert_eq!(truncate_middle("/short", 10), "/short");
        let cut = truncate_middle("/api/v1/items?page=2&sort=name&filter=active", 20);
        assert_eq!(cut, "/api/v1/it…er=active");
        assert_eq!(width(&cut), 20);
        let col = path_column("/x", 60);
        assert_eq!(width(&col), 20);
        assert_eq!(width(&path_column(&"/a".repeat(100), 79)), MIN_PATH);
    }

    #[test]
    fn messages_wrap_at_spaces() {
        let text =
            "cannot reach localhost:8990: connection refused. Is the server running? Retrying…";
        let lines = wrap(text, 71);
        assert_eq!(lines.len(), 2);
        assert!(lines.iter().all(|l| width(l) <= 71));
        assert_eq!(lines.join(" "), text);
        assert_eq!(wrap("short", 71), vec!["short".to_string()]);
    }

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(human_duration(Duration::from_secs(45)), "45 s");
        assert_eq!(human_duration(Duration::from_secs(12 * 60)), "12 min");
        assert_eq!(human_duration(Duration::from_secs(86_399)), "24 h");
        assert_eq!(human_duration(Duration::from_secs(5_400)), "1 h 30 min");
        assert_eq!(human_duration(Duration::from_secs(3 * 86_400)), "3 d");
        assert_eq!(
            human_duration(Duration::from_secs(3 * 86_400 + 4 * 3600)),
            "3 d 4 h"
        );
    }

    #[test]
    fn expiry_is_a_duration_and_a_local_time() {
        let now = Utc::now();
        let at = now + chrono::Duration::seconds(86_400);
        let local = at.with_timezone(&Local).format("%H:%M").to_string();
        assert_eq!(expiry_from(at, now), format!("expires in 24 h, at {local}"));
        assert!(expiry("soon").contains("soon"));
    }
}
