"""Token helpers for the service API (the server itself is ``python -m pvekvm api``).

  python -m pvekvm api new-token             a new billing token and the line for settings
  python -m pvekvm api hash-token TOKEN      the settings value for an existing token

(``python -m pvekvm.apps.api new-token`` and ``hash-token``, the older spelling, do the same.)

Client tokens are minted by billing over HTTP (``POST /v1/services/{id}/client-token``) and
stored hashed in the database; there is no key to derive them from any more.
"""

from __future__ import annotations

import argparse
import sys

from pvekvm.apps.api.auth import hash_token, new_token


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pvekvm.apps.api", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", help="accepted for older scripts; no command needs settings")
    sub = ap.add_subparsers(dest="cmd")
    sub.add_parser("new-token")
    sub.add_parser("hash-token").add_argument("token")
    args = ap.parse_args(argv)
    if args.cmd is None:
        print("python -m pvekvm.apps.api makes tokens (new-token, hash-token TOKEN); the API "
              "server "
              "is `python -m pvekvm api --port 8080`", file=sys.stderr)
        return 2
    if args.cmd == "new-token":
        token = new_token()
        print(f"token: {token}\nsettings: [api.tokens] NAME = \"{hash_token(token)}\"\n"
              "(the token is shown once: give it to billing; settings keep only its hash)")
    else:
        print(hash_token(args.token))
    return 0


if __name__ == "__main__":
    sys.exit(main())
