"""Scenario e: an error inside a transaction, ROLLBACK, then the connection works.

Both with psycopg 3 (explicit BEGIN/ROLLBACK, and the transaction() block) and with
asyncpg. Each step's outcome (rows or error class and SQLSTATE) must match plain
Postgres, and nothing from the failed transaction may remain.
"""

import asyncpg
import psycopg

from sdtest import (
    asyncpg_args,
    compare,
    conninfo,
    expect_equal,
    outcome,
    per_target,
    per_target_async,
    run,
    unique,
)


def attempt(steps, name, action):
    try:
        steps.append((name, action()))
    except psycopg.Error as error:
        steps.append((name, outcome(error)))


def psycopg_step(target, port):
    table = unique("rollback", target)
    steps = []
    with psycopg.connect(conninfo(port), autocommit=True, prepare_threshold=None) as conn:
        conn.execute(f"drop table if exists {table}")
        conn.execute(f"create table {table} (id int)")
        try:
            conn.execute("begin")
            attempt(steps, "insert", lambda: conn.execute(f"insert into {table} values (1)").rowcount)
            attempt(steps, "divide", lambda: conn.execute("select 1 / 0").fetchall())
            attempt(steps, "in failed tx", lambda: conn.execute("select 1").fetchall())
            attempt(steps, "status", lambda: conn.info.transaction_status.name)
            conn.execute("rollback")
            attempt(steps, "after rollback", lambda: conn.execute("select 2").fetchall())
            attempt(steps, "rows", lambda: conn.execute(f"select count(*) from {table}").fetchall())
            # The same through the driver's transaction block.
            try:
                with conn.transaction():
                    conn.execute(f"insert into {table} values (2)")
                    conn.execute(f"insert into {table} values ('x')")
            except psycopg.Error as error:
                steps.append(("block", outcome(error)))
            attempt(steps, "rows again", lambda: conn.execute(f"select count(*) from {table}").fetchall())
            with conn.transaction():
                conn.execute(f"insert into {table} values (3)")
            attempt(steps, "committed", lambda: conn.execute(f"select array_agg(id) from {table}").fetchall())
        finally:
            conn.execute(f"drop table if exists {table}")
    expect_equal(
        "psycopg steps",
        steps,
        [
            ("insert", 1),
            ("divide", ("DivisionByZero", "22012")),
            ("in failed tx", ("InFailedSqlTransaction", "25P02")),
            ("status", "INERROR"),
            ("after rollback", [(2,)]),
            ("rows", [(0,)]),
            ("block", ("InvalidTextRepresentation", "22P02")),
            ("rows again", [(0,)]),
            ("committed", [([3],)]),
        ],
    )
    return steps


async def asyncpg_step(target, port):
    # statement_cache_size=0: unnamed statements only (scenario c covers named ones).
    conn = await asyncpg.connect(**asyncpg_args(port), statement_cache_size=0)
    steps = []
    try:
        tx = conn.transaction()
        await tx.start()
        for name, sql in (("divide", "select 1 / 0"), ("in failed tx", "select 1")):
            try:
                steps.append((name, await conn.fetchval(sql)))
            except asyncpg.PostgresError as error:
                steps.append((name, outcome(error)))
        await tx.rollback()
        steps.append(("after rollback", await conn.fetchval("select $1::int * 3", 7)))
        steps.append(("in transaction", conn.is_in_transaction()))
    finally:
        await conn.close()
    expect_equal(
        "asyncpg steps",
        steps,
        [
            ("divide", ("DivisionByZeroError", "22012")),
            ("in failed tx", ("InFailedSQLTransactionError", "25P02")),
            ("after rollback", 21),
            ("in transaction", False),
        ],
    )
    return steps


async def scenario():
    compare("psycopg steps", per_target(psycopg_step))
    compare("asyncpg steps", await per_target_async(asyncpg_step))


run(scenario)
