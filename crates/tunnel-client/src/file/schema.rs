//! The file's shape, as serde reads it: every table refuses unknown keys, and the values
//! that are checked after parsing keep their place in the file ([`Spanned`]) so that an error
//! can name the line.

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use toml::Spanned;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFile {
    /// `[client]`.
    #[serde(default)]
    pub client: RawClient,
    /// `[[tunnels]]`.
    #[serde(default)]
    pub tunnels: Vec<RawTunnel>,
}

/// `[client]`: the server, the key, and what every tunnel shares.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawClient {
    pub server: Option<Spanned<String>>,
    pub api_key: Option<Spanned<String>>,
    pub api_key_file: Option<Spanned<String>>,
    pub quiet: Option<bool>,
    pub inspect_addr: Option<Spanned<String>>,
    /// `[client.defaults]`: values of tunnel keys for the tunnels that leave them out.
    #[serde(default)]
    pub defaults: RawDefaults,
}

/// `[client.defaults]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDefaults {
    pub local_host: Option<Spanned<String>>,
    pub host_header: Option<Spanned<String>>,
    pub ttl: Option<Spanned<IntOrText>>,
    pub inspect: Option<bool>,
    pub allow_ips: Option<Vec<Spanned<String>>>,
    pub deny_ips: Option<Vec<Spanned<String>>>,
}

/// One `[[tunnels]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTunnel {
    pub name: Spanned<String>,
    #[serde(default)]
    pub proto: Proto,
    pub local: Spanned<IntOrText>,
    pub domain: Option<Spanned<String>>,
    pub basic_auth: Option<Spanned<String>>,
    pub allow_ips: Option<Vec<Spanned<String>>>,
    pub deny_ips: Option<Vec<Spanned<String>>>,
    pub host_header: Option<Spanned<String>>,
    pub ttl: Option<Spanned<IntOrText>>,
    pub inspect: Option<bool>,
    /// A TCP tunnel's public port (`--remote-port`).
    pub remote_port: Option<Spanned<i64>>,
    /// A TCP tunnel's PROXY protocol header (`--proxy-protocol`): `true`/`"v2"` or
    /// `false`/`"off"`.
    pub proxy_protocol: Option<Spanned<toml::Value>>,
    /// Path-prefix requests keep their `/<name>` prefix (`--keep-prefix`).
    pub keep_prefix: Option<bool>,
}

/// What a tunnel carries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// HTTP (and WebSocket) requests: the default.
    #[default]
    Http,
    /// Raw TCP connections.
    Tcp,
}

/// A value that may be written as a number or a string: `local = 3000` or
/// `local = "127.0.0.1:3000"`, `ttl = 7200` or `ttl = "2h"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum IntOrText {
    Int(i64),
    Text(String),
}

impl<'de> Deserialize<'de> for IntOrText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = IntOrText;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a number or a string")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<IntOrText, E> {
                Ok(IntOrText::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<IntOrText, E> {
                i64::try_from(v)
                    .map(IntOrText::Int)
                    .map_err(|_| E::custom("number too large"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<IntOrText, E> {
                Ok(IntOrText::Text(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}
