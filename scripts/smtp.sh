#!/usr/bin/env bash
# A real SMTP server (aiosmtpd) on 127.0.0.1 for tests and local development.
# Every message it accepts lands as one file in $SMTP_DIR/maildir/new/.
#
# Usage:
#   scripts/smtp.sh start        start (no-op success if already running); waits until the port listens
#   scripts/smtp.sh stop         SIGTERM by recorded PID; nothing left running
#   scripts/smtp.sh status       exit 0 only if the server runs and listens
#   scripts/smtp.sh port         print the port of the running server (useful with SMTP_PORT=0)
#   scripts/smtp.sh clear        delete all stored messages
#
# Environment (defaults in brackets):
#   SMTP_PORT       TCP port on 127.0.0.1; 0 = a free port chosen by the kernel, see `port` [2525]
#   SMTP_DIR        runtime dir: maildir/, smtp.pid, smtp.log, tls/ [/tmp/campaignd-smtp]
#   SMTP_TLS        none | starttls [none]. starttls: the server offers STARTTLS and requires it
#                   before MAIL and AUTH, with a certificate for 127.0.0.1 and localhost signed
#                   by a throwaway CA generated at start ($SMTP_DIR/tls/ca.pem: give that file to
#                   the client as its trust anchor; it is regenerated at every start)
#   SMTP_USER       if set, AUTH PLAIN/LOGIN is required with this user ...
#   SMTP_PASSWORD   ... and this password; if SMTP_USER is unset, no AUTH is offered
#   SMTP_REJECT_DOMAIN  if set, RCPT to any address at this domain is refused with 550 (a
#                   permanent bounce at the door, for tests) []
#   CAMPAIGND_PYTHON  python interpreter with aiosmtpd [/usr/bin/python3]
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

SMTP_DIR="${SMTP_DIR:-/tmp/campaignd-smtp}"
SMTP_DIR="${SMTP_DIR%/}"
[[ "$SMTP_DIR" == /* ]] || SMTP_DIR="$PWD/$SMTP_DIR"
SMTP_PORT="${SMTP_PORT:-2525}"
MAILDIR="$SMTP_DIR/maildir"
PIDFILE="$SMTP_DIR/smtp.pid"
LOGFILE="$SMTP_DIR/smtp.log"
PORTFILE="$SMTP_DIR/smtp.port"
TLS_DIR="$SMTP_DIR/tls"
SMTP_TLS="${SMTP_TLS:-none}"
SERVER="$REPO_ROOT/scripts/dev/smtp_server.py"

usage() { print_usage; }

# The running server's port (as started), else the environment's.
load_port() {
    local p=""
    if [[ -r "$PORTFILE" ]]; then read -r p <"$PORTFILE" || true; fi
    if [[ "$p" =~ ^[0-9]+$ ]]; then SMTP_PORT="$p"; fi
}

server_pid() {
    local pid
    pid="$(read_pid "$PIDFILE")"
    if [[ -z "$pid" ]] || ! pid_alive "$pid"; then return 1; fi
    # Only our server: guards against a recycled PID.
    tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | grep -Fxq -- "$SERVER" || return 1
    printf '%s\n' "$pid"
}

port_closed() { ! port_listening "$1"; }

server_up() { server_pid >/dev/null && port_listening "$SMTP_PORT"; }

# The server writes the port file once it listens (the only way to learn a port chosen with 0).
server_listening() {
    server_pid >/dev/null || return 1
    [[ -s "$PORTFILE" ]] || return 1
    load_port
    port_listening "$SMTP_PORT"
}

# A throwaway CA and a server certificate for 127.0.0.1/localhost signed by it. Clients must
# trust the CA explicitly (a self-signed leaf used as its own anchor is rejected by webpki).
make_test_certs() {
    require_exe openssl "openssl (package openssl)"
    rm -rf -- "$TLS_DIR"
    mkdir -p "$TLS_DIR"
    chmod 0700 "$TLS_DIR"
    local out
    if ! out="$(
        exec 2>&1
        set -e
        cd "$TLS_DIR"
        openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=campaignd test CA" \
            -keyout ca.key -out ca.pem \
            -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
        openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" -keyout server.key -out server.csr
        printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
            "extendedKeyUsage=serverAuth" "subjectAltName=IP:127.0.0.1,DNS:localhost" >server.ext
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
            -extfile server.ext -out server.pem
    )"; then
        printf '%s\n' "$out" >&2
        die "could not generate the test certificates in $TLS_DIR"
    fi
    # The CA key is only needed to sign the server certificate.
    rm -f "$TLS_DIR/ca.key" "$TLS_DIR/server.csr" "$TLS_DIR/ca.srl"
}

do_status() {
    load_port
    if server_up; then
        echo "SMTP server running (pid $(server_pid)) on 127.0.0.1:$SMTP_PORT, maildir $MAILDIR ($(find "$MAILDIR/new" "$MAILDIR/cur" -type f 2>/dev/null | wc -l) messages)"
        return 0
    fi
    echo "SMTP server not running ($SMTP_DIR)"
    return 1
}

do_start() {
    require_python_module aiosmtpd "aiosmtpd (package python3-aiosmtpd)"
    require_exe setsid "setsid (package util-linux)"
    [[ "$SMTP_PORT" == 0 ]] || check_port_value SMTP_PORT "$SMTP_PORT"
    [[ "$SMTP_TLS" == none || "$SMTP_TLS" == starttls ]] || die "SMTP_TLS must be none or starttls, got '$SMTP_TLS'"
    ensure_private_dir "$SMTP_DIR"
    local want_port="$SMTP_PORT"
    load_port
    if server_up; then
        log "already running (pid $(server_pid)) on 127.0.0.1:$SMTP_PORT; nothing to do"
        [[ "$want_port" == "$SMTP_PORT" ]] || log "warning: it listens on $SMTP_PORT, not SMTP_PORT=$want_port; stop it first to change"
        return 0
    fi
    if server_pid >/dev/null; then
        log "a previous server is running but not listening; stopping it"
        do_stop
    fi
    SMTP_PORT="$want_port"
    if [[ "$SMTP_PORT" != 0 ]] && port_listening "$SMTP_PORT"; then
        die "port $SMTP_PORT is already in use by another process; choose another with SMTP_PORT=... (or 0)"
    fi
    mkdir -p "$MAILDIR"
    [[ -f "$LOGFILE" ]] && mv -f "$LOGFILE" "$LOGFILE.1"
    rm -f "$PORTFILE"
    local tls_args=()
    if [[ -n "${SMTP_REJECT_DOMAIN:-}" ]]; then
        tls_args+=(--reject-domain "$SMTP_REJECT_DOMAIN")
    fi
    if [[ "$SMTP_TLS" == starttls ]]; then
        make_test_certs
        tls_args+=(--tls-cert "$TLS_DIR/server.pem" --tls-key "$TLS_DIR/server.key")
    fi
    log "starting SMTP server on 127.0.0.1:$SMTP_PORT (TLS: $SMTP_TLS, maildir $MAILDIR, log $LOGFILE)"
    rm -f "$PIDFILE"
    # The process writes its own PID (`$!` may be the setsid parent).
    # shellcheck disable=SC2016 # $$, $1.. are expanded by the inner bash
    setsid bash -c 'pf=$1; shift; echo $$ >"$pf"; exec "$@"' smtp-launch "$PIDFILE" \
        "$PYTHON" -u "$SERVER" --host 127.0.0.1 --port "$SMTP_PORT" --maildir "$MAILDIR" \
        --port-file "$PORTFILE" "${tls_args[@]}" \
        </dev/null >"$LOGFILE" 2>&1 &
    if ! wait_until 10 "the SMTP server to listen on 127.0.0.1:$SMTP_PORT" server_listening; then
        log "---- $LOGFILE"
        tail -n 20 "$LOGFILE" >&2 || true
        do_stop >/dev/null 2>&1 || true
        die "SMTP server did not start"
    fi
    local tls_note=""
    [[ "$SMTP_TLS" == starttls ]] && tls_note=", STARTTLS required (CA: $TLS_DIR/ca.pem)"
    log "SMTP server up (pid $(server_pid)) on 127.0.0.1:$SMTP_PORT${SMTP_USER:+, AUTH required for $SMTP_USER}$tls_note"
}

do_stop() {
    load_port
    local pid
    if pid="$(server_pid)"; then
        stop_pid "$PIDFILE" "" "SMTP server" 5
        wait_until 5 "port $SMTP_PORT to close" port_closed "$SMTP_PORT" || true
        log "SMTP server stopped (was pid $pid)"
    else
        rm -f "$PIDFILE"
        log "SMTP server not running"
    fi
    rm -f "$PORTFILE"
}

do_clear() {
    local d n=0
    for d in new cur tmp; do
        if [[ -d "$MAILDIR/$d" ]]; then
            n=$((n + $(find "$MAILDIR/$d" -type f | wc -l)))
            find "$MAILDIR/$d" -type f -delete
        fi
    done
    log "deleted $n message(s) from $MAILDIR"
}

case "${1:-}" in
    start) do_start ;;
    stop) do_stop ;;
    status) do_status ;;
    port)
        load_port
        server_up || die "SMTP server not running ($SMTP_DIR)"
        printf '%s\n' "$SMTP_PORT"
        ;;
    clear) do_clear ;;
    -h | --help | help) usage ;;
    *) usage >&2; exit 2 ;;
esac
