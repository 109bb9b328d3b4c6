#!/usr/bin/env bash
# Smoke check of the test Kannel (scripts/kannel.sh), end to end, against a loopback HTTP
# sink (scripts/dev/callback_sink.py) that stands in for campaignd's callback endpoint:
#   1. start the sink and Kannel (MO service pointed at the sink);
#   2. submit one MT with curl to sendsms (dlr-mask=31, dlr-url at the sink) -> 202 "0: Accepted";
#      a wrong password -> 403;
#   3. see the MT at fakesmsc, and the DLRs type 8 (SMSC ACK) and type 1 (delivered) at the sink;
#   4. inject an ASCII MO and a Chinese (UCS-2) MO and see both at the sink, UTF-8 decoded;
#   5. stop everything and check that no process is left and the ports are closed.
# Cleans up after itself, also on failure (logs are kept then, and their place is printed).
#
# Environment: KANNEL_DIR [/tmp/campaignd-kannel-smoke], KANNEL_*_PORT as for kannel.sh,
#   KANNEL_SMOKE_SINK_PORT [18099].
# Exit codes: 0 ok, 1 failure, 77 skipped (dependency missing; under CI=true that is a failure).
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

require_exe "${KANNEL_BEARERBOX:-/usr/sbin/bearerbox}" "bearerbox (package kannel)" skip
require_exe "${KANNEL_SMSBOX:-/usr/sbin/smsbox}" "smsbox (package kannel)" skip
require_exe "${KANNEL_FAKESMSC:-/usr/lib/kannel/test/fakesmsc}" "fakesmsc (package kannel-extras)" skip
require_exe curl "curl (package curl)" skip
require_exe "$PYTHON" "python3" skip

export KANNEL_DIR="${KANNEL_DIR:-/tmp/campaignd-kannel-smoke}"
SINK_PORT="${KANNEL_SMOKE_SINK_PORT:-18099}"
check_port_value KANNEL_SMOKE_SINK_PORT "$SINK_PORT"
export CAMPAIGND_CALLBACK_URL="http://127.0.0.1:$SINK_PORT"
KANNEL_SH="$REPO_ROOT/scripts/kannel.sh"
SINK_PY="$REPO_ROOT/scripts/dev/callback_sink.py"
SENDSMS_PORT="${KANNEL_SENDSMS_PORT:-13013}"
PASSWORD="${CAMPAIGND_KANNEL_PASSWORD:-campaignd-test}"

WORK="$(mktemp -d /tmp/campaignd-kannel-smoke-sink.XXXXXX)"
CB_LOG="$WORK/callbacks.jsonl"
SINK_PIDFILE="$WORK/sink.pid"

cleanup() {
    local rc=$?
    trap - EXIT
    "$KANNEL_SH" stop >/dev/null 2>&1 || true
    stop_pid "$SINK_PIDFILE" "" "callback sink" 5 2>/dev/null || true
    if ((rc == 0)); then
        rm -rf -- "$WORK" "$KANNEL_DIR"
    else
        log "FAILED (exit $rc); kept Kannel logs in $KANNEL_DIR/logs and callbacks in $CB_LOG"
    fi
    exit "$rc"
}
trap cleanup EXIT

fail() { log "FAIL: $*"; exit 1; }

# A previous smoke run that died may have left its Kannel behind.
"$KANNEL_SH" stop >/dev/null 2>&1 || true

# ---- 1. sink + Kannel ----------------------------------------------------------------------
if port_listening "$SINK_PORT"; then
    fail "port $SINK_PORT for the callback sink is in use; set KANNEL_SMOKE_SINK_PORT"
fi
log "starting the callback sink on 127.0.0.1:$SINK_PORT"
# shellcheck disable=SC2016 # $$, $1.. are expanded by the inner bash
setsid bash -c 'pf=$1; shift; echo $$ >"$pf"; exec "$@"' sink-launch "$SINK_PIDFILE" \
    "$PYTHON" -u "$SINK_PY" serve --host 127.0.0.1 --port "$SINK_PORT" --log "$CB_LOG" \
    </dev/null >"$WORK/sink.out" 2>&1 &
wait_until 10 "the callback sink" port_listening "$SINK_PORT" || { cat "$WORK/sink.out" >&2; fail "sink did not start"; }

"$KANNEL_SH" start

# ---- 2. MT submit --------------------------------------------------------------------------
token="smoke-$(date +%s)-$$"
text="campaignd smoke $token"
dlr_url="$CAMPAIGND_CALLBACK_URL/callbacks/kannel/dlr?id=$token&type=%d&smscid=%i&fid=%F&to=%p&from=%P&ts=%T&reply=%A"
sendsms() { # sendsms <password> -> "HTTP-code body"
    curl -sS -m 10 -G "http://127.0.0.1:$SENDSMS_PORT/cgi-bin/sendsms" \
        --data-urlencode "username=campaignd" --data-urlencode "password=$1" \
        --data-urlencode "from=10086" --data-urlencode "to=13800138000" \
        --data-urlencode "text=$text" --data-urlencode "dlr-mask=31" --data-urlencode "dlr-url=$dlr_url" \
        -w ' %{http_code}'
}
log "MT: sendsms from=10086 to=13800138000 text='$text' dlr-mask=31"
reply="$(sendsms "$PASSWORD")"
log "sendsms reply: $reply"
[[ "$reply" == "0: Accepted for delivery 202" ]] || fail "expected '0: Accepted for delivery' with HTTP 202"

reply="$(sendsms "wrong-$PASSWORD")"
log "sendsms with a wrong password: $reply"
[[ "$reply" == *" 403" ]] || fail "expected HTTP 403 for a wrong password"

# ---- 3. MT at fakesmsc, DLRs at the sink ---------------------------------------------------
mt_at_fakesmsc() { grep -F "<10086 13800138000 text $text>" "$KANNEL_DIR/logs/fakesmsc.log"; }
wait_until 10 "the MT at fakesmsc" mt_at_fakesmsc >/dev/null || fail "MT did not reach fakesmsc"
log "fakesmsc: $(mt_at_fakesmsc)"

for type in 8 1; do
    log "waiting for the DLR type $type"
    "$PYTHON" "$SINK_PY" wait --log "$CB_LOG" --path /callbacks/kannel/dlr \
        --param "id=$token" --param "type=$type" --param to=13800138000 --param from=10086 --param smscid=FAKE \
        --timeout 15 || fail "no DLR type $type"
done

# ---- 4. MO ---------------------------------------------------------------------------------
"$KANNEL_SH" mo 13800138000 10086 "YES $token"
"$PYTHON" "$SINK_PY" wait --log "$CB_LOG" --path /callbacks/kannel/mo \
    --param from=13800138000 --param to=10086 --param "text=YES $token" --timeout 15 || fail "ASCII MO not received"

"$KANNEL_SH" mo 13800138001 10086 "退订 谢谢"
"$PYTHON" "$SINK_PY" wait --log "$CB_LOG" --path /callbacks/kannel/mo \
    --param from=13800138001 --param to=10086 --param "text=退订 谢谢" --timeout 15 || fail "UCS-2 MO not received as UTF-8"

"$KANNEL_SH" status -q || fail "kannel.sh status is not 0 while everything should be up"

# ---- 5. stop -------------------------------------------------------------------------------
pids="$(cat "$KANNEL_DIR"/run/{bearerbox,smsbox,fakesmsc}.pid)"
"$KANNEL_SH" stop
for pid in $pids; do
    wait_until 5 "pid $pid to go away" pid_gone "$pid" || fail "process $pid still running after stop"
done
for p in "${KANNEL_ADMIN_PORT:-13000}" "${KANNEL_BOX_PORT:-13001}" "${KANNEL_SMSC_PORT:-10000}" "$SENDSMS_PORT"; do
    ! port_listening "$p" || fail "port $p still listening after stop"
done
if "$KANNEL_SH" status -q; then fail "status is 0 after stop"; fi

log "OK: Kannel smoke check passed (MT accepted, DLR 8 + 1 received, 2 MO received, clean stop)"
