//! What a dev-mode server prints on start (part of the binary, not of the library): where it
//! listens, its API key and where that is kept, and the exact client command to run, with
//! how to get `tunnel-client` when it is not installed.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use tunnel_server::config::dev_key::{KeepError, KeptKey};
use tunnel_server::config::DEFAULT_PORT;
use tunnel_server::AppState;

/// How a user on this machine runs the client: `tunnel-client` when it is on `PATH`, else the
/// one built beside this server (`./target/release/tunnel-client`), else `None`.
fn client_command() -> Option<String> {
    const NAME: &str = if cfg!(windows) {
        "tunnel-client.exe"
    } else {
        "tunnel-client"
    };
    let on_path = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|dir| dir.join(NAME).is_file()));
    if on_path {
        return Some("tunnel-client".into());
    }
    let beside = std::env::current_exe().ok()?.parent()?.join(NAME);
    beside.is_file().then(|| shorten(&beside))
}

/// `path` relative to the working directory when it is under it (`./target/release/x`).
fn shorten(path: &Path) -> String {
    let relative = std::env::current_dir()
        .ok()
        .and_then(|cwd| path.strip_prefix(cwd).ok().map(PathBuf::from));
    match relative {
        Some(r) => format!("./{}", r.display()),
        None => path.display().to_string(),
    }
}

/// Prints the dev-mode banner.
pub(crate) fn print(
    state: &AppState,
    local: SocketAddr,
    listening: &[String],
    kept: &Result<KeptKey, KeepError>,
) {
    let key = state.settings.generated_key.as_deref().unwrap_or_default();
    let server = state
        .base_url
        .trim_start_matches("http://")
        .trim_start_matches("https://");
    println!();
    println!(
        "  Dev mode: no TUNNEL_API_KEYS set, so this server listens on {} only.",
        listening.join(" and ")
    );
    match kept {
        Ok(k) => {
            println!("  API key: {key}");
            println!(
                "    {} {} (readable by you only): restarts keep it, and clients stay connected.",
                if k.reused { "kept in" } else { "saved to" },
                k.path.display()
            );
        }
        Err(e) => {
            println!("  API key (this run only: {e}): {key}");
        }
    }
    if let Some(sub) = state.urls.subdomain_url("NAME") {
        println!(
            "  Tunnels answer at {sub} (and {}): *.localhost is loopback, no DNS needed.",
            state.urls.path_url("NAME")
        );
    }
    println!();
    println!("  Expose a local service on port 3000 with:");
    let command = client_command();
    let client = command.as_deref().unwrap_or("tunnel-client");
    println!("    {client} --server {server} --api-key {key} 3000");
    if kept.is_ok() {
        // The client reads the kept key by itself for a loopback server (and knows the port
        // when it is the default one).
        let short = if local.port() == DEFAULT_PORT {
            format!("{client} 3000")
        } else {
            format!("{client} --server {server} 3000")
        };
        println!("  or, on this machine, where it finds the key by itself:");
        println!("    {short}");
    }
    if command.is_none() {
        println!();
        println!("  No tunnel-client installed yet? From this repository:");
        println!("    cargo install --locked --path crates/tunnel-client");
        println!("  or run it without installing:");
        println!(
            "    cargo run --release -p tunnel-client -- --server {server} --api-key {key} 3000"
        );
    }
    println!();
}
