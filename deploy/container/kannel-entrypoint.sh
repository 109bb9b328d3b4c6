#!/usr/bin/env bash
# Entrypoint of the Kannel container (deploy/container/kannel.Containerfile).
#
#   kannel-entrypoint            render the config, start bearerbox -> smsbox [-> fakesmsc],
#                                supervise them; exits non-zero when one of them dies (let the
#                                container runtime restart the whole set), 0 on SIGTERM/SIGINT
#   kannel-entrypoint health     exit 0 if the SMSC is online and smsbox is connected
#   kannel-entrypoint mo <from> <to> <text>
#                                inject one MO through fakesmsc (demo mode, ASCII text)
#
# Environment:
#   KANNEL_CONF_TEMPLATE       template to render [/etc/kannel/campaignd.conf.tmpl]
#   KANNEL_RUN_DIR             rendered config, MO fifo [/run/kannel]
#   KANNEL_FAKESMSC            1: also run fakesmsc against the FAKE smsc (demo) [1]
#   KANNEL_VERBOSITY           stderr log level 0 debug .. 4 panic [1]
#   KANNEL_ADMIN_PASSWORD, KANNEL_STATUS_PASSWORD, CAMPAIGND_KANNEL_PASSWORD,
#   CAMPAIGND_CALLBACK_URL     required
#   CAMPAIGND_ALLOWED_IPS      who may submit [private ranges + 127.0.0.1]
#   SMSC_HOST, SMSC_PORT, SMSC_SYSTEM_ID, SMSC_PASSWORD   for the production (SMPP) template
set -euo pipefail

TEMPLATE="${KANNEL_CONF_TEMPLATE:-/etc/kannel/campaignd.conf.tmpl}"
RUN_DIR="${KANNEL_RUN_DIR:-/run/kannel}"
CONF="$RUN_DIR/kannel.conf"
FIFO="$RUN_DIR/mo.fifo"
ADMIN_PORT=13000
BOX_PORT=13001
SENDSMS_PORT=13013
SMSC_FAKE_PORT=10000
VERBOSITY="${KANNEL_VERBOSITY:-1}"
# campaignd's MO callback refuses replies without a gateway token (campaignd token create --role gateway).
export CAMPAIGND_MO_TOKEN="${CAMPAIGND_MO_TOKEN:-none}"
export CAMPAIGND_ALLOWED_IPS="${CAMPAIGND_ALLOWED_IPS:-127.0.0.1;10.*.*.*;172.*.*.*;192.168.*.*}"
# shellcheck disable=SC2016 # the literal names for envsubst
VARS='${KANNEL_ADMIN_PASSWORD} ${KANNEL_STATUS_PASSWORD} ${CAMPAIGND_KANNEL_PASSWORD} ${CAMPAIGND_CALLBACK_URL} ${CAMPAIGND_MO_TOKEN} ${CAMPAIGND_ALLOWED_IPS} ${SMSC_HOST} ${SMSC_PORT} ${SMSC_SYSTEM_ID} ${SMSC_PASSWORD}'

log() { printf 'kannel-entrypoint: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Listening on TCP <port>? Reads /proc/net/tcp{,6}: never connects (a probe connection to the
# fake SMSC port would be taken for a fakesmsc client).
port_listening() {
    local hex f
    hex="$(printf '%04X' "$1")"
    for f in /proc/net/tcp /proc/net/tcp6; do
        [[ -r "$f" ]] || continue
        if awk -v p=":$hex" '$4 == "0A" && substr($2, length($2) - 4) == p { found = 1 } END { exit !found }' "$f"; then
            return 0
        fi
    done
    return 1
}

wait_port() { # wait_port <port> <pid> <name>
    local i
    for ((i = 0; i < 300; i++)); do
        port_listening "$1" && return 0
        kill -0 "$2" 2>/dev/null || die "$3 exited during start-up"
        sleep 0.1
    done
    die "$3 did not listen on port $1 within 30 s"
}

status_txt() {
    curl -sS -m 3 -G "http://127.0.0.1:$ADMIN_PORT/status.txt" --data-urlencode "password=${KANNEL_STATUS_PASSWORD:-}"
}

health() {
    local s
    s="$(status_txt)" || exit 1
    grep -Eq '^[[:space:]]*smsbox:.*\(on-line' <<<"$s" || { echo "smsbox not connected"; exit 1; }
    grep -Eq '^[[:space:]]*[A-Za-z0-9_-]+\[[A-Za-z0-9_-]+\].*\(online' <<<"$s" || { echo "no SMSC online"; exit 1; }
    echo "ok"
}

mo() {
    (($# == 3)) || die "usage: kannel-entrypoint mo <from> <to> <text>"
    [[ -p "$FIFO" ]] || die "no MO fifo at $FIFO (is KANNEL_FAKESMSC=1?)"
    [[ "$1" =~ ^[+A-Za-z0-9]+$ && "$2" =~ ^[+A-Za-z0-9]+$ ]] || die "from/to must not contain spaces"
    [[ "$3" != *$'\n'* ]] || die "text must be one line"
    # One line per call; fakesmsc reads with select()+fgets(), so leave ~1 s between calls.
    # shellcheck disable=SC2016 # expanded by the inner bash
    timeout 5 bash -c 'printf "%s\n" "$1" >"$2"' _ "$1 $2 text $3" "$FIFO"
    log "MO injected: $1 $2 text $3"
}

case "${1:-}" in
    health) health; exit 0 ;;
    mo) shift; mo "$@"; exit 0 ;;
    "") ;;
    *) die "unknown command: $1 (expected no argument, health or mo)" ;;
esac

for v in KANNEL_ADMIN_PASSWORD KANNEL_STATUS_PASSWORD CAMPAIGND_KANNEL_PASSWORD CAMPAIGND_CALLBACK_URL; do
    [[ -n "${!v:-}" ]] || die "$v must be set"
done
CAMPAIGND_CALLBACK_URL="${CAMPAIGND_CALLBACK_URL%/}"
export CAMPAIGND_CALLBACK_URL

[[ -r "$TEMPLATE" ]] || die "template $TEMPLATE not found"
mkdir -p "$RUN_DIR"
(
    umask 077
    envsubst "$VARS" <"$TEMPLATE" >"$CONF"
)
left="$(grep -v '^[[:space:]]*#' "$CONF" | grep -o '[$][{][A-Za-z_]*[}]' | sort -u | tr '\n' ' ' || true)"
[[ -z "$left" ]] || die "unrendered placeholder(s) in $CONF: $left"


pids=()
stopping=0
# shellcheck disable=SC2317 # invoked by the trap
on_signal() {
    stopping=1
    log "stopping: admin shutdown"
    curl -sS -m 3 -G "http://127.0.0.1:$ADMIN_PORT/shutdown" --data-urlencode "password=$KANNEL_ADMIN_PASSWORD" >/dev/null 2>&1 ||
        kill -TERM "${pids[0]}" 2>/dev/null || true
}
trap on_signal TERM INT

log "starting bearerbox"
/usr/sbin/bearerbox -v "$VERBOSITY" "$CONF" </dev/null &
pids+=("$!")
wait_port "$ADMIN_PORT" "${pids[0]}" bearerbox
wait_port "$BOX_PORT" "${pids[0]}" bearerbox

log "starting smsbox"
/usr/sbin/smsbox -v "$VERBOSITY" "$CONF" </dev/null &
pids+=("$!")
wait_port "$SENDSMS_PORT" "${pids[1]}" smsbox

if [[ "${KANNEL_FAKESMSC:-1}" == 1 ]]; then
    wait_port "$SMSC_FAKE_PORT" "${pids[0]}" bearerbox
    rm -f "$FIFO"
    mkfifo -m 0600 "$FIFO"
    log "starting fakesmsc (MO fifo $FIFO)"
    # Read-write open: fakesmsc never sees EOF on its stdin (it would exit).
    /usr/lib/kannel/test/fakesmsc -H 127.0.0.1 -r "$SMSC_FAKE_PORT" -v 0 0<>"$FIFO" &
    pids+=("$!")
fi
log "running: pids ${pids[*]}"

# Supervise: leave when a signal arrived or any process ended.
while true; do
    wait -n || true
    ((stopping)) && break
    alive=1
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null || alive=0; done
    ((alive)) || break
done

rc=0
if ((!stopping)); then
    log "a Kannel process exited unexpectedly; stopping the others"
    rc=1
fi
for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
for _ in $(seq 50); do
    alive=0
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    ((alive)) || break
    sleep 0.2
done
for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
wait || true
log "stopped"
exit "$rc"
