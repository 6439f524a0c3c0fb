//! Where a dev-mode server keeps its generated API key, known to both sides.
//!
//! A server started without `TUNNEL_API_KEYS` (dev mode) generates a key. If that key changed
//! on every restart, every connected client would be refused (exit 77) after each restart of
//! the server. So the server keeps it in a file in the user's state directory, readable by
//! the user only, and uses it again on the next start; a `tunnel-client` on the same machine
//! pointed at a loopback server with no key given reads it from there too. The server writes
//! the file (`tunnel-server`'s `config::dev_key`); this module only says where it is and how
//! to read it, the part both sides need.
//!
//! The state directory is `$XDG_STATE_HOME/tunnel` when that is set (absolute), otherwise the
//! platform's: `~/.local/state/tunnel` on Linux and other Unix systems,
//! `~/Library/Application Support/tunnel` on macOS, `%LOCALAPPDATA%\tunnel` on Windows.

use std::io;
use std::path::{Path, PathBuf};

/// Name of the file, inside the state directory.
pub const FILE_NAME: &str = "dev-api-key";

/// The port a dev-mode server listens on by default (on 127.0.0.1 and ::1), which a client
/// given a loopback server without a port assumes.
pub const DEFAULT_PORT: u16 = 8989;

/// Fewest characters a kept key must have to be used (the server's rule for every key).
pub const MIN_KEY_LEN: usize = 16;

/// The directory the dev key lives in; `None` when neither `XDG_STATE_HOME` nor a home
/// directory is known.
pub fn state_dir() -> Option<PathBuf> {
    state_dir_from(&|name| std::env::var_os(name).map(PathBuf::from))
}

/// [`state_dir`] with the environment given, for tests.
fn state_dir_from(env: &dyn Fn(&str) -> Option<PathBuf>) -> Option<PathBuf> {
    // The XDG base directory spec: a relative value is invalid and ignored.
    if let Some(dir) = env("XDG_STATE_HOME").filter(|d| d.is_absolute()) {
        return Some(dir.join("tunnel"));
    }
    if cfg!(windows) {
        return env("LOCALAPPDATA").map(|d| d.join("tunnel"));
    }
    let home = env("HOME").filter(|h| h.is_absolute())?;
    if cfg!(target_os = "macos") {
        Some(home.join("Library/Application Support/tunnel"))
    } else {
        Some(home.join(".local/state/tunnel"))
    }
}

/// The dev key's file: [`FILE_NAME`] in [`state_dir`].
pub fn default_path() -> Option<PathBuf> {
    state_dir().map(|d| d.join(FILE_NAME))
}

/// The key kept at `path`: `Ok(None)` when there is no file, an error when it cannot be read
/// or does not hold a usable key (one line of at least [`MIN_KEY_LEN`] printable characters).
pub fn read(path: &Path) -> io::Result<Option<String>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let key = text.trim();
    let usable = key.len() >= MIN_KEY_LEN && key.bytes().all(|b| b.is_ascii_graphic());
    if !usable {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} does not hold a usable key (one line of at least {MIN_KEY_LEN} characters)",
                path.display()
            ),
        ));
    }
    Ok(Some(key.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<PathBuf> + 'a {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| PathBuf::from(v))
        }
    }

    #[test]
    fn xdg_state_home_wins_when_absolute() {
        let dir = state_dir_from(&env(&[("XDG_STATE_HOME", "/s"), ("HOME", "/h")]));
        assert_eq!(dir, Some(PathBuf::from("/s/tunnel")));
        let dir = state_dir_from(&env(&[("XDG_STATE_HOME", "rel"), ("HOME", "/h")]));
        if cfg!(unix) && !cfg!(target_os = "macos") {
            assert_eq!(dir, Some(PathBuf::from("/h/.local/state/tunnel")));
        }
        if cfg!(unix) {
            assert_eq!(state_dir_from(&env(&[])), None);
        }
    }

    #[test]
    fn a_kept_key_is_read_back_and_a_broken_one_refused() {
        let dir = std::env::temp_dir().join(format!("dev-key-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join(FILE_NAME);
        assert!(read(&path).expect("no file is fine").is_none());
        std::fs::write(&path, "0123456789abcdef0123\n").expect("written");
        assert_eq!(
            read(&path).expect("readable").as_deref(),
            Some("0123456789abcdef0123")
        );
        std::fs::write(&path, "short\n").expect("written");
        assert_eq!(
            read(&path).expect_err("too short").kind(),
            io::ErrorKind::InvalidData
        );
        std::fs::remove_dir_all(&dir).expect("cleaned up");
    }
}
