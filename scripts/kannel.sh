#!/usr/bin/env bash
# A private Kannel 1.4.5 (bearerbox + smsbox + fakesmsc) for tests and local development.
#
# Usage:
#   scripts/kannel.sh start              start everything (no-op success if already up)
#   scripts/kannel.sh stop               admin shutdown, then SIGTERM by recorded PID; nothing left running
#   scripts/kannel.sh restart            stop + start
#   scripts/kannel.sh status [-q]        exit 0 only if bearerbox, smsbox and fakesmsc are up and FAKE is online
#   scripts/kannel.sh restart-smsbox     stop smsbox (if it still runs) and start a new one, as a service
#                                        manager would after a crash; bearerbox, its store and fakesmsc stay
#   scripts/kannel.sh mo <from> <to> <text>
#                                        inject one MO (subscriber reply) through fakesmsc; non-ASCII text
#                                        is sent as UCS-2 (arrives as UTF-8 thanks to mo-recode)
#   scripts/kannel.sh clean              stop, then delete the runtime dir (logs, message store)
#
# Environment (defaults in brackets):
#   KANNEL_DIR                 runtime dir: kannel.conf, logs/, run/ (pids, MO fifo, store) [/tmp/campaignd-kannel]
#   KANNEL_ADMIN_PORT          bearerbox admin/status HTTP [13000]
#   KANNEL_BOX_PORT            bearerbox <-> smsbox link [13001]
#   KANNEL_SMSC_PORT           fake SMSC that fakesmsc connects to [10000]
#   KANNEL_SENDSMS_PORT        smsbox sendsms HTTP [13013]
#   CAMPAIGND_KANNEL_PASSWORD  password of sendsms user "campaignd" [campaignd-test; local tests only]
#   CAMPAIGND_CALLBACK_URL     base URL of campaignd's callbacks; MO goes to <it>/callbacks/kannel/mo [http://127.0.0.1:8080]
#   CAMPAIGND_MO_TOKEN         a campaignd gateway token, sent as `token=` with each MO [none: campaignd refuses the MO]
#   KANNEL_ADMIN_PASSWORD      admin password (shutdown etc.) [campaignd-admin-test]
#   KANNEL_STATUS_PASSWORD     status page password [campaignd-status-test]
#   KANNEL_LOG_LEVEL           log-level of the log files, 0 debug .. 4 panic [1]
#   KANNEL_START_TIMEOUT       seconds to wait for each start step [20]
#   KANNEL_MO_SPACING          minimum seconds between two MO lines written to the fifo [1]
# While an instance runs, stop/status/mo use the ports and passwords it was started with
# (saved in $KANNEL_DIR/run/settings), whatever the environment says.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

BEARERBOX="${KANNEL_BEARERBOX:-/usr/sbin/bearerbox}"
SMSBOX="${KANNEL_SMSBOX:-/usr/sbin/smsbox}"
FAKESMSC="${KANNEL_FAKESMSC:-/usr/lib/kannel/test/fakesmsc}"
TEMPLATE="$REPO_ROOT/deploy/kannel/kannel.conf.tmpl"

KANNEL_DIR="${KANNEL_DIR:-/tmp/campaignd-kannel}"
KANNEL_DIR="${KANNEL_DIR%/}"
[[ "$KANNEL_DIR" == /* ]] || KANNEL_DIR="$PWD/$KANNEL_DIR"
RUN_DIR="$KANNEL_DIR/run"
LOG_DIR="$KANNEL_DIR/logs"
CONF="$KANNEL_DIR/kannel.conf"
SETTINGS="$RUN_DIR/settings"
FIFO="$RUN_DIR/mo.fifo"

# Settings that are rendered into the config and remembered for stop/status/mo.
SETTING_NAMES=(KANNEL_ADMIN_PORT KANNEL_BOX_PORT KANNEL_SMSC_PORT KANNEL_SENDSMS_PORT
    KANNEL_ADMIN_PASSWORD KANNEL_STATUS_PASSWORD CAMPAIGND_KANNEL_PASSWORD
    CAMPAIGND_CALLBACK_URL CAMPAIGND_MO_TOKEN KANNEL_LOG_LEVEL)
KANNEL_ADMIN_PORT="${KANNEL_ADMIN_PORT:-13000}"
KANNEL_BOX_PORT="${KANNEL_BOX_PORT:-13001}"
KANNEL_SMSC_PORT="${KANNEL_SMSC_PORT:-10000}"
KANNEL_SENDSMS_PORT="${KANNEL_SENDSMS_PORT:-13013}"
KANNEL_ADMIN_PASSWORD="${KANNEL_ADMIN_PASSWORD:-campaignd-admin-test}"
KANNEL_STATUS_PASSWORD="${KANNEL_STATUS_PASSWORD:-campaignd-status-test}"
CAMPAIGND_KANNEL_PASSWORD="${CAMPAIGND_KANNEL_PASSWORD:-campaignd-test}"
CAMPAIGND_CALLBACK_URL="${CAMPAIGND_CALLBACK_URL:-http://127.0.0.1:8080}"
CAMPAIGND_CALLBACK_URL="${CAMPAIGND_CALLBACK_URL%/}"
# campaignd's MO callback takes a gateway token (`campaignd token create --role gateway`);
# Kannel's get-url cannot send headers, so it goes in the query.
CAMPAIGND_MO_TOKEN="${CAMPAIGND_MO_TOKEN:-none}"
KANNEL_LOG_LEVEL="${KANNEL_LOG_LEVEL:-1}"
START_TIMEOUT="${KANNEL_START_TIMEOUT:-20}"
MO_SPACING="${KANNEL_MO_SPACING:-1}"

# The values from the environment/defaults, before load_settings replaces them with those of
# a running instance; restored when a new instance is started after a stop.
declare -A ENV_SETTINGS=()
for _n in "${SETTING_NAMES[@]}"; do ENV_SETTINGS[$_n]="${!_n}"; done
unset _n
restore_env_settings() {
    local n
    for n in "${SETTING_NAMES[@]}"; do printf -v "$n" '%s' "${ENV_SETTINGS[$n]}"; done
}

# name -> program name as in /proc/PID/comm
declare -A COMM=([bearerbox]=bearerbox [smsbox]=smsbox [fakesmsc]=fakesmsc)
BOXES=(bearerbox smsbox fakesmsc)

usage() { print_usage; }

pidfile() { printf '%s/%s.pid\n' "$RUN_DIR" "$1"; }
box_pid() { read_pid "$(pidfile "$1")"; }
box_alive() {
    local pid
    pid="$(box_pid "$1")"
    [[ -n "$pid" ]] && pid_alive "$pid" "${COMM[$1]}"
}

# --- settings ------------------------------------------------------------------------------

# Use the settings of the running instance, if any (only known names are accepted).
load_settings() {
    [[ -f "$SETTINGS" ]] || return 0
    local key value n
    while IFS='=' read -r key value; do
        for n in "${SETTING_NAMES[@]}"; do
            if [[ "$key" == "$n" ]]; then
                printf -v "$n" '%s' "$value"
            fi
        done
    done <"$SETTINGS"
}

save_settings() {
    local n
    (
        umask 077
        for n in "${SETTING_NAMES[@]}"; do
            printf '%s=%s\n' "$n" "${!n}"
        done >"$SETTINGS.tmp"
    )
    mv -f "$SETTINGS.tmp" "$SETTINGS"
}

validate_settings() {
    local n
    for n in KANNEL_ADMIN_PORT KANNEL_BOX_PORT KANNEL_SMSC_PORT KANNEL_SENDSMS_PORT; do
        check_port_value "$n" "${!n}"
    done
    local ports="$KANNEL_ADMIN_PORT $KANNEL_BOX_PORT $KANNEL_SMSC_PORT $KANNEL_SENDSMS_PORT"
    [[ "$(tr ' ' '\n' <<<"$ports" | sort -u | wc -l)" == 4 ]] || die "the four Kannel ports must differ: $ports"
    for n in KANNEL_ADMIN_PASSWORD KANNEL_STATUS_PASSWORD CAMPAIGND_KANNEL_PASSWORD; do
        # Printable ASCII without space, double quote, backslash and '#' (kannel.conf quoting).
        [[ "${!n}" =~ ^[!-~]+$ && "${!n}" != *[\"\\#]* ]] ||
            die "$n must be non-empty printable ASCII without spaces, '\"', '\\' or '#'"
    done
    [[ "$CAMPAIGND_CALLBACK_URL" =~ ^https?://[!-~]+$ && "$CAMPAIGND_CALLBACK_URL" != *[\"\\#?]* ]] ||
        die "CAMPAIGND_CALLBACK_URL must be an http(s) base URL without query, quotes or spaces, got '$CAMPAIGND_CALLBACK_URL'"
    [[ "$CAMPAIGND_MO_TOKEN" =~ ^[A-Za-z0-9_]+$ ]] || die "CAMPAIGND_MO_TOKEN must be a campaignd token ([A-Za-z0-9_]+)"
    [[ "$KANNEL_LOG_LEVEL" =~ ^[0-4]$ ]] || die "KANNEL_LOG_LEVEL must be 0..4"
}

render_config() {
    [[ -r "$TEMPLATE" ]] || die "template not found: $TEMPLATE"
    local content n placeholder
    content="$(<"$TEMPLATE")"
    for n in KANNEL_DIR "${SETTING_NAMES[@]}"; do
        placeholder="\${$n}"
        content="${content//"$placeholder"/"${!n}"}"
    done
    if [[ "$content" =~ \$\{[A-Za-z_][A-Za-z0-9_]*\} ]]; then
        die "unknown placeholder ${BASH_REMATCH[0]} left in $TEMPLATE"
    fi
    (
        umask 077
        printf '%s\n' "$content" >"$CONF.tmp"
    )
    mv -f "$CONF.tmp" "$CONF"
}

# --- admin HTTP ----------------------------------------------------------------------------

admin_get() { # admin_get <path> <password> -> body on stdout
    curl -sS -m 3 -G "http://127.0.0.1:$KANNEL_ADMIN_PORT/$1" --data-urlencode "password=$2" 2>/dev/null
}

status_txt() { admin_get status.txt "$KANNEL_STATUS_PASSWORD"; }

# FAKE online and an smsbox connected, according to status.txt (passed as $1).
status_ready() {
    local s="$1"
    grep -Eq '^[[:space:]]*FAKE\[FAKE\].*\(online' <<<"$s" &&
        grep -Eq '^[[:space:]]*smsbox:.*\(on-line' <<<"$s"
}

# --- start ---------------------------------------------------------------------------------

port_owner() {
    if command -v ss >/dev/null 2>&1; then
        ss -Hltnp "sport = :$1" 2>/dev/null | head -n 1
    fi
}

# launch <name> <stdin> <cmd...>: runs cmd in its own session with stdin opened read-write
# from <stdin> and output in logs/<name>.out; the PID is written by the process itself
# (`$!` may be the short-lived setsid parent, see NOTES.md).
launch() {
    local name="$1" stdin="$2"
    shift 2
    local pf out
    pf="$(pidfile "$name")"
    out="$LOG_DIR/$name.out"
    [[ "$name" == fakesmsc ]] && out="$LOG_DIR/fakesmsc.log"
    rm -f "$pf"
    log "starting $name: $*"
    # shellcheck disable=SC2016 # $$, $1.. are expanded by the inner bash
    setsid bash -c 'pf=$1; in=$2; shift 2; echo $$ >"$pf"; exec "$@" 0<>"$in"' \
        kannel-launch "$pf" "$stdin" "$@" </dev/null >"$out" 2>&1 &
    wait_until 5 "$name to record its pid" test -s "$pf" || start_failed "$name did not start"
}

start_failed() {
    log "start failed: $1"
    local f
    for f in "$LOG_DIR/bearerbox.out" "$LOG_DIR/smsbox.out" "$LOG_DIR/fakesmsc.log" "$LOG_DIR/bearerbox.log" "$LOG_DIR/smsbox.log"; do
        if [[ -s "$f" ]]; then
            log "---- last lines of $f"
            tail -n 15 "$f" >&2
        fi
    done
    do_stop >/dev/null 2>&1 || true
    die "Kannel did not start (logs in $LOG_DIR)"
}

box_running_check() { # box_running_check <name>: fail fast if the box already exited
    box_alive "$1" || start_failed "$1 exited during start-up"
}

bearerbox_ports_up() {
    box_running_check bearerbox
    port_listening "$KANNEL_ADMIN_PORT" && port_listening "$KANNEL_BOX_PORT" && port_listening "$KANNEL_SMSC_PORT"
}

smsbox_port_up() {
    box_running_check smsbox
    port_listening "$KANNEL_SENDSMS_PORT"
}

kannel_ready() {
    box_running_check bearerbox
    box_running_check smsbox
    box_running_check fakesmsc
    local s
    s="$(status_txt)" || return 1
    status_ready "$s"
}

# Each start keeps the previous logs as <name>.<start time>, so every restart's logs stay
# (tests count what fakesmsc received across restarts).
rotate_logs() {
    local f stamp
    stamp="$(date +%Y%m%d%H%M%S%N)"
    shopt -s nullglob
    for f in "$LOG_DIR"/*.log "$LOG_DIR"/*.out; do
        mv -f "$f" "$f.$stamp"
    done
    shopt -u nullglob
}

do_start() {
    require_exe "$BEARERBOX" "bearerbox (package kannel)"
    require_exe "$SMSBOX" "smsbox (package kannel)"
    require_exe "$FAKESMSC" "fakesmsc (package kannel-extras)"
    require_exe curl "curl (package curl)"
    require_exe setsid "setsid (package util-linux)"

    ensure_private_dir "$KANNEL_DIR"
    mkdir -p "$RUN_DIR" "$LOG_DIR"

    if [[ -f "$SETTINGS" ]]; then
        local want_port="$KANNEL_SENDSMS_PORT" want_cb="$CAMPAIGND_CALLBACK_URL"
        load_settings
        if do_status -q; then
            log "already running in $KANNEL_DIR (sendsms http://127.0.0.1:$KANNEL_SENDSMS_PORT, MO -> $CAMPAIGND_CALLBACK_URL); nothing to do"
            if [[ "$want_port" != "$KANNEL_SENDSMS_PORT" || "$want_cb" != "$CAMPAIGND_CALLBACK_URL" ]]; then
                log "warning: the running instance uses other settings than the environment; use 'restart' to apply them"
            fi
            return 0
        fi
        log "a previous instance is partly running or was not stopped cleanly; stopping it first"
        do_stop
        restore_env_settings
    fi
    # Nothing recorded, but stray boxes of this runtime dir (pid files lost)? Stop them.
    if [[ -n "$(find_strays)" ]]; then
        log "found Kannel processes of $KANNEL_DIR without pid files; stopping them first"
        do_stop
    fi

    validate_settings
    local n p
    for n in KANNEL_ADMIN_PORT KANNEL_BOX_PORT KANNEL_SMSC_PORT KANNEL_SENDSMS_PORT; do
        p="${!n}"
        if port_listening "$p"; then
            die "port $p ($n) is already in use: $(port_owner "$p")
  Another Kannel (the system one: systemctl disable --now kannel; or another KANNEL_DIR) may be running.
  Stop it or choose other ports with $n=..."
        fi
    done

    render_config
    rotate_logs
    rm -f "$FIFO"
    mkfifo -m 0600 "$FIFO"
    save_settings

    launch bearerbox /dev/null "$BEARERBOX" -v 2 "$CONF"
    wait_until "$START_TIMEOUT" "bearerbox to listen on $KANNEL_ADMIN_PORT/$KANNEL_BOX_PORT/$KANNEL_SMSC_PORT" bearerbox_ports_up ||
        start_failed "bearerbox ports did not open"

    launch smsbox /dev/null "$SMSBOX" -v 2 "$CONF"
    wait_until "$START_TIMEOUT" "smsbox to listen on $KANNEL_SENDSMS_PORT" smsbox_port_up ||
        start_failed "smsbox sendsms port did not open"

    # stdin is the MO fifo, opened read-write so fakesmsc never sees EOF (it exits on EOF).
    launch fakesmsc "$FIFO" "$FAKESMSC" -H 127.0.0.1 -r "$KANNEL_SMSC_PORT" -v 0
    wait_until "$START_TIMEOUT" "status.txt to show FAKE online and smsbox connected" kannel_ready ||
        start_failed "FAKE SMSC did not come online"

    log "Kannel is up (runtime dir $KANNEL_DIR)"
    log "  sendsms:  http://127.0.0.1:$KANNEL_SENDSMS_PORT/cgi-bin/sendsms  user campaignd"
    log "  admin:    http://127.0.0.1:$KANNEL_ADMIN_PORT/status.txt"
    log "  MO ->     $CAMPAIGND_CALLBACK_URL/callbacks/kannel/mo"
    log "  pids:     bearerbox $(box_pid bearerbox), smsbox $(box_pid smsbox), fakesmsc $(box_pid fakesmsc)"
}

# --- stop ----------------------------------------------------------------------------------

# PIDs of Kannel processes that belong to this runtime dir even if their pid file is gone:
# bearerbox/smsbox started with our kannel.conf, fakesmsc whose stdin is our fifo.
find_strays() {
    local d pid comm
    for d in /proc/[0-9]*; do
        pid="${d#/proc/}"
        comm="$(cat "$d/comm" 2>/dev/null)" || continue
        case "$comm" in
            bearerbox | smsbox)
                if tr '\0' '\n' <"$d/cmdline" 2>/dev/null | grep -Fxq -- "$CONF"; then
                    pid_alive "$pid" "$comm" && echo "$pid"
                fi
                ;;
            fakesmsc)
                if [[ "$(readlink "$d/fd/0" 2>/dev/null)" == "$FIFO" ]]; then
                    pid_alive "$pid" "$comm" && echo "$pid"
                fi
                ;;
        esac
    done
    return 0
}

all_boxes_gone() {
    local b
    for b in "${BOXES[@]}"; do
        box_alive "$b" && return 1
    done
    return 0
}

do_stop() {
    load_settings
    if box_alive bearerbox; then
        log "asking bearerbox to shut down (admin /shutdown on port $KANNEL_ADMIN_PORT)"
        local reply
        reply="$(admin_get shutdown "$KANNEL_ADMIN_PASSWORD" || true)"
        [[ -n "$reply" ]] && log "bearerbox: $(tr -s '\n' ' ' <<<"$reply")"
        wait_until 10 "the boxes to exit after shutdown" all_boxes_gone || true
    fi
    local b
    # fakesmsc exits when the SMSC socket closes, smsbox when the box link goes away; whatever is left gets SIGTERM.
    for b in fakesmsc smsbox bearerbox; do
        stop_pid "$(pidfile "$b")" "${COMM[$b]}" "$b" 5
    done
    local strays pid
    strays="$(find_strays)"
    for pid in $strays; do
        log "stopping stray process $pid ($(cat "/proc/$pid/comm" 2>/dev/null))"
        kill -TERM "$pid" 2>/dev/null || true
    done
    if [[ -n "$strays" ]]; then
        for pid in $strays; do
            wait_until 5 "pid $pid to exit" pid_gone "$pid" || kill -KILL "$pid" 2>/dev/null || true
        done
    fi
    rm -f "$FIFO" "$SETTINGS" "$RUN_DIR/mo.last"
    log "Kannel stopped ($KANNEL_DIR)"
}

# --- status --------------------------------------------------------------------------------

do_status() {
    local quiet=0
    [[ "${1:-}" == -q ]] && quiet=1
    load_settings
    local ok=0 b s=""
    for b in "${BOXES[@]}"; do
        if box_alive "$b"; then
            ((quiet)) || printf '%-10s running (pid %s)\n' "$b" "$(box_pid "$b")"
        else
            ((quiet)) || printf '%-10s not running\n' "$b"
            ok=1
        fi
    done
    if box_alive bearerbox; then
        s="$(status_txt || true)"
        if ! status_ready "$s"; then
            ok=1
            ((quiet)) || echo "status.txt: FAKE not online or no smsbox connected"
        fi
        if ! ((quiet)) && [[ -n "$s" ]]; then
            echo "---- http://127.0.0.1:$KANNEL_ADMIN_PORT/status.txt"
            printf '%s\n' "$s"
        fi
    fi
    if ! ((quiet)); then
        if ((ok == 0)); then
            echo "Kannel is up: sendsms http://127.0.0.1:$KANNEL_SENDSMS_PORT/cgi-bin/sendsms, MO -> $CAMPAIGND_CALLBACK_URL/callbacks/kannel/mo"
        else
            echo "Kannel is NOT (fully) running ($KANNEL_DIR)"
        fi
    fi
    return "$ok"
}

# --- restart-smsbox ------------------------------------------------------------------------

# What a service manager does when smsbox died or stopped answering: a new smsbox on the same
# config. bearerbox keeps its store and the SMSC link, so nothing queued is lost; callbacks
# smsbox had not delivered yet are. The old output is kept beside the new one.
do_restart_smsbox() {
    load_settings
    box_alive bearerbox || die "bearerbox is not running in $KANNEL_DIR: use '$0 restart'"
    stop_pid "$(pidfile smsbox)" smsbox smsbox 5
    [[ -f "$LOG_DIR/smsbox.out" ]] && mv -f "$LOG_DIR/smsbox.out" "$LOG_DIR/smsbox.out.$(date +%s%N)"
    launch smsbox /dev/null "$SMSBOX" -v 2 "$CONF"
    wait_until "$START_TIMEOUT" "smsbox to listen on $KANNEL_SENDSMS_PORT" smsbox_port_up ||
        die "the new smsbox did not open its sendsms port (logs in $LOG_DIR)"
    wait_until "$START_TIMEOUT" "status.txt to show smsbox connected" kannel_ready ||
        die "the new smsbox did not connect to bearerbox (logs in $LOG_DIR)"
    log "smsbox restarted (pid $(box_pid smsbox))"
}

# --- mo ------------------------------------------------------------------------------------

urlencode_bytes() { # stdin bytes -> %XX%XX...
    od -An -v -tx1 | tr -s ' \n' '  ' | sed -e 's/^ *//' -e 's/ *$//' -e 's/\([0-9a-f][0-9a-f]\)/%\1/g' -e 's/ //g' |
        tr 'a-f' 'A-F'
}

do_mo() {
    (($# == 3)) || die "usage: $0 mo <from> <to> <text>"
    local from="$1" to="$2" text="$3" line
    [[ "$from" =~ ^[+A-Za-z0-9]+$ ]] || die "mo: <from> must be a number or alphanumeric sender without spaces, got '$from'"
    [[ "$to" =~ ^[+A-Za-z0-9]+$ ]] || die "mo: <to> must be a number or alphanumeric short code without spaces, got '$to'"
    [[ -n "$text" ]] || die "mo: <text> must not be empty"
    [[ "$text" != *$'\n'* && "$text" != *$'\r'* ]] || die "mo: <text> must be a single line"

    load_settings
    if ! box_alive fakesmsc || [[ ! -p "$FIFO" ]]; then
        die "fakesmsc is not running in $KANNEL_DIR (start Kannel with: $0 start)"
    fi

    local ascii=0
    if LC_ALL=C bash -c '[[ $1 =~ ^[[:print:]]+$ ]]' _ "$text"; then ascii=1; fi
    if ((ascii)); then
        line="$from $to text $text"
    else
        local enc
        enc="$(printf '%s' "$text" | iconv -f UTF-8 -t UTF-16BE | urlencode_bytes)" ||
            die "mo: <text> is not valid UTF-8"
        line="$from $to ucs2 $enc"
    fi
    # fakesmsc reads lines of at most 255 bytes.
    ((${#line} <= 254)) || die "mo: the fakesmsc line is ${#line} bytes, the limit is 254 (non-ASCII text is UCS-2 URL-encoded: 6 bytes per character)"

    # One line at a time, spaced: fakesmsc uses select()+fgets(), so lines arriving together
    # stay in its stdio buffer until the next write (NOTES.md). Serialise writers with a lock.
    exec 9>"$RUN_DIR/mo.lock"
    flock -w 30 9 || die "mo: could not lock $RUN_DIR/mo.lock"
    local now last=0 wait_ns spacing_ns
    spacing_ns="$(awk -v s="$MO_SPACING" 'BEGIN { printf "%d", s * 1000000000 }')"
    if [[ -r "$RUN_DIR/mo.last" ]]; then read -r last <"$RUN_DIR/mo.last" || true; fi
    [[ "$last" =~ ^[0-9]+$ ]] || last=0
    now="$(date +%s%N)"
    wait_ns=$((last + spacing_ns - now))
    if ((wait_ns > 0)); then
        sleep "$(awk -v n="$wait_ns" 'BEGIN { printf "%.3f", n / 1000000000 }')"
    fi
    # A writer blocks forever on a fifo without reader; fakesmsc holds it open, but be safe.
    # shellcheck disable=SC2016 # $1/$2 are expanded by the inner bash
    timeout 5 bash -c 'printf "%s\n" "$1" >"$2"' _ "$line" "$FIFO" ||
        die "mo: could not write to $FIFO (is fakesmsc still running?)"
    date +%s%N >"$RUN_DIR/mo.last"
    exec 9>&-
    log "MO injected: $line"
}

# --- main ----------------------------------------------------------------------------------

cmd="${1:-}"
(($#)) && shift
case "$cmd" in
    start) (($# == 0)) || die "start takes no arguments"; do_start ;;
    stop) (($# == 0)) || die "stop takes no arguments"; do_stop ;;
    restart)
        do_stop
        restore_env_settings
        do_start
        ;;
    status) do_status "$@" ;;
    restart-smsbox) (($# == 0)) || die "restart-smsbox takes no arguments"; do_restart_smsbox ;;
    mo) do_mo "$@" ;;
    clean)
        do_stop
        if [[ -d "$KANNEL_DIR" && ! -L "$KANNEL_DIR" && -O "$KANNEL_DIR" ]]; then
            rm -rf -- "$KANNEL_DIR"
            log "removed $KANNEL_DIR"
        fi
        ;;
    -h | --help | help) usage ;;
    *) usage >&2; exit 2 ;;
esac
