"""Scenario h: cancelling a running pg_sleep through the driver's own cancel.

psycopg 3: conn.cancel_safe() from another thread, in autocommit and inside a
transaction. asyncpg: a query timeout (asyncpg then sends a cancel request). The
error must arrive within a second of the cancel, and the connection must work
afterwards.
"""

import asyncio
import threading
import time

import asyncpg
import psycopg

from sdtest import (
    asyncpg_args,
    compare,
    conninfo,
    expect_equal,
    fail,
    log,
    outcome,
    per_target,
    per_target_async,
    run,
)

CANCEL_AFTER_S = 0.3
LIMIT_S = 1.0


def cancelled_sleep(conn):
    """Runs pg_sleep(10), cancels it from another thread; returns the outcome."""
    cancelled_at = []

    def cancel():
        time.sleep(CANCEL_AFTER_S)
        cancelled_at.append(time.monotonic())
        conn.cancel_safe(timeout=5)

    thread = threading.Thread(target=cancel)
    thread.start()
    try:
        conn.execute("select pg_sleep(10)")
        seen = "pg_sleep finished"
    except psycopg.Error as error:
        seen = outcome(error)
    ended = time.monotonic()
    thread.join()
    latency = ended - cancelled_at[0]
    if latency > LIMIT_S:
        fail(f"the cancel took {latency:.2f} s to end the query (limit {LIMIT_S} s)")
    log(f"psycopg cancel ended the query {latency * 1000:.0f} ms after cancel_safe()")
    return seen


def psycopg_step(target, port):
    steps = []
    with psycopg.connect(conninfo(port), autocommit=True, prepare_threshold=None) as conn:
        steps.append(("autocommit", cancelled_sleep(conn)))
        steps.append(("after", conn.execute("select 1").fetchall()))
        conn.execute("begin")
        steps.append(("in transaction", cancelled_sleep(conn)))
        steps.append(("status", conn.info.transaction_status.name))
        conn.execute("rollback")
        steps.append(("after rollback", conn.execute("select 2").fetchall()))
    expect_equal(
        "psycopg steps",
        steps,
        [
            ("autocommit", ("QueryCanceled", "57014")),
            ("after", [(1,)]),
            ("in transaction", ("QueryCanceled", "57014")),
            ("status", "INERROR"),
            ("after rollback", [(2,)]),
        ],
    )
    return steps


async def asyncpg_step(target, port):
    conn = await asyncpg.connect(**asyncpg_args(port), statement_cache_size=0)
    steps = []
    try:
        started = time.monotonic()
        try:
            await conn.fetchval("select pg_sleep(10)", timeout=CANCEL_AFTER_S)
            steps.append(("timeout", "pg_sleep finished"))
        except asyncio.TimeoutError:
            steps.append(("timeout", "TimeoutError"))
        value = await conn.fetchval("select $1::int + 1", 1)
        elapsed = time.monotonic() - started
        if elapsed > CANCEL_AFTER_S + LIMIT_S:
            fail(f"timeout + cancel + next query took {elapsed:.2f} s")
        log(f"asyncpg timeout, cancel and next query in {elapsed * 1000:.0f} ms")
        steps.append(("after", value))
        steps.append(("in transaction", conn.is_in_transaction()))
    finally:
        await conn.close()
    expect_equal(
        "asyncpg steps",
        steps,
        [("timeout", "TimeoutError"), ("after", 2), ("in transaction", False)],
    )
    return steps


async def scenario():
    compare("psycopg steps", per_target(psycopg_step))
    compare("asyncpg steps", await per_target_async(asyncpg_step))


run(scenario)
