//! What settings' parsing shares: value parsers (seconds, counts, the time zone, the metrics
//! address) and the error of a setting with an unusable value.

use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::time::Duration;

use chrono_tz::Tz;
use clap::builder::{RangedU64ValueParser, TypedValueParser};

/// A time zone name that is not in the IANA database.
#[derive(Debug, thiserror::Error)]
#[error("unknown time zone {0:?}")]
pub struct UnknownTimeZone(String);

pub(super) fn parse_time_zone(name: &str) -> Result<Tz, UnknownTimeZone> {
    name.parse().map_err(|_| UnknownTimeZone(name.to_string()))
}

/// Where the metrics are served: an address, or nowhere (`off`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsBind(pub Option<SocketAddr>);

/// A TUNNEL_METRICS_BIND that is neither an address nor `off`.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is neither an address like 127.0.0.1:9090 nor off")]
pub struct BadMetricsBind(String);

pub(super) fn parse_metrics_bind(value: &str) -> Result<MetricsBind, BadMetricsBind> {
    match value.trim() {
        "off" | "" => Ok(MetricsBind(None)),
        addr => addr
            .parse()
            .map(|a| MetricsBind(Some(a)))
            .map_err(|_| BadMetricsBind(addr.to_string())),
    }
}

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
