//! The `tunnel-server` binary: configuration errors and signals.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn server() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tunnel-server"));
    for (k, _) in std::env::vars() {
        if k.starts_with("TUNNEL_") || k.starts_with("LOG_") {
            c.env_remove(k);
        }
    }
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    c
}

#[test]
fn invalid_settings_exit_64_naming_the_setting() {
    for (var, value, expect) in [
        ("TUNNEL_TTL_SECS", "0", "TUNNEL_TTL_SECS"),
        ("TUNNEL_TTL_SECS", "soon", "TUNNEL_TTL_SECS"),
        ("TUNNEL_BIND", "not-an-address", "TUNNEL_BIND"),
        ("TUNNEL_BIND", "0.0.0.0:0", "TUNNEL_API_KEYS"),
        ("TUNNEL_API_KEYS", "short", "TUNNEL_API_KEYS"),
        ("LOG_TIMEZONE", "Nowhere/Special", "LOG_TIMEZONE"),
        ("TUNNEL_DOMAIN", "not a domain", "TUNNEL_DOMAIN"),
        ("TUNNEL_DOMAIN", "tunnels.example.com:443", "TUNNEL_DOMAIN"),
        ("TUNNEL_URL_STYLE", "fancy", "TUNNEL_URL_STYLE"),
        ("TUNNEL_NAME_GRACE_SECS", "-1", "TUNNEL_NAME_GRACE_SECS"),
        (
            "TUNNEL_BLOCKED_NAMES",
            "www,bad name",
            "TUNNEL_BLOCKED_NAMES",
        ),
        (
            "TUNNEL_RESERVED_NAMES",
            "/nonexistent/reserved",
            "TUNNEL_RESERVED_NAMES",
        ),
        ("TUNNEL_DNS_RESOLVER", "dns.example", "TUNNEL_DNS_RESOLVER"),
        (
            "TUNNEL_DOMAIN_RECHECK_SECS",
            "0",
            "TUNNEL_DOMAIN_RECHECK_SECS",
        ),
    ] {
        let out = server().env(var, value).output().unwrap();
        assert_eq!(out.status.code(), Some(64), "{var}={value}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expect), "{var}={value}: {err}");
    }
    // Settings that are wrong only together with others.
    let keys = ("TUNNEL_API_KEYS", "0123456789abcdef0123");
    for (vars, expect) in [
        (
            vec![keys, ("TUNNEL_URL_STYLE", "subdomain")],
            "TUNNEL_URL_STYLE",
        ),
        (
            vec![("TUNNEL_DOMAIN", "off"), ("TUNNEL_URL_STYLE", "subdomain")],
            "TUNNEL_URL_STYLE",
        ),
    ] {
        let out = server().envs(vars.iter().copied()).output().unwrap();
        assert_eq!(out.status.code(), Some(64), "{vars:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expect), "{vars:?}: {err}");
    }
}

#[test]
fn dev_mode_prints_a_key_and_sigterm_shuts_down_cleanly() {
    let mut child = server()
        .env("TUNNEL_BIND", "127.0.0.1:0")
        .env("LOG_FORMAT", "json")
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut banner = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !banner.contains("--api-key") {
        assert!(Instant::now() < deadline, "no banner: {banner}");
        let mut line = String::new();
        if stdout.read_line(&mut line).unwrap() == 0 {
            panic!("server exited early: {banner}");
        }
        banner.push_str(&line);
    }
    assert!(banner.contains("Generated API key"), "{banner}");
    // Dev mode: subdomains of localhost, which resolve to loopback with no DNS set-up.
    assert!(banner.contains("http://NAME.localhost:"), "{banner}");
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let logs = String::from_utf8_lossy(&out.stderr);
    assert!(logs.contains("shutdown complete"), "{logs}");
}
