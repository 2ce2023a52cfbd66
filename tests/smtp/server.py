"""An SMTP server for the alert tests: aiosmtpd (from PyPI) with AUTH PLAIN/LOGIN.

    python server.py HOST:PORT USER:PASSWORD OUT.jsonl

Accepts mail only after authentication as USER:PASSWORD (over plain TCP: the test runs on
loopback) and appends one JSON line per message to OUT.jsonl: the authenticated user, the
envelope and the message as sent. Prints "ready" once it listens.
"""

import json
import sys
import time

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


def main() -> None:
    address, credentials, out = sys.argv[1:4]
    host, port = address.rsplit(":", 1)
    user, password = credentials.split(":", 1)

    def authenticate(server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and (
            auth_data.login.decode(), auth_data.password.decode()
        ) == (user, password)
        return AuthResult(success=ok, handled=False)

    class Record:
        async def handle_DATA(self, server, session, envelope):
            with open(out, "a", encoding="utf-8") as file:
                file.write(json.dumps({
                    "user": session.authenticated and user,
                    "from": envelope.mail_from,
                    "to": envelope.rcpt_tos,
                    "data": envelope.content.decode("utf-8", "replace"),
                }) + "\n")
            return "250 OK"

    controller = Controller(
        Record(),
        hostname=host,
        port=int(port),
        authenticator=authenticate,
        auth_required=True,
        auth_require_tls=False,
    )
    controller.start()
    print("ready", flush=True)
    try:
        while True:
            time.sleep(3600)
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
