"""Scenario g: LISTEN/NOTIFY between two clients.

One psycopg 3 connection LISTENs (outside a transaction); another sends
notifications, both with pg_notify() in autocommit and with NOTIFY inside a
transaction, while other clients keep the pool's server connections busy. The
listener must receive every payload, in order, within a few seconds.
"""

import psycopg

from sdtest import compare, conninfo, expect_equal, log, per_target, run, unique

NOTIFICATIONS = 20
WAIT_S = 5


def step(target, port):
    channel = unique("chan", target)
    with psycopg.connect(conninfo(port), autocommit=True, prepare_threshold=None) as listener, \
            psycopg.connect(conninfo(port), autocommit=True, prepare_threshold=None) as notifier, \
            psycopg.connect(conninfo(port), autocommit=True, prepare_threshold=None) as bystander:
        listener.execute(f"listen {channel}")
        for i in range(NOTIFICATIONS):
            if i % 2 == 0:
                notifier.execute("select pg_notify(%s, %s)", (channel, f"m{i}"))
            else:
                with notifier.transaction():
                    notifier.execute(f"notify {channel}, 'm{i}'")
            # Other traffic between notifications, so the pool's connections change hands.
            bystander.execute("select 1")
        received = [
            (n.channel, n.payload)
            for n in listener.notifies(timeout=WAIT_S, stop_after=NOTIFICATIONS)
        ]
        expect_equal(
            "notifications received",
            received,
            [(channel, f"m{i}") for i in range(NOTIFICATIONS)],
        )
        listener.execute(f"unlisten {channel}")
    log(f"{NOTIFICATIONS} notifications received")
    return [payload for _, payload in received]


def scenario():
    compare("payloads", per_target(step))


run(scenario)
