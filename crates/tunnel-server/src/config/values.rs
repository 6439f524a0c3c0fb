//! What several settings' parsing shares: value parsers and the error of a setting with an
//! unusable value.

use std::ops::RangeInclusive;
use std::time::Duration;

use clap::builder::{RangedU64ValueParser, TypedValueParser};

/// A number of seconds within `range`, as a [`Duration`].
pub(super) fn secs(range: RangeInclusive<u64>) -> impl TypedValueParser<Value = Duration> {
    clap::value_parser!(u64)
        .range(range)
        .map(Duration::from_secs)
}

/// A count of at least `min`.
pub(super) fn at_least(min: u64) -> RangedU64ValueParser<usize> {
    RangedU64ValueParser::new().range(min..)
}

/// A setting with an unusable value.
#[derive(Debug, thiserror::Error)]
#[error("invalid {setting}: {message}")]
pub struct ConfigError {
    /// The environment variable (and flag) at fault.
    pub setting: &'static str,
    /// What is wrong with it.
    pub message: String,
}

pub(super) fn invalid(setting: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        setting,
        message: message.into(),
    }
}
