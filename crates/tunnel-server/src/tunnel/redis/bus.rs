//! What pods tell each other through Redis pub/sub: cache hints on `tunnel:changed` and
//! commands on each pod's `tunnel:node:{node}` (channels in `keys.rs`, sent by the scripts).
//!
//! Pub/sub is never the truth: a message may be lost (while a subscriber reconnects, say).
//! So a hint only makes a cached lookup be asked again, a cache is trusted only while
//! subscribed (and for a short time), and every command has a fallback that the lease
//! renewal finds by itself (`replaced` or `deleted` from `RENEW`).

use tunnel_protocol::GoodbyeReason;

/// A message on `tunnel:changed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Change {
    /// The tunnel or its lease changed.
    Changed(String),
    /// The tunnel was removed.
    Removed(String),
    /// The custom domain routes elsewhere now, or nowhere.
    Domain(String),
}

impl Change {
    /// Parses a payload: `id`, `-id` or `@domain` (no id starts with `-` or `@`).
    pub(super) fn parse(payload: &str) -> Self {
        if let Some(id) = payload.strip_prefix('-') {
            return Change::Removed(id.to_string());
        }
        match payload.strip_prefix('@') {
            Some(host) => Change::Domain(host.to_string()),
            None => Change::Changed(payload.to_string()),
        }
    }

    /// The tunnel it is about; `None` for a domain's binding.
    pub(super) fn id(&self) -> Option<&str> {
        match self {
            Change::Changed(id) | Change::Removed(id) => Some(id),
            Change::Domain(_) => None,
        }
    }
}

/// Why a pod is told to close a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CloseReason {
    /// The tunnel was deleted (through the API of any pod).
    Deleted,
    /// A newer client of the tunnel connected, to another pod.
    Replaced,
}

impl CloseReason {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "deleted" => Some(CloseReason::Deleted),
            "replaced" => Some(CloseReason::Replaced),
            _ => None,
        }
    }

    /// The word the scripts send.
    pub(super) fn as_str(self) -> &'static str {
        match self {
            CloseReason::Deleted => "deleted",
            CloseReason::Replaced => "replaced",
        }
    }

    /// The goodbye the client gets, and its message.
    pub(super) fn goodbye(self) -> (GoodbyeReason, &'static str) {
        match self {
            CloseReason::Deleted => (GoodbyeReason::Deleted, "the tunnel was deleted"),
            CloseReason::Replaced => (
                GoodbyeReason::Replaced,
                "another client connected to this tunnel",
            ),
        }
    }
}

/// A command on a pod's channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Command {
    /// Close the client of `id` if its session is still `generation`, with `message` as the
    /// goodbye's text when given (a pod before messages ignores it: `close` has four words).
    Close {
        id: String,
        generation: u64,
        reason: CloseReason,
        message: Option<String>,
    },
}

impl Command {
    /// Parses `close ID GENERATION REASON [MESSAGE…]`; `None` for anything else (a newer
    /// pod's command).
    pub(super) fn parse(payload: &str) -> Option<Self> {
        let mut words = payload.splitn(4, ' ');
        match (words.next()?, words.next()?, words.next()?, words.next()?) {
            ("close", id, generation, tail) => {
                let (reason, message) = parse_tail(tail)?;
                Some(Command::Close {
                    id: id.to_string(),
                    generation: generation.parse().ok()?,
                    reason,
                    message,
                })
            }
            _ => None,
        }
    }
}

/// Parses `REASON [MESSAGE…]`, the tail of a `close` command and of a `RENEW` status.
pub(super) fn parse_tail(tail: &str) -> Option<(CloseReason, Option<String>)> {
    let (reason, message) = tail.split_once(' ').unwrap_or((tail, ""));
    let message = Some(message).filter(|m| !m.is_empty()).map(str::to_string);
    Some((CloseReason::parse(reason)?, message))
}

/// The reason word (and message) [`crate::tunnel::redis`]'s remove script passes on to the pod
/// holding the client, as `close ID GENERATION` + this.
pub(super) fn close_tail(reason: CloseReason, message: &str) -> String {
    let message: String = message
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(200)
        .collect();
    format!("{} {message}", reason.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_parse() {
        assert_eq!(Change::parse("abc"), Change::Changed("abc".into()));
        assert_eq!(Change::parse("-abc"), Change::Removed("abc".into()));
        assert_eq!(
            Change::parse("@app.example.com"),
            Change::Domain("app.example.com".into())
        );
        assert_eq!(Change::parse("@app.example.com").id(), None);
        assert_eq!(
            Command::parse("close abc 12 deleted"),
            Some(Command::Close {
                id: "abc".into(),
                generation: 12,
                reason: CloseReason::Deleted,
                message: None,
            })
        );
        let tail = close_tail(
            CloseReason::Replaced,
            "replaced by another client from 10.0.0.7",
        );
        assert_eq!(
            Command::parse(&format!("close abc 3 {tail}")),
            Some(Command::Close {
                id: "abc".into(),
                generation: 3,
                reason: CloseReason::Replaced,
                message: Some("replaced by another client from 10.0.0.7".into()),
            })
        );
        assert_eq!(Command::parse("close abc x deleted"), None);
        assert_eq!(Command::parse("close abc 1 whatever"), None);
        assert_eq!(Command::parse("open abc 1 deleted"), None);
        assert_eq!(Command::parse(""), None);
    }

    #[test]
    fn renewal_statuses_parse_as_close_tails() {
        assert_eq!(parse_tail("deleted"), Some((CloseReason::Deleted, None)));
        assert_eq!(
            parse_tail("replaced replaced by another client from ::1"),
            Some((
                CloseReason::Replaced,
                Some("replaced by another client from ::1".into())
            ))
        );
        assert_eq!(parse_tail("ok"), None);
        assert_eq!(parse_tail("restored"), None);
    }
}
