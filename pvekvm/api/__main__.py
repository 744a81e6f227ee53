"""Token helpers for the service API.

  python -m pvekvm.api new-token             a new billing token and the line for settings
  python -m pvekvm.api hash-token TOKEN      the settings value for an existing token
  python -m pvekvm.api client-token SERVICE  the client token of one service (needs the key)
"""

from __future__ import annotations

import argparse
import sys

from pvekvm.api.auth import client_token, hash_token, new_token
from pvekvm.config import load_settings


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pvekvm.api", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("new-token")
    sub.add_parser("hash-token").add_argument("token")
    sub.add_parser("client-token").add_argument("service_id", type=int)
    args = ap.parse_args(argv)
    if args.cmd == "new-token":
        token = new_token()
        print(f"token: {token}\nsettings: [api.tokens] NAME = \"{hash_token(token)}\"")
    elif args.cmd == "hash-token":
        print(hash_token(args.token))
    else:
        key = load_settings(args.config).api.client_token_key
        if not key:
            ap.error("no [api] client_token_key configured")
        print(client_token(key, args.service_id))
    return 0


if __name__ == "__main__":
    sys.exit(main())
