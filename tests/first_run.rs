//! A newcomer's first commands (issue 13), through the real `tunnel-client` binary against a
//! real server on port 0: `tunnel-client 3000` and `tunnel-client http 3000` with the server
//! and key from the environment, the config file, or a dev server's kept key; the line that
//! says where each came from and why the scheme; `[::1]`; a bad `--name` refused before any
//! network access; the 401 that says where a dev server keeps its key; and the demo next to a
//! running server. Each process has a state and config directory of its own (never the
//! user's), and every wait polls with a deadline.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use tunnel_e2e::backend::Backend;
use tunnel_e2e::process::Running;
use tunnel_e2e::{eventually, workspace_bin, TestServer, API_KEY, DEADLINE};

/// A folder of its own for one test: `state/` (XDG_STATE_HOME), `config/` (XDG_CONFIG_HOME).
struct Home(PathBuf);

impl Home {
    fn new(test: &str) -> Self {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("first-run")
            .join(test);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("state")).unwrap();
        std::fs::create_dir_all(dir.join("config")).unwrap();
        Self(dir)
    }

    /// Where the client looks for a dev server's key.
    fn dev_key(&self) -> PathBuf {
        self.0.join("state/tunnel/dev-api-key")
    }

    /// Keeps `key` where a dev server would.
    fn keep_dev_key(&self, key: &str) {
        std::fs::create_dir_all(self.0.join("state/tunnel")).unwrap();
        std::fs::write(self.dev_key(), format!("{key}\n")).unwrap();
    }

    /// The default config file's place.
    fn config_file(&self) -> PathBuf {
        self.0.join("config/tunnel/tunnel.toml")
    }

    /// `program` with this home and none of the test's own `TUNNEL_*` settings.
    fn command(&self, program: &Path, args: &[&str]) -> Command {
        let mut c = Command::new(program);
        for (k, _) in std::env::vars() {
            if k.starts_with("TUNNEL_") {
                c.env_remove(k);
            }
        }
        c.env("XDG_STATE_HOME", self.0.join("state"))
            .env("XDG_CONFIG_HOME", self.0.join("config"))
            .env("HOME", &self.0)
            .env("NO_COLOR", "1")
            .current_dir(&self.0)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        c
    }

    fn client(&self, args: &[&str]) -> Command {
        self.command(&workspace_bin("tunnel-client"), args)
    }
}

/// Runs `c` to its end (within the deadline): exit code and stdout + stderr.
async fn finish(mut c: Command) -> (Option<i32>, String) {
    let out = tokio::time::timeout(DEADLINE, c.output())
        .await
        .expect("the client should exit by itself")
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

/// The public URL the client printed (`http://…/<id>/`), and that a request through it (to
/// `server`: a dev server's URL says `localhost`, which may resolve to the other family)
/// reaches `backend`.
async fn serves(client: &mut Running, server: SocketAddr, backend: &Backend) -> String {
    let line = client.line(&["http://", "->"]).await;
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap()
        .to_string();
    let path = url
        .trim_start_matches("http://")
        .split_once('/')
        .map_or("/", |(_, p)| p);
    let before = backend.requests();
    let resp = reqwest::get(format!("http://{server}/{path}hello"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", client.output());
    assert_eq!(backend.requests(), before + 1);
    url
}

#[tokio::test]
async fn a_port_alone_with_the_dev_servers_kept_key() {
    let server = TestServer::start(&[]).await;
    let backend = Backend::start("dev-key").await;
    let home = Home::new("dev-key");
    home.keep_dev_key(API_KEY);
    let port = backend.addr.port().to_string();
    let server_arg = server.addr.to_string();
    let mut client = Running::spawn(home.client(&[
        &port,
        "--server",
        &server_arg,
        "--local-host",
        "127.0.0.1",
        "--no-inspect",
    ]));
    let dev_key = home.dev_key().display().to_string();
    client
        .line(&["api key: the dev server's, from", &dev_key])
        .await;
    client
        .line(&[
            &format!("server: http://{server_arg} (plain http"),
            "loopback",
        ])
        .await;
    serves(&mut client, server.addr, &backend).await;
    assert_eq!(client.stop().await, Some(0));
}

#[tokio::test]
async fn http_port_with_server_and_key_from_the_environment() {
    let server = TestServer::start(&[]).await;
    let backend = Backend::start("env").await;
    let home = Home::new("env");
    let port = backend.addr.port().to_string();
    let mut c = home.client(&["http", &port, "--local-host", "127.0.0.1", "--no-inspect"]);
    c.env("TUNNEL_SERVER", server.addr.to_string())
        .env("TUNNEL_API_KEY", API_KEY);
    let mut client = Running::spawn(c);
    client.line(&["api key: from TUNNEL_API_KEY"]).await;
    serves(&mut client, server.addr, &backend).await;
    assert_eq!(client.stop().await, Some(0));
}

#[tokio::test]
async fn a_port_alone_with_server_and_key_from_the_config_file() {
    let server = TestServer::start(&[]).await;
    let backend = Backend::start("file").await;
    let home = Home::new("file");
    let file = home.config_file();
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    let text = format!(
        "[client]\nserver = \"{}\"\napi_key = \"{API_KEY}\"\n",
        server.addr
    );
    std::fs::write(&file, text).unwrap();
    let port = backend.addr.port().to_string();
    let args = [
        &port,
        "--local-host",
        "127.0.0.1",
        "--no-inspect",
        "--name",
        "from-file",
    ];
    let mut client = Running::spawn(home.client(&args));
    let shown = file.display().to_string();
    client.line(&["api key: from [client] in", &shown]).await;
    client.line(&["server: http://", &shown]).await;
    let url = serves(&mut client, server.addr, &backend).await;
    assert!(url.contains("from-file"), "{url}");
    // The old flags still work beside it, and win over the file.
    let other = Running::spawn(home.client(&[
        "--server",
        &server.addr.to_string(),
        "--api-key",
        API_KEY,
        "--port",
        &port,
        "--local-host",
        "127.0.0.1",
        "--no-inspect",
    ]));
    let mut other = other;
    other.line(&["api key: from --api-key"]).await;
    serves(&mut other, server.addr, &backend).await;
    assert_eq!(other.stop().await, Some(0));
    assert_eq!(client.stop().await, Some(0));
}

#[tokio::test]
async fn a_server_on_ipv6_loopback() {
    let server = TestServer::start_on("[::1]:0".parse().unwrap(), &[]).await;
    let backend = Backend::start("v6").await;
    let home = Home::new("v6");
    home.keep_dev_key(API_KEY);
    let port = backend.addr.port().to_string();
    let server_arg = format!("[::1]:{}", server.addr.port());
    let mut client = Running::spawn(home.client(&[
        &port,
        "--server",
        &server_arg,
        "--local-host",
        "127.0.0.1",
        "--no-inspect",
    ]));
    client
        .line(&[&format!("server: http://{server_arg}")])
        .await;
    serves(&mut client, server.addr, &backend).await;
    assert_eq!(client.stop().await, Some(0));
}

#[tokio::test]
async fn a_bad_name_exits_64_with_the_rule_and_a_suggestion_before_any_request() {
    // A listener nobody accepts on: a client that asked anything would have connected.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let home = Home::new("bad-name");
    let args = [
        "3000",
        "--server",
        &addr,
        "--api-key",
        "k",
        "--name",
        "My_App",
    ];
    let (code, out) = finish(home.client(&args)).await;
    assert_eq!(code, Some(64), "{out}");
    assert!(out.contains("lowercase DNS label"), "{out}");
    assert!(out.contains("--name my-app"), "{out}");
    assert_eq!(
        listener.accept().map(|_| ()).map_err(|e| e.kind()),
        Err(std::io::ErrorKind::WouldBlock),
        "the client connected to the server: {out}"
    );
}

#[tokio::test]
async fn what_is_missing_is_named() {
    let home = Home::new("missing");
    let (code, out) = finish(home.client(&[])).await;
    assert_eq!(code, Some(64), "{out}");
    assert!(out.contains("no local port"), "{out}");
    assert!(out.contains("TUNNEL_LOCAL_PORT"), "{out}");
    // A local server and no key anywhere: where a dev server's key would have been.
    let (code, out) = finish(home.client(&["3000", "--server", "localhost"])).await;
    assert_eq!(code, Some(64), "{out}");
    assert!(out.contains("TUNNEL_API_KEY"), "{out}");
    assert!(out.contains(&home.dev_key().display().to_string()), "{out}");
    // A key without a server.
    let (code, out) = finish(home.client(&["3000", "--api-key", "k"])).await;
    assert_eq!(code, Some(64), "{out}");
    assert!(out.contains("TUNNEL_SERVER"), "{out}");
}

/// A one-shot server on loopback that refuses every key; its address.
async fn refusing_server() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf).await.unwrap();
        let body =
            r#"{"error":{"code":"unauthorized","message":"missing or invalid credentials"}}"#;
        let resp = format!(
            "HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(resp.as_bytes()).await.unwrap();
    });
    (addr, task)
}

#[tokio::test]
async fn a_refused_key_on_a_local_server_says_where_the_dev_key_is_kept() {
    let home = Home::new("refused");
    let dev_key = home.dev_key().display().to_string();
    let (addr, task) = refusing_server().await;
    let args = ["3000", "--server", &addr.to_string(), "--api-key", "wrong"];
    let (code, out) = finish(home.client(&args)).await;
    task.await.unwrap();
    assert_eq!(code, Some(77), "{out}");
    assert!(out.contains("rejected the API key"), "{out}");
    assert!(
        out.contains(&format!("keeps its key in {dev_key}")),
        "{out}"
    );
    assert!(out.contains(&format!("cat {dev_key}")), "{out}");
    // The kept key itself refused: this server was not started with it.
    home.keep_dev_key("0123456789abcdef0123");
    let (addr, task) = refusing_server().await;
    let (code, out) = finish(home.client(&["3000", "--server", &addr.to_string()])).await;
    task.await.unwrap();
    assert_eq!(code, Some(77), "{out}");
    assert!(
        out.contains(&format!("key kept in {dev_key} was refused")),
        "{out}"
    );
}

#[tokio::test]
async fn the_demo_next_to_a_running_server_names_the_address_and_the_setting() {
    let demo = workspace_bin("examples/demo");
    let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let home = Home::new("demo");
    let mut c = home.command(&demo, &[]);
    c.env("TUNNEL_BIND", &addr);
    let (code, out) = finish(c).await;
    assert_ne!(code, Some(0), "{out}");
    assert!(out.contains(&format!("cannot listen on {addr}")), "{out}");
    assert!(out.contains("TUNNEL_BIND="), "{out}");
    drop(taken);
}

#[tokio::test]
async fn keep_prefix_from_the_command_line_reaches_the_server() {
    let server = TestServer::start(&[]).await;
    let backend = Backend::start("keep").await;
    let home = Home::new("keep");
    home.keep_dev_key(API_KEY);
    let port = backend.addr.port().to_string();
    let server_arg = server.addr.to_string();
    let mut client = Running::spawn(home.client(&[
        &port,
        "--server",
        &server_arg,
        "--local-host",
        "127.0.0.1",
        "--no-inspect",
        "--keep-prefix",
        "--name",
        "kept",
    ]));
    client.line(&["http://", "->"]).await;
    let url = server.url("/api/tunnels/kept/status");
    let status: serde_json::Value = eventually("the tunnel's status", || async {
        let resp = reqwest::Client::new()
            .get(&url)
            .bearer_auth(API_KEY)
            .send()
            .await
            .ok()?;
        resp.json().await.ok()
    })
    .await;
    assert_eq!(status["keep_prefix"], true, "{status}");
    assert_eq!(client.stop().await, Some(0));
}
