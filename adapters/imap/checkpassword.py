"""Dovecot's checkpassword program for the hub: every IMAP login is decided by the hub, live.

Dovecot runs ``python -I -S checkpassword.py <hub auth socket> <reply program>``
for each authentication (passdb ``checkpassword``): the login and the
secret arrive on file descriptor 3 as ``user\\0secret\\0`` (the SASL
EXTERNAL secret is empty; OAUTHBEARER/XOAUTH2 pass the token), the
mechanism and the client certificate's state in ``AUTH_MECH`` and
``AUTH_CERT`` (Dovecot 2.3 ``db-checkpassword.c``). This program forwards
them as one JSON line to the hub's socket (``adapters.imap.dovecot``) and
reads one JSON line back:

* accepted: the reply (``user=<mailbox>`` and extra fields, tab-separated)
  is written on file descriptor 4, exit 0;
* refused: exit 1; the hub could not decide (socket down, issuer keys
  unreachable): exit 111, a temporary failure.

Standard library only, and started with ``-I -S``: it starts in a few
milliseconds and trusts nothing from the environment's Python paths.
"""

import json
import os
import socket
import sys

_FIELDS = ("AUTH_MECH", "AUTH_CERT", "AUTH_LOGIN_USER", "AUTH_SERVICE", "MASTER_USER")


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        return 111
    sock_path = argv[1]  # argv[2]: Dovecot's reply program, not needed (see below)
    try:
        with os.fdopen(3, "rb") as f:
            data = f.read(65536)
    except OSError:
        return 111
    parts = data.split(b"\0")
    if len(parts) < 2:
        return 1
    request = {
        "user": parts[0].decode("utf-8", "replace"),
        "secret": parts[1].decode("utf-8", "replace"),
        **{k.lower(): os.environ.get(k, "") for k in _FIELDS},
    }
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(20)
            s.connect(sock_path)
            s.sendall(json.dumps(request).encode() + b"\n")
            answer = b""
            while not answer.endswith(b"\n") and len(answer) < 65536:
                chunk = s.recv(4096)
                if not chunk:
                    break
                answer += chunk
        result = json.loads(answer)
    except (OSError, ValueError):
        return 111
    if not result.get("ok"):
        return 111 if result.get("temporary") else 1
    fields = {"user": str(result["user"]), **{str(k): str(v) for k, v in (result.get("extra") or {}).items()}}
    if any(c in k + v for k, v in fields.items() for c in "\t\n\r\0"):
        return 1
    # The reply the checkpassword-reply program would write, written here: that program adds userdb_uid=<its
    # uid> (0 under root, which Dovecot refuses for mail) while the hub wants mail_uid from the config.
    try:
        os.write(4, "".join(f"{k}={v}\t" for k, v in fields.items()).encode())
    except OSError:
        return 111
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
