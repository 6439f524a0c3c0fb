//! The `tunnel-client` binary: exit codes and messages a user sees.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn client() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tunnel-client"));
    for var in [
        "TUNNEL_SERVER",
        "TUNNEL_API_KEY",
        "TUNNEL_LOCAL_PORT",
        "TUNNEL_NAME",
    ] {
        c.env_remove(var);
    }
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    c
}

#[test]
fn missing_settings_exit_64_naming_them() {
    let out = client().output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("TUNNEL_LOCAL_PORT"), "{err}");
    let out = client()
        .args(["--server", "ftp://x", "--api-key", "k", "--port", "3000"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("TUNNEL_SERVER"));
}

#[test]
fn help_exits_0() {
    let out = client().arg("--help").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("--api-key"));
}

#[test]
fn a_wrong_key_exits_77_with_a_clear_message() {
    // A one-shot server that refuses every key.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf).unwrap();
        let body =
            r#"{"error":{"code":"unauthorized","message":"missing or invalid credentials"}}"#;
        let resp = format!(
            "HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(resp.as_bytes()).unwrap();
    });
    let out = client()
        .args([
            "--server",
            &addr.to_string(),
            "--api-key",
            "wrong",
            "--port",
            "3000",
        ])
        .output()
        .unwrap();
    server.join().unwrap();
    assert_eq!(out.status.code(), Some(77));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("rejected the API key"), "{err}");
}

#[test]
fn sigterm_while_the_server_is_unreachable_exits_0() {
    // A port nobody listens on: the client keeps retrying to create its tunnel.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = client()
        .args([
            "--server",
            &format!("127.0.0.1:{port}"),
            "--api-key",
            "k",
            "--port",
            "3000",
        ])
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !seen.to_lowercase().contains("retrying") {
        assert!(Instant::now() < deadline, "no retry line: {seen}");
        let mut line = String::new();
        if stdout.read_line(&mut line).unwrap() == 0 {
            panic!("client exited early: {seen}");
        }
        seen.push_str(&line);
    }
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{seen}");
}
