#!/usr/bin/env python3
"""A tiny HTTP sink that stands in for campaignd's callback endpoint in checks.

Kannel calls it for delivery reports (the dlr-url of each MT) and for MO (sms-service
get-url). Every request is appended to a JSON-lines file and answered at once with 200.

    callback_sink.py serve --port 18099 --log /tmp/x/callbacks.jsonl [--host 127.0.0.1]
    callback_sink.py wait  --log /tmp/x/callbacks.jsonl --path /callbacks/kannel/dlr \
                           --param id=smoke-1 --param type=8 [--timeout 20] [--count 1]

`wait` prints the matching records (one JSON object per line) and exits 0, or exits 1 after
the timeout and prints what it did receive. Standard library only.

The listen backlog is 1024: smsbox opens many callback connections in parallel, and with
Python's default of 5 the extra SYNs are dropped and retried 1 s / 3 s later (NOTES.md).
"""

import argparse
import json
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit


class SinkServer(ThreadingHTTPServer):
    request_queue_size = 1024
    daemon_threads = True
    allow_reuse_address = True


def make_handler(log_path):
    lock = threading.Lock()
    log_file = open(log_path, "a", encoding="utf-8")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as Kannel's HTTP client uses it
        server_version = "campaignd-callback-sink"

        def _handle(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length > 0 else b""
            url = urlsplit(self.path)
            # Kannel encodes as UTF-8 (mo-recode = true); keep undecodable bytes visible.
            query = dict(parse_qsl(url.query, keep_blank_values=True, encoding="utf-8", errors="backslashreplace"))
            record = {
                "received_at": time.time(),
                "method": self.command,
                "path": url.path,
                "query": query,
                "raw_query": url.query,
                "headers": {k: v for k, v in self.headers.items() if k.lower().startswith("x-kannel")},
                "body": body.decode("utf-8", errors="backslashreplace"),
            }
            with lock:
                log_file.write(json.dumps(record, ensure_ascii=False) + "\n")
                log_file.flush()
            reply = b"OK\n"
            # One send for headers and body.
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        do_GET = _handle
        do_POST = _handle

        def log_message(self, fmt, *args):  # the JSON-lines file is the log
            pass

    return Handler


def serve(args):
    server = SinkServer((args.host, args.port), make_handler(args.log))

    def stop(_signum, _frame):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"callback sink listening on http://{args.host}:{args.port}, logging to {args.log}", flush=True)
    server.serve_forever(poll_interval=0.2)
    server.server_close()
    return 0


def matches(record, path, params):
    if path is not None and record.get("path") != path:
        return False
    query = record.get("query", {})
    return all(query.get(k) == v for k, v in params)


def read_records(log_path):
    try:
        with open(log_path, encoding="utf-8") as f:
            lines = f.readlines()
    except FileNotFoundError:
        return []
    out = []
    for line in lines:
        if line.endswith("\n"):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return out


def wait(args):
    params = []
    for p in args.param:
        if "=" not in p:
            print(f"--param must be key=value, got {p!r}", file=sys.stderr)
            return 2
        params.append(tuple(p.split("=", 1)))
    deadline = time.monotonic() + args.timeout
    while True:
        records = read_records(args.log)
        found = [r for r in records if matches(r, args.path, params)]
        if len(found) >= args.count:
            for r in found:
                print(json.dumps(r, ensure_ascii=False))
            return 0
        if time.monotonic() >= deadline:
            want = " ".join(f"{k}={v}" for k, v in params)
            print(
                f"timed out after {args.timeout}s: wanted {args.count} request(s) to {args.path} with {want}, "
                f"found {len(found)}; all {len(records)} received:",
                file=sys.stderr,
            )
            for r in records:
                print("  " + json.dumps(r, ensure_ascii=False), file=sys.stderr)
            return 1
        time.sleep(0.1)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="run the sink")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=18099)
    s.add_argument("--log", required=True, help="JSON-lines file to append requests to")
    w = sub.add_parser("wait", help="wait for matching requests in the log")
    w.add_argument("--log", required=True)
    w.add_argument("--path", default=None)
    w.add_argument("--param", action="append", default=[], help="key=value that the query must contain")
    w.add_argument("--timeout", type=float, default=20.0)
    w.add_argument("--count", type=int, default=1)
    args = parser.parse_args()
    return serve(args) if args.cmd == "serve" else wait(args)


if __name__ == "__main__":
    sys.exit(main())
