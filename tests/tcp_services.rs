//! Real protocols through TCP tunnels, both ways in, with the real `tunnel-client` binary:
//! `tunnel-client tcp PORT` in front of Debian's `redis-server` (`redis-cli PING/SET/GET`) and
//! of a Postgres cluster of the test's own (`psql -c 'SELECT 1'`), reached through the public
//! port its banner shows and through `tunnel-client connect` with the access token it prints.
//!
//! Without the programs each test prints a loud SKIPPED line and passes, unless
//! `TUNNEL_REQUIRE_REDIS=1` / `TUNNEL_REQUIRE_POSTGRES=1` (as in CI).

use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};
use tunnel_e2e::services::{psql, redis_cli, Postgres, RedisTcp};
use tunnel_e2e::tcp::free_port;
use tunnel_e2e::{workspace_bin, TestServer, API_KEY, DEADLINE};

/// A `tunnel-client` process, killed when dropped, and its stdout.
struct Bin {
    _child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Bin {
    fn start(args: &[String]) -> Self {
        let mut child = Command::new(workspace_bin("tunnel-client"))
            .args(args)
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("tunnel-client");
        let stdout = child.stdout.take().expect("stdout");
        Self {
            _child: child,
            lines: BufReader::new(stdout).lines(),
        }
    }

    /// The first line of its output that `pick` takes something from.
    async fn find<T>(&mut self, what: &str, pick: impl Fn(&str) -> Option<T>) -> T {
        let reading = async {
            while let Some(line) = self.lines.next_line().await.expect("stdout") {
                if let Some(v) = pick(&line) {
                    return v;
                }
            }
            panic!("tunnel-client ended before printing {what}");
        };
        tokio::time::timeout(DEADLINE, reading)
            .await
            .unwrap_or_else(|_| panic!("no {what} in time"))
    }
}

/// What the banner of `tunnel-client tcp` says: the public port, and the connect command.
struct Banner {
    port: u16,
    connect: Vec<String>,
}

/// Starts `tunnel-client tcp PORT` for `server` and reads its banner.
async fn expose(server: &TestServer, local_port: u16) -> (Bin, Banner) {
    let args = [
        "tcp",
        &local_port.to_string(),
        "--server",
        &server.addr.to_string(),
        "--api-key",
        API_KEY,
        "--local-host",
        "127.0.0.1",
    ]
    .map(String::from);
    let mut bin = Bin::start(&args);
    let port = bin
        .find("the public address", |l| {
            let url = l.split_whitespace().find(|w| w.starts_with("tcp://"))?;
            url.rsplit(':').next()?.parse().ok()
        })
        .await;
    let connect = bin
        .find("the connect command", |l| {
            let at = l.find("tunnel-client connect ")?;
            let words: Vec<String> = l[at..]
                .split_whitespace()
                .skip(1)
                .map(String::from)
                .collect();
            Some(words)
        })
        .await;
    (bin, Banner { port, connect })
}

/// Starts the banner's `tunnel-client connect` on a free local port; returns that port.
async fn consume(banner: &Banner) -> (Bin, u16) {
    let port = free_port();
    let mut args = banner.connect.clone();
    let listen = args.iter().position(|a| a == "--listen").expect("--listen");
    args[listen + 1] = format!("127.0.0.1:{port}");
    let mut bin = Bin::start(&args);
    bin.find("the listening line", |l| {
        l.contains("listening on").then_some(())
    })
    .await;
    (bin, port)
}

async fn server() -> TestServer {
    let first = free_port();
    let range = format!("{first}-{}", first.saturating_add(3));
    TestServer::start(&["--tcp-ports", &range, "--tcp-bind-ip", "127.0.0.1"]).await
}

#[tokio::test]
async fn redis_cli_through_a_tcp_tunnel_both_ways_in() {
    let Some(redis) = RedisTcp::start("redis_cli_through_a_tcp_tunnel_both_ways_in").await else {
        return;
    };
    let server = server().await;
    let (_client, banner) = expose(&server, redis.port).await;
    let (_consumer, local) = consume(&banner).await;
    for (way, port) in [("public port", banner.port), ("front door", local)] {
        let pong = redis_cli(port, &["PING"]).await;
        assert_eq!(pong.as_deref(), Some("PONG"), "{way}");
        let key = format!("key-{port}");
        let set = redis_cli(port, &["SET", &key, "through the tunnel"]).await;
        assert_eq!(set.as_deref(), Some("OK"), "{way}");
        let got = redis_cli(port, &["GET", &key]).await;
        assert_eq!(got.as_deref(), Some("through the tunnel"), "{way}");
    }
    server.stop().await;
}

#[tokio::test]
async fn psql_through_a_tcp_tunnel_both_ways_in() {
    let Some(pg) = Postgres::start("psql_through_a_tcp_tunnel_both_ways_in").await else {
        return;
    };
    let server = server().await;
    let (_client, banner) = expose(&server, pg.port).await;
    let (_consumer, local) = consume(&banner).await;
    for (way, port) in [("public port", banner.port), ("front door", local)] {
        assert_eq!(psql(port, "SELECT 1").await.as_deref(), Some("1"), "{way}");
        let sum = psql(port, "SELECT sum(x) FROM generate_series(1, 100000) AS x").await;
        assert_eq!(sum.as_deref(), Some("5000050000"), "{way}");
    }
    server.stop().await;
}
