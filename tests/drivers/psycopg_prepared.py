"""Scenario a: psycopg 3 prepared statements reused across transactions.

8 connections run 50 transactions each, concurrently, on a pool of 2 server
connections. Every connection prepares its statements once (prepare=True, and
prepare_threshold=0 for the second one) and psycopg then executes them by name
in every later transaction, whichever server connection the pooler picks.
"""

import threading

import psycopg

from sdtest import DIRECT_PORT, compare, conninfo, expect_equal, fail, log, per_target, run

CONNECTIONS = 8
TRANSACTIONS = 50
EXPLICIT = "select %s::int * 2 + %s::int, %s::text || 'x'"
BY_THRESHOLD = "select count(*)::int from generate_series(1, %s::int)"


def expected(idx):
    return [((t * 2 + idx, f"c{idx}x"), (t + 1,)) for t in range(TRANSACTIONS)]


def client(port, idx, start, results):
    with psycopg.connect(conninfo(port), autocommit=True, prepare_threshold=0) as conn:
        start.wait(timeout=20)
        seen = []
        for t in range(TRANSACTIONS):
            with conn.transaction():
                first = conn.execute(EXPLICIT, (t, idx, f"c{idx}"), prepare=True).fetchone()
                second = conn.execute(BY_THRESHOLD, (t + 1,)).fetchone()
            seen.append((first, second))
        results[idx] = seen
        if port == DIRECT_PORT:
            # Proof that the scenario exercises named server-side statements.
            names = conn.execute("select count(*) from pg_prepared_statements").fetchone()[0]
            if names < 2:
                fail(f"psycopg prepared {names} statements, expected 2")


def step(target, port):
    start = threading.Barrier(CONNECTIONS)
    results = {}
    errors = []

    def guarded(idx):
        try:
            client(port, idx, start, results)
        except Exception as error:  # reported below, with the connection index
            errors.append((idx, error))
            start.abort()

    threads = [threading.Thread(target=guarded, args=(i,)) for i in range(CONNECTIONS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    if errors:
        idx, error = errors[0]
        log(f"{len(errors)} of {CONNECTIONS} connections failed; connection {idx}:")
        raise error
    for idx in range(CONNECTIONS):
        expect_equal(f"connection {idx} results", results.get(idx), expected(idx))
    log(f"{CONNECTIONS} connections x {TRANSACTIONS} transactions correct")
    return results



def scenario():
    compare("results", per_target(step))


run(scenario)
