"""A real SMTP server for leadline's tests: aiosmtpd, with a small handler.

It keeps every message it accepts (one JSON object per line in
messages.jsonl: envelope sender, recipients, the raw data), and it lets a
test script the server's answers by recipient address:

  tempfail...@  -> 451 at RCPT (transient)
  reject...@    -> 550 at RCPT (permanent)
  hold...@      -> the message is stored, then the 250 reply to DATA waits
                   until a file named `release` exists in the directory

Options: --port, --dir, --tls-cert/--tls-key (STARTTLS offered and
required), --auth USER:PASSWORD (AUTH PLAIN/LOGIN required), --discard
(accept every message and keep none: a sink for throughput runs, which
would otherwise measure this file's fsync per message).
"""

import argparse
import asyncio
import json
import os
import signal
import ssl
import threading

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult


class Handler:
    def __init__(self, directory, discard):
        self.directory = directory
        self.discard = discard
        self.lock = threading.Lock()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.split("@", 1)[0].lower()
        if local.startswith("tempfail"):
            return "451 4.3.0 Mailbox busy, try again later"
        if local.startswith("reject"):
            return "550 5.1.1 No such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.discard:
            return "250 2.0.0 Ok: discarded"
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "data": envelope.content.decode("utf-8", errors="replace"),
        }
        with self.lock:
            with open(os.path.join(self.directory, "messages.jsonl"), "a") as out:
                out.write(json.dumps(record) + "\n")
                out.flush()
                os.fsync(out.fileno())
        if any(r.split("@", 1)[0].lower().startswith("hold") for r in envelope.rcpt_tos):
            release = os.path.join(self.directory, "release")
            for _ in range(6000):
                if os.path.exists(release):
                    break
                await asyncio.sleep(0.01)
        return "250 2.0.0 Ok: queued"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", required=True)
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    parser.add_argument("--auth")
    parser.add_argument("--discard", action="store_true")
    args = parser.parse_args()

    params = {}
    if args.tls_cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.tls_cert, args.tls_key)
        params["tls_context"] = context
        params["require_starttls"] = True
    if args.auth:
        user, password = args.auth.split(":", 1)

        def authenticator(server, session, envelope, mechanism, auth_data):
            ok = (
                auth_data.login.decode() == user
                and auth_data.password.decode() == password
            )
            # handled=False: aiosmtpd answers 535 itself.
            return AuthResult(success=ok, handled=False)

        params["authenticator"] = authenticator
        params["auth_required"] = True
        params["auth_require_tls"] = bool(args.tls_cert)

    controller = Controller(
        Handler(args.dir, args.discard), hostname="127.0.0.1", port=args.port, **params
    )
    controller.start()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print(f"listening on 127.0.0.1:{args.port}", flush=True)
    stop.wait()
    controller.stop()


if __name__ == "__main__":
    main()
