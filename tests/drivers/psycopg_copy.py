"""Scenario f: COPY 10,000 rows each way with psycopg 3's copy API.

Text and binary format, into a table (COPY FROM STDIN) and out of it (COPY TO
STDOUT); the values carry tabs, newlines, backslashes, non-ASCII text and NULLs
so escaping is exercised. A COPY the client aborts leaves nothing behind and the
connection usable. The bytes COPY TO sends must equal plain Postgres's.
"""

import psycopg

from sdtest import compare, conninfo, expect_equal, log, outcome, per_target, run, unique

ROWS = 10_000


def rows():
    odd = ["plain", "tab\there", "new\nline", "back\\slash", "ünïcødé ✓", None, ""]
    return [(i, f"name{i}", odd[i % len(odd)]) for i in range(ROWS)]


def step(target, port):
    table = unique("copy", target)
    data = rows()
    seen = {}
    with psycopg.connect(conninfo(port), autocommit=True, prepare_threshold=None) as conn:
        conn.execute(f"drop table if exists {table}")
        conn.execute(f"create table {table} (id int, name text, note text)")
        try:
            cur = conn.cursor()
            for fmt in ("text", "binary"):
                conn.execute(f"truncate {table}")
                with cur.copy(f"copy {table} (id, name, note) from stdin (format {fmt})") as copy:
                    copy.set_types(["int4", "text", "text"])
                    for row in data:
                        copy.write_row(row)
                expect_equal(f"{fmt} rows copied in", cur.rowcount, ROWS)
                with cur.copy(f"copy (select * from {table} order by id) to stdout (format {fmt})") as copy:
                    copy.set_types(["int4", "text", "text"])
                    out = list(copy.rows())
                expect_equal(f"{fmt} rows copied out", out, data)
                with cur.copy(f"copy (select * from {table} order by id) to stdout (format {fmt})") as copy:
                    seen[f"{fmt} bytes"] = b"".join(bytes(chunk) for chunk in copy)
                log(f"{fmt}: {ROWS} rows in and out, {len(seen[f'{fmt} bytes'])} bytes")

            # The client gives up halfway: CopyFail, nothing inserted, connection usable.
            conn.execute(f"truncate {table}")
            error = None
            try:
                with cur.copy(f"copy {table} (id, name, note) from stdin") as copy:
                    for row in data[:500]:
                        copy.write_row(row)
                    raise RuntimeError("client gives up")
            except RuntimeError:
                error = "client error raised"
            except psycopg.Error as e:
                error = outcome(e)
            seen["aborted"] = error
            seen["after abort"] = conn.execute(f"select count(*) from {table}").fetchone()
            expect_equal("rows after an aborted COPY", seen["after abort"], (0,))
        finally:
            conn.execute(f"drop table if exists {table}")
    return seen


def scenario():
    compare("COPY results", per_target(step))


run(scenario)
