"""Where the workers' CPU goes: cProfile stats from ``bench_deploy.py --profile DIR`` (each worker
thread's whole run, timed with ``time.thread_time``), self time grouped by library.

    .venv/bin/python bench/profile_report.py DIR/*.prof [--messages N] [--top 25]

``--messages``: step messages of the run, to print ms per step message.
"""

from __future__ import annotations

import argparse
import pstats
import sys

GROUPS = (  # (group, substrings of the file path or builtin name), first match wins
    ("TLS (ssl)", ("_ssl.", "ssl.py", "SSLSocket", "SSLContext")),
    ("socket/select syscalls", ("socket", "select", "poll", "selectors.py")),
    ("pika", ("/pika/",)),
    ("pymysql", ("/pymysql/",)),
    ("peewee", ("peewee.py", "playhouse")),
    ("requests/urllib3", ("/requests/", "/urllib3/", "http/client.py", "email/", "idna",
                          "charset_normalizer")),
    ("proxmoxer", ("/proxmoxer/",)),
    ("tenacity", ("/tenacity/",)),
    ("json", ("json",)),
    ("logging", ("logging/",)),
    ("pvekvm/steps/workers", ("/pvekvm/", "/steps/", "/workers/")),
    ("threading/queue", ("threading.py", "queue.py", "lock", "Condition")),
    ("bench instrumentation", ("/bench/",)),
)


def group_of(path: str, name: str) -> str:
    text = f"{path}:{name}"
    for group, keys in GROUPS:
        if any(k in text for k in keys):
            return group
    return "other (stdlib, builtins)"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("files", nargs="+")
    ap.add_argument("--messages", type=int, default=0)
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args()
    stats = pstats.Stats(args.files[0])
    for f in args.files[1:]:
        stats.add(f)
    totals: dict[str, float] = {}
    for (path, _line, name), (_cc, _nc, tt, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]  # pstats' stub lacks it
        g = group_of(path, name)
        totals[g] = totals.get(g, 0.0) + tt
    whole = sum(totals.values())
    per = f" = ms per step message over {args.messages}" if args.messages else ""
    print(f"thread CPU in profiled worker threads: {whole:.1f} s{per}")
    for g, t in sorted(totals.items(), key=lambda kv: -kv[1]):
        extra = f"{t / args.messages * 1000:7.2f} ms" if args.messages else ""
        print(f"  {g:<28}{t:8.2f} s {t / whole * 100:5.1f} %  {extra}")
    print(f"\ntop {args.top} functions by self CPU:")
    stats.sort_stats("tottime").print_stats(args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
