"""Shared helpers for the driver scenarios that tests/drivers.rs runs.

Each scenario is a script that talks to Postgres once directly and once through
sleddog, compares what the driver saw, and exits non-zero with a message that
starts with FAIL on any mismatch or error. Nothing here knows about sleddog's
internals: the scripts see only what a driver user would see.

Connection info comes from the environment (set by tests/drivers.rs):
SD_HOST, SD_PROXY_PORT, SD_DIRECT_PORT, SD_USER, SD_PASSWORD, SD_DATABASE.
"""

import asyncio
import os
import sys
import traceback

HOST = os.environ.get("SD_HOST", "127.0.0.1")
PROXY_PORT = int(os.environ["SD_PROXY_PORT"])
DIRECT_PORT = int(os.environ["SD_DIRECT_PORT"])
USER = os.environ["SD_USER"]
PASSWORD = os.environ["SD_PASSWORD"]
DATABASE = os.environ["SD_DATABASE"]

# Direct first: a scenario that fails against plain Postgres is a broken script,
# and the message then says so.
TARGETS = (("direct", DIRECT_PORT), ("sleddog", PROXY_PORT))


class ScenarioFailure(Exception):
    """A mismatch the scenario detected (as opposed to a driver error)."""


def log(*parts):
    print(*parts, flush=True)


def conninfo(port, **extra):
    """A libpq conninfo string for psycopg."""
    items = dict(
        host=HOST,
        port=port,
        user=USER,
        password=PASSWORD,
        dbname=DATABASE,
        connect_timeout=10,
    )
    items.update(extra)
    return " ".join(f"{k}={v}" for k, v in items.items())


def asyncpg_args(port):
    """Keyword arguments for asyncpg.connect / create_pool."""
    return dict(
        host=HOST,
        port=port,
        user=USER,
        password=PASSWORD,
        database=DATABASE,
        timeout=10,
    )


def unique(name, target):
    """A table or channel name private to this run and target."""
    return f"drv_{name}_{target}_{os.getpid()}"


def fail(message):
    raise ScenarioFailure(message)


def expect_equal(what, got, want):
    if got != want:
        fail(f"{what}: got {short(got)}, expected {short(want)}")


def compare(what, seen):
    """seen maps target name -> value; every target must have seen the same."""
    direct = seen["direct"]
    proxied = seen["sleddog"]
    if direct != proxied:
        fail(
            f"{what} differs: through sleddog {short(proxied)}, "
            f"directly to Postgres {short(direct)}"
        )


def short(value, limit=600):
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


def outcome(error):
    """What a client sees of an error: class name and SQLSTATE."""
    return (type(error).__name__, getattr(error, "sqlstate", None))


def _wrapped(target, error):
    if isinstance(error, ScenarioFailure):
        return ScenarioFailure(f"[{target}] {error}")
    traceback.print_exception(error, file=sys.stderr)
    name, sqlstate = outcome(error)
    return ScenarioFailure(f"[{target}] {name} (SQLSTATE {sqlstate}): {error}")


def per_target(step):
    """Runs step(target, port) directly and through sleddog; returns {target: result}.
    A failure names the target it happened on."""
    seen = {}
    for target, port in TARGETS:
        log(f"-- {target}")
        try:
            seen[target] = step(target, port)
        except Exception as error:
            raise _wrapped(target, error) from error
    return seen


async def per_target_async(step):
    """per_target for a coroutine function step(target, port)."""
    seen = {}
    for target, port in TARGETS:
        log(f"-- {target}")
        try:
            seen[target] = await step(target, port)
        except Exception as error:
            raise _wrapped(target, error) from error
    return seen


def run(scenario):
    """Runs scenario() (a function or a coroutine function) and exits 0 or 1."""
    try:
        result = scenario()
        if asyncio.iscoroutine(result):
            asyncio.run(result)
    except ScenarioFailure as error:
        print(f"FAIL: {error}", file=sys.stderr, flush=True)
        sys.exit(1)
    except Exception as error:  # a driver error is a failure too, with its SQLSTATE
        traceback.print_exc()
        name, sqlstate = outcome(error)
        print(
            f"FAIL: {name} (SQLSTATE {sqlstate}): {error}", file=sys.stderr, flush=True
        )
        sys.exit(1)
    log("ok")
