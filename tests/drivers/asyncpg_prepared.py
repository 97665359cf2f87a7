"""Scenario c: asyncpg prepared statements across transactions.

8 connections run 50 transactions each, concurrently, on a pool of 2 server
connections. Each connection prepares a statement once with conn.prepare() and
runs it in every transaction; conn.fetch() with arguments goes through asyncpg's
statement cache, which also prepares named statements and reuses them.
"""

import asyncio

import asyncpg

from sdtest import asyncpg_args, compare, expect_equal, log, per_target_async, run

CONNECTIONS = 8
TRANSACTIONS = 50


def expected(idx):
    return [((t * 2 + idx, f"c{idx}x"), t + 1) for t in range(TRANSACTIONS)]


async def client(port, idx, start):
    conn = await asyncpg.connect(**asyncpg_args(port))
    try:
        await start.wait()
        stmt = await conn.prepare("select $1::int * 2 + $2::int as n, $3::text || 'x' as s")
        seen = []
        for t in range(TRANSACTIONS):
            async with conn.transaction():
                row = await stmt.fetchrow(t, idx, f"c{idx}")
                rows = await conn.fetch("select count(*)::int as c from generate_series(1, $1::int)", t + 1)
            seen.append(((row["n"], row["s"]), rows[0]["c"]))
        return seen
    finally:
        await conn.close()


async def step(target, port):
    start = asyncio.Event()
    tasks = [asyncio.create_task(client(port, idx, start)) for idx in range(CONNECTIONS)]
    await asyncio.sleep(0.1)
    start.set()
    results = await asyncio.wait_for(asyncio.gather(*tasks), timeout=30)
    for idx, seen in enumerate(results):
        expect_equal(f"connection {idx} results", seen, expected(idx))
    log(f"{CONNECTIONS} connections x {TRANSACTIONS} transactions correct")
    return results


async def scenario():
    compare("results", await per_target_async(step))


run(scenario)
