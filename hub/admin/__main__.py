"""``python -m hub.admin``: make the secrets and hashes the ``admin`` config section holds.

* ``hash-password`` reads a password (twice, without echo; or one line on stdin)
  and prints its scrypt hash for ``admin.users.<name>.password_hash``;
* ``new-token`` prints a fresh random token on the first line and its hash
  for ``admin.tokens[].token_hash`` on the second;
* ``hash-token`` reads a token on stdin and prints its hash.
"""

from __future__ import annotations

import getpass
import secrets
import sys

from hub.admin.auth import hash_password, hash_token


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    command = args[0] if args else ""
    if command == "hash-password":
        if sys.stdin.isatty():
            password = getpass.getpass("password: ")
            if password != getpass.getpass("again: "):
                print("the two passwords differ", file=sys.stderr)
                return 1
        else:
            password = sys.stdin.readline().rstrip("\n")
        if len(password) < 12:
            print("use at least 12 characters", file=sys.stderr)
            return 1
        print(hash_password(password))
        return 0
    if command == "new-token":
        token = secrets.token_urlsafe(32)
        print(token)
        print(hash_token(token))
        return 0
    if command == "hash-token":
        print(hash_token(sys.stdin.readline().strip()))
        return 0
    print("usage: python -m hub.admin hash-password | new-token | hash-token", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
