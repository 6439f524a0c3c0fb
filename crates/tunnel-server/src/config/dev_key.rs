//! The dev-mode key kept across restarts (see [`tunnel_protocol::dev_key`] for why and where).
//!
//! Only the binary calls this: [`crate::config::Settings`] itself never touches the disk, so
//! tests and embedders that parse settings write nothing to the user's state directory.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use tunnel_protocol::dev_key;

/// A dev key and where it is kept.
#[derive(Debug, Clone)]
pub struct KeptKey {
    /// The key.
    pub key: String,
    /// Its file.
    pub path: PathBuf,
    /// Whether it was read from an earlier run (`false`: generated now and written).
    pub reused: bool,
}

/// Why the dev key could not be kept; the server then runs with a key of this run only.
#[derive(Debug, thiserror::Error)]
pub enum KeepError {
    /// No state directory: neither `XDG_STATE_HOME` nor a home directory is set.
    #[error("no state directory (set XDG_STATE_HOME or HOME)")]
    NoStateDir,
    /// The file exists but cannot be used.
    #[error("cannot use {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// The key kept in the default place, or `fresh` written there for the next run.
pub fn load_or_keep(fresh: &str) -> Result<KeptKey, KeepError> {
    let path = dev_key::default_path().ok_or(KeepError::NoStateDir)?;
    load_or_keep_at(&path, fresh)
}

/// [`load_or_keep`] at `path`.
pub fn load_or_keep_at(path: &Path, fresh: &str) -> Result<KeptKey, KeepError> {
    let read_error = |source| KeepError::Read {
        path: path.to_path_buf(),
        source,
    };
    if let Some(key) = dev_key::read(path).map_err(read_error)? {
        restrict(path).map_err(read_error)?;
        return Ok(KeptKey {
            key,
            path: path.to_path_buf(),
            reused: true,
        });
    }
    write_new(path, fresh).map_err(|source| KeepError::Write {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(KeptKey {
        key: fresh.to_string(),
        path: path.to_path_buf(),
        reused: false,
    })
}

/// Writes `key` to `path`, readable by the user only: into a temporary file created with mode
/// 0600 (never readable by others, not even for an instant), then renamed into place, so that
/// a server starting at the same moment reads either nothing or the whole key.
fn write_new(path: &Path, key: &str) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    create_private_dir(dir)?;
    let tmp = dir.join(format!(".{}.{}", dev_key::FILE_NAME, std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&tmp)?;
    file.write_all(format!("{key}\n").as_bytes())?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)
}

/// Creates the state directory (and its parents), the last one readable by the user only.
fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// A kept key that others can read is made private again (an editor or a copy may have
/// widened it).
fn restrict(path: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)?.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(path = %path.display(), "the dev key was readable by others; made it 0600");
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_key_is_written_private_and_read_back_next_time() {
        let dir = std::env::temp_dir().join(format!("tunnel-dev-key-{}", std::process::id()));
        let path = dir.join("state").join(dev_key::FILE_NAME);
        let first = load_or_keep_at(&path, "first-key-0123456789").expect("written");
        assert!(!first.reused);
        let second = load_or_keep_at(&path, "other-key-0123456789").expect("read");
        assert!(second.reused);
        assert_eq!(second.key, "first-key-0123456789");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path)
                .expect("exists")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))
                .expect("widened");
            load_or_keep_at(&path, "x").expect("read");
            let mode = std::fs::metadata(&path)
                .expect("exists")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "made private again");
        }
        std::fs::remove_dir_all(&dir).expect("cleaned up");
    }
}
