//! Many tunnels from the config file (`tunnel-client start`): one session each, one banner
//! for all, and the file followed while it runs.
//!
//! # One connection per tunnel
//! The protocol binds a connection to one tunnel: the WebSocket is opened on
//! `/api/tunnel/connect/<id>` with that tunnel's token, and the server's registry keeps one
//! connection per tunnel. Sharing a connection would need a new handshake (several tunnels,
//! several tokens) and a tunnel id on every stream, on both sides; instead each tunnel runs
//! the same [`crate::session`] as a one-off tunnel, on the same thread, and a failing one
//! (its name taken, its server unreachable) stops only itself. The cost is one WebSocket, one
//! HTTP client and a few tasks per tunnel (README "Config file" has the measured figure).
//!
//! # Reload
//! On a change of the file's folder (debounced) or SIGHUP the file is read again
//! ([`crate::file::load`]) and its tunnels compared by name with those running: added ones
//! start, removed ones stop (and are deleted on the server), changed ones stop and start again
//! once stopped, unchanged ones are not touched (their connections and streams go on). A
//! tunnel that had failed is started again. A file that does not load changes nothing.

mod watch;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::{mpsc, watch as status_watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::display::{BannerRow, Printer};
use crate::file::{self, Overrides, TunnelSet, TunnelSpec};
use crate::session::{self, ClientError, Status};

/// Which tunnels of the file run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// All of them, those added later included (`start --all`).
    All,
    /// These names (`start web api`).
    Names(Vec<String>),
}

impl Selection {
    fn wants(&self, name: &str) -> bool {
        match self {
            Selection::All => true,
            Selection::Names(n) => n.iter().any(|n| n == name),
        }
    }
}

/// How `start` runs.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    /// The config file.
    pub path: PathBuf,
    /// What the command line sets over it.
    pub overrides: Overrides,
    /// Which tunnels.
    pub selection: Selection,
    /// Whether to watch the file (SIGHUP reloads it either way).
    pub watch: bool,
    /// How long a burst of file changes must be quiet before the file is read.
    pub debounce: Duration,
}

/// Why `start` cannot begin.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Names on the command line that the file does not have.
    #[error("{path}: no tunnel named {names}")]
    UnknownNames {
        /// The file.
        path: String,
        /// The names, comma-separated.
        names: String,
    },
}

/// What a tunnel's supervisor tells the fleet.
enum Event {
    Status {
        name: String,
        generation: u64,
        status: Status,
    },
    Ended {
        name: String,
        generation: u64,
        result: Result<(), ClientError>,
    },
}

/// How far a tunnel is.
#[derive(Debug, Clone)]
enum State {
    Starting,
    Online {
        url: String,
        inspector: Option<String>,
    },
    Reconnecting(String),
    Failed(String),
}

/// One tunnel of the fleet (running, stopping or failed).
struct Slot {
    spec: TunnelSpec,
    /// Which start this is: events of an earlier one are ignored.
    generation: u64,
    stop: CancellationToken,
    running: bool,
    state: State,
    /// Settings to start with once the running session has stopped (a changed tunnel).
    next: Option<TunnelSpec>,
    /// Stopping because the file no longer has it.
    removed: bool,
    announced: bool,
}

/// The running fleet.
struct Fleet {
    opts: FleetOptions,
    printer: Printer,
    slots: HashMap<String, Slot>,
    /// The selected tunnels' names in file order (for the banner).
    order: Vec<String>,
    generations: u64,
    events: mpsc::Sender<Event>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
    banner_printed: bool,
}

/// Checks that the names asked for are in `set`.
pub fn check_selection(set: &TunnelSet, selection: &Selection) -> Result<(), StartError> {
    let Selection::Names(names) = selection else {
        return Ok(());
    };
    let missing: Vec<&str> = names
        .iter()
        .filter(|n| !set.tunnels.iter().any(|t| &t.name == *n))
        .map(String::as_str)
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(StartError::UnknownNames {
            path: set.path.display().to_string(),
            names: missing.join(", "),
        })
    }
}

/// How long the banner waits for every tunnel to be online (or to have failed) before it is
/// printed with those still connecting.
const BANNER_WAIT: Duration = Duration::from_secs(10);

/// Runs the tunnels of `set` chosen by `opts.selection` until `shutdown`, following the file;
/// then stops them all (each lets its requests finish and deletes its tunnel).
pub async fn run(
    opts: FleetOptions,
    set: TunnelSet,
    printer: Printer,
    shutdown: CancellationToken,
) {
    let (events, mut received) = mpsc::channel(64);
    let mut fleet = Fleet {
        opts,
        printer,
        slots: HashMap::new(),
        order: Vec::new(),
        generations: 0,
        events,
        tasks: TaskTracker::new(),
        shutdown,
        banner_printed: false,
    };
    let mut hangup = watch::Hangup::register()
        .map_err(|e| {
            fleet
                .printer
                .warn(&format!("SIGHUP will not reload the file: {e}"))
        })
        .ok();
    let (changed_tx, mut changed) = mpsc::channel(1);
    let _watch = fleet.opts.watch.then(|| {
        watch::watch(&fleet.opts.path, changed_tx)
            .map_err(|e| {
                let path = fleet.opts.path.display();
                let msg = format!("cannot watch {path} ({e}); send SIGHUP to reload it");
                fleet.printer.warn(&msg)
            })
            .ok()
    });
    fleet.apply(set, false);
    let banner_deadline = tokio::time::sleep(BANNER_WAIT);
    tokio::pin!(banner_deadline);
    let mut reload_at: Option<Instant> = None;
    loop {
        if !fleet.banner_printed && fleet.settled() {
            fleet.print_banner();
        }
        tokio::select! {
            () = fleet.shutdown.cancelled() => break,
            Some(event) = received.recv() => fleet.on_event(event),
            Some(()) = changed.recv() => {
                reload_at = Some(Instant::now() + fleet.opts.debounce);
            }
            () = async { if let Some(h) = hangup.as_mut() { h.next().await } else { std::future::pending().await } } => {
                fleet.printer.info("SIGHUP: reading the config file again");
                fleet.reload(true);
            }
            () = sleep_until(reload_at) => {
                reload_at = None;
                fleet.reload(false);
            }
            () = &mut banner_deadline, if !fleet.banner_printed => fleet.print_banner(),
        }
    }
    fleet.stop_all(received).await;
}

/// Sleeps until `at`; forever without one.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Fleet {
    /// Reads the file again and follows it; keeps everything if it does not load.
    fn reload(&mut self, asked: bool) {
        match file::load(&self.opts.path, &self.opts.overrides) {
            Ok(set) => self.apply(set, asked),
            Err(e) => self.printer.warn(&format!(
                "config file not reloaded, the running tunnels stay as they are:\n{e}"
            )),
        }
    }

    /// Starts, stops and restarts tunnels so that the selected ones of `set` run.
    fn apply(&mut self, set: TunnelSet, asked: bool) {
        let wanted: Vec<TunnelSpec> = set
            .tunnels
            .into_iter()
            .filter(|t| self.opts.selection.wants(&t.name))
            .collect();
        if let Selection::Names(names) = &self.opts.selection {
            for n in names
                .iter()
                .filter(|n| !wanted.iter().any(|t| &t.name == *n))
            {
                self.printer
                    .warn(&format!("the config file has no tunnel {n:?} now"));
            }
        }
        let mut changes = Vec::new();
        let gone: Vec<String> = self
            .slots
            .iter()
            .filter(|(name, slot)| !slot.removed && !wanted.iter().any(|t| &&t.name == name))
            .map(|(name, _)| name.clone())
            .collect();
        for name in gone {
            changes.push(format!("removing {name}"));
            self.remove(&name);
        }
        for spec in &wanted {
            if let Some(change) = self.want(spec.clone()) {
                changes.push(change);
            }
        }
        self.order = wanted.into_iter().map(|t| t.name).collect();
        if !changes.is_empty() && self.banner_printed {
            self.printer
                .info(&format!("config reloaded: {}", changes.join(", ")));
        } else if asked && changes.is_empty() {
            self.printer.info("config reloaded: no change");
        }
    }

    /// Makes `spec` run; says what changed, if anything.
    fn want(&mut self, spec: TunnelSpec) -> Option<String> {
        let name = spec.name.clone();
        let Some(slot) = self.slots.get_mut(&name) else {
            self.start(spec);
            return Some(format!("starting {name}"));
        };
        let target = slot.next.as_ref().unwrap_or(&slot.spec);
        if slot.running {
            if slot.removed || target != &spec {
                slot.removed = false;
                slot.next = Some(spec);
                slot.stop.cancel();
                return Some(format!("re-registering {name}"));
            }
            return None;
        }
        // Not running: it had failed (or stopped); start it again, with its new settings.
        self.start(spec);
        Some(format!("starting {name} again"))
    }

    /// Stops a tunnel the file no longer has.
    fn remove(&mut self, name: &str) {
        let Some(slot) = self.slots.get_mut(name) else {
            return;
        };
        if slot.running {
            slot.removed = true;
            slot.next = None;
            slot.stop.cancel();
        } else {
            self.slots.remove(name);
        }
    }

    /// Starts a session for `spec` (replacing any slot of its name, which is not running).
    fn start(&mut self, spec: TunnelSpec) {
        self.generations += 1;
        let generation = self.generations;
        let stop = self.shutdown.child_token();
        let name = spec.name.clone();
        let slot = Slot {
            spec: spec.clone(),
            generation,
            stop: stop.clone(),
            running: true,
            state: State::Starting,
            next: None,
            removed: false,
            announced: false,
        };
        let printer = self.printer.for_tunnel(&name);
        let span = tracing::info_span!("tunnel", name = %name, generation);
        let events = self.events.clone();
        self.tasks.spawn(
            supervise(name.clone(), generation, spec.config, printer, stop, events)
                .instrument(span),
        );
        self.slots.insert(name, slot);
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Status {
                name,
                generation,
                status,
            } => {
                let Some(slot) = self
                    .slots
                    .get_mut(&name)
                    .filter(|s| s.generation == generation)
                else {
                    return;
                };
                slot.state = match status {
                    Status::Starting => State::Starting,
                    Status::Online {
                        public_url,
                        inspector,
                        ..
                    } => State::Online {
                        url: public_url,
                        inspector,
                    },
                    Status::Reconnecting { reason } => State::Reconnecting(reason),
                };
                if let (State::Online { url, .. }, false) = (&slot.state, slot.announced) {
                    slot.announced = true;
                    if self.banner_printed {
                        let line = format!("online: {url} -> {}", local_url(&slot.spec));
                        self.printer.for_tunnel(&name).info(&line);
                    }
                }
            }
            Event::Ended {
                name,
                generation,
                result,
            } => self.ended(&name, generation, result),
        }
    }

    /// A session ended: start its successor, forget it, or say why it failed.
    fn ended(&mut self, name: &str, generation: u64, result: Result<(), ClientError>) {
        let Some(slot) = self
            .slots
            .get_mut(name)
            .filter(|s| s.generation == generation)
        else {
            return;
        };
        slot.running = false;
        if let Some(next) = slot.next.take() {
            self.start(next);
        } else if slot.removed {
            self.slots.remove(name);
            self.printer.info(&format!("tunnel {name} removed"));
        } else {
            let why = match result {
                Ok(()) => "stopped".to_string(),
                Err(e) => e.to_string(),
            };
            self.printer
                .for_tunnel(name)
                .warn(&format!("stopped: {why} (the other tunnels go on)"));
            slot.state = State::Failed(why);
        }
    }

    /// Whether every selected tunnel is online or has failed.
    fn settled(&self) -> bool {
        self.slots
            .values()
            .all(|s| !matches!(s.state, State::Starting))
    }

    fn print_banner(&mut self) {
        self.banner_printed = true;
        let targets: Vec<(String, Option<String>, Option<String>)> = self
            .order
            .iter()
            .filter_map(|n| self.slots.get(n))
            .map(|s| {
                let local = local_url(&s.spec);
                match &s.state {
                    State::Online { url, inspector } => {
                        (local, Some(url.clone()), inspector.clone())
                    }
                    State::Starting => ("connecting...".into(), None, None),
                    State::Reconnecting(why) => (format!("reconnecting ({why})"), None, None),
                    State::Failed(why) => (format!("failed: {why}"), None, None),
                }
            })
            .collect();
        let rows: Vec<BannerRow<'_>> = self
            .order
            .iter()
            .zip(&targets)
            .map(|(name, (target, url, inspector))| BannerRow {
                name,
                url: url.as_deref(),
                target,
                inspector: inspector.as_deref(),
            })
            .collect();
        self.printer.banner(&rows);
    }

    /// Shutdown: every session stops (they were given child tokens of `shutdown`); events are
    /// taken meanwhile so that no session waits on a full channel.
    async fn stop_all(self, mut received: mpsc::Receiver<Event>) {
        self.tasks.close();
        let done = self.tasks.wait();
        tokio::pin!(done);
        loop {
            tokio::select! {
                () = &mut done => break,
                Some(event) = received.recv() => {
                    if let Event::Ended { name, result: Err(e), .. } = event {
                        self.printer.for_tunnel(&name).warn(&format!("stopped: {e}"));
                    }
                }
            }
        }
    }
}

/// Runs one tunnel's session and reports its status and its end.
async fn supervise(
    name: String,
    generation: u64,
    cfg: crate::config::ClientConfig,
    printer: Printer,
    stop: CancellationToken,
    events: mpsc::Sender<Event>,
) {
    let (tx, mut rx) = status_watch::channel(Status::Starting);
    let session = session::run_as(cfg, printer, stop, tx);
    tokio::pin!(session);
    let result = loop {
        tokio::select! {
            result = &mut session => break result,
            Ok(()) = rx.changed() => {
                let status = rx.borrow_and_update().clone();
                let event = Event::Status { name: name.clone(), generation, status };
                if events.send(event).await.is_err() {
                    tracing::debug!("the fleet is gone");
                }
            }
        }
    };
    if let Err(e) = &result {
        // The user sees it through the fleet's printer; this is for RUST_LOG.
        tracing::debug!(error = %e, "tunnel stopped");
    }
    let event = Event::Ended {
        name,
        generation,
        result,
    };
    if events.send(event).await.is_err() {
        tracing::debug!("the fleet is gone");
    }
}

/// Where a tunnel forwards to, as the banner shows it: `http://HOST:PORT`, or
/// `tcp://HOST:PORT` for a TCP tunnel.
fn local_url(spec: &TunnelSpec) -> String {
    let scheme = match spec.proto {
        crate::file::Proto::Tcp => "tcp",
        crate::file::Proto::Http => "http",
    };
    format!("{scheme}://{}", spec.config.local_authority())
}
