//! Where the server and the API key of a tunnel started from the command line come from
//! (`tunnel-client 3000`, `tunnel-client http 3000`, `tunnel-client tcp 5432`), in this order:
//! the flags, the environment (`TUNNEL_SERVER`, `TUNNEL_API_KEY`, a `.env`), the config
//! file's `[client]` table, and, for a server on this machine, the key a dev server keeps in
//! its state file (`tunnel_protocol::dev_key`). With none of them a dev server on this
//! machine is assumed (`localhost:8989`).
//!
//! The client says in one line each where the server and the key came from, and why the
//! server's scheme is what it is; and, when a local server refuses the key, where a dev
//! server keeps its key.

use std::fmt;
use std::path::{Path, PathBuf};

use tunnel_protocol::dev_key;

use crate::config::{ExplainedServer, ServerArgs, ServerUrl};
use crate::file::{self, FileErrors};

/// Where a value given before the config file came from, as clap saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Given {
    /// Not given.
    No,
    /// A flag on the command line.
    Flag,
    /// The environment (or `.env`).
    Env,
}

/// Where the server came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerFrom {
    /// `--server` or `TUNNEL_SERVER`.
    Given(Given),
    /// The config file's `[client] server`.
    File(PathBuf),
    /// Nothing anywhere: a dev server on this machine.
    Default,
}

/// Where the key came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyFrom {
    /// `--api-key` or `TUNNEL_API_KEY`.
    Given(Given),
    /// The config file's `[client] api_key` (or `api_key_file`).
    File(PathBuf),
    /// The key a dev server on this machine keeps.
    DevKey(PathBuf),
}

/// The server and key filled in, and where they came from.
#[derive(Debug, Clone)]
pub struct Filled {
    /// The server and why its scheme.
    pub server: ExplainedServer,
    /// Where the server came from.
    pub server_from: ServerFrom,
    /// Where the key came from.
    pub key_from: KeyFrom,
}

/// Why the server or key cannot be filled in (exit status 64).
#[derive(Debug, thiserror::Error)]
pub enum SourcesError {
    /// `--server` / `TUNNEL_SERVER` / `[client] server` is not a server address.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The config file is broken.
    #[error(transparent)]
    File(#[from] FileErrors),
    /// A dev server's key file exists but cannot be used.
    #[error("cannot use the dev server's key: {0}")]
    DevKey(std::io::Error),
    /// No key anywhere.
    #[error(
        "no API key: give --api-key KEY (or TUNNEL_API_KEY, or [client] api_key in {file}){}",
        dev_key_note(.dev_key.as_deref())
    )]
    NoKey {
        /// The config file, as named.
        file: String,
        /// Where a dev server's key was looked for (a local server only).
        dev_key: Option<PathBuf>,
    },
}

fn dev_key_note(path: Option<&Path>) -> String {
    path.map_or(String::new(), |p| {
        format!(
            "; a dev server on this machine keeps its key in {}, which does not exist (yet)",
            p.display()
        )
    })
}

/// Fills in `args.server` and `args.api_key` where the command line and environment left
/// them out; `server` and `key` say how clap got those it did have.
pub fn fill(args: &mut ServerArgs, server: Given, key: Given) -> Result<Filled, SourcesError> {
    let explicit = args.file.config.clone();
    let path = explicit.clone().or_else(file::default_path);
    let values = match &path {
        _ if args.server.is_some() && args.api_key.is_some() => file::ClientValues::default(),
        Some(p) if explicit.is_some() || p.is_file() => file::client_values(p)?,
        _ => file::ClientValues::default(),
    };
    let file_name = path
        .as_ref()
        .map_or("the config file".into(), |p| p.display().to_string());
    let from_file = |p: &Option<PathBuf>| p.clone().unwrap_or_default();
    let (text, server_from) = match (args.server.take(), values.server) {
        (Some(s), _) => (s, ServerFrom::Given(server)),
        (None, Some(s)) => (s, ServerFrom::File(from_file(&path))),
        (None, None) if args.api_key.is_none() && values.api_key.is_none() => {
            ("localhost".to_string(), ServerFrom::Default)
        }
        (None, None) => {
            return Err(crate::config::ConfigError::NoServer(file_name).into());
        }
    };
    let explained = ServerUrl::parse_explained(&text).map_err(crate::config::ConfigError::from)?;
    let (api_key, key_from) = match (args.api_key.take(), values.api_key) {
        (Some(k), _) => (k, KeyFrom::Given(key)),
        (None, Some(k)) => (k, KeyFrom::File(from_file(&path))),
        (None, None) => dev_server_key(&explained.url, file_name)?,
    };
    args.server = Some(explained.url.http_base.clone());
    args.api_key = Some(api_key);
    Ok(Filled {
        server: explained,
        server_from,
        key_from,
    })
}

/// The key a dev server on this machine keeps, for a local server.
fn dev_server_key(server: &ServerUrl, file: String) -> Result<(String, KeyFrom), SourcesError> {
    let path = server.is_local().then(dev_key::default_path).flatten();
    if let Some(path) = &path {
        if let Some(key) = dev_key::read(path).map_err(SourcesError::DevKey)? {
            return Ok((key, KeyFrom::DevKey(path.clone())));
        }
    }
    Err(SourcesError::NoKey {
        file,
        dev_key: path,
    })
}

impl Filled {
    /// The lines the client prints before it starts: the server, then the key.
    pub fn lines(&self) -> [String; 2] {
        [self.server_line(), self.key_line()]
    }

    fn server_line(&self) -> String {
        match &self.server_from {
            ServerFrom::Given(_) => self.server.to_string(),
            ServerFrom::File(p) => format!("{} from {}", self.server, p.display()),
            ServerFrom::Default => format!(
                "server: {} (none given: a dev server on this machine)",
                self.server.url.http_base
            ),
        }
    }

    fn key_line(&self) -> String {
        match &self.key_from {
            KeyFrom::Given(Given::Flag) => "api key: from --api-key".into(),
            KeyFrom::Given(_) => "api key: from TUNNEL_API_KEY".into(),
            KeyFrom::File(p) => format!("api key: from [client] in {}", p.display()),
            KeyFrom::DevKey(p) => format!("api key: the dev server's, from {}", p.display()),
        }
    }

    /// What to add when the server refused the key (401), for a server on this machine.
    pub fn unauthorized_hint(&self) -> Option<String> {
        if !self.server.url.is_local() {
            return None;
        }
        let path = dev_key::default_path()?;
        let shown = path.display();
        Some(match &self.key_from {
            KeyFrom::DevKey(_) => format!(
                "the dev server's key kept in {shown} was refused: this server was started \
                 with other keys (TUNNEL_API_KEYS, or another XDG_STATE_HOME); give --api-key"
            ),
            _ => format!(
                "a dev server (no TUNNEL_API_KEYS) keeps its key in {shown}, across restarts: \
                 read it with `cat {shown}`, or leave out --api-key and the client reads it there"
            ),
        })
    }
}

impl fmt::Display for Filled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [server, key] = self.lines();
        write!(f, "{server}\n{key}")
    }
}
