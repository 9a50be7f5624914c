#!/usr/bin/env python3
"""Gives a bench database's audit index the history of a bank that has run
for a while, for measuring only: a fresh bench database has an empty index,
so each second's events land on few of its leaves, while a grown one puts
nearly every event on a leaf of its own (see docs/performance.md).

    scripts/grow-audit-index.py INDEX_FILE --contract-no C [--users N] [--tokens N] [--refs K]

INDEX_FILE is the `<database>-audit-index` file that `ichido operator create
--database sqlite://<database>` left (run it first; no server may have the
database open). The script adds K references for each of the users u0 ..
u(N-1) of contract C (the names `ichido bench --contract-no C` gives its
users) and K for each of N random token IDs, in random order (so the
leaves are as full as years of filing leave them), with sequence numbers
above 10^12: they point at no event of the log, and a look-up joins the
log, so they never show up in an answer. Never run it on a bank's database.

The file keeps the page size ichido gave it. Takes about a minute per ten
million references and some gigabytes of memory.
"""

import argparse
import random
import sqlite3
import string
import sys


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("index_file")
    ap.add_argument("--contract-no", required=True)
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--tokens", type=int, default=1_000_000)
    ap.add_argument("--refs", type=int, default=10)
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args()

    try:
        # mode=rw: a missing file is an error, not a new empty database.
        c = sqlite3.connect(f"file:{a.index_file}?mode=rw", uri=True)
        tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as e:
        print(f"{a.index_file}: {e}", file=sys.stderr)
        return 2
    if not {"audit_user_refs", "audit_token_refs"} <= tables:
        print(f"{a.index_file}: not an ichido audit index (run `ichido operator create` first)", file=sys.stderr)
        return 2
    c.execute("PRAGMA cache_size = -2000000")
    c.execute("PRAGMA synchronous = OFF")
    rnd = random.Random(a.seed)
    base = 10**12

    def file_shuffled(insert, keys):
        """K references for each key (a tuple of the table's key columns)."""
        n = len(keys)
        rows = [keys[i] + (base + k * n + i,) for i in range(n) for k in range(a.refs)]
        rnd.shuffle(rows)
        with c:
            c.executemany(insert, rows)

    file_shuffled(
        "INSERT OR IGNORE INTO audit_user_refs VALUES (?, ?, ?)",
        [(a.contract_no, f"u{u}") for u in range(a.users)],
    )
    letters = string.ascii_uppercase
    file_shuffled(
        "INSERT OR IGNORE INTO audit_token_refs VALUES (?, ?)",
        [
            ("".join(rnd.choice(letters) for _ in range(4)) + f"{rnd.randrange(10**8):08d}",)
            for _ in range(a.tokens)
        ],
    )

    c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    pages, size = (c.execute(f"PRAGMA {p}").fetchone()[0] for p in ("page_count", "page_size"))
    print(f"{a.index_file}: {pages} pages of {size} bytes")
    c.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
