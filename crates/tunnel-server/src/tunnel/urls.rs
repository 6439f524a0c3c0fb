//! A tunnel's public URLs: under a path prefix (`https://tunnels.example.com/<id>/`), as a
//! subdomain (`https://<id>.tunnels.example.com/`), and on a custom domain; and which one
//! `public_url` shows (`TUNNEL_URL_STYLE`).

use crate::config::UrlStyle;

/// Builds every public URL from the base URL and `TUNNEL_DOMAIN`.
#[derive(Debug, Clone)]
pub struct PublicUrls {
    /// `https://tunnels.example.com`, without trailing slash.
    base: String,
    /// `https` or `http`.
    scheme: &'static str,
    /// `:8989` when the base URL names a port, empty otherwise: subdomains and custom
    /// domains are reached through the same port as the apex.
    port: String,
    domain: Option<String>,
    style: UrlStyle,
}

impl PublicUrls {
    /// URLs under `base` (`scheme://host[:port][/path]`), with subdomains of `domain`.
    pub fn new(base: &str, domain: Option<&str>, style: UrlStyle) -> Self {
        let base = base.trim_end_matches('/').to_string();
        let (scheme, rest) = match base.split_once("://") {
            Some(("https", rest)) => ("https", rest),
            Some((_, rest)) => ("http", rest),
            None => ("http", base.as_str()),
        };
        let authority = rest.split('/').next().unwrap_or(rest);
        let port = match authority.rsplit_once(':') {
            Some((host, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                // `[::1]:8989` has its port after the bracket; `[::1]` alone has none.
                if host.starts_with('[') && !host.ends_with(']') {
                    String::new()
                } else {
                    format!(":{p}")
                }
            }
            _ => String::new(),
        };
        Self {
            scheme,
            port,
            domain: domain.map(str::to_string),
            base,
            style,
        }
    }

    /// The base URL, without trailing slash.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `http` or `https`: the scheme the public uses.
    pub fn scheme(&self) -> &'static str {
        self.scheme
    }

    /// Which form [`Self::public_url`] gives.
    pub fn style(&self) -> UrlStyle {
        self.style
    }

    /// `https://tunnels.example.com/<id>/`.
    pub fn path_url(&self, id: &str) -> String {
        format!("{}/{id}/", self.base)
    }

    /// `https://<id>.tunnels.example.com/`, when `TUNNEL_DOMAIN` is set.
    pub fn subdomain_url(&self, id: &str) -> Option<String> {
        let domain = self.domain.as_deref()?;
        Some(format!("{}://{id}.{domain}{}/", self.scheme, self.port))
    }

    /// `https://app.mycompany.com/` for a custom domain.
    pub fn custom_url(&self, domain: &str) -> String {
        format!("{}://{domain}{}/", self.scheme, self.port)
    }

    /// The URL shown as `public_url`: the subdomain form when that is the style (and a
    /// domain is set), the path form otherwise.
    pub fn public_url(&self, id: &str) -> String {
        match self.style {
            UrlStyle::Subdomain => self.subdomain_url(id).unwrap_or_else(|| self.path_url(id)),
            UrlStyle::Path => self.path_url(id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_forms_keep_scheme_and_port() {
        let u = PublicUrls::new(
            "http://localhost:8989",
            Some("localhost"),
            UrlStyle::Subdomain,
        );
        assert_eq!(u.path_url("myapp"), "http://localhost:8989/myapp/");
        assert_eq!(
            u.subdomain_url("myapp").as_deref(),
            Some("http://myapp.localhost:8989/")
        );
        assert_eq!(u.public_url("myapp"), "http://myapp.localhost:8989/");
        assert_eq!(
            u.custom_url("app.example.org"),
            "http://app.example.org:8989/"
        );
        let u = PublicUrls::new(
            "https://tunnels.example.com/",
            Some("tunnels.example.com"),
            UrlStyle::Path,
        );
        assert_eq!(u.public_url("x"), "https://tunnels.example.com/x/");
        assert_eq!(
            u.subdomain_url("x").as_deref(),
            Some("https://x.tunnels.example.com/")
        );
        let u = PublicUrls::new("http://[::1]", None, UrlStyle::Path);
        assert_eq!(u.subdomain_url("x"), None);
        assert_eq!(u.custom_url("a.b"), "http://a.b/");
    }
}
