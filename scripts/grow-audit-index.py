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
users) and K for each of N random token IDs, with sequence numbers above
10^12: they point at no event of the log, and a look-up joins the log, so
they never show up in an answer. Never run it on a bank's database.

The references are filed as the filer leaves years of history: in time
order (random keys), cut into runs of at most --run-refs, of even size (a size between the
filer's final run sizes, 8^7 and 8^8), each run sorted by key.

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
    ap.add_argument("--run-refs", type=int, default=8_000_000)
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args()

    try:
        # mode=rw: a missing file is an error, not a new empty database.
        c = sqlite3.connect(f"file:{a.index_file}?mode=rw", uri=True)
        tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as e:
        print(f"{a.index_file}: {e}", file=sys.stderr)
        return 2
    if not {"audit_runs", "audit_user_run_refs", "audit_token_run_refs"} <= tables:
        print(
            f"{a.index_file}: not an ichido audit index with runs (run `ichido operator create` of this version first)",
            file=sys.stderr,
        )
        return 2
    c.execute("PRAGMA cache_size = -2000000")
    c.execute("PRAGMA synchronous = OFF")
    rnd = random.Random(a.seed)
    base = 10**12
    run = c.execute("SELECT COALESCE(MAX(run), 0) FROM audit_runs").fetchone()[0]

    def file_runs(table, keys):
        """K references for each key (a tuple of the table's key columns), in
        random time order, as runs sorted by key."""
        nonlocal run
        if not keys:
            return
        rows = [key for key in keys for _ in range(a.refs)]
        rnd.shuffle(rows)
        marks = ",".join("?" * (len(keys[0]) + 2))
        runs = -(-len(rows) // a.run_refs)
        size = -(-len(rows) // runs)  # runs of even size, none above --run-refs
        for start in range(0, len(rows), size):
            run += 1
            chunk = sorted((key + (base + start + i,) for i, key in enumerate(rows[start : start + size])))
            with c:
                c.executemany(f"INSERT INTO {table} VALUES ({marks})", ((run,) + r for r in chunk))
                c.execute("INSERT INTO audit_runs (run, refs) VALUES (?, ?)", (run, len(chunk)))

    file_runs("audit_user_run_refs", [(a.contract_no, f"u{u}") for u in range(a.users)])
    letters = string.ascii_uppercase
    file_runs(
        "audit_token_run_refs",
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
