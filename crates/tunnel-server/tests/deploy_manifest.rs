//! The deployment manifest (`kubernetes-config.yaml` at the workspace root) agrees with the
//! server it deploys:
//! - every variable its ConfigMap and Secret define is one the server reads, and every setting
//!   of the server is defined there (the API keys in the Secret only);
//! - the ConfigMap holds the server's defaults (except deliberate overrides) and values the
//!   server accepts;
//! - the probe paths are answered 200 by the real router (and readiness fails on shutdown);
//! - the container port is the server's default port, and the probes and the Service use it.
//!
//! The manifest is read with a small line parser for the block-style YAML subset it uses
//! (no YAML dependency); `ci/check-deploy.sh` validates it against the Kubernetes schemas.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use axum::body::Body;
use clap::CommandFactory;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;
use tunnel_server::config::{ServerArgs, DEFAULT_PORT};
use tunnel_server::{AppState, Settings};

/// Variables the server reads that are not clap settings.
const EXTRA_SERVER_VARS: &[&str] = &["RUST_LOG"];

/// ConfigMap values that deliberately differ from the server's default (JSON logs for the log
/// collector; metrics on all interfaces so that Prometheus can reach the pod; the
/// trusted proxies of a cluster).
const OVERRIDDEN_DEFAULTS: &[&str] = &[
    "LOG_FORMAT",
    "TUNNEL_METRICS_BIND",
    "TUNNEL_TRUSTED_PROXIES",
];

/// The settings that belong in the Secret.
const SECRET_VARS: &[&str] = &["TUNNEL_API_KEYS", "TUNNEL_PEER_SECRET", "TUNNEL_REDIS_URL"];

/// Settings each pod gets in its own `env` (from the downward API), not from the ConfigMap.
const POD_VARS: &[&str] = &["TUNNEL_NODE_ID", "TUNNEL_PEER_ADVERTISE"];

/// `env` entries the pod needs that the server does not read (they feed the pod's own).
const POD_HELPERS: &[&str] = &["POD_IP"];

/// The Secret the server reads (the other is Redis's).
const SERVER_SECRET: &str = "tunnel-server-secrets";

/// A valid API key for building settings in tests.
const TEST_KEY: &str = "0123456789abcdef0123";

fn workspace_file(relative: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// One `key: value` line of a manifest document, with its dotted key path. List items add no
/// index (`spec.template.spec.containers.ports.containerPort`); a scalar list item has the
/// path of its list.
#[derive(Debug)]
struct Entry {
    path: String,
    value: String,
}

/// One YAML document of the manifest, flattened.
#[derive(Debug)]
struct Doc {
    entries: Vec<Entry>,
}

impl Doc {
    fn values(&self, path: &str) -> Vec<&str> {
        self.entries
            .iter()
            .filter(|e| e.path == path)
            .map(|e| e.value.as_str())
            .collect()
    }

    fn value(&self, path: &str) -> Option<&str> {
        let values = self.values(path);
        assert!(values.len() <= 1, "{path} is set more than once");
        values.first().copied()
    }

    fn kind(&self) -> &str {
        self.value("kind").expect("every document has a kind")
    }

    /// `key: value` pairs directly under `section` (e.g. a ConfigMap's `data`).
    fn map(&self, section: &str) -> BTreeMap<String, String> {
        let prefix = format!("{section}.");
        self.entries
            .iter()
            .filter_map(|e| {
                let key = e.path.strip_prefix(&prefix)?;
                (!key.contains('.')).then(|| (key.to_string(), e.value.clone()))
            })
            .collect()
    }
}

fn unquote(value: &str) -> String {
    let v = value.trim();
    for q in ['"', '\''] {
        if let Some(inner) = v.strip_prefix(q).and_then(|v| v.strip_suffix(q)) {
            return inner.to_string();
        }
    }
    v.to_string()
}

/// Flattens one block-style YAML document: `key: value`, nested maps by indentation, `- `
/// list items, full-line comments. Enough for the manifest, which uses nothing else.
fn flatten(text: &str) -> Doc {
    let mut stack: Vec<(usize, String)> = Vec::new();
    let mut entries = Vec::new();
    for raw in text.lines() {
        let trimmed = raw.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let mut indent = raw.len() - trimmed.len();
        let mut rest = trimmed.trim_end();
        while let Some(r) = rest.strip_prefix("- ") {
            indent += 2;
            rest = r.trim_start();
        }
        while stack.last().is_some_and(|(i, _)| *i >= indent) {
            stack.pop();
        }
        let parent: Vec<&str> = stack.iter().map(|(_, k)| k.as_str()).collect();
        let (key, value) = match rest.split_once(": ") {
            Some((k, v)) => (Some(k), v),
            None => match rest.strip_suffix(':') {
                Some(k) => (Some(k), ""),
                None => (None, rest),
            },
        };
        match key {
            Some(key) if value.is_empty() => stack.push((indent, key.to_string())),
            Some(key) => entries.push(Entry {
                path: [parent.as_slice(), &[key]].concat().join("."),
                value: unquote(value),
            }),
            None => entries.push(Entry {
                path: parent.join("."),
                value: unquote(value),
            }),
        }
    }
    Doc { entries }
}

fn manifest() -> Vec<Doc> {
    let text = workspace_file("kubernetes-config.yaml");
    let mut docs = Vec::new();
    let mut current = String::new();
    for line in text.lines().chain(std::iter::once("---")) {
        if line.trim_end() == "---" {
            let doc = flatten(&current);
            if !doc.entries.is_empty() {
                docs.push(doc);
            }
            current.clear();
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    docs
}

/// The document of `kind` called `name`.
fn named<'a>(docs: &'a [Doc], kind: &str, name: &str) -> &'a Doc {
    docs.iter()
        .find(|d| d.kind() == kind && d.value("metadata.name") == Some(name))
        .unwrap_or_else(|| panic!("the manifest has no {kind} {name}"))
}

fn one<'a>(docs: &'a [Doc], kind: &str) -> &'a Doc {
    let mut found = docs.iter().filter(|d| d.kind() == kind);
    let doc = found
        .next()
        .unwrap_or_else(|| panic!("the manifest has no {kind}"));
    assert!(found.next().is_none(), "the manifest has several {kind}s");
    doc
}

/// ConfigMap data and the server's Secret's data/stringData of the manifest.
fn manifest_env(docs: &[Doc]) -> (BTreeMap<String, String>, BTreeSet<String>) {
    let config = one(docs, "ConfigMap").map("data");
    let secret_doc = named(docs, "Secret", SERVER_SECRET);
    let secret = secret_doc
        .map("stringData")
        .into_keys()
        .chain(secret_doc.map("data").into_keys())
        .collect();
    (config, secret)
}

/// The `env = "…"` names in the server's config.rs and its children, read as text.
fn server_env_names_from_source() -> BTreeSet<String> {
    let mut source = workspace_file("crates/tunnel-server/src/config.rs");
    let children = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/config");
    if let Ok(dir) = std::fs::read_dir(&children) {
        for entry in dir.flatten() {
            source.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
        }
    }
    source
        .split("env = \"")
        .skip(1)
        .map(|rest| rest.split('"').next().unwrap_or_default().to_string())
        .collect()
}

const CONTAINER: &str = "spec.template.spec.containers";

#[test]
fn manifest_env_vars_are_exactly_the_server_settings() {
    let docs = manifest();
    let (config, secret) = manifest_env(&docs);
    let settings = server_env_names_from_source();
    assert!(
        settings.contains("TUNNEL_BIND") && settings.contains("TUNNEL_API_KEYS"),
        "the env names were not found in config.rs: {settings:?}"
    );
    // The text scan and clap's own view of the settings agree.
    let clap_names: BTreeSet<String> = ServerArgs::command()
        .get_arguments()
        .filter_map(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned())
        .collect();
    assert_eq!(settings, clap_names, "config.rs text vs clap arguments");

    let readable: BTreeSet<&str> = settings
        .iter()
        .map(String::as_str)
        .chain(EXTRA_SERVER_VARS.iter().copied())
        .collect();
    let pod_env: BTreeSet<String> = one(&docs, "Deployment")
        .values(&format!("{CONTAINER}.env.name"))
        .into_iter()
        .map(str::to_string)
        .collect();
    for name in config.keys().chain(secret.iter()) {
        assert!(
            readable.contains(name.as_str()),
            "the manifest sets {name}, which tunnel-server does not read"
        );
    }
    for name in &pod_env {
        assert!(
            POD_VARS.contains(&name.as_str()) || POD_HELPERS.contains(&name.as_str()),
            "the pod's env sets {name}: put settings in the ConfigMap or the Secret"
        );
    }
    for name in &settings {
        let set = config.contains_key(name) || secret.contains(name) || pod_env.contains(name);
        assert!(
            set,
            "tunnel-server reads {name}, but the manifest's ConfigMap/Secret/env does not set it"
        );
    }
    for name in SECRET_VARS {
        assert!(secret.contains(*name), "{name} belongs in the Secret");
        assert!(
            !config.contains_key(*name),
            "{name} must not be in the ConfigMap"
        );
    }
    assert_eq!(
        secret.iter().map(String::as_str).collect::<Vec<_>>(),
        SECRET_VARS,
        "only the API keys are secret"
    );

    let container = one(&docs, "Deployment");
    let env_from: BTreeSet<&str> = [
        container.values(&format!("{CONTAINER}.envFrom.configMapRef.name")),
        container.values(&format!("{CONTAINER}.envFrom.secretRef.name")),
    ]
    .concat()
    .into_iter()
    .collect();
    let config_name = one(&docs, "ConfigMap")
        .value("metadata.name")
        .expect("named");
    for name in [config_name, SERVER_SECRET] {
        assert!(env_from.contains(name), "envFrom does not use {name}");
    }
}

#[test]
fn manifest_config_is_the_server_defaults_and_is_accepted() {
    let docs = manifest();
    let (config, _) = manifest_env(&docs);
    let command = ServerArgs::command();
    let mut args = vec![
        "tunnel-server".to_string(),
        "--api-keys".to_string(),
        TEST_KEY.to_string(),
    ];
    for arg in command.get_arguments() {
        let Some(env) = arg.get_env().map(|e| e.to_string_lossy().into_owned()) else {
            continue;
        };
        let Some(value) = config.get(&env) else {
            continue;
        };
        if let [default] = arg.get_default_values() {
            if !OVERRIDDEN_DEFAULTS.contains(&env.as_str()) {
                assert_eq!(
                    value,
                    &default.to_string_lossy(),
                    "{env} in the ConfigMap is not the server's default"
                );
            }
        }
        let long = arg.get_long().expect("every setting has a long flag");
        args.push(format!("--{long}={value}"));
    }
    let settings = Settings::parse_from(&args)
        .unwrap_or_else(|e| panic!("the server rejects the ConfigMap ({args:?}): {e:#}"));
    assert_eq!(settings.bind.port(), DEFAULT_PORT);
    assert!(
        settings.bind.ip().is_unspecified(),
        "must listen on all interfaces in a pod"
    );
    assert!(settings
        .public_url
        .is_some_and(|u| u.starts_with("https://")));

    // Kubernetes kills the pod after terminationGracePeriodSeconds: the drain (preceded by the
    // preStop sleep) must fit in it.
    let deployment = one(&docs, "Deployment");
    let termination: u64 = deployment
        .value("spec.template.spec.terminationGracePeriodSeconds")
        .expect("terminationGracePeriodSeconds is set")
        .parse()
        .expect("a number");
    let pre_stop: u64 = deployment
        .value(&format!("{CONTAINER}.lifecycle.preStop.sleep.seconds"))
        .map_or(0, |s| s.parse().expect("a number"));
    // After the grace period, client connections get up to 5 s to close (server.rs CLOSE_WAIT).
    let close_wait = 5;
    assert!(
        termination > settings.timeouts.shutdown_grace.as_secs() + pre_stop + close_wait,
        "terminationGracePeriodSeconds {termination} must exceed TUNNEL_SHUTDOWN_GRACE_SECS {} \
         + preStop {pre_stop} + {close_wait}",
        settings.timeouts.shutdown_grace.as_secs()
    );
    assert_eq!(deployment.value("spec.replicas"), Some("3"));
    assert_eq!(
        deployment.value("spec.strategy.type"),
        Some("RollingUpdate")
    );

    // With the Secret's and the pod's values (test ones in place of the placeholders), the
    // server accepts the cluster settings, and they are what the ConfigMap says.
    args.extend([
        "--redis-url=redis://:0123456789abcdef@tunnel-redis:6379/0".to_string(),
        format!("--peer-secret={}", "p".repeat(64)),
        "--node-id=tunnel-server-0".to_string(),
        "--peer-advertise=10.0.0.7:8990".to_string(),
    ]);
    let cluster = Settings::parse_from(&args)
        .unwrap_or_else(|e| panic!("the server rejects the cluster settings: {e:#}"))
        .cluster
        .expect("a cluster");
    assert_eq!(cluster.peer_bind.to_string(), config["TUNNEL_PEER_BIND"]);
    assert_eq!(
        cluster.lease.as_secs().to_string(),
        config["TUNNEL_LEASE_SECS"]
    );
}

fn test_state() -> Arc<AppState> {
    let settings =
        Settings::parse_from(["tunnel-server", "--api-keys", TEST_KEY]).expect("valid settings");
    let addr: SocketAddr = ([127, 0, 0, 1], DEFAULT_PORT).into();
    Arc::new(AppState::new(settings, addr))
}

async fn get(state: &Arc<AppState>, path: &str) -> (StatusCode, serde_json::Value) {
    let request = Request::get(path).body(Body::empty()).expect("request");
    let response = tunnel_server::app::router(state.clone())
        .oneshot(request)
        .await
        .expect("infallible");
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    (status, json)
}

fn probe_path(docs: &[Doc], probe: &str) -> String {
    one(docs, "Deployment")
        .value(&format!("{CONTAINER}.{probe}.httpGet.path"))
        .unwrap_or_else(|| panic!("no {probe} httpGet path"))
        .to_string()
}

#[tokio::test]
async fn probe_paths_are_answered_by_the_router() {
    let docs = manifest();
    let liveness = probe_path(&docs, "livenessProbe");
    let readiness = probe_path(&docs, "readinessProbe");
    assert_eq!(liveness, "/health");
    assert_eq!(readiness, "/ready");

    let state = test_state();
    for path in [&liveness, &readiness] {
        let (status, body) = get(&state, path).await;
        assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
    }

    // Readiness is what takes a draining pod out of the Service; liveness must not restart it.
    state.shutdown.cancel();
    let (status, _) = get(&state, &readiness).await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "GET {readiness} while shutting down"
    );
    let (status, _) = get(&state, &liveness).await;
    assert_eq!(status, StatusCode::OK, "GET {liveness} while shutting down");
}

/// The container's ports as (name, number), in order.
fn container_ports(deployment: &Doc) -> Vec<(String, u16)> {
    let names = deployment.values(&format!("{CONTAINER}.ports.name"));
    let numbers = deployment.values(&format!("{CONTAINER}.ports.containerPort"));
    assert_eq!(names.len(), numbers.len(), "every container port is named");
    names
        .into_iter()
        .zip(numbers)
        .map(|(n, p)| (n.to_string(), p.parse().expect("a port number")))
        .collect()
}

#[test]
fn container_port_is_the_default_port() {
    let docs = manifest();
    let deployment = one(&docs, "Deployment");
    let ports = container_ports(deployment);
    let (port_name, _) = ports
        .iter()
        .find(|(_, p)| *p == DEFAULT_PORT)
        .expect("a containerPort for the server port");
    let resolves = |port: &str| port == DEFAULT_PORT.to_string() || port == port_name;

    let (config, _) = manifest_env(&docs);
    let bind: SocketAddr = config["TUNNEL_BIND"].parse().expect("TUNNEL_BIND");
    assert_eq!(bind.port(), DEFAULT_PORT, "TUNNEL_BIND");
    for probe in ["livenessProbe", "readinessProbe"] {
        let port = deployment
            .value(&format!("{CONTAINER}.{probe}.httpGet.port"))
            .unwrap_or_else(|| panic!("no {probe} port"));
        assert!(resolves(port), "{probe} port {port}");
    }
    let target = named(&docs, "Service", "tunnel-server")
        .value("spec.ports.targetPort")
        .expect("Service targetPort");
    assert!(resolves(target), "Service targetPort {target}");
    // The peer listener: its own container port, behind a headless Service of its own.
    let peer: SocketAddr = config["TUNNEL_PEER_BIND"]
        .parse()
        .expect("TUNNEL_PEER_BIND");
    assert!(
        ports.contains(&("peer".to_string(), peer.port())),
        "{ports:?}"
    );
    let peers = named(&docs, "Service", "tunnel-server-peers");
    assert_eq!(peers.value("spec.clusterIP"), Some("None"));
    assert_eq!(peers.value("spec.ports.targetPort"), Some("peer"));
}

#[test]
fn metrics_are_scraped_from_the_pod_and_never_routed_publicly() {
    let docs = manifest();
    let (config, _) = manifest_env(&docs);
    let metrics: SocketAddr = config["TUNNEL_METRICS_BIND"]
        .parse()
        .expect("TUNNEL_METRICS_BIND is an address");
    assert!(
        metrics.ip().is_unspecified(),
        "Prometheus must reach the metrics from outside the pod"
    );
    assert_ne!(metrics.port(), DEFAULT_PORT);
    let deployment = one(&docs, "Deployment");
    let ports = container_ports(deployment);
    assert!(
        ports.contains(&("metrics".to_string(), metrics.port())),
        "containerPort \"metrics\" must be TUNNEL_METRICS_BIND's port: {ports:?}"
    );
    let annotation = |key: &str| {
        deployment
            .value(&format!(
                "spec.template.metadata.annotations.prometheus.io/{key}"
            ))
            .unwrap_or_else(|| panic!("no prometheus.io/{key} annotation"))
            .to_string()
    };
    assert_eq!(annotation("scrape"), "true");
    assert_eq!(annotation("port"), metrics.port().to_string());
    assert_eq!(annotation("path"), "/metrics");

    // The Service (the only thing the IngressRoute targets) exposes the server port only.
    let service = named(&docs, "Service", "tunnel-server");
    let metrics_refs = ["metrics".to_string(), metrics.port().to_string()];
    for key in [
        "spec.ports.targetPort",
        "spec.ports.port",
        "spec.ports.name",
    ] {
        for value in service.values(key) {
            assert!(
                !metrics_refs.iter().any(|m| m == value),
                "the Service exposes the metrics port ({key}: {value})"
            );
        }
    }
    for value in one(&docs, "IngressRoute").values("spec.routes.services.port") {
        assert!(
            !metrics_refs.iter().any(|m| m == value),
            "the IngressRoute targets the metrics port"
        );
    }
}
