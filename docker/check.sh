#!/usr/bin/env bash
# check.sh: checks the deploy files in docker/ as far as that is possible without a Docker engine
# or a Kubernetes cluster.
#
# Usage: docker/check.sh [KSTAGE_BINARY]   (default: target/debug/kstage; build it first with
#                                           cargo build --features fault-injection)
#
#   1. docker/compose.yaml and docker/k8s/*.yaml parse as YAML (python3 with PyYAML).
#   2. Every KSTAGE_* variable and every --flag they (and the Dockerfile) give kstage exists in
#      `kstage run --help`.
#   3. `kstage validate` accepts each compose stage's environment, and the stage.toml of each
#      Kubernetes ConfigMap together with its StatefulSet's environment (secrets and
#      downward-API values replaced by stand-ins, mounted files by temporary files); the printed
#      config shows no password.
#   4. The health checks and probes hit /healthz or /readyz on the metrics port; the compose
#      stages' stop_grace_period and the pods' terminationGracePeriodSeconds exceed
#      KSTAGE_SHUTDOWN_GRACE.
#   5. The compose file loads as `docker compose config` loads it, and every Kubernetes object
#      decodes strictly into its API type (a misspelt field is an error): with the docker client's
#      compose plugin if present, and with docker/deploycheck (Go: compose-go, k8s.io/api; built
#      into $KSTAGE_CACHE, default ~/.cache/kstage, when `go` is on PATH; the first build
#      downloads its modules through the Go module proxy).
#
# Exit code 0 when every check that could run passed.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly ROOT
BIN="${1:-${ROOT}/target/debug/kstage}"
readonly BIN

[[ -x "${BIN}" ]] || {
  echo "check.sh: no kstage binary at ${BIN} (cargo build --features fault-injection)" >&2
  exit 1
}
python3 -c 'import yaml' 2>/dev/null || {
  echo "check.sh: python3 with PyYAML is needed (pip install pyyaml)" >&2
  exit 1
}

python3 - "${ROOT}" "${BIN}" <<'PY'
import glob, os, re, subprocess, sys, tempfile

import yaml

root, binary = sys.argv[1], sys.argv[2]
failures = []


def check(ok, message):
    print(("ok    " if ok else "FAIL  ") + message)
    if not ok:
        failures.append(message)


def seconds(text):
    match = re.fullmatch(r"(\d+)(ms|s|m)?", str(text).strip())
    if not match:
        raise ValueError(f"not a duration: {text!r}")
    value, unit = int(match.group(1)), match.group(2) or "s"
    return value / 1000 if unit == "ms" else value * 60 if unit == "m" else value


# 1. YAML
compose_path = os.path.join(root, "docker", "compose.yaml")
with open(compose_path) as f:
    compose = yaml.safe_load(f)
check(isinstance(compose, dict) and "services" in compose, "docker/compose.yaml parses")
k8s_docs = []
for path in sorted(glob.glob(os.path.join(root, "docker", "k8s", "*.yaml"))):
    with open(path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    check(all("kind" in d and "apiVersion" in d for d in docs),
          f"{os.path.relpath(path, root)} parses ({len(docs)} objects)")
    k8s_docs += docs

# What kstage run accepts.
help_text = subprocess.run([binary, "run", "--help"], capture_output=True, text=True,
                           check=True).stdout
help_flat = " ".join(help_text.split())
known_env = set(re.findall(r"env: (KSTAGE_[A-Z0-9_]+)", help_flat))
known_flags = set(re.findall(r"(--[a-z][a-z0-9-]*)", help_flat))
check(len(known_env) > 20, f"kstage run --help lists {len(known_env)} environment variables")


def check_names(where, env_names, args):
    for name in env_names:
        if name.startswith("KSTAGE_"):
            check(name in known_env, f"{where}: {name} is a kstage run variable")
    for arg in args:
        flag = str(arg).split("=", 1)[0]
        if flag.startswith("--"):
            check(flag in known_flags, f"{where}: {flag} is a kstage run flag")


def run_validate(where, env, config_path=None, secrets=()):
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KSTAGE_")}
    clean.update(env)
    cmd = [binary, "validate", "--print"]
    if config_path:
        cmd += ["--config", config_path]
    result = subprocess.run(cmd, capture_output=True, text=True, env=clean)
    output = result.stdout + result.stderr
    check(result.returncode == 0,
          f"{where}: kstage validate accepts it" + ("" if result.returncode == 0 else
                                                      f" (exit {result.returncode}):\n{output}"))
    for secret in secrets:
        check(secret not in output, f"{where}: validate --print does not show a secret")


# 2-4. compose
dockerfile = open(os.path.join(root, "docker", "Dockerfile")).read()
check_names("Dockerfile", re.findall(r"ENV (KSTAGE_[A-Z0-9_]+)=", dockerfile), [])
check("curl" in dockerfile, "Dockerfile: the runtime image has curl for health checks")
stages = {name: s for name, s in compose["services"].items()
          if (s.get("image", "").startswith("kstage") or "build" in s)}
check(len(stages) >= 2, f"compose: {len(stages)} kstage services ({', '.join(stages)})")
for name, service in stages.items():
    where = f"compose service {name}"
    env = {k: str(v) for k, v in (service.get("environment") or {}).items()}
    command = service.get("command") or []
    check_names(where, env, command)
    check(command[:1] == ["run"], f"{where}: runs `kstage run`")
    test = " ".join(service.get("healthcheck", {}).get("test", []))
    check("9464/readyz" in test, f"{where}: health check probes /readyz on 9464")
    check(env.get("KSTAGE_METRICS_ADDRESS", "").startswith("0.0.0.0:9464"),
          f"{where}: metrics address 0.0.0.0:9464")
    check(bool(env.get("KSTAGE_INSTANCE_ID")), f"{where}: stable KSTAGE_INSTANCE_ID")
    grace = seconds(env.get("KSTAGE_SHUTDOWN_GRACE", "30s"))
    stop = seconds(service.get("stop_grace_period", "10s"))
    check(stop > grace, f"{where}: stop_grace_period {stop:g}s > shutdown grace {grace:g}s")
    run_validate(where, env)

# 2-4. Kubernetes
configmaps = {d["metadata"]["name"]: d for d in k8s_docs if d["kind"] == "ConfigMap"}
secrets = {d["metadata"]["name"]: d for d in k8s_docs if d["kind"] == "Secret"}
for sts in (d for d in k8s_docs if d["kind"] == "StatefulSet"):
    name = sts["metadata"]["name"]
    pod = sts["spec"]["template"]
    spec = pod["spec"]
    annotations = pod["metadata"].get("annotations", {})
    check(annotations.get("prometheus.io/scrape") == "true"
          and annotations.get("prometheus.io/port") == "9464",
          f"StatefulSet {name}: Prometheus scrape annotations on port 9464")
    for container in spec["containers"]:
        where = f"StatefulSet {name} container {container['name']}"
        env_entries = container.get("env", [])
        check_names(where, [e["name"] for e in env_entries], container.get("args", []))
        instance = next((e for e in env_entries if e["name"] == "KSTAGE_INSTANCE_ID"), None)
        check(instance is not None and instance.get("valueFrom", {}).get("fieldRef", {})
              .get("fieldPath") == "metadata.name",
              f"{where}: KSTAGE_INSTANCE_ID from the pod name (downward API)")
        ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
        live = container.get("livenessProbe", {}).get("httpGet", {})
        ready = container.get("readinessProbe", {}).get("httpGet", {})
        check(live.get("path") == "/healthz" and ports.get(live.get("port")) == 9464,
              f"{where}: liveness probe /healthz on 9464")
        check(ready.get("path") == "/readyz" and ports.get(ready.get("port")) == 9464,
              f"{where}: readiness probe /readyz on 9464")
        check(bool(container.get("resources", {}).get("limits")) and
              bool(container.get("resources", {}).get("requests")),
              f"{where}: resource requests and limits")
        values = {e["name"]: str(e["value"]) for e in env_entries if "value" in e}
        grace = seconds(values.get("KSTAGE_SHUTDOWN_GRACE", "30s"))
        termination = spec.get("terminationGracePeriodSeconds", 30)
        check(termination > grace,
              f"{where}: terminationGracePeriodSeconds {termination} > shutdown grace {grace:g}s")
        sasl = next((e for e in env_entries if e["name"] == "KSTAGE_SASL_PASSWORD"), None)
        ref = (sasl or {}).get("valueFrom", {}).get("secretKeyRef", {})
        check(ref.get("name") in secrets, f"{where}: KSTAGE_SASL_PASSWORD from a Secret")

        # validate: the ConfigMap's stage.toml with this container's environment.
        args = [str(a) for a in container.get("args", [])]
        config_file = args[args.index("--config") + 1] if "--config" in args else None
        mounts = {m["mountPath"]: m for m in container.get("volumeMounts", [])}
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        with tempfile.TemporaryDirectory() as tmp:
            env = dict(values)
            fake_secrets = []
            for entry in env_entries:
                source = entry.get("valueFrom", {})
                if "fieldRef" in source:
                    env[entry["name"]] = f"{name}-0"
                elif "secretKeyRef" in source:
                    env[entry["name"]] = "stand-in-secret-8c1f4e"
                    fake_secrets.append(env[entry["name"]])
            # Files the pod mounts (CA etc.) become temporary files.
            for key, value in list(env.items()):
                if value.startswith("/") and key.endswith("_LOCATION"):
                    stand_in = os.path.join(tmp, os.path.basename(value))
                    open(stand_in, "w").write("stand-in\n")
                    env[key] = stand_in
            toml_path = None
            if config_file:
                mount = mounts.get(config_file) or next(
                    (m for p, m in mounts.items() if config_file.startswith(p + "/")), None)
                check(mount is not None, f"{where}: {config_file} is mounted")
                volume = volumes.get(mount["name"], {}) if mount else {}
                cm = configmaps.get(volume.get("configMap", {}).get("name"))
                check(cm is not None, f"{where}: {config_file} comes from a ConfigMap in the file")
                key = mount.get("subPath") or os.path.basename(config_file)
                toml_path = os.path.join(tmp, "stage.toml")
                open(toml_path, "w").write(cm["data"][key])
            run_validate(where, env, toml_path, fake_secrets)

print()
if failures:
    print(f"{len(failures)} check(s) failed")
    sys.exit(1)
print("all YAML, name and validate checks passed")
PY

status=0
if docker compose version >/dev/null 2>&1; then
  if docker compose -f "${ROOT}/docker/compose.yaml" --profile sample config --quiet; then
    echo "ok    docker compose config"
  else
    echo "FAIL  docker compose config"
    status=1
  fi
else
  echo "skip  docker compose config (the docker client has no compose plugin here)"
fi
if command -v go >/dev/null 2>&1; then
  tool="${KSTAGE_CACHE:-${HOME}/.cache/kstage}/deploycheck/deploycheck"
  mkdir -p "$(dirname "${tool}")"
  (cd "${ROOT}/docker/deploycheck" && go build -o "${tool}" .) || {
    echo "check.sh: building docker/deploycheck failed" >&2
    exit 1
  }
  "${tool}" compose "${ROOT}/docker/compose.yaml" || status=1
  "${tool}" k8s "${ROOT}"/docker/k8s/*.yaml || status=1
else
  echo "skip  compose-go and strict Kubernetes decoding (no go on PATH)"
fi
exit "${status}"
