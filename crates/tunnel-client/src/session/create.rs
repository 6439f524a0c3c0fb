//! Creating the tunnel: retried quietly while the server cannot be reached (one line per
//! change of reason), given up on errors retrying cannot fix, and abandoned at once on
//! Ctrl-C. A name that this key's running client holds is refused by the server (409
//! `tunnel_in_use`, exit 75) unless `--force`; a name of this key whose client is gone (an
//! earlier run that crashed) is taken over: asked for again with `force`.

use tokio_util::sync::CancellationToken;

use super::backoff::{or_shutdown, pause, Backoff};
use super::error::ClientError;
use super::reach::Reach;
use crate::config::ClientConfig;
use crate::control::{ApiError, ControlClient, CreateRequest, Created};
use crate::display::Printer;

/// What a create needs beside its name.
pub(super) struct Creating<'a> {
    pub api: &'a ControlClient,
    pub cfg: &'a ClientConfig,
    pub printer: &'a Printer,
    pub backoff: &'a mut Backoff,
    pub reach: &'a mut Reach,
    pub shutdown: &'a CancellationToken,
}

impl Creating<'_> {
    /// Creates the tunnel `name` (random if `None`), retrying while the server is
    /// unreachable or restarting; `None` if shutdown came first.
    pub(super) async fn run(self, name: Option<&str>) -> Result<Option<Created>, ClientError> {
        let cfg = self.cfg;
        let base = cfg.server.http_base.as_str();
        let mut force = cfg.session.force;
        loop {
            let create = self.api.create(CreateRequest {
                name,
                ttl_secs: cfg.ttl_secs,
                access: &cfg.access,
                domain: cfg.domain.as_deref(),
                tcp: cfg.tcp.as_ref(),
                force,
                keep_prefix: cfg.keep_prefix,
            });
            let Some(result) = or_shutdown(self.shutdown, create).await else {
                return Ok(None);
            };
            match result {
                Ok(created) => {
                    self.reach.back(self.printer, base);
                    return Ok(Some(created));
                }
                Err(ApiError::Unreachable { detail, .. }) => {
                    let retry_forever = cfg.session.retry_forever;
                    let failed = self
                        .reach
                        .failed(self.printer, base, &detail, retry_forever);
                    if let Some((fatal, message)) = failed {
                        return Err(ClientError::Unreachable { fatal, message });
                    }
                }
                // A restarting server, or the proxy in front of one.
                Err(ApiError::Rejected {
                    status: status @ 502..=504,
                    message,
                }) => {
                    let line = format!("the server answers {status} ({message}); retrying…");
                    self.reach.say(self.printer, &status.to_string(), &line);
                }
                Err(ApiError::Conflict(message)) => match name {
                    _ if self.shutdown.is_cancelled() => return Ok(None),
                    Some(n) if !force && self.held_by_this_key(n).await? => {
                        self.printer.info(&format!(
                            "tunnel {n} is held by an earlier session of this key (no client \
                         connected); taking it over"
                        ));
                        force = true;
                        continue;
                    }
                    _ => return Err(ApiError::Conflict(message).into()),
                },
                Err(e) => return Err(e.into()),
            }
            if pause(self.backoff.next(), self.shutdown).await {
                return Ok(None);
            }
        }
    }

    /// Whether tunnel `name` is this key's (the status API answers only its owner); a
    /// shutdown meanwhile counts as no.
    async fn held_by_this_key(&self, name: &str) -> Result<bool, ClientError> {
        match or_shutdown(self.shutdown, self.api.exists(name)).await {
            Some(exists) => Ok(exists?),
            None => Ok(false),
        }
    }
}
