#!/usr/bin/env bash
# Smoke check of the test SMTP server (scripts/smtp.sh), end to end:
#   1. start it without AUTH, send a UTF-8 mail to two recipients with python smtplib,
#      and find it (envelope and body) in the maildir;
#   2. restart it with SMTP_USER/SMTP_PASSWORD and check that sending without AUTH and with
#      a wrong password is refused and that a login with the right password is delivered.
# Stops the server and removes its runtime dir at the end, also on failure.
#
# Environment: SMTP_PORT [2525], SMTP_DIR [/tmp/campaignd-smtp-smoke].
# Exit codes: 0 ok, 1 failure, 77 skipped (dependency missing; under CI=true that is a failure).
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

require_python_module aiosmtpd "aiosmtpd (package python3-aiosmtpd)" skip

export SMTP_PORT="${SMTP_PORT:-2525}"
export SMTP_DIR="${SMTP_DIR:-/tmp/campaignd-smtp-smoke}"
SMTP_SH="$REPO_ROOT/scripts/smtp.sh"
MAILDIR="$SMTP_DIR/maildir"

cleanup() {
    local rc=$?
    SMTP_USER="" "$SMTP_SH" stop >/dev/null 2>&1 || true
    if ((rc == 0)); then
        rm -rf -- "$SMTP_DIR"
    else
        log "FAILED; server log kept in $SMTP_DIR/smtp.log"
    fi
    exit "$rc"
}
trap cleanup EXIT

"$SMTP_SH" stop >/dev/null 2>&1 || true
rm -rf -- "$MAILDIR"

# ---- 1. no AUTH ----------------------------------------------------------------------------
env -u SMTP_USER -u SMTP_PASSWORD "$SMTP_SH" start
token="smoke-$(date +%s)-$$"
log "sending a mail with token $token to 127.0.0.1:$SMTP_PORT"
"$PYTHON" - "$SMTP_PORT" "$token" "$MAILDIR" <<'PY'
import email, email.policy, glob, smtplib, sys, time
from email.message import EmailMessage

port, token, maildir = int(sys.argv[1]), sys.argv[2], sys.argv[3]
msg = EmailMessage()
msg["From"] = "campaignd <campaignd@example.com>"
msg["To"] = "retention@example.com, marketing@example.com"
msg["Subject"] = f"流失预警 churn warning {token}"
msg.set_content(f"客户 13800138000 ARPU 下降。\ntoken={token}\n")
with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
    refused = s.send_message(msg)
    assert not refused, refused
    assert "auth" not in s.esmtp_features, "AUTH must not be offered without SMTP_USER"

deadline = time.time() + 10
while True:
    files = glob.glob(f"{maildir}/new/*")
    if files or time.time() > deadline:
        break
    time.sleep(0.1)
assert len(files) == 1, f"expected 1 message in {maildir}/new, found {len(files)}"
with open(files[0], "rb") as f:
    stored = email.message_from_binary_file(f, policy=email.policy.default)
print(f"stored: {files[0]}")
print(f"  X-MailFrom: {stored['X-MailFrom']}")
print(f"  X-RcptTo:   {stored['X-RcptTo']}")
print(f"  Subject:    {stored['Subject']}")
assert stored["X-MailFrom"] == "campaignd@example.com", stored["X-MailFrom"]
assert stored["X-RcptTo"] == "retention@example.com, marketing@example.com", stored["X-RcptTo"]
assert stored["Subject"] == f"流失预警 churn warning {token}", stored["Subject"]
body = stored.get_content()
assert f"token={token}" in body and "客户 13800138000 ARPU 下降。" in body, body
print("  body ok (UTF-8 round trip)")
PY
"$SMTP_SH" status
"$SMTP_SH" stop

# ---- 2. AUTH required ----------------------------------------------------------------------
SMTP_USER=campaignd SMTP_PASSWORD=smoke-secret "$SMTP_SH" start
"$PYTHON" - "$SMTP_PORT" "$token" "$MAILDIR" <<'PY'
import glob, smtplib, sys, time
from email.message import EmailMessage

port, token, maildir = int(sys.argv[1]), sys.argv[2], sys.argv[3]
before = len(glob.glob(f"{maildir}/new/*"))

def message(tag):
    msg = EmailMessage()
    msg["From"] = "campaignd@example.com"
    msg["To"] = "ops@example.com"
    msg["Subject"] = f"{tag} {token}"
    msg.set_content(tag)
    return msg

with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
    s.ehlo()
    assert "auth" in s.esmtp_features, s.esmtp_features
    try:
        s.send_message(message("no-auth"))
        raise SystemExit("FAIL: sending without AUTH was accepted")
    except smtplib.SMTPSenderRefused as e:
        print(f"without AUTH: refused as expected ({e.smtp_code} {e.smtp_error.decode()})")
with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
    try:
        s.login("campaignd", "wrong")
        raise SystemExit("FAIL: wrong password was accepted")
    except smtplib.SMTPAuthenticationError as e:
        print(f"wrong password: refused as expected ({e.smtp_code})")
with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
    s.login("campaignd", "smoke-secret")
    s.send_message(message("with-auth"))
    print("right password: accepted")

deadline = time.time() + 10
while len(glob.glob(f"{maildir}/new/*")) < before + 1:
    if time.time() > deadline:
        raise SystemExit("FAIL: authenticated message not stored")
    time.sleep(0.1)
assert len(glob.glob(f"{maildir}/new/*")) == before + 1
print("authenticated message stored")
PY
"$SMTP_SH" stop

log "OK: SMTP smoke check passed"
