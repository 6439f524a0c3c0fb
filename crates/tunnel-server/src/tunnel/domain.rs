//! A tunnel's custom domain (`tunnel-client --domain app.mycompany.com`): the name, the TXT
//! value that proves the key's owner controls it, and what the last DNS check found.
//!
//! Routing by the domain is the registry's ([`super::TunnelRegistry::bind_domain`]); the
//! DNS check itself is [`crate::dns`]'s. This is only the record the API shows.

use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::Serialize;

/// What the last check of a custom domain found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DomainStatus {
    /// Not checked yet.
    Pending,
    /// The TXT record holds the value: requests with this host reach the tunnel.
    Verified,
    /// No TXT record at `_tunnel.<domain>`.
    Missing,
    /// TXT records exist there, but none holds this key's value.
    Mismatch,
    /// The DNS lookup failed (timeout, server failure): the routing stays as it was.
    LookupFailed,
    /// Verified for another tunnel already.
    Taken,
}

#[derive(Debug, Clone, Copy)]
struct Check {
    status: DomainStatus,
    at: Option<DateTime<Utc>>,
    /// Whether the registry routes the domain to this tunnel.
    routed: bool,
}

/// A tunnel's custom domain.
#[derive(Debug)]
pub struct CustomDomain {
    /// The host, normalized (`app.mycompany.com`).
    pub name: String,
    /// The TXT value `_tunnel.<name>` must hold.
    pub expected: String,
    check: Mutex<Check>,
}

impl CustomDomain {
    /// A domain not checked yet.
    pub fn new(name: String, expected: String) -> Self {
        Self {
            name,
            expected,
            check: Mutex::new(Check {
                status: DomainStatus::Pending,
                at: None,
                routed: false,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Check> {
        // Never held across an await and nothing under it panics; recover from poison.
        self.check.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a check's outcome at `at`, and whether the domain is routed after it.
    pub fn record(&self, status: DomainStatus, routed: bool, at: DateTime<Utc>) {
        *self.lock() = Check {
            status,
            at: Some(at),
            routed,
        };
    }

    /// The last outcome, when it was found, and whether the domain is routed.
    pub fn state(&self) -> (DomainStatus, Option<DateTime<Utc>>, bool) {
        let c = *self.lock();
        (c.status, c.at, c.routed)
    }

    /// The name of the TXT record that proves the domain.
    pub fn record_name(&self) -> String {
        format!("_tunnel.{}", self.name)
    }
}
