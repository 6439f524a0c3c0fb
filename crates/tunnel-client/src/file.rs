//! The config file (`tunnel.toml`): a `[client]` table and `[[tunnels]]` entries, read into
//! one [`ClientConfig`] per tunnel ([`TunnelSet`]).
//!
//! Errors name the file, the line and column, and the key (`tunnel.toml:7:9: tunnels.local:
//! ...`): serde's own (unknown keys, wrong types; [`schema`] refuses unknown keys everywhere)
//! and those of the checks after parsing, which is why the checked values are read with their
//! place in the file. Every error of the file is reported at once, not only the first.
//! String values may use `${NAME}` ([`expand`]).

mod expand;
mod schema;
mod tcp;

use std::fmt;
use std::path::{Path, PathBuf};

use toml::Spanned;

pub use self::schema::Proto;
use self::schema::{IntOrText, RawClient, RawFile, RawTunnel};
use crate::config::{AccessRequest, ClientConfig, HostHeader, ServerUrl};
use crate::inspect::InspectArgs;

/// The file's tunnels, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelSet {
    /// Where it was read from.
    pub path: PathBuf,
    /// Its tunnels.
    pub tunnels: Vec<TunnelSpec>,
}

/// One tunnel of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelSpec {
    /// Its name in the file, which is also the tunnel id asked of the server.
    pub name: String,
    /// What it carries.
    pub proto: Proto,
    /// Its settings (for TCP, the local address, access lists and lifetime apply).
    pub config: ClientConfig,
}

/// What the command line sets over the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--server` / `TUNNEL_SERVER`, over `[client] server`.
    pub server: Option<String>,
    /// `--api-key` / `TUNNEL_API_KEY`, over `[client] api_key`.
    pub api_key: Option<String>,
    /// `--quiet`.
    pub quiet: bool,
}

/// One problem of the file: where, which key, what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileError {
    /// The file.
    pub path: PathBuf,
    /// Line and column (from 1), when the problem has a place.
    pub at: Option<(usize, usize)>,
    /// The key, as a dotted path (`tunnels.local`, `client.server`).
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some((line, col)) = self.at {
            write!(f, ":{line}:{col}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": {key}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem of the file (at least one).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct FileErrors(pub Vec<FileError>);

impl fmt::Display for FileErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// `$XDG_CONFIG_HOME/tunnel/tunnel.toml`, else the platform's config directory
/// (`~/.config` on Linux, `~/Library/Application Support` on macOS, `%APPDATA%` on Windows).
pub fn default_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            if cfg!(windows) {
                std::env::var_os("APPDATA").map(PathBuf::from)
            } else if cfg!(target_os = "macos") {
                std::env::var_os("HOME")
                    .map(|h| PathBuf::from(h).join("Library/Application Support"))
            } else {
                std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config"))
            }
        })?;
    Some(base.join("tunnel").join("tunnel.toml"))
}

/// Reads and checks the file at `path`.
pub fn load(path: &Path, over: &Overrides) -> Result<TunnelSet, FileErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        FileErrors(vec![FileError {
            path: path.to_path_buf(),
            at: None,
            key: None,
            message: format!("cannot read: {e}"),
        }])
    })?;
    parse(path, &text, over, &expand::from_env)
}

/// The server and API key of a file's `[client]` table, for a one-off tunnel whose flags and
/// environment leave them out (issue 13): the file's `[[tunnels]]` are not needed, nor
/// checked beyond their syntax.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientValues {
    /// `[client] server`.
    pub server: Option<String>,
    /// `[client] api_key`, or the content of `api_key_file`.
    pub api_key: Option<String>,
}

/// Reads [`ClientValues`] from the file at `path`.
pub fn client_values(path: &Path) -> Result<ClientValues, FileErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        FileErrors(vec![FileError {
            path: path.to_path_buf(),
            at: None,
            key: None,
            message: format!("cannot read: {e}"),
        }])
    })?;
    client_values_of(path, &text, &expand::from_env)
}

fn client_values_of(
    path: &Path,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<ClientValues, FileErrors> {
    let mut check = Check {
        path,
        text,
        env,
        errors: Vec::new(),
    };
    let raw: RawFile = toml::from_str(text).map_err(|e| {
        let span = e.span();
        let key = span.as_ref().and_then(|s| key_at(text, s.start));
        check.error(span, key, e.message().trim().to_string());
        FileErrors(check.errors.clone())
    })?;
    let server = match &raw.client.server {
        Some(v) => check.string(v, "client.server"),
        None => None,
    };
    let c = &raw.client;
    let api_key = if c.api_key.is_some() || c.api_key_file.is_some() {
        check.api_key(c, &Overrides::default())
    } else {
        None
    };
    if check.errors.is_empty() {
        Ok(ClientValues { server, api_key })
    } else {
        Err(FileErrors(check.errors))
    }
}

/// Checks `text`, the content of `path`, with `env` for `${NAME}` references.
pub fn parse(
    path: &Path,
    text: &str,
    over: &Overrides,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<TunnelSet, FileErrors> {
    let mut check = Check {
        path,
        text,
        env,
        errors: Vec::new(),
    };
    let raw: RawFile = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(e) => {
            let span = e.span();
            let key = span.as_ref().and_then(|s| key_at(text, s.start));
            check.error(span, key, e.message().trim().to_string());
            return Err(FileErrors(check.errors));
        }
    };
    let shared = check.client(&raw.client, over);
    let mut tunnels: Vec<TunnelSpec> = Vec::new();
    if raw.tunnels.is_empty() {
        check.error(None, None, "no [[tunnels]] entries".into());
    }
    for t in &raw.tunnels {
        if let Some(spec) = check.tunnel(t, shared.as_ref()) {
            if tunnels.iter().any(|o| o.name == spec.name) {
                let message = format!("tunnel {:?} is named twice", spec.name);
                check.error(Some(t.name.span()), Some("tunnels.name".into()), message);
            } else {
                tunnels.push(spec);
            }
        }
    }
    if check.errors.is_empty() {
        Ok(TunnelSet {
            path: path.to_path_buf(),
            tunnels,
        })
    } else {
        Err(FileErrors(check.errors))
    }
}

/// What `[client]` gives every tunnel.
struct Shared<'r> {
    server: ServerUrl,
    api_key: String,
    quiet: bool,
    inspect_addr: String,
    client: &'r RawClient,
}

/// The checks after parsing, collecting errors.
struct Check<'a> {
    path: &'a Path,
    text: &'a str,
    env: &'a dyn Fn(&str) -> Option<String>,
    errors: Vec<FileError>,
}

impl Check<'_> {
    fn error(
        &mut self,
        span: Option<std::ops::Range<usize>>,
        key: Option<String>,
        message: String,
    ) {
        let at = span.map(|s| line_col(self.text, s.start));
        self.errors.push(FileError {
            path: self.path.to_path_buf(),
            at,
            key,
            message,
        });
    }

    /// A string value with its `${NAME}` references expanded.
    fn string(&mut self, v: &Spanned<String>, key: &str) -> Option<String> {
        match expand::expand(v.get_ref(), self.env) {
            Ok(s) => Some(s),
            Err(e) => {
                self.error(Some(v.span()), Some(key.into()), e.to_string());
                None
            }
        }
    }

    fn client<'r>(&mut self, c: &'r RawClient, over: &Overrides) -> Option<Shared<'r>> {
        let server = match (&over.server, &c.server) {
            (Some(s), _) => match ServerUrl::parse(s) {
                Ok(u) => Some(u),
                Err(e) => {
                    self.error(None, None, format!("invalid TUNNEL_SERVER: {e}"));
                    None
                }
            },
            (None, Some(v)) => self.string(v, "client.server").and_then(|s| {
                ServerUrl::parse(&s)
                    .map_err(|e| {
                        self.error(Some(v.span()), Some("client.server".into()), e.to_string())
                    })
                    .ok()
            }),
            (None, None) => {
                let message = "no server: set [client] server (or TUNNEL_SERVER)".into();
                self.error(None, Some("client.server".into()), message);
                None
            }
        };
        let api_key = self.api_key(c, over);
        let inspect_addr = match &c.inspect_addr {
            Some(v) => self.string(v, "client.inspect_addr")?,
            None => "127.0.0.1:4040".into(),
        };
        Some(Shared {
            server: server?,
            api_key: api_key?,
            quiet: over.quiet || c.quiet.unwrap_or(false),
            inspect_addr,
            client: c,
        })
    }

    /// `api_key`, or the content of `api_key_file` (relative to the config file's folder).
    fn api_key(&mut self, c: &RawClient, over: &Overrides) -> Option<String> {
        let key = match (&over.api_key, &c.api_key, &c.api_key_file) {
            (Some(k), _, _) => k.clone(),
            (None, Some(_), Some(f)) => {
                let message = "api_key and api_key_file are both set; keep one".into();
                self.error(Some(f.span()), Some("client.api_key_file".into()), message);
                return None;
            }
            (None, Some(k), None) => self.string(k, "client.api_key")?,
            (None, None, Some(f)) => {
                let name = self.string(f, "client.api_key_file")?;
                let file = self.path.parent().unwrap_or(Path::new(".")).join(name);
                match std::fs::read_to_string(&file) {
                    Ok(k) => k,
                    Err(e) => {
                        let message = format!("cannot read {}: {e}", file.display());
                        self.error(Some(f.span()), Some("client.api_key_file".into()), message);
                        return None;
                    }
                }
            }
            (None, None, None) => {
                let message =
                    "no API key: set [client] api_key or api_key_file (or TUNNEL_API_KEY)";
                self.error(None, Some("client.api_key".into()), message.into());
                return None;
            }
        };
        let key = key.trim().to_string();
        if key.is_empty() {
            self.error(None, Some("client.api_key".into()), "empty".into());
            return None;
        }
        Some(key)
    }

    /// One `[[tunnels]]` entry, with `[client.defaults]` for what it leaves out; `None` (and
    /// errors recorded) if it is unusable, or if `[client]` was.
    fn tunnel(&mut self, t: &RawTunnel, shared: Option<&Shared<'_>>) -> Option<TunnelSpec> {
        let name = self.name(&t.name);
        let d = shared.map(|s| &s.client.defaults);
        let local_host = match d.and_then(|d| d.local_host.as_ref()) {
            Some(h) => self.string(h, "client.defaults.local_host"),
            None => Some("localhost".to_string()),
        };
        let local = self.local(&t.local);
        let host_header = match t
            .host_header
            .as_ref()
            .or(d.and_then(|d| d.host_header.as_ref()))
        {
            Some(v) => self.string(v, "tunnels.host_header").and_then(|s| {
                HostHeader::parse(&s).or_else(|| {
                    let message = format!("{s:?}: not rewrite, preserve or a host name");
                    self.error(Some(v.span()), Some("tunnels.host_header".into()), message);
                    None
                })
            }),
            None => Some(HostHeader::Rewrite),
        };
        let ttl_secs = match t.ttl.as_ref().or(d.and_then(|d| d.ttl.as_ref())) {
            Some(v) => self.ttl(v).map(Some),
            None => Some(None),
        };
        let allow = t
            .allow_ips
            .as_ref()
            .or(d.and_then(|d| d.allow_ips.as_ref()));
        let deny = t.deny_ips.as_ref().or(d.and_then(|d| d.deny_ips.as_ref()));
        let ip_allow = self.list(allow, "tunnels.allow_ips");
        let ip_deny = self.list(deny, "tunnels.deny_ips");
        let basic_auth = self.optional(t.basic_auth.as_ref(), "tunnels.basic_auth");
        let domain = self.optional(t.domain.as_ref(), "tunnels.domain");
        let inspect_on = t.inspect.or(d.and_then(|d| d.inspect)).unwrap_or(false);
        let tcp = match tcp::options(
            t.proto == Proto::Tcp,
            t.remote_port.as_ref(),
            t.proxy_protocol.as_ref(),
        ) {
            Ok(o) => Some(o),
            Err(problems) => {
                for (span, key, message) in problems {
                    self.error(Some(span), Some(key.into()), message);
                }
                None
            }
        };
        let shared = shared?;
        let inspect = self.inspect(inspect_on, &shared.inspect_addr)?;
        let ((host, port), local_host) = (local?, local_host?);
        Some(TunnelSpec {
            proto: t.proto,
            config: ClientConfig {
                server: shared.server.clone(),
                api_key: shared.api_key.clone(),
                local_host: host.unwrap_or(local_host),
                local_port: port,
                name: Some(name.clone()?),
                ttl_secs: ttl_secs?,
                host_header: host_header?,
                keep_prefix: t.keep_prefix.unwrap_or(false),
                log_requests: !shared.quiet,
                max_backoff: std::time::Duration::from_secs(30),
                access: AccessRequest {
                    basic_auth: basic_auth?,
                    ip_allow: ip_allow?,
                    ip_deny: ip_deny?,
                },
                domain: domain?,
                inspect,
                session: Default::default(),
                tcp: tcp?,
            },
            name: name?,
        })
    }

    fn name(&mut self, v: &Spanned<String>) -> Option<String> {
        let n = v.get_ref();
        let ok = !n.is_empty()
            && n.len() <= 63
            && n.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !n.starts_with('-')
            && !n.ends_with('-');
        if ok {
            Some(n.clone())
        } else {
            let message = format!("{n:?}: a name is 1 to 63 of a-z, 0-9 and - (not first or last)");
            self.error(Some(v.span()), Some("tunnels.name".into()), message);
            None
        }
    }

    /// `3000`, `"3000"`, `"127.0.0.1:3000"`, `"[::1]:3000"`: the host (if given) and port.
    fn local(&mut self, v: &Spanned<IntOrText>) -> Option<(Option<String>, u16)> {
        let parsed = match v.get_ref() {
            IntOrText::Int(p) => u16::try_from(*p).ok().map(|p| (None, p)),
            IntOrText::Text(t) => {
                let t = expand::expand(t, self.env).unwrap_or_else(|_| t.clone());
                match t.parse::<u16>() {
                    Ok(p) => Some((None, p)),
                    Err(_) => t.rsplit_once(':').and_then(|(h, p)| {
                        let h = h.trim_start_matches('[').trim_end_matches(']');
                        let p = p.parse::<u16>().ok()?;
                        (!h.is_empty()).then(|| (Some(h.to_string()), p))
                    }),
                }
            }
        };
        match parsed {
            Some((h, p)) if p != 0 => Some((h, p)),
            _ => {
                let message = "not a port (3000) nor HOST:PORT (127.0.0.1:3000)".into();
                self.error(Some(v.span()), Some("tunnels.local".into()), message);
                None
            }
        }
    }

    /// Seconds, or a number with a unit: `90s`, `30m`, `2h`, `7d`.
    fn ttl(&mut self, v: &Spanned<IntOrText>) -> Option<u64> {
        let secs = match v.get_ref() {
            IntOrText::Int(n) => u64::try_from(*n).ok(),
            IntOrText::Text(t) => {
                let t = t.trim();
                let (num, unit) =
                    t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
                let mult = match unit.trim() {
                    "" | "s" => Some(1),
                    "m" => Some(60),
                    "h" => Some(3600),
                    "d" => Some(86_400),
                    _ => None,
                };
                num.parse::<u64>()
                    .ok()
                    .zip(mult)
                    .and_then(|(n, m)| n.checked_mul(m))
            }
        };
        match secs {
            Some(s) if s > 0 => Some(s),
            _ => {
                let message = "not a lifetime: seconds, or 90s, 30m, 2h, 7d".into();
                self.error(Some(v.span()), Some("tunnels.ttl".into()), message);
                None
            }
        }
    }

    fn optional(&mut self, v: Option<&Spanned<String>>, key: &str) -> Option<Option<String>> {
        match v {
            Some(v) => self
                .string(v, key)
                .map(|s| Some(s.trim().to_string()).filter(|s| !s.is_empty())),
            None => Some(None),
        }
    }

    fn list(&mut self, v: Option<&Vec<Spanned<String>>>, key: &str) -> Option<Vec<String>> {
        let mut out = Vec::new();
        let mut ok = true;
        for item in v.map(Vec::as_slice).unwrap_or_default() {
            match self.string(item, key) {
                Some(s) if !s.trim().is_empty() => out.push(s.trim().to_string()),
                Some(_) => {}
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn inspect(&mut self, on: bool, addr: &str) -> Option<Option<crate::inspect::InspectConfig>> {
        let args = InspectArgs {
            inspect_addr: addr.to_string(),
            no_inspect: !on,
            inspect_budget: "50MiB".into(),
            inspect_body_limit: "1MiB".into(),
        };
        match args.validate() {
            Ok(c) => Some(c),
            Err(e) => {
                self.error(None, Some("client.inspect_addr".into()), e.to_string());
                None
            }
        }
    }
}

/// Line and column (from 1) of byte `offset`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// The dotted key whose line holds `offset`: the table header above it and the key before
/// `=` (for serde's errors, which carry a place but no key).
fn key_at(text: &str, offset: usize) -> Option<String> {
    let (line_no, _) = line_col(text, offset);
    let lines: Vec<&str> = text.lines().collect();
    let line = lines.get(line_no - 1)?;
    let key = line
        .split_once('=')
        .map(|(k, _)| k.trim().trim_matches('"').to_string());
    let table = std::iter::once(line)
        .chain(lines[..line_no - 1].iter().rev())
        .find_map(|l| {
            let l = l.trim();
            l.starts_with('[')
                .then(|| l.trim_matches(|c| c == '[' || c == ']').trim().to_string())
        });
    match (table, key) {
        (Some(t), Some(k)) => Some(format!("{t}.{k}")),
        (None, Some(k)) => Some(k),
        (Some(t), None) => Some(t),
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "PASS" => Some("hunter2hunter2".into()),
            "KEY" => Some("k-from-env".into()),
            _ => None,
        }
    }

    fn read(text: &str) -> Result<TunnelSet, FileErrors> {
        parse(Path::new("tunnel.toml"), text, &Overrides::default(), &env)
    }

    const GOOD: &str = r#"
[client]
server = "localhost:8989"
api_key = "${KEY}"

[client.defaults]
host_header = "preserve"
ttl = "2h"

[[tunnels]]
name = "web"
local = 5173

[[tunnels]]
name = "api"
local = "127.0.0.1:8000"
basic_auth = "me:${PASS}"
allow_ips = ["10.0.0.0/8"]
host_header = "rewrite"
ttl = 60
inspect = true

[[tunnels]]
name = "db"
proto = "tcp"
local = "5432"
"#;

    #[test]
    fn a_full_file() {
        let set = read(GOOD).expect("valid");
        let names: Vec<&str> = set.tunnels.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["web", "api", "db"]);
        let web = &set.tunnels[0].config;
        assert_eq!(web.server.http_base, "http://localhost:8989");
        assert_eq!(web.api_key, "k-from-env");
        assert_eq!(web.local_authority(), "localhost:5173");
        assert_eq!(web.host_header, HostHeader::Preserve);
        assert_eq!(web.ttl_secs, Some(7200));
        assert_eq!(web.name.as_deref(), Some("web"));
        assert!(web.inspect.is_none());
        let api = &set.tunnels[1].config;
        assert_eq!(api.local_authority(), "127.0.0.1:8000");
        assert_eq!(api.access.basic_auth.as_deref(), Some("me:hunter2hunter2"));
        assert_eq!(api.access.ip_allow, ["10.0.0.0/8"]);
        assert_eq!(api.host_header, HostHeader::Rewrite);
        assert_eq!(api.ttl_secs, Some(60));
        assert!(api.inspect.is_some());
        assert!(!api.keep_prefix);
        assert_eq!(set.tunnels[2].proto, Proto::Tcp);
        assert_eq!(set.tunnels[2].config.local_port, 5432);
    }

    fn errors(text: &str) -> Vec<String> {
        read(text)
            .expect_err("invalid")
            .0
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn an_unknown_key_names_file_line_and_key() {
        let text = GOOD.replace("name = \"db\"", "name = \"db\"\nprot = \"tcp\"");
        let e = errors(&text);
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].starts_with("tunnel.toml:25:1: tunnels.prot: unknown field `prot`"),
            "{e:?}"
        );
    }

    #[test]
    fn a_wrong_type_names_the_key() {
        let text = GOOD.replace("inspect = true", "inspect = \"yes\"");
        let e = errors(&text);
        assert!(
            e[0].starts_with("tunnel.toml:21:11: tunnels.inspect: "),
            "{e:?}"
        );
        let text = GOOD.replace("proto = \"tcp\"", "proto = \"udp\"");
        let e = errors(&text);
        assert!(
            e[0].starts_with("tunnel.toml:25:9: tunnels.proto: "),
            "{e:?}"
        );
        assert!(e[0].contains("udp"), "{e:?}");
    }

    #[test]
    fn every_bad_value_is_reported_with_its_place() {
        let text = GOOD
            .replace("local = 5173", "local = \"web\"")
            .replace("ttl = 60", "ttl = \"soon\"")
            .replace("me:${PASS}", "me:${NOPE}")
            .replace("name = \"db\"", "name = \"Db_1\"");
        let e = errors(&text);
        assert_eq!(e.len(), 4, "{e:?}");
        assert!(
            e[0].starts_with("tunnel.toml:12:9: tunnels.local: "),
            "{e:?}"
        );
        assert!(e[1].starts_with("tunnel.toml:20:7: tunnels.ttl: "), "{e:?}");
        assert!(
            e[2].starts_with("tunnel.toml:17:14: tunnels.basic_auth: ${NOPE} is not set"),
            "{e:?}"
        );
        assert!(
            e[3].starts_with("tunnel.toml:24:8: tunnels.name: \"Db_1\""),
            "{e:?}"
        );
    }

    #[test]
    fn names_are_unique_and_the_client_table_complete() {
        let text = GOOD.replace("name = \"db\"", "name = \"web\"");
        let e = errors(&text);
        assert!(
            e[0].contains("tunnels.name: tunnel \"web\" is named twice"),
            "{e:?}"
        );
        let e = errors("[[tunnels]]\nname = \"a\"\nlocal = 1\n");
        assert!(
            e.iter().any(|e| e.contains("client.server: no server")),
            "{e:?}"
        );
        assert!(
            e.iter().any(|e| e.contains("client.api_key: no API key")),
            "{e:?}"
        );
        let over = Overrides {
            server: Some("localhost:1".into()),
            api_key: Some("k".into()),
            quiet: false,
        };
        let set = parse(
            Path::new("t.toml"),
            "[[tunnels]]\nname = \"a\"\nlocal = 1\n",
            &over,
            &env,
        )
        .expect("the command line fills [client]");
        assert_eq!(set.tunnels[0].config.api_key, "k");
    }

    #[test]
    fn server_and_key_alone_for_a_one_off_tunnel() {
        let text = "[client]\nserver = \"s.example\"\napi_key = \"${KEY}\"\n";
        let v = client_values_of(Path::new("t.toml"), text, &env).expect("valid");
        assert_eq!(v.server.as_deref(), Some("s.example"));
        assert_eq!(v.api_key.as_deref(), Some("k-from-env"));
        let v = client_values_of(Path::new("t.toml"), "", &env).expect("empty is fine");
        assert_eq!(v, ClientValues::default());
        let e = client_values_of(Path::new("t.toml"), "[client]\nservr = 1\n", &env)
            .expect_err("unknown key");
        assert!(e.to_string().starts_with("t.toml:2:1: client.servr"), "{e}");
    }

    #[test]
    fn keep_prefix_is_per_tunnel() {
        let text = GOOD.replace("local = 5173", "local = 5173\nkeep_prefix = true");
        let set = read(&text).expect("valid");
        assert!(set.tunnels[0].config.keep_prefix);
        assert!(!set.tunnels[1].config.keep_prefix);
    }

    #[test]
    fn a_syntax_error_has_a_place() {
        let e = errors("[client\nserver = 1\n");
        assert!(e[0].starts_with("tunnel.toml:1:"), "{e:?}");
    }

    mod tcp_keys {
        use super::*;
        use crate::config::{ProxyProtocol, TcpOptions};

        const TCP_FILE: &str = r#"
[client]
server = "localhost:8989"
api_key = "k"

[[tunnels]]
name = "db"
proto = "tcp"
local = 5432
remote_port = 20001
proxy_protocol = "v2"

[[tunnels]]
name = "ssh"
proto = "tcp"
local = 22
proxy_protocol = false

[[tunnels]]
name = "web"
local = 3000
"#;

        fn read(text: &str) -> Result<Vec<Option<TcpOptions>>, Vec<String>> {
            parse(Path::new("t.toml"), text, &Overrides::default(), &|_| None)
                .map(|set| set.tunnels.into_iter().map(|t| t.config.tcp).collect())
                .map_err(|e| e.0.iter().map(ToString::to_string).collect())
        }

        #[test]
        fn tcp_keys_are_read() {
            let options = read(TCP_FILE).expect("valid");
            let v2 = TcpOptions {
                remote_port: Some(20001),
                proxy_protocol: ProxyProtocol::V2,
            };
            assert_eq!(options, [Some(v2), Some(TcpOptions::default()), None]);
            let on = TCP_FILE.replace("proxy_protocol = false", "proxy_protocol = true");
            assert_eq!(
                read(&on).expect("valid")[1].map(|o| o.proxy_protocol),
                Some(ProxyProtocol::V2)
            );
        }

        #[test]
        fn bad_tcp_keys_name_their_place() {
            let text = TCP_FILE
                .replace("remote_port = 20001", "remote_port = 70000")
                .replace("proxy_protocol = \"v2\"", "proxy_protocol = \"v1\"")
                .replace("local = 3000", "local = 3000\nremote_port = 20002");
            let e = read(&text).expect_err("invalid");
            assert_eq!(e.len(), 3, "{e:?}");
            assert!(
                e[0].starts_with("t.toml:10:15: tunnels.remote_port: 70000: not a port"),
                "{e:?}"
            );
            assert!(
                e[1].starts_with("t.toml:11:18: tunnels.proxy_protocol: \"v1\""),
                "{e:?}"
            );
            assert!(
                e[2].starts_with(
                    "t.toml:22:15: tunnels.remote_port: remote_port needs proto = \"tcp\""
                ),
                "{e:?}"
            );
        }
    }
}
