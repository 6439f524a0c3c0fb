//! The settings of names and domains: which domain tunnels live under, which URL form is
//! shown, which names nobody may take, how long a name stays its owner's, names reserved for
//! a key, and how custom domains are verified.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::auth::{ApiKeys, KeyId};
use crate::edge::host::parse_domain;

/// Names blocked by default: the usual service names of a domain (a tunnel called `www` or
/// `mail` would pass for the operator's), names that certificate issuance, mail clients and
/// proxy auto-discovery look up (`_acme-challenge`, `autoconfig`, `wpad`), and the server's
/// own paths. The setting replaces the list; the server's own paths (`api`, `health`, …)
/// stay blocked whatever it says.
pub const DEFAULT_BLOCKED_NAMES: &str = "www,api,admin,app,mail,smtp,imap,pop,pop3,ftp,\
    ns,ns1,ns2,dns,mx,_acme-challenge,_dmarc,_domainkey,autoconfig,autodiscover,wpad,isatap,\
    localhost,status,dashboard,traefik,login,auth,sso,static,assets,cdn,docs,blog,support,help,\
    billing,root,tunnel,tunnels";

/// Names no tunnel may ever take, whatever `TUNNEL_BLOCKED_NAMES` or `TUNNEL_RESERVED_NAMES`
/// say: they are the server's own paths on the apex (`/api/…` must never be read as tunnel
/// `api`) or look like them to probes and scrapers.
pub const SERVER_NAMES: &[&str] = &["api", "health", "healthz", "ready", "readyz", "metrics"];

/// Longest name grace a setting may give, in seconds (ten years of 366 days).
const TEN_YEARS: u64 = 10 * 366 * 86_400;

/// Which URL form `public_url` and the client's banner show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum UrlStyle {
    /// `https://<name>.<TUNNEL_DOMAIN>/`.
    Subdomain,
    /// `https://<host>/<name>/`.
    Path,
}

/// Where custom-domain TXT records are looked up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsResolver {
    /// The system's resolvers (`/etc/resolv.conf`).
    System,
    /// One DNS server (UDP and TCP), e.g. `127.0.0.1:5353`.
    At(SocketAddr),
}

/// `TUNNEL_DOMAIN` as given: a name, or explicitly none (`off` or empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainSetting(pub Option<String>);

fn parse_domain_setting(value: &str) -> Result<DomainSetting, String> {
    match value.trim() {
        "" | "off" => Ok(DomainSetting(None)),
        v => parse_domain(v)
            .map(|d| DomainSetting(Some(d)))
            .map_err(|e| e.to_string()),
    }
}

fn parse_resolver(value: &str) -> Result<DnsResolver, String> {
    let value = value.trim();
    if value.is_empty() || value == "system" {
        return Ok(DnsResolver::System);
    }
    if let Ok(addr) = value.parse::<SocketAddr>() {
        return Ok(DnsResolver::At(addr));
    }
    value
        .parse::<IpAddr>()
        .map(|ip| DnsResolver::At(SocketAddr::new(ip, 53)))
        .map_err(|_| format!("{value:?} is neither `system` nor an address like 10.0.0.53:53"))
}

fn parse_blocked(value: &str) -> Result<String, String> {
    let v = value.trim().to_ascii_lowercase();
    let ok = v.len() <= 63
        && v.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(v)
    } else {
        Err(format!("{value:?} is not a DNS label"))
    }
}

/// Flags and environment of the names-and-domains group.
#[derive(Debug, Clone, Args)]
pub struct DomainArgs {
    /// Domain tunnels live under: `<name>.<TUNNEL_DOMAIN>` routes to tunnel `name` (a
    /// wildcard DNS record and certificate must point `*.TUNNEL_DOMAIN` here). Unset: path
    /// prefixes only; `off` turns off the dev-mode default (`localhost`).
    #[arg(
        long = "domain",
        env = "TUNNEL_DOMAIN",
        value_name = "TUNNEL_DOMAIN",
        value_parser = parse_domain_setting
    )]
    pub domain: Option<DomainSetting>,

    /// Which URL `public_url` and the client's banner show: `subdomain` or `path`. Default:
    /// `subdomain` when TUNNEL_DOMAIN is set, `path` otherwise. Both URLs always work.
    #[arg(
        long = "url-style",
        env = "TUNNEL_URL_STYLE",
        value_name = "TUNNEL_URL_STYLE",
        value_enum,
        ignore_case = true
    )]
    pub url_style: Option<UrlStyle>,

    /// Comma-separated names no tunnel may take (replaces the default list; the server's own
    /// paths stay blocked).
    #[arg(
        long = "blocked-names",
        env = "TUNNEL_BLOCKED_NAMES",
        value_name = "TUNNEL_BLOCKED_NAMES",
        value_delimiter = ',',
        value_parser = parse_blocked,
        default_value = DEFAULT_BLOCKED_NAMES
    )]
    pub blocked_names: Vec<String>,

    /// How long a name stays with the API key that had it after its tunnel is deleted or
    /// expires, in seconds; in that time another key gets 409, and random names are not
    /// handed out again.
    #[arg(
        long = "name-grace-secs",
        env = "TUNNEL_NAME_GRACE_SECS",
        value_name = "TUNNEL_NAME_GRACE_SECS",
        value_parser = clap::value_parser!(u64).range(0..=TEN_YEARS),
        default_value_t = 86_400
    )]
    pub name_grace_secs: u64,

    /// A file of names reserved for a key for good: one `name key-label` per line (`#`
    /// comments), the label of an entry `label:key` of TUNNEL_API_KEYS.
    #[arg(
        long = "reserved-names",
        env = "TUNNEL_RESERVED_NAMES",
        value_name = "TUNNEL_RESERVED_NAMES"
    )]
    pub reserved_names: Option<String>,

    /// DNS server that custom-domain TXT records are looked up at: `system`
    /// (/etc/resolv.conf) or an address (`10.0.0.53`, `127.0.0.1:5353`).
    #[arg(
        long = "dns-resolver",
        env = "TUNNEL_DNS_RESOLVER",
        value_name = "TUNNEL_DNS_RESOLVER",
        value_parser = parse_resolver,
        default_value = "system"
    )]
    pub dns_resolver: DnsResolver,

    /// How often every custom domain's TXT record is checked again, in seconds: a removed
    /// or changed record stops its routing at the next check.
    #[arg(
        long = "domain-recheck-secs",
        env = "TUNNEL_DOMAIN_RECHECK_SECS",
        value_name = "TUNNEL_DOMAIN_RECHECK_SECS",
        value_parser = clap::value_parser!(u64).range(1..=86_400),
        default_value_t = 300
    )]
    pub domain_recheck_secs: u64,
}

/// The validated names-and-domains settings.
#[derive(Debug, Clone)]
pub struct Domains {
    /// `TUNNEL_DOMAIN`, normalized; `None`: path prefixes only.
    pub domain: Option<String>,
    /// Which URL `public_url` shows.
    pub url_style: UrlStyle,
    /// Names no tunnel may take (unless reserved for its key).
    pub blocked_names: Vec<String>,
    /// How long a name stays with its key after its tunnel is gone.
    pub name_grace: Duration,
    /// Names reserved for a key for good.
    pub reserved: Vec<(String, KeyId)>,
    /// Where custom-domain TXT records are looked up.
    pub dns_resolver: DnsResolver,
    /// How often custom domains are checked again.
    pub domain_recheck: Duration,
}

/// A setting of this group with an unusable value.
#[derive(Debug, thiserror::Error)]
#[error("invalid {setting}: {message}")]
pub struct DomainSettingError {
    /// The environment variable (and flag) at fault.
    pub setting: &'static str,
    /// What is wrong with it.
    pub message: String,
}

fn invalid(setting: &'static str, message: impl Into<String>) -> DomainSettingError {
    DomainSettingError {
        setting,
        message: message.into(),
    }
}

impl DomainArgs {
    /// Checks what involves other settings: in dev mode (no API keys, loopback) the domain
    /// defaults to `localhost`, which browsers and curl resolve to loopback with no DNS set-up;
    /// the subdomain style needs a domain; reservations name labelled keys.
    pub fn validate(self, dev_mode: bool, keys: &ApiKeys) -> Result<Domains, DomainSettingError> {
        let domain = match self.domain {
            Some(DomainSetting(d)) => d,
            None if dev_mode => Some("localhost".to_string()),
            None => None,
        };
        let url_style = match (self.url_style, &domain) {
            (Some(UrlStyle::Subdomain), None) => {
                return Err(invalid(
                    "TUNNEL_URL_STYLE",
                    "subdomain URLs need TUNNEL_DOMAIN; set it, or use TUNNEL_URL_STYLE=path",
                ))
            }
            (Some(style), _) => style,
            (None, Some(_)) => UrlStyle::Subdomain,
            (None, None) => UrlStyle::Path,
        };
        let path = self
            .reserved_names
            .as_deref()
            .map(str::trim)
            .filter(|p| !p.is_empty());
        let reserved = match path.map(PathBuf::from) {
            Some(path) => {
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    invalid(
                        "TUNNEL_RESERVED_NAMES",
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?;
                parse_reservations(&text, keys).map_err(|m| {
                    invalid("TUNNEL_RESERVED_NAMES", format!("{}: {m}", path.display()))
                })?
            }
            None => Vec::new(),
        };
        Ok(Domains {
            domain,
            url_style,
            blocked_names: self
                .blocked_names
                .into_iter()
                .filter(|n| !n.is_empty())
                .collect(),
            name_grace: Duration::from_secs(self.name_grace_secs),
            reserved,
            dns_resolver: self.dns_resolver,
            domain_recheck: Duration::from_secs(self.domain_recheck_secs),
        })
    }
}

/// Reads `name key-label` lines (blank lines and `#` comments skipped).
pub fn parse_reservations(text: &str, keys: &ApiKeys) -> Result<Vec<(String, KeyId)>, String> {
    let mut out: Vec<(String, KeyId)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let n = i + 1;
        let mut words = line.split_whitespace();
        let (Some(name), Some(label), None) = (words.next(), words.next(), words.next()) else {
            return Err(format!("line {n}: expected `name key-label`"));
        };
        let name_ok = !name.is_empty()
            && name.len() <= 63
            && !name.starts_with('-')
            && !name.ends_with('-')
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !name_ok {
            return Err(format!("line {n}: {name:?} is not a lowercase DNS label"));
        }
        if SERVER_NAMES.contains(&name) {
            return Err(format!(
                "line {n}: {name:?} is one of the server's own paths"
            ));
        }
        let Some(key) = keys.by_label(label) else {
            return Err(format!(
                "line {n}: no API key is labelled {label:?} (write it as {label}:KEY in TUNNEL_API_KEYS)"
            ));
        };
        match out.iter().find(|(r, _)| r == name) {
            Some((_, k)) if *k != key => {
                return Err(format!(
                    "line {n}: {name:?} is reserved twice, for different keys"
                ))
            }
            Some(_) => {}
            None => out.push((name.to_string(), key)),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_name_labelled_keys() {
        let keys = ApiKeys::new(&["team:0123456789abcdef".into(), "fedcba9876543210".into()]);
        let r = parse_reservations("# names\nmyapp team\n\n docs  team # ours\n", &keys)
            .expect("valid");
        assert_eq!(r, [("myapp".to_string(), 0), ("docs".to_string(), 0)]);
        for (bad, says) in [
            ("myapp", "line 1: expected"),
            ("MyApp team", "not a lowercase DNS label"),
            ("myapp nobody", "no API key is labelled \"nobody\""),
            ("a team extra", "expected"),
            ("api team", "the server's own paths"),
        ] {
            let e = parse_reservations(bad, &keys).expect_err(bad);
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[derive(clap::Parser)]
    struct Only {
        #[command(flatten)]
        domains: DomainArgs,
    }

    fn validate(args: &[&str], dev: bool) -> Result<Domains, DomainSettingError> {
        use clap::Parser;
        let parsed =
            Only::try_parse_from(std::iter::once("t").chain(args.iter().copied())).expect("parses");
        parsed.domains.validate(dev, &ApiKeys::new(&[]))
    }

    #[test]
    fn dev_mode_defaults_to_subdomains_of_localhost() {
        let d = validate(&[], true).expect("valid");
        assert_eq!(d.domain.as_deref(), Some("localhost"));
        assert_eq!(d.url_style, UrlStyle::Subdomain);
        assert_eq!(d.name_grace, Duration::from_secs(86_400));
        assert!(d.blocked_names.iter().any(|n| n == "_acme-challenge"));
        let d = validate(&["--domain", "off"], true).expect("valid");
        assert_eq!((d.domain, d.url_style), (None, UrlStyle::Path));
        let d = validate(&[], false).expect("valid");
        assert_eq!((d.domain, d.url_style), (None, UrlStyle::Path));
        let d =
            validate(&["--domain", "T.Example.com", "--url-style", "PATH"], false).expect("valid");
        assert_eq!(
            (d.domain.as_deref(), d.url_style),
            (Some("t.example.com"), UrlStyle::Path)
        );
        let e = validate(&["--url-style", "subdomain"], false).expect_err("no domain");
        assert_eq!(e.setting, "TUNNEL_URL_STYLE");
    }

    #[test]
    fn resolvers_are_system_or_an_address() {
        assert_eq!(parse_resolver("system"), Ok(DnsResolver::System));
        assert_eq!(
            parse_resolver("127.0.0.1:5353"),
            Ok(DnsResolver::At("127.0.0.1:5353".parse().expect("addr")))
        );
        assert_eq!(
            parse_resolver("10.0.0.53"),
            Ok(DnsResolver::At("10.0.0.53:53".parse().expect("addr")))
        );
        assert!(parse_resolver("dns.example").is_err());
    }
}
