//! The real `tunnel-client` binary's session behaviour, as a user sees it: a server that
//! cannot be reached (said once, retried quietly, given up on when retrying cannot help: no
//! such host, a TLS certificate this machine does not trust, the wrong scheme),
//! Ctrl-C while a request to the server hangs, and a second client for a live tunnel (refused,
//! or with `--force` taking it over).

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tunnel_e2e::tls::TlsServer;
use tunnel_e2e::{eventually, workspace_bin, TestServer, API_KEY, DEADLINE};

/// A running `tunnel-client`, its stdout and stderr lines gathered as they come.
struct Client {
    child: Child,
    lines: mpsc::Receiver<(bool, String)>,
    /// Every line so far (stderr ones prefixed `E `).
    seen: Vec<String>,
}

impl Client {
    fn start(args: &[&str]) -> Self {
        let mut cmd = Command::new(workspace_bin("tunnel-client"));
        for (k, _) in std::env::vars() {
            if k.starts_with("TUNNEL_") {
                cmd.env_remove(k);
            }
        }
        let mut child = cmd
            .args(["--api-key", API_KEY, "--no-inspect"])
            .args(args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        let tx2 = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send((false, line));
            }
        });
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx2.send((true, line));
            }
        });
        Self {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Everything printed so far, one string (wrapped lines joined back with spaces).
    fn text(&self) -> String {
        self.seen
            .iter()
            .map(|l| l.trim())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Waits until the output (as [`Client::text`]) satisfies `done`.
    fn wait_for(&mut self, what: &str, done: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + DEADLINE;
        while !done(&self.text()) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok((err, line)) => self.seen.push(if err { format!("E {line}") } else { line }),
                Err(_) => panic!("no {what} within {DEADLINE:?}:\n{}", self.seen.join("\n")),
            }
        }
    }

    /// Sends `signal` (`INT`, `TERM`, `KILL`).
    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the exit (within `within`); its status, and everything it printed.
    fn exit(mut self, within: Duration) -> (Option<i32>, String) {
        let deadline = Instant::now() + within;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "the client did not exit within {within:?}:\n{}",
                self.seen.join("\n")
            );
            // Lines arrive until the pipes close; their arrival paces the polling.
            if let Ok((err, line)) = self.lines.recv_timeout(left.min(Duration::from_millis(50))) {
                self.seen.push(if err { format!("E {line}") } else { line });
            }
        };
        while let Ok((err, line)) = self.lines.recv_timeout(Duration::from_secs(2)) {
            self.seen.push(if err { format!("E {line}") } else { line });
        }
        (status.code(), self.seen.join("\n"))
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads one HTTP request (head and `content-length` body) from `socket`.
async fn read_request(socket: &mut tokio::net::TcpStream) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = socket.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the client hung up mid-request");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_ascii_lowercase();
        let Some(end) = text.find("\r\n\r\n") else {
            continue;
        };
        let length: usize = text
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(0, |v| v.trim().parse().unwrap());
        if buf.len() >= end + 4 + length {
            return;
        }
    }
}

/// A loopback port nobody listens on (bound, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_said_once_retried_quietly_and_greeted_back() {
    let port = free_port();
    let at = format!("127.0.0.1:{port}");
    let mut client = Client::start(&["--server", &at, "--port", "9"]);
    let refused =
        format!("cannot reach {at}: connection refused. Is the server running? Retrying…");
    client.wait_for("the refused line", |t| t.contains(&refused));

    // A server that answers 503 (a pod restarting behind its balancer): every attempt
    // reaches it; the reason changed once, so one more line, however many attempts.
    let listener = tokio::net::TcpListener::bind(&at).await.unwrap();
    for _ in 0..3 {
        let (mut socket, _) = tokio::time::timeout(DEADLINE, listener.accept())
            .await
            .expect("the client retries")
            .unwrap();
        read_request(&mut socket).await;
        let answer =
            "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
        socket.write_all(answer.as_bytes()).await.unwrap();
    }
    drop(listener);
    let server = TestServer::start_on(at.parse().unwrap(), &[]).await;
    client.wait_for("the banner", |t| t.contains("Tunnel online"));
    let text = client.text();
    assert_eq!(text.matches("cannot reach").count(), 1, "{text}");
    assert_eq!(text.matches("the server answers 503").count(), 1, "{text}");
    assert!(text.contains(&format!("reached {at} again")), "{text}");
    assert!(!text.contains("retrying in"), "no line per attempt: {text}");
    client.signal("TERM");
    let (code, out) = client.exit(DEADLINE);
    assert_eq!(code, Some(0), "{out}");
    server.stop().await;
}

#[test]
fn a_host_name_that_does_not_exist_exits_68_unless_retry_forever() {
    // `.invalid` never resolves (RFC 6761).
    let client = Client::start(&["--server", "no-such-host.invalid:8989", "--port", "9"]);
    let (code, out) = client.exit(DEADLINE);
    assert_eq!(code, Some(68), "{out}");
    assert!(
        out.contains("the host name no-such-host.invalid does not exist (DNS)"),
        "{out}"
    );

    let mut client = Client::start(&[
        "--server",
        "no-such-host.invalid:8989",
        "--port",
        "9",
        "--retry-forever",
    ]);
    client.wait_for("a retrying line", |t| {
        t.contains("does not exist (DNS). Check --server. Retrying…")
    });
    client.signal("INT");
    let (code, out) = client.exit(Duration::from_secs(5));
    assert_eq!(code, Some(0), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_for_an_http_server_exits_76_naming_the_scheme_to_use() {
    let server = TestServer::start(&[]).await;
    let at = server.addr.to_string();
    let client = Client::start(&["--server", &format!("https://{at}"), "--port", "9"]);
    let (code, out) = client.exit(DEADLINE);
    assert_eq!(code, Some(76), "{out}");
    assert!(out.contains(&format!("Use --server http://{at}")), "{out}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_this_machine_does_not_trust_exits_76_saying_so() {
    // `openssl req -x509` as most people run it: a CA certificate serving as its own leaf.
    let server = TlsServer::start().await;
    let at = format!("localhost:{}", server.addr.port());
    let client = Client::start(&["--server", &format!("https://{at}"), "--port", "9"]);
    let (code, out) = client.exit(DEADLINE);
    assert_eq!(code, Some(76), "{out}");
    assert!(
        out.contains(&format!(
            "cannot reach {at}: its TLS certificate is invalid (self-signed: a CA certificate \
             used as the server's own). Check the host name; a self-signed certificate must be \
             trusted by this machine."
        )),
        "{out}"
    );
    assert_eq!(out.matches("cannot reach").count(), 1, "said once: {out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_for_an_https_server_exits_76_naming_the_scheme_to_use() {
    let server = TlsServer::start().await;
    let at = format!("127.0.0.1:{}", server.addr.port());
    let client = Client::start(&["--server", &format!("http://{at}"), "--port", "9"]);
    let (code, out) = client.exit(DEADLINE);
    assert_eq!(code, Some(76), "{out}");
    assert!(
        out.contains(&format!("Is it https? Use --server https://{at}")),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_while_the_create_request_hangs_exits_at_once() {
    // A server that accepts the connection and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let at = listener.local_addr().unwrap().to_string();
    let client = Client::start(&["--server", &at, "--port", "9"]);
    let (_socket, _) = tokio::time::timeout(DEADLINE, listener.accept())
        .await
        .expect("the client connects")
        .unwrap();
    let asked = Instant::now();
    client.signal("INT");
    let (code, out) = client.exit(Duration::from_secs(3));
    assert_eq!(code, Some(0), "{out}");
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "{:?}",
        asked.elapsed()
    );
}

/// `connected` of tunnel `id` in the status API.
async fn connected(server: &TestServer, id: &str) -> bool {
    let status: serde_json::Value = reqwest::Client::new()
        .get(server.url(&format!("/api/tunnels/{id}/status")))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    status["connected"].as_bool().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_client_is_refused_while_the_first_runs_and_takes_over_with_force() {
    let server = TestServer::start(&[]).await;
    let at = server.addr.to_string();
    let start = |extra: &[&str]| {
        let mut args = vec!["--server", &at, "--port", "9", "--name", "shared"];
        args.extend_from_slice(extra);
        Client::start(&args)
    };
    let mut first = start(&[]);
    first.wait_for("the first banner", |t| t.contains("Tunnel online"));

    let (code, out) = start(&[]).exit(DEADLINE);
    assert_eq!(code, Some(75), "{out}");
    assert!(
        out.contains("tunnel shared is served by another tunnel-client, connected since"),
        "{out}"
    );
    assert!(
        out.contains("from 127.0.0.1; stop it, or take the tunnel over with --force"),
        "{out}"
    );

    let mut forced = start(&["--force"]);
    forced.wait_for("the second banner", |t| t.contains("Tunnel online"));
    let (code, out) = first.exit(DEADLINE);
    assert_eq!(code, Some(3), "{out}");
    assert!(
        out.contains("replaced by another client from 127.0.0.1"),
        "{out}"
    );
    assert!(!out.contains("deleted"), "{out}");

    // Gone without a word (kill -9): once the server sees it gone, no --force is needed.
    forced.signal("KILL");
    let _ = forced.exit(DEADLINE);
    eventually("the server to see the killed client gone", || async {
        (!connected(&server, "shared").await).then_some(())
    })
    .await;
    let mut third = start(&[]);
    third.wait_for("the third banner", |t| t.contains("Tunnel online"));
    third.signal("TERM");
    let (code, out) = third.exit(DEADLINE);
    assert_eq!(code, Some(0), "{out}");
    server.stop().await;
}

/// A tmux server of the test's own (`-L`), killed when dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    /// Whether tmux is installed; without it the test fails under `TUNNEL_REQUIRE_TMUX=1`
    /// (CI) and is skipped, loudly, otherwise.
    fn available(test: &str) -> bool {
        let found = Command::new("tmux")
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found && std::env::var("TUNNEL_REQUIRE_TMUX").is_ok_and(|v| v == "1") {
            panic!("{test}: tmux is not installed, and TUNNEL_REQUIRE_TMUX=1");
        }
        if !found {
            eprintln!(
                "\n!!!!! SKIPPED {test}: tmux is not installed (apt-get install tmux) !!!!!\n"
            );
        }
        found
    }

    /// Runs `command` in a detached 80x24 session.
    fn start(command: &[&str]) -> Self {
        let socket = format!("tunnel-test-{}", std::process::id());
        let status = Command::new("tmux")
            .args(["-L", &socket, "-f", "/dev/null", "new-session", "-d"])
            .args(["-x", "80", "-y", "24", "-s", "client"])
            .args(command)
            .status()
            .unwrap();
        assert!(status.success(), "tmux new-session failed");
        Self { socket }
    }

    /// The pane's text, wrapped lines joined (`-J`): a line wider than the pane shows as one.
    fn capture(&self) -> String {
        let out = Command::new("tmux")
            .args([
                "-L",
                &self.socket,
                "capture-pane",
                "-p",
                "-J",
                "-t",
                "client",
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "capture-pane failed");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Polls the pane until `done` says yes.
    async fn wait_for(&self, what: &str, done: impl Fn(&str) -> bool) -> String {
        eventually(what, || async {
            let screen = self.capture();
            done(&screen).then_some(screen)
        })
        .await
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_an_80_column_terminal_every_line_fits() {
    if !Tmux::available("in_an_80_column_terminal_every_line_fits") {
        return;
    }
    let server = TestServer::start(&[]).await;
    let backend = tunnel_e2e::backend::Backend::start("tmux").await;
    let bin = workspace_bin("tunnel-client");
    let (server_at, port) = (server.addr.to_string(), backend.addr.port().to_string());
    let tmux = Tmux::start(&[
        "env",
        "-u",
        "NO_COLOR",
        bin.to_str().unwrap(),
        "--server",
        &server_at,
        "--api-key",
        API_KEY,
        "--port",
        &port,
        "--no-inspect",
        "--name",
        "eighty",
    ]);
    let banner = tmux
        .wait_for("the banner", |s| s.contains("Forwarding"))
        .await;
    assert!(
        banner.contains("Tunnel online  (expires in 24 h, at "),
        "{banner}"
    );
    let long = format!(
        "/bytes/2048?page=2&sort=name&filter=active&token={}&end=last",
        "x".repeat(120)
    );
    for path in ["/bytes/10", long.as_str(), "/status/404"] {
        let resp = tunnel_e2e::http::get(server.addr, &format!("/eighty{path}")).await;
        assert!(resp.status().as_u16() < 500, "{path}: {}", resp.status());
    }
    let screen = tmux
        .wait_for("three request lines", |s| {
            s.lines().filter(|l| l.contains(" GET ")).count() >= 3
        })
        .await;
    println!("{screen}");
    for line in screen.lines() {
        assert!(
            line.chars().count() <= 80,
            "wider than 80: {line:?}\n{screen}"
        );
    }
    let requests: Vec<&str> = screen.lines().filter(|l| l.contains(" GET ")).collect();
    assert!(
        requests[0].contains("/bytes/10") && requests[0].contains(" 200 "),
        "{screen}"
    );
    let cut = requests[1];
    assert!(
        cut.contains("/bytes/2048?page=2") && cut.contains('…'),
        "{screen}"
    );
    assert!(
        cut.contains("&end=last") && cut.contains("2.0 KB"),
        "{screen}"
    );
    assert!(
        requests[2].contains("/status/404") && requests[2].contains(" 404 "),
        "{screen}"
    );
    // The request id is the inspector's (and --verbose's) business.
    let hex_id = |w: &str| w.len() == 32 && w.chars().all(|c| c.is_ascii_hexdigit());
    assert!(
        !requests.iter().any(|l| l.split_whitespace().any(hex_id)),
        "{screen}"
    );
    server.stop().await;
}
