//! The server's control API, as the client uses it: create, status, delete.

use std::time::Duration;

use serde::Deserialize;

use crate::config::{AccessRequest, ServerUrl, TcpOptions};

/// A created tunnel.
#[derive(Debug, Clone, Deserialize)]
pub struct Created {
    /// Id.
    pub tunnel_id: String,
    /// Token to connect with.
    pub token: String,
    /// Public URL, in the form the server's TUNNEL_URL_STYLE picks.
    pub public_url: String,
    /// The path-prefix URL (absent from servers before subdomains).
    #[serde(default)]
    pub path_url: Option<String>,
    /// The subdomain URL, when the server has a TUNNEL_DOMAIN.
    #[serde(default)]
    pub subdomain_url: Option<String>,
    /// The custom domain asked for, and how to verify it.
    #[serde(default)]
    pub custom_domain: Option<CustomDomain>,
    /// When it expires (RFC 3339).
    pub expires_at: String,
    /// How to reach it, for a TCP tunnel.
    #[serde(default)]
    pub tcp: Option<TcpEndpoint>,
}

/// How a TCP tunnel is reached, as the server reports it on create.
#[derive(Debug, Clone, Deserialize)]
pub struct TcpEndpoint {
    /// The token that opens the front door, for consumers without the API key.
    pub access_token: String,
    /// The front door's WebSocket URL.
    pub connect_url: String,
    /// The public port, when the server has a range.
    #[serde(default)]
    pub port: Option<u16>,
    /// `host:port` of the public port.
    #[serde(default)]
    pub address: Option<String>,
}

impl Created {
    /// The tunnel's other URLs than `shown` (the banner's), each once.
    pub fn other_urls(&self, shown: &str) -> Vec<&str> {
        let mut urls: Vec<&str> = Vec::new();
        for url in [self.subdomain_url.as_deref(), self.path_url.as_deref()]
            .into_iter()
            .flatten()
        {
            if url != shown && !urls.contains(&url) {
                urls.push(url);
            }
        }
        urls
    }
}

/// A custom domain as the server reports it.
#[derive(Debug, Clone, Deserialize)]
pub struct CustomDomain {
    /// The domain.
    pub domain: String,
    /// Its URL.
    pub url: String,
    /// Whether it routes to the tunnel now.
    pub verified: bool,
    /// What the last check found (`pending`, `verified`, `missing`, `mismatch`, …).
    pub status: String,
    /// The TXT record to create.
    pub txt_name: String,
    /// The value it must hold.
    pub txt_value: String,
}

/// Why an API call failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The server could not be reached (connection refused, DNS, TLS…).
    #[error("cannot reach the server at {url}: {detail}")]
    Unreachable {
        /// Where we tried.
        url: String,
        /// The transport error.
        detail: String,
    },
    /// The API key was refused.
    #[error("the server rejected the API key (401): check --api-key / TUNNEL_API_KEY")]
    Unauthorized,
    /// The requested name is taken.
    #[error("the tunnel name is taken (409): {0}")]
    Conflict(String),
    /// The requested name is this key's tunnel, and a tunnel-client serves it now.
    #[error("{0}")]
    InUse(InUse),
    /// Any other refusal.
    #[error("the server refused ({status}): {message}")]
    Rejected {
        /// HTTP status.
        status: u16,
        /// The server's message.
        message: String,
    },
}

/// Talks to `/api/tunnels…`.
#[derive(Debug, Clone)]
pub struct ControlClient {
    http: reqwest::Client,
    base: String,
    api_key: String,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    #[serde(default)]
    code: String,
    message: String,
    #[serde(default)]
    connected_since: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(default)]
    client_addr: Option<String>,
}

/// The running client a create refused to replace (409 `tunnel_in_use`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InUse {
    /// The tunnel's name.
    pub name: String,
    /// Since when that client is connected.
    pub connected_since: Option<chrono::DateTime<chrono::Utc>>,
    /// From where.
    pub client_addr: Option<String>,
}

impl std::fmt::Display for InUse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "tunnel {} is served by another tunnel-client", self.name)?;
        if let Some(since) = self.connected_since {
            let local = since.with_timezone(&chrono::Local);
            let ago = crate::display::human_duration(
                (chrono::Utc::now() - since).to_std().unwrap_or_default(),
            );
            write!(
                f,
                ", connected since {} ({ago} ago)",
                local.format("%H:%M:%S")
            )?;
        }
        if let Some(addr) = &self.client_addr {
            write!(f, " from {addr}")?;
        }
        write!(f, "; stop it, or take the tunnel over with --force")
    }
}

/// What `POST /api/tunnels/create` asks for.
#[derive(Debug, Clone, Copy)]
pub struct CreateRequest<'a> {
    /// Requested id; random when `None`.
    pub name: Option<&'a str>,
    /// Lifetime; the server's default when `None`.
    pub ttl_secs: Option<u64>,
    /// Basic auth and IP lists.
    pub access: &'a AccessRequest,
    /// Custom domain.
    pub domain: Option<&'a str>,
    /// A TCP tunnel's options; `None` for HTTP.
    pub tcp: Option<&'a TcpOptions>,
    /// Take the name over from a running client.
    pub force: bool,
    /// Path-prefix requests keep their prefix.
    pub keep_prefix: bool,
}

impl ControlClient {
    /// A client for `server`.
    pub fn new(server: &ServerUrl, api_key: &str) -> Result<Self, ApiError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            .user_agent(concat!("tunnel-client/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ApiError::Unreachable {
                url: server.http_base.clone(),
                detail: e.to_string(),
            })?;
        Ok(Self {
            http,
            base: server.http_base.clone(),
            api_key: api_key.to_string(),
        })
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, ApiError> {
        let resp =
            req.bearer_auth(&self.api_key)
                .send()
                .await
                .map_err(|e| ApiError::Unreachable {
                    url: self.base.clone(),
                    detail: error_chain(&e),
                })?;
        let status = resp.status().as_u16();
        if resp.status().is_success() {
            return Ok(resp);
        }
        let detail = match resp.json::<ErrorBody>().await {
            Ok(b) => b.error,
            Err(_) => ErrorDetail {
                code: String::new(),
                message: "no details".into(),
                connected_since: None,
                client_addr: None,
            },
        };
        let message = detail.message;
        Err(match status {
            401 => ApiError::Unauthorized,
            409 if detail.code == "tunnel_in_use" => ApiError::InUse(InUse {
                name: String::new(),
                connected_since: detail.connected_since,
                client_addr: detail.client_addr,
            }),
            409 => ApiError::Conflict(message),
            _ => ApiError::Rejected { status, message },
        })
    }

    /// `POST /api/tunnels/create`; `force` takes the name over from a running client.
    pub async fn create(&self, req: CreateRequest<'_>) -> Result<Created, ApiError> {
        let CreateRequest {
            name,
            ttl_secs,
            access,
            domain,
            tcp,
            force,
            keep_prefix,
        } = req;
        let mut body = serde_json::json!({
            "name": name,
            "ttl_secs": ttl_secs,
            "basic_auth": access.basic_auth,
            "ip_allow": access.ip_allow,
            "ip_deny": access.ip_deny,
        });
        // Only when asked for: a server before custom domains refuses unknown fields.
        if let Some(d) = domain {
            body["domain"] = serde_json::Value::from(d);
        }
        if force {
            body["force"] = serde_json::Value::from(true);
        }
        if keep_prefix {
            body["keep_prefix"] = serde_json::Value::from(true);
        }
        if let Some(tcp) = tcp {
            body["proto"] = serde_json::Value::from("tcp");
            if let Some(port) = tcp.remote_port {
                body["tcp_port"] = serde_json::Value::from(port);
            }
        }
        let resp = match self
            .send(
                self.http
                    .post(format!("{}/api/tunnels/create", self.base))
                    .json(&body),
            )
            .await
        {
            Err(ApiError::InUse(mut in_use)) => {
                in_use.name = name.unwrap_or_default().to_string();
                return Err(ApiError::InUse(in_use));
            }
            other => other?,
        };
        resp.json::<Created>()
            .await
            .map_err(|e| ApiError::Rejected {
                status: 200,
                message: format!("unreadable create response: {e}"),
            })
    }

    /// `POST /api/tunnels/{id}/domain/verify`: has the server seen the TXT record now?
    pub async fn verify_domain(&self, id: &str) -> Result<CustomDomain, ApiError> {
        let resp = self
            .send(
                self.http
                    .post(format!("{}/api/tunnels/{id}/domain/verify", self.base)),
            )
            .await?;
        resp.json::<CustomDomain>()
            .await
            .map_err(|e| ApiError::Rejected {
                status: 200,
                message: format!("unreadable verify response: {e}"),
            })
    }

    /// Whether tunnel `id` exists (for this key).
    pub async fn exists(&self, id: &str) -> Result<bool, ApiError> {
        match self
            .send(
                self.http
                    .get(format!("{}/api/tunnels/{id}/status", self.base)),
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(ApiError::Rejected { status: 404, .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `DELETE /api/tunnels/{id}`; a tunnel already gone counts as deleted.
    pub async fn delete(&self, id: &str) -> Result<(), ApiError> {
        match self
            .send(self.http.delete(format!("{}/api/tunnels/{id}", self.base)))
            .await
        {
            Ok(_) | Err(ApiError::Rejected { status: 404, .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// An error and its causes on one line (reqwest's top-level message alone says little).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}
