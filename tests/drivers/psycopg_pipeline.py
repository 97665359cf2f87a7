"""Scenario b: psycopg 3 pipeline mode.

Inserts and selects sent as one pipeline (autocommit statements, executemany and
a transaction block inside the pipeline), then a pipeline with an error in the
middle; the results and the table afterwards must match plain Postgres.

prepare_threshold=None keeps psycopg from preparing named statements (scenario a
covers those), so this tests pipelining alone.
"""

import psycopg

from sdtest import compare, conninfo, expect_equal, log, outcome, per_target, run, unique

ROWS = 100


def step(target, port):
    table = unique("pipeline", target)
    with psycopg.connect(conninfo(port), autocommit=True, prepare_threshold=None) as conn:
        conn.execute(f"drop table if exists {table}")
        conn.execute(f"create table {table} (id int primary key, v text)")
        try:
            return pipelines(conn, table)
        finally:
            conn.execute(f"drop table if exists {table}")


def pipelines(conn, table):
    seen = {}
    with conn.pipeline():
        inserted = [
            conn.execute(f"insert into {table} values (%s, %s) returning id, v", (i, f"v{i}"))
            for i in range(ROWS)
        ]
        after_inserts = conn.execute(f"select count(*), sum(id) from {table}")
        conn.cursor().executemany(
            f"insert into {table} values (%s, %s)", [(i, f"w{i}") for i in range(ROWS, 2 * ROWS)]
        )
        after_many = conn.execute(f"select count(*), max(id) from {table}")
        with conn.transaction():
            conn.execute(f"update {table} set v = v || '!' where id % 2 = 0")
            in_block = conn.execute(f"select count(*) from {table} where v like '%!'")
        listed = conn.execute(f"select id, v from {table} order by id limit 5")
    seen["inserted"] = [cur.fetchone() for cur in inserted]
    expect_equal("inserted rows", seen["inserted"], [(i, f"v{i}") for i in range(ROWS)])
    seen["after_inserts"] = after_inserts.fetchone()
    expect_equal("count after inserts", seen["after_inserts"], (ROWS, sum(range(ROWS))))
    seen["after_many"] = after_many.fetchone()
    expect_equal("count after executemany", seen["after_many"], (2 * ROWS, 2 * ROWS - 1))
    seen["in_block"] = in_block.fetchone()
    expect_equal("updated rows", seen["in_block"], (ROWS,))
    seen["listed"] = listed.fetchall()

    # An error in the middle of a pipeline: the driver raises it, what follows it up
    # to the next sync is skipped, and the connection works afterwards.
    error = None
    try:
        with conn.pipeline():
            conn.execute(f"insert into {table} values (%s, 'before')", (10_000,))
            conn.execute("select 1 / 0")
            conn.execute(f"insert into {table} values (%s, 'after')", (10_001,))
    except psycopg.Error as e:
        error = outcome(e)
    expect_equal("error in pipeline", error, ("DivisionByZero", "22012"))
    seen["error"] = error
    seen["after_error"] = conn.execute(
        f"select id, v from {table} where id >= 10000 order by id"
    ).fetchall()
    with conn.pipeline():
        again = conn.execute("select %s::int + 1", (41,))
    seen["again"] = again.fetchone()
    expect_equal("query after the failed pipeline", seen["again"], (42,))
    log(f"pipeline results: {len(seen['inserted'])} inserts, error {error}")
    return seen


def scenario():
    compare("pipeline results", per_target(step))


run(scenario)
