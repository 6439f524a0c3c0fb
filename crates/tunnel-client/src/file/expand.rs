//! `${NAME}` in a string value: the environment variable's value, so that a file can be
//! committed without its secrets (`api_key = "${TUNNEL_API_KEY}"`). `$$` is a literal `$`;
//! a variable that is not set is an error, never an empty string.

/// Why a value cannot be expanded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum ExpandError {
    /// `${NAME}` of a variable that is not set (or not valid Unicode).
    #[error("${{{0}}} is not set in the environment")]
    Unset(String),
    /// `${` without its `}`, or an empty name.
    #[error("unfinished or empty ${{...}} reference")]
    Malformed,
}

/// Expands `${NAME}` references with `lookup`.
pub(super) fn expand(
    value: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, ExpandError> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(r) = after.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(r) = after.strip_prefix('{') {
            let end = r.find('}').ok_or(ExpandError::Malformed)?;
            let name = &r[..end];
            if name.is_empty() {
                return Err(ExpandError::Malformed);
            }
            out.push_str(&lookup(name).ok_or_else(|| ExpandError::Unset(name.to_string()))?);
            rest = &r[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// The process environment, for [`expand`].
pub(super) fn from_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "PASS").then(|| "s3cret".to_string())
    }

    #[test]
    fn references_dollars_and_unset_names() {
        assert_eq!(expand("user:${PASS}", env), Ok("user:s3cret".into()));
        assert_eq!(expand("a$$b $x", env), Ok("a$b $x".into()));
        assert_eq!(expand("plain", env), Ok("plain".into()));
        assert_eq!(
            expand("${NOPE}", env),
            Err(ExpandError::Unset("NOPE".into()))
        );
        assert_eq!(expand("${PASS", env), Err(ExpandError::Malformed));
        assert_eq!(expand("${}", env), Err(ExpandError::Malformed));
    }
}
