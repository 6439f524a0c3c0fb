//! Whether the server can be reached, said once per change: a failed attempt is sorted into
//! a short reason ("connection refused") or an error retrying cannot fix ([`Fatal`]), and the
//! client prints a line only when the reason changes and when the server is back.
//!
//! The errors come as text (the cause chain of a reqwest or tungstenite error): the name
//! resolver, rustls and hyper report these cases only in their messages.

use crate::display::Printer;

/// An error retrying cannot fix: the client exits (unless `--retry-forever`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fatal {
    /// The server's host name does not exist (DNS says so, not "try again").
    NoHost,
    /// The server's TLS certificate is not valid for it (unknown issuer, wrong name, expired).
    BadCertificate,
    /// `https://` given, and the server answered the TLS handshake with plain HTTP.
    NotTls,
    /// `http://` given, and the server answered the plain request with something else (TLS).
    NotHttp,
}

/// One failed attempt, sorted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Problem {
    /// Set for an error retrying cannot fix.
    pub fatal: Option<Fatal>,
    /// What went wrong, in a few words.
    pub what: String,
}

/// Sorts a transport error's cause chain.
pub(super) fn classify(detail: &str) -> Problem {
    let d = detail.to_ascii_lowercase();
    let has = |needles: &[&str]| needles.iter().any(|n| d.contains(n));
    let (fatal, what) = if has(&[
        "name or service not known",
        "nodename nor servname provided",
        "no address associated with hostname",
        "no such host is known",
    ]) {
        (
            Some(Fatal::NoHost),
            "the host name does not exist".to_string(),
        )
    } else if has(&["invalid peer certificate", "certificate verify failed"]) {
        let why = detail
            .split("invalid peer certificate: ")
            .nth(1)
            .map_or_else(|| "rejected".into(), certificate_problem);
        (Some(Fatal::BadCertificate), why)
    } else if has(&[
        "invalidcontenttype",
        "corrupt message",
        "wrong version number",
    ]) {
        (
            Some(Fatal::NotTls),
            "it answered the TLS handshake in plain text".into(),
        )
    } else if has(&[
        "invalid http version",
        "invalid http",
        "httparse",
        "invalid status",
    ]) {
        (Some(Fatal::NotHttp), "it did not answer plain HTTP".into())
    } else if has(&["connection refused"]) {
        (None, "connection refused".into())
    } else if has(&["temporary failure in name resolution", "dns error"]) {
        (None, "the host name cannot be resolved now".into())
    } else if has(&["timed out", "deadline has elapsed"]) {
        (None, "timed out".into())
    } else if has(&["connection reset", "broken pipe"]) {
        (None, "connection reset".into())
    } else if has(&["network is unreachable", "no route to host"]) {
        (None, "network unreachable".into())
    } else {
        let last = detail.rsplit(": ").next().unwrap_or(detail).trim();
        (None, last.chars().take(60).collect())
    };
    Problem { fatal, what }
}

/// rustls's name for what is wrong with a certificate (`UnknownIssuer`,
/// `Other(OtherError(CaUsedAsEndEntity))`…), in words; anything else as it came.
fn certificate_problem(rustls: &str) -> String {
    const KNOWN: [(&str, &str); 8] = [
        (
            "CaUsedAsEndEntity",
            "self-signed: a CA certificate used as the server's own",
        ),
        (
            "UnknownIssuer",
            "issued by an authority this machine does not trust",
        ),
        ("NotValidForName", "not valid for this host name"),
        ("NotValidYet", "not valid yet; check this machine's clock"),
        ("Expired", "expired"),
        ("Revoked", "revoked"),
        ("BadSignature", "its signature does not verify"),
        (
            "UnsupportedSignatureAlgorithm",
            "signed with an algorithm this client does not support",
        ),
    ];
    KNOWN
        .iter()
        .find(|(name, _)| rustls.contains(name))
        .map_or_else(
            || {
                let first = rustls.split(':').next().unwrap_or(rustls).trim();
                first.chars().take(60).collect()
            },
            |(_, words)| (*words).to_string(),
        )
}

/// `host:port` of a base URL, for messages.
pub(super) fn authority(base: &str) -> &str {
    let rest = base.split_once("://").map_or(base, |(_, r)| r);
    rest.split('/').next().unwrap_or(rest)
}

/// The host of an authority (`localhost` of `localhost:8990`, `::1` of `[::1]:8989`).
fn host(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match authority.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => authority,
    }
}

/// The sentence for a problem reaching `base`, and what to do; `retrying` says that the
/// client goes on trying.
pub(super) fn sentence(base: &str, p: &Problem, retrying: bool) -> String {
    let at = authority(base);
    let what = &p.what;
    let mut s = match p.fatal {
        None if what == "connection refused" => {
            format!("cannot reach {at}: {what}. Is the server running?")
        }
        None => format!("cannot reach {at}: {what}."),
        Some(Fatal::NoHost) => format!(
            "cannot reach {at}: the host name {} does not exist (DNS). Check --server.",
            host(at)
        ),
        Some(Fatal::BadCertificate) => format!(
            "cannot reach {at}: its TLS certificate is invalid ({what}). Check the host name; \
             a self-signed certificate must be trusted by this machine."
        ),
        Some(Fatal::NotTls) => {
            format!("cannot reach {at}: {what}. Use --server http://{at}")
        }
        Some(Fatal::NotHttp) => {
            format!("cannot reach {at}: {what}. Is it https? Use --server https://{at}")
        }
    };
    if retrying {
        s.push_str(" Retrying…");
    }
    s
}

/// What was last said about reaching the server: a line only when it changes.
#[derive(Debug, Default)]
pub(super) struct Reach {
    last: Option<String>,
}

impl Reach {
    /// A failed attempt with transport error `detail`: the error retrying cannot fix (and
    /// its sentence) unless `retry_forever`; otherwise printed if its reason differs from the
    /// last one's, and the caller retries.
    pub(super) fn failed(
        &mut self,
        printer: &Printer,
        base: &str,
        detail: &str,
        retry_forever: bool,
    ) -> Option<(Fatal, String)> {
        let p = classify(detail);
        if let (Some(fatal), false) = (p.fatal, retry_forever) {
            return Some((fatal, sentence(base, &p, false)));
        }
        self.say(printer, &p.what, &sentence(base, &p, true));
        None
    }

    /// Prints `line` unless the last thing said was about `key` too.
    pub(super) fn say(&mut self, printer: &Printer, key: &str, line: &str) {
        if self.last.as_deref() != Some(key) {
            printer.warn(line);
            self.last = Some(key.to_string());
        }
    }

    /// Online again: forgets the last failure without a line (the caller prints its own).
    pub(super) fn clear(&mut self) {
        self.last = None;
    }

    /// The server answered: says so if a failure was said before.
    pub(super) fn back(&mut self, printer: &Printer, base: &str) {
        if self.last.take().is_some() {
            printer.info(&format!("reached {} again", authority(base)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_sorted() {
        let refused = classify("error sending request for url (http://localhost:8990/api/tunnels/create): client error (Connect): tcp connect error: Connection refused (os error 111)");
        assert_eq!(
            (refused.fatal, refused.what.as_str()),
            (None, "connection refused")
        );
        let dns = classify("error sending request: client error (Connect): dns error: failed to lookup address information: Name or service not known");
        assert_eq!(dns.fatal, Some(Fatal::NoHost));
        let again = classify(
            "dns error: failed to lookup address information: Temporary failure in name resolution",
        );
        assert_eq!(again.fatal, None);
        let cert = classify("client error (Connect): invalid peer certificate: UnknownIssuer");
        assert_eq!(
            (cert.fatal, cert.what.as_str()),
            (
                Some(Fatal::BadCertificate),
                "issued by an authority this machine does not trust"
            )
        );
        let own = classify(
            "client error (Connect): invalid peer certificate: Other(OtherError(CaUsedAsEndEntity))",
        );
        assert_eq!(
            own.what,
            "self-signed: a CA certificate used as the server's own"
        );
        let new = classify("invalid peer certificate: SomethingNew: details");
        assert_eq!(new.what, "SomethingNew");
        let plain =
            classify("client error (Connect): received corrupt message of type InvalidContentType");
        assert_eq!(plain.fatal, Some(Fatal::NotTls));
        let tls = classify("client error (SendRequest): invalid HTTP version parsed");
        assert_eq!(tls.fatal, Some(Fatal::NotHttp));
    }

    #[test]
    fn sentences_are_short_and_say_what_to_do() {
        let p = classify("tcp connect error: Connection refused (os error 111)");
        assert_eq!(
            sentence("http://localhost:8990", &p, true),
            "cannot reach localhost:8990: connection refused. Is the server running? Retrying…"
        );
        let p = classify("Name or service not known");
        assert_eq!(
            sentence("https://nope.invalid", &p, false),
            "cannot reach nope.invalid: the host name nope.invalid does not exist (DNS). Check --server."
        );
        let p = classify("received corrupt message of type InvalidContentType");
        assert_eq!(
            sentence("https://127.0.0.1:9", &p, false),
            "cannot reach 127.0.0.1:9: it answered the TLS handshake in plain text. Use --server http://127.0.0.1:9"
        );
        assert_eq!(host("[::1]:8989"), "::1");
        assert_eq!(authority("https://a.example:443/x"), "a.example:443");
    }
}
