#!/usr/bin/env python3
"""A real SMTP server for campaignd's tests, built on aiosmtpd (Debian: python3-aiosmtpd).

Every accepted message is stored in a Maildir (new/ holds one file per message) with the
envelope added as headers X-MailFrom, X-RcptTo and X-Peer, and logged on stdout.

    smtp_server.py --host 127.0.0.1 --port 2525 --maildir /tmp/campaignd-smtp/maildir

Authentication: when the environment has SMTP_USER (and SMTP_PASSWORD), the server
advertises AUTH PLAIN/LOGIN without TLS and requires those credentials; otherwise it offers
no AUTH at all. Credentials come from the environment so that they do not show in `ps`.
SMTPUTF8 is enabled (lettre uses it for non-ASCII addresses).
"""

import argparse
import asyncio
import os
import signal
import sys

try:
    from aiosmtpd.handlers import Mailbox
    from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword
except ImportError:  # pragma: no cover - reported to the operator
    sys.exit("smtp_server.py: python3 module aiosmtpd is missing (apt-get install python3-aiosmtpd, "
             "or run scripts/install-deps.sh); note that Debian's module is only visible to /usr/bin/python3")


class LoggingMailbox(Mailbox):
    def handle_message(self, message):
        key = self.mailbox.add(message)
        print(
            f"stored {key}: from={message['X-MailFrom']} to={message['X-RcptTo']} "
            f"subject={message['Subject']!r}",
            flush=True,
        )


def make_authenticator(user, password):
    want = LoginPassword(user.encode(), password.encode())

    def authenticator(_server, _session, _envelope, mechanism, auth_data):
        ok = mechanism in ("PLAIN", "LOGIN") and isinstance(auth_data, LoginPassword) and auth_data == want
        return AuthResult(success=ok, handled=False)

    return authenticator


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=2525)
    parser.add_argument("--maildir", required=True)
    parser.add_argument("--max-size", type=int, default=32 * 1024 * 1024, help="largest accepted message in bytes")
    args = parser.parse_args()

    # mailbox.Maildir creates new/ cur/ tmp/ only when the directory itself is missing.
    for sub in ("new", "cur", "tmp"):
        os.makedirs(os.path.join(args.maildir, sub), mode=0o700, exist_ok=True)
    handler = LoggingMailbox(args.maildir)

    smtp_kwargs = {"data_size_limit": args.max_size, "enable_SMTPUTF8": True, "hostname": "campaignd-test-smtp"}
    user = os.environ.get("SMTP_USER")
    if user:
        smtp_kwargs.update(
            authenticator=make_authenticator(user, os.environ.get("SMTP_PASSWORD", "")),
            auth_required=True,
            auth_require_tls=False,
        )

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    server = loop.run_until_complete(
        loop.create_server(lambda: SMTP(handler, loop=loop, **smtp_kwargs), args.host, args.port,
                           backlog=1024, reuse_address=True)
    )
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, loop.stop)
    auth = f"AUTH required for user {user!r}" if user else "no AUTH"
    print(f"SMTP server listening on {args.host}:{args.port} ({auth}), maildir {args.maildir}", flush=True)
    try:
        loop.run_forever()
    finally:
        server.close()
        loop.run_until_complete(server.wait_closed())
        loop.close()
    print("SMTP server stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
