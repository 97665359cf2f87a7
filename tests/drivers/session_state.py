"""Scenario d: session settings (SET outside a transaction) stay with their client.

Three setter clients each SET their own statement_timeout and application_name;
three observer clients never set anything. All six take turns, interleaved, on a
pool of 2 server connections.

  leak: setters SET again every round; observers must always SHOW their own
        starting values (statement_timeout as on plain Postgres).
  leak-set-config: as leak, but setters change the settings with
        set_config(name, value, false), a function call rather than a SET.
  keep: setters SET once; in every later round, inside and outside explicit
        transactions, they must SHOW their own values, and observers theirs.
"""

import random
import sys

import psycopg

from sdtest import compare, conninfo, expect_equal, fail, log, per_target, run

SETTERS = 3
OBSERVERS = 3
ROUNDS = 60
SHOW = "select current_setting('statement_timeout'), current_setting('application_name')"


def setter_values(k):
    return (f"{11 + k}s", f"sd_setter_{k}")


def apply(conn, k, mode):
    timeout, name = setter_values(k)
    if mode == "leak-set-config":
        conn.execute("select set_config('statement_timeout', %s, false)", (timeout,))
        conn.execute("select set_config('application_name', %s, false)", (name,))
    else:
        conn.execute(f"set statement_timeout = '{timeout}'")
        conn.execute(f"set application_name = '{name}'")


def show(conn, in_transaction):
    if in_transaction:
        with conn.transaction():
            return conn.execute(SHOW).fetchone()
    return conn.execute(SHOW).fetchone()


def step(target, port, mode):
    rng = random.Random(7)
    connect = lambda: psycopg.connect(conninfo(port), autocommit=True, prepare_threshold=None)
    setters = [connect() for _ in range(SETTERS)]
    observers = [connect() for _ in range(OBSERVERS)]
    try:
        baselines = [show(conn, False) for conn in observers]
        setter_names = {setter_values(k)[1] for k in range(SETTERS)}
        for i, (timeout, name) in enumerate(baselines):
            if name in setter_names:
                fail(f"observer {i} starts with a setter's application_name {name!r}")
        for k, conn in enumerate(setters):
            apply(conn, k, mode)
        turns = [("setter", k) for k in range(SETTERS)] + [("observer", i) for i in range(OBSERVERS)]
        for r in range(ROUNDS):
            rng.shuffle(turns)
            for role, n in turns:
                in_transaction = rng.random() < 0.5
                where = f"round {r}, {'in' if in_transaction else 'outside'} a transaction"
                if role == "observer":
                    expect_equal(f"observer {n} settings, {where}", show(observers[n], in_transaction), baselines[n])
                elif mode != "keep":
                    apply(setters[n], n, mode)
                else:
                    expect_equal(f"setter {n} own settings, {where}", show(setters[n], in_transaction), setter_values(n))
        log(f"{ROUNDS} rounds of {SETTERS} setters and {OBSERVERS} observers ({mode}) correct")
        return [timeout for timeout, _ in baselines]
    finally:
        for conn in setters + observers:
            conn.close()


def scenario():
    mode = sys.argv[1] if len(sys.argv) > 1 else "leak"
    if mode not in ("leak", "leak-set-config", "keep"):
        fail(f"unknown mode {mode!r} (leak, leak-set-config or keep)")
    compare("observers' statement_timeout", per_target(lambda target, port: step(target, port, mode)))


run(scenario)
