//! Who may take a name: the blocked list, names reserved for a key, and names still held by
//! the key whose tunnel had them (the grace period).
//!
//! # Ownership
//! A name belongs to the API key that created its tunnel while the tunnel lives (its client
//! may come and go), and for `TUNNEL_NAME_GRACE_SECS` after the tunnel is deleted or
//! expires: in that time another key gets 409, so nobody can pick up a URL that people still
//! have bookmarked or linked and serve them something else (localtunnel's takeover bug).
//! Random names are never handed out again within the grace period, to anyone. Reserved
//! names belong to their key for good.
//!
//! [`NameBook`] keeps the reservations and grace periods in memory for
//! [`super::MemoryRegistry`]. A shared registry keeps the grace periods in its store (the
//! Redis registry: a name record per name, decided in the script that creates or removes the
//! tunnel) and asks the book only for the rules that need no store, which every pod has from
//! the same configuration: the blocked list and the reservations ([`NameBook::check_rules`],
//! [`NameBook::may_issue_by_rules`]).
//!
//! Owners are [`KeyId`]s here, positions in this process's `TUNNEL_API_KEYS`: stable for the
//! process's life, which is all an in-memory book needs. What several processes share names
//! owners by the key's fingerprint instead ([`crate::auth::ApiKeys::fingerprint`]), the same
//! on every pod whatever the keys' order.

use std::collections::HashSet;
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, Utc};
use dashmap::DashMap;

use super::registry::{validate_name, CreateError};
use crate::auth::KeyId;

/// The rules that need no store: the blocked list and the grace period.
#[derive(Debug, Clone, Default)]
pub struct NamePolicy {
    /// Names nobody may take, unless reserved for their key (`TUNNEL_BLOCKED_NAMES`).
    pub blocked: HashSet<String>,
    /// How long a name stays with its key after its tunnel is gone.
    pub grace: std::time::Duration,
}

impl NamePolicy {
    /// A policy blocking `blocked` with a grace period of `grace`.
    pub fn new(blocked: impl IntoIterator<Item = String>, grace: std::time::Duration) -> Self {
        Self {
            blocked: blocked.into_iter().collect(),
            grace,
        }
    }

    /// The end of the grace period of a name released at `now`.
    pub fn grace_until(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now + chrono::Duration::from_std(self.grace).unwrap_or(chrono::Duration::days(1))
    }
}

/// What the rules that need no store say of a requested name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Reserved for the key asking: it may take the name whatever else holds it.
    ReservedForOwner,
    /// Neither blocked nor reserved: free unless a live tunnel or a grace period holds it.
    Open,
}

/// A name whose tunnel is gone, still its key's.
#[derive(Debug, Clone, Copy)]
struct Released {
    owner: KeyId,
    until: DateTime<Utc>,
}

/// Reservations and grace periods, in memory.
#[derive(Debug, Default)]
pub struct NameBook {
    policy: NamePolicy,
    reserved: DashMap<String, KeyId>,
    released: DashMap<String, Released>,
    /// When [`Self::sweep`] last walked `released` (Unix seconds): at most once a minute, as
    /// the reaper asks every second and the walk is over every held name.
    last_sweep: AtomicI64,
}

/// Seconds between walks over the grace entries.
const SWEEP_EVERY_SECS: i64 = 60;

impl NameBook {
    /// An empty book under `policy`.
    pub fn new(policy: NamePolicy) -> Self {
        Self {
            policy,
            ..Self::default()
        }
    }

    /// Reserves `name` for `owner` for good.
    pub fn reserve(&self, name: &str, owner: KeyId) -> Result<(), CreateError> {
        validate_name(name)?;
        self.reserved.insert(name.to_string(), owner);
        Ok(())
    }

    /// Whether `owner` may take the requested `name` as far as the blocked list and the
    /// reservations go (a live tunnel or a grace period is the caller's to check).
    pub fn check_rules(&self, name: &str, owner: KeyId) -> Result<Standing, CreateError> {
        validate_name(name)?;
        match self.reserved.get(name).map(|r| *r) {
            Some(holder) if holder == owner => return Ok(Standing::ReservedForOwner),
            Some(_) => return Err(CreateError::Reserved(name.to_string())),
            None => {}
        }
        if self.policy.blocked.contains(name) {
            return Err(CreateError::InvalidName(format!("{name:?} is blocked")));
        }
        Ok(Standing::Open)
    }

    /// Whether `owner` may take the requested `name` at `now` (a live tunnel of that name
    /// is the registry's to check).
    pub fn check_requested(
        &self,
        name: &str,
        owner: KeyId,
        now: DateTime<Utc>,
    ) -> Result<(), CreateError> {
        if self.check_rules(name, owner)? == Standing::ReservedForOwner {
            return Ok(());
        }
        match self.released.get(name).map(|r| *r) {
            Some(r) if r.owner != owner && r.until > now => {
                Err(CreateError::Held(name.to_string()))
            }
            _ => Ok(()),
        }
    }

    /// Whether a random `name` may be handed out as far as the rules go: not reserved, not
    /// blocked.
    pub fn may_issue_by_rules(&self, name: &str) -> bool {
        !self.reserved.contains_key(name) && !self.policy.blocked.contains(name)
    }

    /// Whether a random `name` may be handed out at `now`: not reserved, not blocked, not in
    /// anyone's grace period.
    pub fn may_issue(&self, name: &str, now: DateTime<Utc>) -> bool {
        self.may_issue_by_rules(name) && self.released.get(name).is_none_or(|r| r.until <= now)
    }

    /// Whether `name` is reserved (for whichever key): such a name has no grace period, it is
    /// its key's for good.
    pub fn is_reserved(&self, name: &str) -> bool {
        self.reserved.contains_key(name)
    }

    /// The blocked list and the grace period.
    pub fn policy(&self) -> &NamePolicy {
        &self.policy
    }

    /// `owner`'s tunnel `name` is gone at `now`: the grace period begins.
    pub fn release(&self, name: &str, owner: KeyId, now: DateTime<Utc>) {
        if self.policy.grace.is_zero() || self.is_reserved(name) {
            return;
        }
        let until = self.policy.grace_until(now);
        self.released
            .insert(name.to_string(), Released { owner, until });
    }

    /// `owner` took `name` again: its grace entry is no longer needed.
    pub fn taken(&self, name: &str, owner: KeyId) {
        self.released.remove_if(name, |_, r| r.owner == owner);
    }

    /// Forgets grace periods over at `now` (at most once a minute; an entry past its end
    /// already counts as free meanwhile); returns how many.
    pub fn sweep(&self, now: DateTime<Utc>) -> usize {
        let last = self.last_sweep.load(Ordering::Relaxed);
        let due = now.timestamp() >= last + SWEEP_EVERY_SECS;
        if !due
            || self
                .last_sweep
                .compare_exchange(last, now.timestamp(), Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return 0;
        }
        let before = self.released.len();
        self.released.retain(|_, r| r.until > now);
        before - self.released.len()
    }

    /// How many names are in a grace period.
    pub fn held(&self) -> usize {
        self.released.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn book() -> NameBook {
        NameBook::new(NamePolicy::new(
            ["www".to_string(), "app".to_string()],
            Duration::from_secs(3600),
        ))
    }

    #[test]
    fn grace_keeps_a_name_for_its_key_only_until_it_ends() {
        let b = book();
        let t0 = Utc::now();
        b.release("demo", 1, t0);
        assert!(matches!(
            b.check_requested("demo", 2, t0),
            Err(CreateError::Held(_))
        ));
        assert!(b.check_requested("demo", 1, t0).is_ok());
        assert!(!b.may_issue("demo", t0));
        let later = t0 + chrono::Duration::seconds(3601);
        assert!(b.check_requested("demo", 2, later).is_ok());
        assert!(b.may_issue("demo", later));
        assert_eq!(b.sweep(later), 1);
        assert_eq!(b.held(), 0);
    }

    #[test]
    fn reservations_beat_the_blocked_list_for_their_key() {
        let b = book();
        let now = Utc::now();
        assert!(matches!(
            b.check_requested("www", 0, now),
            Err(CreateError::InvalidName(_))
        ));
        b.reserve("app", 7).expect("valid");
        assert!(b.check_requested("app", 7, now).is_ok());
        assert!(matches!(
            b.check_requested("app", 0, now),
            Err(CreateError::Reserved(_))
        ));
        assert!(!b.may_issue("app", now));
        // The server's own paths can never be reserved.
        assert!(b.reserve("api", 7).is_err());
    }
}
