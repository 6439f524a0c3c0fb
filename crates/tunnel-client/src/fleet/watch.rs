//! What makes the client read its config file again: a change in the file's folder, or
//! SIGHUP.
//!
//! The folder is watched, not the file: an editor that saves by writing a new file and
//! renaming it over the old one replaces the inode a file watch would follow, and a
//! Kubernetes ConfigMap volume swaps its `..data` symlink to a new folder (the file itself,
//! `tunnel.toml -> ..data/tunnel.toml`, never changes). Any change in the folder is a reason to
//! read the file again; the reload compares what it reads with what runs, so a change to
//! another file of the folder costs one read and nothing else. Events come in bursts (a
//! write, then a close; a rename of a temporary file), so the caller debounces.

use std::path::{Path, PathBuf};

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// The watch; dropping it stops it.
pub(super) struct FolderWatch {
    _watcher: RecommendedWatcher,
}

/// The folders whose changes may change `path`: its own, and if `path` is a symlink, the
/// folder of the file it points to.
fn folders(path: &Path) -> Vec<PathBuf> {
    let parent = |p: &Path| match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut out = vec![parent(path)];
    if let Ok(real) = std::fs::canonicalize(path) {
        let real_dir = parent(&real);
        let same = std::fs::canonicalize(&out[0]).is_ok_and(|d| d == real_dir);
        if !same {
            out.push(real_dir);
        }
    }
    out
}

/// Watches the folders of `path`; each change sends on `changed` (a full channel means a
/// reload is already due, so nothing is lost by not sending).
pub(super) fn watch(path: &Path, changed: mpsc::Sender<()>) -> notify::Result<FolderWatch> {
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let relevant = match &event {
            // Opening and reading (ours included) change nothing; a close after writing does.
            Ok(e) => match e.kind {
                EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
                EventKind::Access(_) => false,
                _ => true,
            },
            // The watch lost events (queue overflow): read the file to be sure.
            Err(_) => true,
        };
        if relevant {
            // Full: a reload is already pending. Closed: the client is shutting down.
            let _ = changed.try_send(());
        }
    })?;
    for folder in folders(path) {
        watcher.watch(&folder, RecursiveMode::NonRecursive)?;
    }
    Ok(FolderWatch { _watcher: watcher })
}

/// SIGHUP, where there is one.
pub(super) struct Hangup {
    #[cfg(unix)]
    signal: Option<tokio::signal::unix::Signal>,
}

impl Hangup {
    /// Listens for SIGHUP (from now on it no longer ends the process).
    pub(super) fn register() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Self {
                signal: Some(signal(SignalKind::hangup())?),
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// Resolves at the next SIGHUP (never without signals).
    pub(super) async fn next(&mut self) {
        #[cfg(unix)]
        if let Some(s) = &mut self.signal {
            if s.recv().await.is_some() {
                return;
            }
            self.signal = None;
        }
        std::future::pending::<()>().await;
    }
}
