#!/usr/bin/env python3
"""A real SMTP server for campaignd's tests, built on aiosmtpd (Debian: python3-aiosmtpd).

Every accepted message is stored in a Maildir (new/ holds one file per message) with the
envelope added as headers X-MailFrom, X-RcptTo and X-Peer, and logged on stdout.

    smtp_server.py --host 127.0.0.1 --port 2525 --maildir /tmp/campaignd-smtp/maildir \
        [--port-file FILE] [--tls-cert server.pem --tls-key server.key]

--port 0 binds a free port; --port-file receives the bound port once the server listens
(written atomically), so callers never race for a port.

STARTTLS: with --tls-cert/--tls-key the server offers STARTTLS and refuses MAIL (530) and
AUTH before it; without them it offers no STARTTLS at all (the "server cannot do TLS" case).

Authentication: when the environment has SMTP_USER (and SMTP_PASSWORD), the server
advertises AUTH PLAIN/LOGIN and requires those credentials (only after STARTTLS when TLS is
on); otherwise it offers no AUTH at all. Credentials come from the environment so that they
do not show in `ps`. SMTPUTF8 is enabled (lettre uses it for non-ASCII addresses).

Refusals: with --reject-domain DOMAIN the server answers RCPT to any address at DOMAIN with
"550 5.1.1 mailbox unavailable" (a permanent refusal, as a real server gives for an address
that does not exist), so tests can see how campaignd records a bounce at the door.

What a test can check afterwards: every stored message carries X-Authenticated-User (or
"none") and X-TLS (the TLS version, or "none") of the session it came in; every AUTH attempt
is logged as "auth ok user=..." / "auth failed user=..." with tls=<version|none>.
"""

import argparse
import asyncio
import os
import signal
import ssl
import sys

try:
    from aiosmtpd.handlers import Mailbox
    from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword
except ImportError:  # pragma: no cover - reported to the operator
    sys.exit("smtp_server.py: python3 module aiosmtpd is missing (apt-get install python3-aiosmtpd, "
             "or run scripts/install-deps.sh); note that Debian's module is only visible to /usr/bin/python3")


def tls_version(session):
    """The TLS version of the session, or "none" if it never did STARTTLS."""
    extra = session.ssl or {}
    ssl_object = extra.get("ssl_object")
    return ssl_object.version() if ssl_object is not None else "none"


class LoggingMailbox(Mailbox):
    def __init__(self, maildir, reject_domain=None):
        super().__init__(maildir)
        self.reject_domain = (reject_domain or "").lower()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.reject_domain and address.lower().endswith("@" + self.reject_domain):
            print(f"rejected rcpt {address}", flush=True)
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    def prepare_message(self, session, envelope):
        message = super().prepare_message(session, envelope)
        # What the session looked like, for tests that must prove AUTH and TLS happened.
        message["X-Authenticated-User"] = str(session.auth_data) if session.authenticated else "none"
        message["X-TLS"] = tls_version(session)
        return message

    def handle_message(self, message):
        key = self.mailbox.add(message)
        print(
            f"stored {key}: from={message['X-MailFrom']} to={message['X-RcptTo']} "
            f"subject={message['Subject']!r} auth={message['X-Authenticated-User']} tls={message['X-TLS']}",
            flush=True,
        )


def make_authenticator(user, password):
    want = LoginPassword(user.encode(), password.encode())

    def authenticator(_server, session, _envelope, mechanism, auth_data):
        ok = mechanism in ("PLAIN", "LOGIN") and isinstance(auth_data, LoginPassword) and auth_data == want
        login = auth_data.login.decode(errors="replace") if isinstance(auth_data, LoginPassword) else "?"
        print(f"auth {'ok' if ok else 'failed'} user={login} mechanism={mechanism} tls={tls_version(session)}",
              flush=True)
        return AuthResult(success=ok, handled=False, auth_data=login if ok else None)

    return authenticator


def write_port_file(path, port):
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(f"{port}\n")
    os.replace(tmp, path)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=2525)
    parser.add_argument("--maildir", required=True)
    parser.add_argument("--max-size", type=int, default=32 * 1024 * 1024, help="largest accepted message in bytes")
    parser.add_argument("--port-file", help="write the bound port here once listening")
    parser.add_argument("--tls-cert", help="PEM certificate chain; enables (and requires) STARTTLS")
    parser.add_argument("--tls-key", help="PEM private key of --tls-cert")
    parser.add_argument("--reject-domain", help="answer RCPT to addresses at this domain with 550")
    args = parser.parse_args()
    if bool(args.tls_cert) != bool(args.tls_key):
        parser.error("--tls-cert and --tls-key go together")

    # mailbox.Maildir creates new/ cur/ tmp/ only when the directory itself is missing.
    for sub in ("new", "cur", "tmp"):
        os.makedirs(os.path.join(args.maildir, sub), mode=0o700, exist_ok=True)
    handler = LoggingMailbox(args.maildir, args.reject_domain)

    smtp_kwargs = {"data_size_limit": args.max_size, "enable_SMTPUTF8": True, "hostname": "campaignd-test-smtp"}
    tls = bool(args.tls_cert)
    if tls:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.tls_cert, args.tls_key)
        smtp_kwargs.update(tls_context=context, require_starttls=True)
    user = os.environ.get("SMTP_USER")
    if user:
        smtp_kwargs.update(
            authenticator=make_authenticator(user, os.environ.get("SMTP_PASSWORD", "")),
            auth_required=True,
            # With TLS on, a password never crosses the wire in clear text.
            auth_require_tls=tls,
        )

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    server = loop.run_until_complete(
        loop.create_server(lambda: SMTP(handler, loop=loop, **smtp_kwargs), args.host, args.port,
                           backlog=1024, reuse_address=True)
    )
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, loop.stop)
    port = server.sockets[0].getsockname()[1]
    if args.port_file:
        write_port_file(args.port_file, port)
    auth = f"AUTH required for user {user!r}" if user else "no AUTH"
    starttls = "STARTTLS required" if tls else "no STARTTLS"
    print(f"SMTP server listening on {args.host}:{port} ({auth}, {starttls}), maildir {args.maildir}", flush=True)
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
