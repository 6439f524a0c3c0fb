//! The config file end to end: the real `tunnel-client` binary (`start --all`, `config
//! check`) against a real server on port 0. Every wait polls with a deadline; the client's
//! output is read as it comes.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::process::Command;
use tunnel_e2e::backend::Backend;
use tunnel_e2e::process::Running;
use tunnel_e2e::{eventually, workspace_bin, TestServer, API_KEY};

/// A folder of its own for one test, empty.
fn scratch(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("config-file")
        .join(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `[client]` for `server`, then one `[[tunnels]]` entry per `(name, backend, extra lines)`.
fn file_text(server: &TestServer, tunnels: &[(&str, &Backend, &str)]) -> String {
    let mut s = format!(
        "[client]\nserver = \"{}\"\napi_key = \"${{CONFIG_TEST_KEY}}\"\n",
        server.addr
    );
    for (name, backend, extra) in tunnels {
        s.push_str(&format!(
            "\n[[tunnels]]\nname = \"{name}\"\nlocal = \"127.0.0.1:{}\"\n{extra}\n",
            backend.addr.port()
        ));
    }
    s
}

/// The client binary with none of the test's own `TUNNEL_*` settings.
fn client_command(args: &[&str]) -> Command {
    let mut c = Command::new(workspace_bin("tunnel-client"));
    for (k, _) in std::env::vars() {
        if k.starts_with("TUNNEL_") {
            c.env_remove(k);
        }
    }
    c.env("CONFIG_TEST_KEY", API_KEY).args(args);
    c
}

/// A running `tunnel-client start --all --config CONFIG EXTRA…`.
fn start(config: &Path, extra: &[&str]) -> Running {
    let config = config.to_str().unwrap();
    let mut args = vec!["start", "--all", "--config", config];
    args.extend_from_slice(extra);
    Running::spawn(client_command(&args))
}

/// Waits until tunnel `name` has a live connection; returns its registry record.
async fn online(server: &TestServer, name: &str) -> Arc<tunnel_server::tunnel::Tunnel> {
    eventually(&format!("tunnel {name} online"), || async {
        server
            .state
            .registry
            .get(name)
            .filter(|t| t.connection().is_some())
    })
    .await
}

/// Waits until the server no longer has tunnel `name`.
async fn gone(server: &TestServer, name: &str) {
    eventually(&format!("tunnel {name} deleted"), || async {
        server.state.registry.get(name).is_none().then_some(())
    })
    .await;
}

/// Waits until tunnel `name` is a new registration (not `old`) with a live connection.
async fn replaced(
    server: &TestServer,
    name: &str,
    old: &Arc<tunnel_server::tunnel::Tunnel>,
) -> Arc<tunnel_server::tunnel::Tunnel> {
    eventually(&format!("tunnel {name} re-registered"), || async {
        server
            .state
            .registry
            .get(name)
            .filter(|t| !Arc::ptr_eq(t, old) && t.connection().is_some())
    })
    .await
}

/// `GET /<name>/<path>` on the server: status and body.
async fn get(server: &TestServer, name: &str, path: &str) -> (u16, String) {
    let resp = reqwest::get(server.url(&format!("/{name}/{path}")))
        .await
        .unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

/// Writes `text` to `path` in place (truncate and write, the inode kept).
fn write_in_place(path: &Path, text: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f.sync_all().unwrap();
}

#[tokio::test]
async fn three_tunnels_from_one_file_and_one_failing_stops_no_other() {
    let server = TestServer::start(&[]).await;
    let (web, api) = (Backend::start("web").await, Backend::start("shop").await);
    let dir = scratch("three");
    let path = dir.join("tunnel.toml");
    let mut text = file_text(&server, &[("web", &web, ""), ("shop", &api, "")]);
    // The server refuses this one (not a network): it fails alone.
    text.push_str("\n[[tunnels]]\nname = \"broken\"\nlocal = 1\nallow_ips = [\"not-a-network\"]\n");
    text.push_str("\n[[tunnels]]\nname = \"db\"\nproto = \"tcp\"\nlocal = 5432\n");
    std::fs::write(&path, text).unwrap();
    let mut client = start(&path, &[]);
    online(&server, "web").await;
    online(&server, "shop").await;
    // A TCP tunnel starts too (its local service need not run until someone connects).
    online(&server, "db").await;
    // One banner with every tunnel: the two URLs, and why the others are not online.
    client.line(&["Tunnels"]).await;
    let web_url = format!("/web/ -> http://127.0.0.1:{}", web.addr.port());
    client.line(&["web", &web_url]).await;
    client.line(&["shop", "/shop/ -> http://127.0.0.1:"]).await;
    client.line(&["broken", "failed:"]).await;
    client.line(&["db", "127.0.0.1:5432"]).await;
    let (status, body) = get(&server, "web", "hello").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"backend\":\"web\""), "{body}");
    let (status, body) = get(&server, "shop", "there").await;
    assert_eq!(status, 200);
    assert!(body.contains("\"backend\":\"shop\""), "{body}");
    // Request lines say which tunnel they belong to.
    let line = client.line(&["GET", "/hello"]).await;
    assert!(line.contains("web"), "{line}");
    let line = client.line(&["GET", "/there"]).await;
    assert!(line.contains("shop"), "{line}");
    assert_eq!(client.stop().await, Some(0));
    gone(&server, "web").await;
    gone(&server, "shop").await;
}

#[tokio::test]
async fn an_in_place_write_adds_and_changes_tunnels() {
    let server = TestServer::start(&[]).await;
    let (web, api) = (Backend::start("web").await, Backend::start("shop").await);
    let path = scratch("in-place").join("tunnel.toml");
    std::fs::write(&path, file_text(&server, &[("web", &web, "")])).unwrap();
    let client = start(&path, &[]);
    let old_web = online(&server, "web").await;
    let auth = "basic_auth = \"me:long-enough-password\"";
    let text = file_text(&server, &[("web", &web, auth), ("shop", &api, "")]);
    write_in_place(&path, &text);
    online(&server, "shop").await;
    replaced(&server, "web", &old_web).await;
    assert_eq!(get(&server, "web", "x").await.0, 401, "{}", client.output());
    assert_eq!(client.stop().await, Some(0));
}

#[tokio::test]
async fn an_editors_rename_removes_a_tunnel_and_keeps_the_other() {
    let server = TestServer::start(&[]).await;
    let (web, api) = (Backend::start("web").await, Backend::start("shop").await);
    let dir = scratch("rename");
    let path = dir.join("tunnel.toml");
    std::fs::write(
        &path,
        file_text(&server, &[("web", &web, ""), ("shop", &api, "")]),
    )
    .unwrap();
    let mut client = start(&path, &[]);
    let old_web = online(&server, "web").await;
    online(&server, "shop").await;
    // As vim or an IDE saves: a new file beside it, renamed over it.
    let tmp = dir.join(".tunnel.toml.swp");
    std::fs::write(&tmp, file_text(&server, &[("web", &web, "")])).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    gone(&server, "shop").await;
    client.line(&["tunnel shop removed"]).await;
    let web_now = server.state.registry.get("web").unwrap();
    assert!(
        Arc::ptr_eq(&old_web, &web_now),
        "an unchanged tunnel is not touched"
    );
    assert_eq!(get(&server, "web", "x").await.0, 200);
    assert_eq!(client.stop().await, Some(0));
}

#[cfg(unix)]
#[tokio::test]
async fn a_configmap_symlink_swap_is_a_reload() {
    use std::os::unix::fs::symlink;
    let server = TestServer::start(&[]).await;
    let (web, api) = (Backend::start("web").await, Backend::start("shop").await);
    // A ConfigMap volume: tunnel.toml -> ..data/tunnel.toml, ..data -> ..<timestamp>.
    let dir = scratch("configmap");
    let first = dir.join("..2026_01_01_00_00_00.1");
    std::fs::create_dir(&first).unwrap();
    std::fs::write(
        first.join("tunnel.toml"),
        file_text(&server, &[("web", &web, "")]),
    )
    .unwrap();
    symlink(first.file_name().unwrap(), dir.join("..data")).unwrap();
    symlink("..data/tunnel.toml", dir.join("tunnel.toml")).unwrap();
    let client = start(&dir.join("tunnel.toml"), &[]);
    online(&server, "web").await;
    // The kubelet's update: a new folder, a new ..data link renamed over the old one.
    let second = dir.join("..2026_01_01_00_01_00.2");
    std::fs::create_dir(&second).unwrap();
    let text = file_text(&server, &[("web", &web, ""), ("shop", &api, "")]);
    std::fs::write(second.join("tunnel.toml"), text).unwrap();
    symlink(second.file_name().unwrap(), dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    std::fs::remove_dir_all(&first).unwrap();
    online(&server, "shop").await;
    assert_eq!(
        get(&server, "shop", "x").await.0,
        200,
        "{}",
        client.output()
    );
    assert_eq!(client.stop().await, Some(0));
}

#[cfg(unix)]
#[tokio::test]
async fn sighup_reloads_an_unwatched_file() {
    let server = TestServer::start(&[]).await;
    let (web, api) = (Backend::start("web").await, Backend::start("shop").await);
    let path = scratch("sighup").join("tunnel.toml");
    std::fs::write(&path, file_text(&server, &[("web", &web, "")])).unwrap();
    let mut client = start(&path, &["--no-watch"]);
    online(&server, "web").await;
    write_in_place(&path, &file_text(&server, &[("shop", &api, "")]));
    client.signal("HUP");
    online(&server, "shop").await;
    gone(&server, "web").await;
    client
        .line(&["config reloaded", "removing web", "starting shop"])
        .await;
    assert_eq!(client.stop().await, Some(0));
}

#[tokio::test]
async fn an_invalid_edit_keeps_the_running_tunnels() {
    let server = TestServer::start(&[]).await;
    let (web, api) = (Backend::start("web").await, Backend::start("shop").await);
    let path = scratch("invalid").join("tunnel.toml");
    std::fs::write(&path, file_text(&server, &[("web", &web, "")])).unwrap();
    let mut client = start(&path, &[]);
    let old_web = online(&server, "web").await;
    let bad = file_text(&server, &[("shop", &api, "lokal = 3")]);
    write_in_place(&path, &bad);
    client.line(&["not reloaded"]).await;
    client
        .line(&["tunnel.toml:", "tunnels.lokal", "unknown field"])
        .await;
    let web_now = server.state.registry.get("web").unwrap();
    assert!(Arc::ptr_eq(&old_web, &web_now), "the old set runs on");
    assert_eq!(get(&server, "web", "x").await.0, 200);
    assert!(server.state.registry.get("shop").is_none());
    // Fixed: followed again.
    write_in_place(
        &path,
        &file_text(&server, &[("web", &web, ""), ("shop", &api, "")]),
    );
    online(&server, "shop").await;
    assert_eq!(client.stop().await, Some(0));
}

#[tokio::test]
async fn an_sse_stream_on_an_unchanged_tunnel_survives_a_reload() {
    use futures_util::StreamExt;
    let server = TestServer::start(&[]).await;
    let (web, api, extra) = (
        Backend::start("web").await,
        Backend::start("shop").await,
        Backend::start("extra").await,
    );
    let path = scratch("sse").join("tunnel.toml");
    std::fs::write(
        &path,
        file_text(&server, &[("web", &web, ""), ("shop", &api, "")]),
    )
    .unwrap();
    let client = start(&path, &[]);
    online(&server, "web").await;
    let old_api = online(&server, "shop").await;
    let resp = reqwest::get(server.url("/web/sse")).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    assert_eq!(&first[..], b"data: first\n\n");
    // A reload that adds one tunnel and changes another; web's entry stays the same.
    let text = file_text(
        &server,
        &[
            ("web", &web, ""),
            ("shop", &api, "ttl = \"1h\""),
            ("extra", &extra, ""),
        ],
    );
    write_in_place(&path, &text);
    online(&server, "extra").await;
    replaced(&server, "shop", &old_api).await;
    web.hooks.release.notify_one();
    let second = tokio::time::timeout(tunnel_e2e::DEADLINE, body.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(&second[..], b"data: second\n\n", "{}", client.output());
    assert_eq!(client.stop().await, Some(0));
}

#[tokio::test]
async fn config_check_names_file_line_and_key() {
    let dir = scratch("check");
    let path = dir.join("tunnel.toml");
    let text = "[client]\nserver = \"localhost:8989\"\napi_key = \"k\"\n\n[[tunnels]]\nname = \"web\"\nlocal = 3000\n\n[[tunnels]]\nname = \"db\"\nproto = \"tcp\"\nlocal = 5432\n";
    std::fs::write(&path, text).unwrap();
    let config = path.to_str().unwrap();
    let out = client_command(&["config", "check", "--config", config])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("2 tunnel(s)"), "{stdout}");
    assert!(stdout.contains("db") && stdout.contains("tcp"), "{stdout}");

    let bad = text
        .replace("local = 3000", "local = 3000\nhost_heder = \"x\"")
        .replace("local = 5432", "local = \"nowhere\"");
    std::fs::write(&path, bad).unwrap();
    let out = client_command(&["config", "check", "--config", config])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains(&format!("{config}:8:1: tunnels.host_heder: unknown field")),
        "{stderr}"
    );
    // After parsing: the value's own place.
    let bad = text.replace("local = 5432", "local = \"nowhere\"");
    std::fs::write(&path, bad).unwrap();
    let out = client_command(&["config", "check", "--config", config])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains(&format!("{config}:12:9: tunnels.local: ")),
        "{stderr}"
    );
}
