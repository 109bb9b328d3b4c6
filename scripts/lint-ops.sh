#!/usr/bin/env bash
# Static checks of the operations files (scripts/ and deploy/), no network, no containers:
#   - shellcheck + bash -n on every shell script in scripts/ and deploy/
#   - python3 -m py_compile on scripts/dev/*.py
#   - every YAML and TOML file in deploy/ parses (also the TOML inside the k8s ConfigMap); compose.yaml structure (services, depends_on,
#     healthchecks, 2 campaignd replicas); kubectl kustomize deploy/k8s renders;
#     kubernetes-validate --strict on the manifests when it is installed
#   - deploy/k8s/configmap-workflows.yaml is up to date with workflows/
#   - systemd-analyze verify deploy/systemd/campaignd.service
#   - the Kannel configs (production example, compose demo) are accepted by the real
#     bearerbox and smsbox 1.4.5 (started briefly on 127.0.0.1, other ports than the dev ones)
# A missing tool skips its check with a warning, except under CI=true, where it fails.
#
# Usage: scripts/lint-ops.sh [--no-kannel]
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

RUN_KANNEL=1
[[ "${1:-}" == --no-kannel ]] && RUN_KANNEL=0

failures=0
pass() { printf '  ok    %s\n' "$*"; }
fail() { printf '  FAIL  %s\n' "$*"; failures=$((failures + 1)); }
skip() {
    if is_ci; then
        fail "$* (tool missing; CI=true makes this a failure)"
    else
        printf '  skip  %s\n' "$*"
    fi
}

WORK="$(mktemp -d /tmp/campaignd-lint.XXXXXX)"
KPIDS=()
cleanup() {
    local p
    for p in "${KPIDS[@]}"; do
        if pid_alive "$p"; then kill -TERM "$p" 2>/dev/null || true; fi
    done
    for p in "${KPIDS[@]}"; do
        wait_until 5 "pid $p" pid_gone "$p" || kill -KILL "$p" 2>/dev/null || true
    done
    rm -rf -- "$WORK"
}
trap cleanup EXIT

cd "$REPO_ROOT"
mapfile -t SHELL_FILES < <(find scripts deploy -type f -name '*.sh' | sort)
mapfile -t PY_FILES < <(find scripts -type f -name '*.py' | sort)
mapfile -t YAML_FILES < <(find deploy -type f \( -name '*.yaml' -o -name '*.yml' \) | sort)

echo "shell scripts"
for f in "${SHELL_FILES[@]}"; do
    if bash -n "$f"; then pass "bash -n $f"; else fail "bash -n $f"; fi
done
if command -v shellcheck >/dev/null 2>&1; then
    if shellcheck -x "${SHELL_FILES[@]}"; then pass "shellcheck (${#SHELL_FILES[@]} files)"; else fail "shellcheck"; fi
else
    skip "shellcheck (apt-get install shellcheck, or scripts/install-deps.sh --lint)"
fi

echo "python helpers"
for f in "${PY_FILES[@]}"; do
    if "$PYTHON" -c 'import ast, sys; ast.parse(open(sys.argv[1]).read(), sys.argv[1])' "$f"; then
        pass "syntax $f"
    else
        fail "syntax $f"
    fi
done

echo "YAML"
if "$PYTHON" -c 'import yaml' 2>/dev/null; then
    for f in "${YAML_FILES[@]}"; do
        if "$PYTHON" -c 'import sys, yaml; list(yaml.safe_load_all(open(sys.argv[1], encoding="utf-8")))' "$f"; then
            pass "parses: $f"
        else
            fail "parses: $f"
        fi
    done
    if "$PYTHON" - deploy/compose.yaml <<'PY'; then pass "compose.yaml structure"; else fail "compose.yaml structure"; fi
import sys, yaml
d = yaml.safe_load(open(sys.argv[1], encoding="utf-8"))
svcs = d["services"]
errors = []
for want in ("postgres", "kannel", "campaignd"):
    if want not in svcs:
        errors.append(f"service {want} missing")
for name, s in svcs.items():
    for dep in (s.get("depends_on") or {}):
        if dep not in svcs:
            errors.append(f"{name}: depends_on unknown service {dep}")
    if name != "migrate" and "healthcheck" not in s:
        errors.append(f"{name}: no healthcheck")
    for v in (s.get("volumes") or []):
        vol = v.split(":")[0] if isinstance(v, str) else v.get("source")
        if vol and not vol.startswith((".", "/")) and vol not in (d.get("volumes") or {}):
            errors.append(f"{name}: volume {vol} not declared")
    for p in (s.get("ports") or []):
        if not str(p).startswith("127.0.0.1:"):
            errors.append(f"{name}: port {p} is not bound to 127.0.0.1")
if svcs.get("campaignd", {}).get("deploy", {}).get("replicas") != 2:
    errors.append("campaignd: deploy.replicas must be 2")
if "postgres:15" not in svcs.get("postgres", {}).get("image", ""):
    errors.append("postgres: image must be postgres:15")
for e in errors:
    print("    " + e)
sys.exit(1 if errors else 0)
PY
else
    skip "YAML checks (python3-yaml)"
fi

echo "TOML"
mapfile -t TOML_FILES < <(find deploy -type f -name '*.toml' | sort)
if "$PYTHON" -c 'import tomllib' 2>/dev/null; then
    for f in "${TOML_FILES[@]}"; do
        if "$PYTHON" -c 'import sys, tomllib; tomllib.load(open(sys.argv[1], "rb"))' "$f"; then
            pass "parses: $f"
        else
            fail "parses: $f"
        fi
    done
    if "$PYTHON" -c 'import yaml' 2>/dev/null; then
        if "$PYTHON" -c '
import sys, tomllib, yaml
d = yaml.safe_load(open(sys.argv[1], encoding="utf-8"))
tomllib.loads(d["data"]["campaignd.toml"])' deploy/k8s/configmap-config.yaml; then
            pass "parses: campaignd.toml in deploy/k8s/configmap-config.yaml"
        else
            fail "parses: campaignd.toml in deploy/k8s/configmap-config.yaml"
        fi
    fi
else
    skip "TOML checks (python >= 3.11 for tomllib)"
fi

echo "Kubernetes"
if "$PYTHON" -c 'import yaml' 2>/dev/null; then
    if "$REPO_ROOT/scripts/gen-k8s-configmap.sh" --check >/dev/null 2>"$WORK/gen.err"; then
        pass "configmap-workflows.yaml up to date with workflows/"
    else
        cat "$WORK/gen.err"
        fail "configmap-workflows.yaml is stale: run scripts/gen-k8s-configmap.sh"
    fi
fi
if command -v kubectl >/dev/null 2>&1; then
    if kubectl kustomize deploy/k8s >"$WORK/k8s.yaml" 2>"$WORK/k8s.err"; then
        pass "kubectl kustomize deploy/k8s ($(grep -c '^kind:' "$WORK/k8s.yaml") objects)"
    else
        cat "$WORK/k8s.err"
        fail "kubectl kustomize deploy/k8s"
    fi
else
    skip "kubectl kustomize (kubectl)"
fi
if command -v kubernetes-validate >/dev/null 2>&1; then
    mapfile -t K8S_FILES < <(find deploy/k8s -name '*.yaml' ! -name kustomization.yaml | sort)
    if kubernetes-validate --strict --quiet "${K8S_FILES[@]}"; then
        pass "kubernetes-validate --strict (${#K8S_FILES[@]} files)"
    else
        fail "kubernetes-validate --strict"
    fi
else
    printf '  skip  %s\n' "kubernetes-validate (optional: pip install kubernetes-validate)"
fi

echo "systemd"
if command -v systemd-analyze >/dev/null 2>&1; then
    # The binary is not installed here: verify a copy whose ExecStart points at /usr/bin/true.
    sed 's#^ExecStart=/usr/local/bin/campaignd#ExecStart=/usr/bin/true#' deploy/systemd/campaignd.service >"$WORK/campaignd.service"
    if (cd "$WORK" && systemd-analyze verify ./campaignd.service); then
        pass "systemd-analyze verify campaignd.service"
    else
        fail "systemd-analyze verify campaignd.service"
    fi
else
    skip "systemd-analyze verify (systemd)"
fi

port_closed() { ! port_listening "$1"; }
# up_or_dead <pid> <port>: the port listens, or the process is gone (config error: stop waiting).
up_or_dead() { port_listening "$2" || pid_gone "$1"; }

# Start bearerbox + smsbox on a rendered config, check that both come up (config accepted).
# render: ports moved to 23000.. so a running dev Kannel does not collide; listens on 127.0.0.1.
check_kannel_config() {
    local name="$1" src="$2" dir="$WORK/kannel-$1"
    mkdir -p "$dir"
    KANNEL_ADMIN_PASSWORD=lint-admin KANNEL_STATUS_PASSWORD=lint-status CAMPAIGND_KANNEL_PASSWORD=lint-pw \
        CAMPAIGND_CALLBACK_URL=http://127.0.0.1:1 CAMPAIGND_ALLOWED_IPS=127.0.0.1 CAMPAIGND_MO_TOKEN=lint-token \
        SMSC_HOST=127.0.0.1 SMSC_PORT=1 SMSC_SYSTEM_ID=lint SMSC_PASSWORD=lint \
        "$PYTHON" - "$src" "$dir" >"$dir/kannel.conf" <<'PY'
import os, re, sys
text = open(sys.argv[1], encoding="utf-8").read()
d = sys.argv[2]
names = ["KANNEL_ADMIN_PASSWORD", "KANNEL_STATUS_PASSWORD", "CAMPAIGND_KANNEL_PASSWORD", "CAMPAIGND_CALLBACK_URL",
         "CAMPAIGND_ALLOWED_IPS", "CAMPAIGND_MO_TOKEN", "SMSC_HOST", "SMSC_PORT", "SMSC_SYSTEM_ID", "SMSC_PASSWORD"]
out = []
for line in text.splitlines():
    if not line.lstrip().startswith("#"):
        for n in names:
            line = line.replace("${" + n + "}", os.environ[n])
        if "${" in line:
            sys.exit(f"unrendered placeholder: {line}")
        line = line.replace("/var/log/kannel", d).replace("/var/spool/kannel", d)
        line = re.sub(r"^(admin-port|smsbox-port|bearerbox-port|sendsms-port|port) = (13000|13001|13013|10000)$",
                      lambda m: f"{m.group(1)} = {int(m.group(2)) + 10000}", line)
        line = re.sub(r"^(admin-interface|smsbox-interface|sendsms-interface) = .*$", r"\1 = 127.0.0.1", line)
        if line.startswith("sendsms-port"):
            out.append(line)
            line = "sendsms-interface = 127.0.0.1"
    out.append(line)
print("\n".join(out))
PY
    local p
    for p in 23000 23001 23013 20000; do
        if port_listening "$p"; then fail "kannel config $name: port $p busy, cannot check"; return; fi
    done
    # shellcheck disable=SC2016 # expanded by the inner bash
    setsid bash -c 'echo $$ >"$1"; exec /usr/sbin/bearerbox -v 2 "$2"' _ "$dir/bb.pid" "$dir/kannel.conf" </dev/null >"$dir/bb.out" 2>&1 &
    wait_until 5 "bearerbox pid" test -s "$dir/bb.pid" || true
    KPIDS+=("$(read_pid "$dir/bb.pid")")
    wait_until 10 "bearerbox of $name" up_or_dead "$(read_pid "$dir/bb.pid")" 23001 || true
    if ! port_listening 23001; then
        cat "$dir/bb.out"
        fail "kannel config $name: bearerbox did not start"
        return
    fi
    # shellcheck disable=SC2016 # expanded by the inner bash
    setsid bash -c 'echo $$ >"$1"; exec /usr/sbin/smsbox -v 2 "$2"' _ "$dir/sb.pid" "$dir/kannel.conf" </dev/null >"$dir/sb.out" 2>&1 &
    wait_until 5 "smsbox pid" test -s "$dir/sb.pid" || true
    KPIDS+=("$(read_pid "$dir/sb.pid")")
    wait_until 10 "smsbox of $name" up_or_dead "$(read_pid "$dir/sb.pid")" 23013 || true
    if port_listening 23013; then
        pass "kannel config accepted by bearerbox+smsbox: $src"
    else
        cat "$dir/sb.out"
        fail "kannel config $name: smsbox did not start"
    fi
    curl -sS -m 3 "http://127.0.0.1:23000/shutdown?password=lint-admin" >/dev/null 2>&1 || true
    for p in "$(read_pid "$dir/sb.pid")" "$(read_pid "$dir/bb.pid")"; do
        wait_until 10 "kannel $name to stop" pid_gone "$p" || { kill -TERM "$p" 2>/dev/null || true; }
    done
    for p in 23000 23001 23013 20000; do
        wait_until 5 "port $p to close" port_closed "$p" || true
    done
}

echo "Kannel configs"
if ((RUN_KANNEL == 0)); then
    printf '  skip  %s\n' "Kannel config checks (--no-kannel)"
elif [[ -x /usr/sbin/bearerbox && -x /usr/sbin/smsbox ]] && command -v curl >/dev/null 2>&1; then
    check_kannel_config production deploy/kannel/kannel.production.conf.example
    check_kannel_config compose deploy/compose/kannel.conf.tmpl
else
    skip "Kannel config checks (packages kannel, curl)"
fi

echo
if ((failures)); then
    log "$failures check(s) failed"
    exit 1
fi
log "all checks passed"
