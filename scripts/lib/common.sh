# shellcheck shell=bash
# Helpers shared by the scripts in scripts/. Source it, do not run it:
#   # shellcheck source=lib/common.sh
#   . "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
#
# Defines REPO_ROOT (absolute path of the repository, derived from this file's location,
# so every script works from any working directory) and small helpers.

if [[ -n "${_CAMPAIGND_COMMON_SH:-}" ]]; then
    return 0
fi
_CAMPAIGND_COMMON_SH=1

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)"
export REPO_ROOT

# The Python interpreter for our helpers. Debian's python3-aiosmtpd lives in the system
# interpreter's dist-packages, which a pyenv/venv python3 first on PATH does not see, so
# prefer /usr/bin/python3. Override with CAMPAIGND_PYTHON.
if [[ -n "${CAMPAIGND_PYTHON:-}" ]]; then
    PYTHON="$CAMPAIGND_PYTHON"
elif [[ -x /usr/bin/python3 ]]; then
    PYTHON=/usr/bin/python3
else
    PYTHON=python3
fi

# Name used as the prefix of every message; scripts may override it after sourcing.
SCRIPT_NAME="$(basename "$0")"

# Prints the calling script's header comment (from line 2 to the first non-comment line).
print_usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

log() { printf '%s: %s\n' "$SCRIPT_NAME" "$*" >&2; }
die() { printf '%s: error: %s\n' "$SCRIPT_NAME" "$*" >&2; exit 1; }

# True when running under CI (CI=true or CI=1, as GitHub/GitLab set it).
is_ci() { [[ "${CI:-}" == "true" || "${CI:-}" == "1" ]]; }

# A dependency is missing. Under CI that is always a hard failure (exit 1). Outside CI the
# caller decides: with soft=skip it prints SKIP and exits 77 (the automake "skipped" code),
# otherwise it fails too.
#   missing_dep "fakesmsc (package kannel-extras)" [skip]
missing_dep() {
    local what="$1" mode="${2:-fail}"
    if is_ci; then
        printf '%s: FAIL: missing dependency: %s (CI=true: hard failure; run scripts/install-deps.sh)\n' \
            "$SCRIPT_NAME" "$what" >&2
        exit 1
    fi
    if [[ "$mode" == skip ]]; then
        printf '%s: SKIP: missing dependency: %s (run scripts/install-deps.sh as root)\n' \
            "$SCRIPT_NAME" "$what" >&2
        exit 77
    fi
    printf '%s: error: missing dependency: %s (run scripts/install-deps.sh as root)\n' \
        "$SCRIPT_NAME" "$what" >&2
    exit 1
}

# require_exe <path-or-command> <description> [skip]
require_exe() {
    local exe="$1" what="$2" mode="${3:-fail}"
    if [[ "$exe" == */* ]]; then
        [[ -x "$exe" ]] || missing_dep "$what: $exe not found" "$mode"
    else
        command -v "$exe" >/dev/null 2>&1 || missing_dep "$what: '$exe' not on PATH" "$mode"
    fi
}

# require_python_module <module> <description> [skip]
require_python_module() {
    local mod="$1" what="$2" mode="${3:-fail}"
    require_exe "$PYTHON" "python3" "$mode"
    "$PYTHON" -c "import $mod" >/dev/null 2>&1 || missing_dep "$what (python3 module '$mod' for $PYTHON)" "$mode"
}

# Is something listening on TCP 127.0.0.1:<port> (or on the wildcard address)?
# Does NOT connect: a probe connection to a fake-SMSC port would be taken for a fakesmsc
# client (NOTES.md pitfall 3). Uses ss when present, else reads /proc/net/tcp{,6}.
port_listening() {
    local port="$1"
    if command -v ss >/dev/null 2>&1; then
        [[ -n "$(ss -Hltn "sport = :$port" 2>/dev/null)" ]]
        return
    fi
    local hex f
    hex="$(printf '%04X' "$port")"
    for f in /proc/net/tcp /proc/net/tcp6; do
        [[ -r "$f" ]] || continue
        # fields: sl local_address rem_address st ...; st 0A = LISTEN
        if awk -v p=":$hex" '$4 == "0A" && substr($2, length($2) - 4) == p { found = 1 } END { exit !found }' "$f"; then
            return 0
        fi
    done
    return 1
}

# wait_until <timeout-seconds> <description> <command...>: polls every 0.1 s.
wait_until() {
    local timeout="$1" what="$2"
    shift 2
    local deadline=$((SECONDS + timeout))
    until "$@"; do
        if ((SECONDS >= deadline)); then
            log "timed out after ${timeout}s waiting for $what"
            return 1
        fi
        sleep 0.1
    done
}

# pid_alive <pid> [comm]: the process exists, is not a zombie and (if given) its
# /proc/<pid>/comm equals comm (guards against a recycled PID).
pid_alive() {
    local pid="$1" comm="${2:-}" state
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [[ -r "/proc/$pid/stat" ]] || return 1
    # 3rd field of /proc/PID/stat is the state; the 2nd (comm) may contain spaces, so cut after ')'.
    state="$(sed -e 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1)" || return 1
    [[ -n "$state" && "$state" != Z && "$state" != X ]] || return 1
    if [[ -n "$comm" ]]; then
        [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$comm" ]] || return 1
    fi
    return 0
}

# pid_gone <pid>: the process no longer exists or is a zombie (reaped later by its parent).
pid_gone() { ! pid_alive "$1"; }

# read_pid <pidfile>: prints the PID recorded in the file, or nothing.
read_pid() {
    local f="$1" pid=""
    if [[ -r "$f" ]]; then read -r pid <"$f" 2>/dev/null || true; fi
    [[ "$pid" =~ ^[0-9]+$ ]] && printf '%s\n' "$pid"
    return 0
}

# stop_pid <pidfile> <comm> <name> [grace-seconds]: SIGTERM the recorded PID (only if it is
# still the expected program), wait, then SIGKILL. Removes the pid file.
stop_pid() {
    local pidfile="$1" comm="$2" name="$3" grace="${4:-5}" pid
    pid="$(read_pid "$pidfile")"
    if [[ -n "$pid" ]] && pid_alive "$pid" "$comm"; then
        log "stopping $name (pid $pid, SIGTERM)"
        kill -TERM "$pid" 2>/dev/null || true
        if ! wait_until "$grace" "$name (pid $pid) to exit" pid_gone "$pid"; then
            log "$name (pid $pid) ignored SIGTERM; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            sleep 0.2
        fi
    fi
    rm -f "$pidfile"
}

# check_port_value <name> <value>
check_port_value() {
    if ! [[ "$2" =~ ^[0-9]+$ ]] || (($2 < 1 || $2 > 65535)); then
        die "$1 must be a TCP port number, got '$2'"
    fi
}

# Make (or reuse) a private runtime directory owned by the current user, mode 0700.
# Refuses a symlink or a directory owned by someone else (these live under /tmp).
ensure_private_dir() {
    local d="$1"
    if [[ -L "$d" ]]; then
        die "$d is a symlink; refusing to use it"
    fi
    mkdir -p "$(dirname "$d")"
    mkdir -m 0700 "$d" 2>/dev/null || [[ -d "$d" ]] || die "cannot create $d"
    [[ -O "$d" ]] || die "$d is not owned by $(id -un); refusing to use it"
    chmod 0700 "$d"
}
