//! The keys only a TCP tunnel has: `remote_port` (`--remote-port`) and `proxy_protocol`
//! (`--proxy-protocol`), checked with their place in the file like every other key.

use std::ops::Range;

use toml::Spanned;

use crate::config::{ProxyProtocol, TcpOptions};

/// One bad key: its place, its dotted name, what is wrong.
pub(super) type Problem = (Range<usize>, &'static str, String);

/// A tunnel's TCP options (`None` for an HTTP tunnel, `tcp` false), or what is wrong with
/// them: a bad value, or a TCP key on an HTTP tunnel.
pub(super) fn options(
    tcp: bool,
    remote_port: Option<&Spanned<i64>>,
    proxy_protocol: Option<&Spanned<toml::Value>>,
) -> Result<Option<TcpOptions>, Vec<Problem>> {
    let mut problems = Vec::new();
    if !tcp {
        let spans = [
            ("tunnels.remote_port", remote_port.map(Spanned::span)),
            ("tunnels.proxy_protocol", proxy_protocol.map(Spanned::span)),
        ];
        for (key, span) in spans {
            if let Some(span) = span {
                let name = key.trim_start_matches("tunnels.");
                problems.push((span, key, format!("{name} needs proto = \"tcp\"")));
            }
        }
        return if problems.is_empty() {
            Ok(None)
        } else {
            Err(problems)
        };
    }
    let port = match remote_port {
        Some(v) => match u16::try_from(*v.get_ref()) {
            Ok(p) if p != 0 => Some(p),
            _ => {
                let message = format!("{}: not a port (1 to 65535)", v.get_ref());
                problems.push((v.span(), "tunnels.remote_port", message));
                None
            }
        },
        None => None,
    };
    let header = match proxy_protocol {
        Some(v) => header(v).unwrap_or_else(|p| {
            problems.push(p);
            ProxyProtocol::Off
        }),
        None => ProxyProtocol::Off,
    };
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(Some(TcpOptions {
        remote_port: port,
        proxy_protocol: header,
    }))
}

/// `true` or `"v2"`: the version 2 header; `false` or `"off"`: none.
fn header(v: &Spanned<toml::Value>) -> Result<ProxyProtocol, Problem> {
    match v.get_ref() {
        toml::Value::Boolean(true) => return Ok(ProxyProtocol::V2),
        toml::Value::Boolean(false) => return Ok(ProxyProtocol::Off),
        toml::Value::String(s) => match s.trim() {
            "v2" => return Ok(ProxyProtocol::V2),
            "off" => return Ok(ProxyProtocol::Off),
            _ => {}
        },
        _ => {}
    }
    let shown = match v.get_ref() {
        toml::Value::String(s) => format!("{s:?}"),
        toml::Value::Integer(n) => n.to_string(),
        other => other.type_str().to_string(),
    };
    let message = format!("{shown}: true, false, \"v2\" or \"off\"");
    Err((v.span(), "tunnels.proxy_protocol", message))
}
