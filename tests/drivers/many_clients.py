"""Scenario i: 100 asyncpg clients x 20 queries each, at once, on a pool of 2.

Every answer is checked. statement_cache_size=0 keeps asyncpg on unnamed
statements (scenario c covers named ones), so this tests sharing alone.
"""

import asyncio

import asyncpg

from sdtest import asyncpg_args, expect_equal, log, per_target_async, run

CLIENTS = 100
QUERIES = 20


async def client(port, idx):
    conn = await asyncpg.connect(**asyncpg_args(port), statement_cache_size=0)
    try:
        wrong = []
        for q in range(QUERIES):
            if q % 4 == 3:
                # Simple protocol: asyncpg's execute() without arguments.
                status = await conn.execute(f"select {idx}; select {q}")
                got, want = status, "SELECT 1"
            else:
                row = await conn.fetchrow("select $1::int * 1000 + $2::int as n, $3::text as s", idx, q, f"c{idx}")
                got, want = (row["n"], row["s"]), (idx * 1000 + q, f"c{idx}")
            if got != want:
                wrong.append((q, got, want))
        return wrong
    finally:
        await conn.close()


async def step(target, port):
    results = await asyncio.wait_for(
        asyncio.gather(*(client(port, idx) for idx in range(CLIENTS))), timeout=30
    )
    wrong = [(idx, w) for idx, w in enumerate(results) if w]
    expect_equal("clients with wrong answers", wrong, [])
    log(f"{CLIENTS} clients x {QUERIES} queries correct")
    return len(results)


async def scenario():
    # Directly too: it proves the script, and Postgres allows 300 connections here.
    await per_target_async(step)


run(scenario)
