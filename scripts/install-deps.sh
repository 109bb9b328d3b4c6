#!/usr/bin/env bash
# Install, from the Debian archive, what the test suite needs besides the Rust toolchain
# and PostgreSQL:
#   kannel          bearerbox + smsbox (/usr/sbin)
#   kannel-extras   fakesmsc (/usr/lib/kannel/test/fakesmsc), the fake SMSC client
#   python3-aiosmtpd  SMTP server for tests (scripts/smtp.sh)
#   curl            used by scripts/kannel.sh and the smoke checks
#   openssl         generates the throwaway CA and certificate of the STARTTLS test server
#   chromium        headless browser of the agents' page test (api tests/agent_page.rs,
#                   driven over the DevTools protocol; under CI=true a missing one fails)
# With --lint also: shellcheck, python3-yaml (used by scripts/lint-ops.sh).
#
# Idempotent and non-interactive. Runs `apt-get update` only when something is missing, and
# is a fast no-op (dpkg -s only) when everything is installed. While installing it puts a
# temporary /usr/sbin/policy-rc.d (exit 101) in place so Debian's init script does not start
# the system Kannel (its ports 13000/13001 collide with ours); an existing policy-rc.d is
# restored afterwards. If a system Kannel got started anyway, it is stopped and disabled.
#
# Usage: scripts/install-deps.sh [--lint] [--check]
#   --check   only report what is missing; exit 1 if anything is (installs nothing)
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

PACKAGES=(kannel kannel-extras python3-aiosmtpd curl openssl chromium)
LINT_PACKAGES=(shellcheck python3-yaml)
CHECK_ONLY=0

usage() { print_usage; }

while (($#)); do
    case "$1" in
        --lint) PACKAGES+=("${LINT_PACKAGES[@]}") ;;
        --check) CHECK_ONLY=1 ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
    shift
done

installed() {
    # "install ok installed" is the only state in which the package is usable.
    [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" == "install ok installed" ]]
}

command -v dpkg-query >/dev/null 2>&1 || die "dpkg-query not found: this script supports Debian/Ubuntu only"

missing=()
for p in "${PACKAGES[@]}"; do
    if installed "$p"; then
        log "ok: $p $(dpkg-query -W -f='${Version}' "$p")"
    else
        missing+=("$p")
    fi
done

# Files the scripts actually execute (a package can be "installed" with files removed).
check_files() {
    local bad=0 f
    for f in /usr/sbin/bearerbox /usr/sbin/smsbox /usr/lib/kannel/test/fakesmsc; do
        [[ -x "$f" ]] || { log "missing executable: $f"; bad=1; }
    done
    "$PYTHON" -c 'import aiosmtpd' 2>/dev/null || { log "$PYTHON cannot import aiosmtpd"; bad=1; }
    command -v curl >/dev/null 2>&1 || { log "curl not on PATH"; bad=1; }
    command -v openssl >/dev/null 2>&1 || { log "openssl not on PATH"; bad=1; }
    command -v chromium >/dev/null 2>&1 || { log "chromium not on PATH"; bad=1; }
    return "$bad"
}

warn_system_kannel() {
    local pidf
    for pidf in /var/run/kannel/kannel_bearerbox.pid /run/kannel/kannel_bearerbox.pid; do
        if [[ -r "$pidf" ]] && pid_alive "$(read_pid "$pidf")" bearerbox; then
            log "warning: the system Kannel (init script, $pidf) is running and holds ports 13000/13001;"
            log "         stop it with: systemctl disable --now kannel   (or /etc/init.d/kannel stop)"
            return 0
        fi
    done
}

if ((${#missing[@]} == 0)); then
    if check_files; then
        warn_system_kannel
        log "all dependencies present; nothing to do"
        exit 0
    fi
    if ((CHECK_ONLY)); then
        die "packages are installed but files are missing; reinstall with: apt-get install --reinstall ${PACKAGES[*]}"
    fi
    log "packages are installed but files are missing; reinstalling"
    missing=("${PACKAGES[@]}")
    REINSTALL=1
else
    REINSTALL=0
fi

if ((CHECK_ONLY)); then
    die "missing packages: ${missing[*]} (run scripts/install-deps.sh as root)"
fi

SUDO=()
if ((EUID != 0)); then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO=(sudo -n)
    else
        die "missing packages: ${missing[*]}; installing them needs root (run this script as root or with passwordless sudo)"
    fi
fi

export DEBIAN_FRONTEND=noninteractive
POLICY=/usr/sbin/policy-rc.d
POLICY_BACKUP=""
POLICY_INSTALLED=0

restore_policy() {
    if ((POLICY_INSTALLED)); then
        if [[ -n "$POLICY_BACKUP" ]]; then
            log "restoring the previous $POLICY"
            "${SUDO[@]}" mv -f "$POLICY_BACKUP" "$POLICY" || log "warning: could not restore $POLICY from $POLICY_BACKUP"
        else
            log "removing the temporary $POLICY"
            "${SUDO[@]}" rm -f "$POLICY" || log "warning: could not remove $POLICY"
        fi
        POLICY_INSTALLED=0
    fi
}
trap restore_policy EXIT
trap 'exit 130' INT TERM

log "missing: ${missing[*]}"
log "running: apt-get update"
if ! "${SUDO[@]}" apt-get update -q; then
    die "apt-get update failed (network or apt sources problem); nothing was installed"
fi

if [[ -e "$POLICY" || -L "$POLICY" ]]; then
    POLICY_BACKUP="$POLICY.campaignd-backup.$$"
    "${SUDO[@]}" cp -a "$POLICY" "$POLICY_BACKUP"
fi
log "installing a temporary $POLICY (exit 101) so no service starts during installation"
printf '#!/bin/sh\n# Temporary, written by campaignd scripts/install-deps.sh: do not start services.\nexit 101\n' |
    "${SUDO[@]}" tee "$POLICY.campaignd-new.$$" >/dev/null
"${SUDO[@]}" chmod 0755 "$POLICY.campaignd-new.$$"
"${SUDO[@]}" mv -f "$POLICY.campaignd-new.$$" "$POLICY"
POLICY_INSTALLED=1

apt_args=(install -y -q -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
((REINSTALL)) && apt_args+=(--reinstall)
log "running: apt-get ${apt_args[*]} ${missing[*]}"
if ! "${SUDO[@]}" apt-get "${apt_args[@]}" "${missing[@]}"; then
    die "apt-get install failed for: ${missing[*]} (see the apt output above)"
fi

restore_policy

# The policy should have prevented it, but make sure no system Kannel is left running: its
# bearerbox/wapbox would hold the ports the test Kannel needs.
if [[ " ${missing[*]} " == *" kannel "* ]]; then
    if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null 2>&1; then
        if systemctl is-enabled --quiet kannel 2>/dev/null || systemctl is-active --quiet kannel 2>/dev/null; then
            log "disabling and stopping the system kannel service (systemctl disable --now kannel)"
            "${SUDO[@]}" systemctl disable --now kannel || log "warning: systemctl disable --now kannel failed"
        fi
    elif [[ -x /etc/init.d/kannel ]]; then
        for pidf in /var/run/kannel/kannel_bearerbox.pid /run/kannel/kannel_bearerbox.pid; do
            if [[ -r "$pidf" ]] && pid_alive "$(read_pid "$pidf")" bearerbox; then
                log "stopping the system kannel started by the init script (/etc/init.d/kannel stop)"
                "${SUDO[@]}" /etc/init.d/kannel stop || log "warning: /etc/init.d/kannel stop failed"
                break
            fi
        done
    fi
fi

for p in "${missing[@]}"; do
    installed "$p" || die "package $p is still not installed after apt-get install"
done
check_files || die "installation finished but required files are missing (see above)"
log "installed: ${missing[*]}"
