//! The rule for tunnel names, which both sides apply: the server refuses a bad name with 400,
//! and the client refuses it before asking (exit 64), with a name that would do.
//!
//! A tunnel name is a lowercase DNS label, because it is both the first path segment of the
//! tunnel's path URL and the first label of its subdomain URL (`<name>.TUNNEL_DOMAIN`).

/// The rule, as a user reads it.
pub const RULE: &str =
    "a lowercase DNS label: 1-63 characters of a-z, 0-9 and '-', not starting or ending with '-'";

/// Longest name (a DNS label's limit).
pub const MAX_LEN: usize = 63;

/// A name that breaks [`RULE`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name:?} is not {RULE}")]
pub struct BadName {
    /// The name as given.
    pub name: String,
}

/// Whether `name` follows [`RULE`] (allocates nothing: the server asks for every request).
pub fn is_valid(name: &str) -> bool {
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    !name.is_empty()
        && name.len() <= MAX_LEN
        && ok_chars
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// Checks `name` against [`RULE`].
pub fn check(name: &str) -> Result<(), BadName> {
    if is_valid(name) {
        Ok(())
    } else {
        Err(BadName {
            name: name.to_string(),
        })
    }
}

/// A valid name close to `name` (`My_App` → `my-app`): lowercased, every run of other
/// characters turned into one `-`, trimmed of `-` and to [`MAX_LEN`]. `None` when nothing
/// usable is left.
pub fn suggest(name: &str) -> Option<String> {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let mut out = out.trim_matches('-').to_string();
    out.truncate(MAX_LEN);
    let out = out.trim_end_matches('-').to_string();
    check(&out).is_ok().then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_dns_label_rules() {
        for ok in ["a", "my-app", "x1", &"a".repeat(63)] {
            assert!(check(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "A",
            "a_b",
            "a.b",
            "%2e",
            "..",
            &"a".repeat(64),
        ] {
            assert!(check(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn suggestions_are_valid_and_close() {
        assert_eq!(suggest("My_App").as_deref(), Some("my-app"));
        assert_eq!(suggest("my app!!").as_deref(), Some("my-app"));
        assert_eq!(suggest("--Dev.Server--").as_deref(), Some("dev-server"));
        assert_eq!(suggest(&"ab".repeat(40)).map(|s| s.len()), Some(63));
        assert_eq!(suggest("___"), None);
        assert_eq!(suggest("café").as_deref(), Some("caf"));
    }
}
