#!/usr/bin/env python3
"""Writes the seed corpus: corpus/<target>/seed-<name>, a few small golden inputs
per fuzz target, built from the message layouts in the PostgreSQL docs
("protocol-message-formats"). The files are checked in; rerun this after
changing it. scripts/fuzz copies the seeds to a scratch corpus, so what the
fuzzer finds never lands here.

Usage: tests/fuzz/make_seeds.py
"""

import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def msg(tag, body=b""):
    return tag + struct.pack(">i", 4 + len(body)) + body


def cstr(s):
    return (s.encode() if isinstance(s, str) else s) + b"\0"


def i16(n):
    return struct.pack(">h", n)


def i32(n):
    return struct.pack(">i", n)


def parse(name, sql, types=()):
    return msg(b"P", cstr(name) + cstr(sql) + i16(len(types)) + b"".join(i32(t) for t in types))


def bind(portal, stmt, values=()):
    body = cstr(portal) + cstr(stmt) + i16(0) + i16(len(values))
    for v in values:
        body += i32(-1) if v is None else i32(len(v)) + v
    return msg(b"B", body + i16(0))


def execute(portal="", rows=0):
    return msg(b"E", cstr(portal) + i32(rows))


def describe(kind, name):
    return msg(b"D", kind + cstr(name))


def close(kind, name):
    return msg(b"C", kind + cstr(name))


SYNC = msg(b"S")


def startup(params, version=(3, 0)):
    body = struct.pack(">hh", *version) + b"".join(cstr(k) + cstr(v) for k, v in params) + b"\0"
    return i32(4 + len(body)) + body


FRONTEND = {
    "query": msg(b"Q", cstr("select 1")),
    "extended-batch": parse("s1", "select $1::int", [23])
    + bind("", "s1", [b"42"])
    + describe(b"P", "")
    + execute()
    + SYNC,
    "unnamed-batch": parse("", "select $1", [0]) + bind("", "", [None]) + execute("", 10) + SYNC,
    "describe-close": describe(b"S", "s1") + close(b"S", "s1") + close(b"P", "p") + msg(b"H"),
    "deallocate": msg(b"Q", cstr("DEALLOCATE PREPARE \"S1\";")) + msg(b"Q", cstr("discard all")),
    "listen-extended": parse("l", "LISTEN chan") + bind("", "l") + execute() + SYNC,
    # Length 29 (odd, bit 1 clear): the target runs it with pub/sub on and
    # extended_anonymous off, where a comment once hid the LISTEN.
    "listen-comment": parse("", "/**/LISTEN x   ") + SYNC,
    "startup": startup(
        [("user", "alice"), ("database", "db"), ("options", "-c search_path=x --work_mem=4MB")]
    ),
    "startup-3.2": startup([("user", "u"), ("_pq_.x", "1")], (3, 2)),
    "ssl-then-startup": i32(8) + i32(80877103) + startup([("user", "u")]),
    "cancel": i32(16) + i32(80877102) + i32(7) + i32(99),
    "sasl-initial": msg(b"p", cstr("SCRAM-SHA-256") + i32(12) + b"n,,n=,r=abcd"),
    "password": msg(b"p", cstr("md5" + "0" * 32)),
    "copy": msg(b"d", b"1\t2\n") + msg(b"c") + msg(b"f", cstr("bad")),
    "function-call": msg(b"F", i32(1) + i16(1) + i16(0) + i16(1) + i32(1) + b"x" + i16(0)),
    "terminate": msg(b"X"),
}


def error_fields(fields):
    return b"".join(code + cstr(v) for code, v in fields) + b"\0"


def data_row(values):
    body = i16(len(values))
    for v in values:
        body += i32(-1) if v is None else i32(len(v)) + v.encode()
    return msg(b"D", body)


BACKEND = {
    "error": msg(
        b"E",
        error_fields(
            [(b"S", "ERROR"), (b"V", "ERROR"), (b"C", "42P01"), (b"M", "no such table"), (b"H", "create it")]
        ),
    ),
    "notice": msg(b"N", error_fields([(b"S", "NOTICE"), (b"C", "00000"), (b"M", "note")])),
    "login": msg(b"R", i32(10) + cstr("SCRAM-SHA-256-PLUS") + cstr("SCRAM-SHA-256") + b"\0")
    + msg(b"R", i32(11) + b"r=abc,s=xyz,i=4096")
    + msg(b"R", i32(12) + b"v=xyz")
    + msg(b"R", i32(0))
    + msg(b"S", cstr("server_version") + cstr("17.0"))
    + msg(b"K", i32(42) + b"\x07" * 32)
    + msg(b"Z", b"I"),
    "md5": msg(b"R", i32(5) + b"salt"),
    "extended-replies": msg(b"1")
    + msg(b"1")
    + msg(b"2")
    + msg(b"t", i16(1) + i32(23))
    + msg(b"n")
    + msg(b"C", cstr("SELECT 1"))
    + msg(b"3")
    + msg(b"2")
    + msg(b"I")
    + msg(b"Z", b"I")
    + msg(b"C", cstr("DEALLOCATE"))
    + msg(b"Z", b"T"),
    "failed-batch": msg(b"1")
    + msg(b"E", error_fields([(b"S", "ERROR"), (b"C", "42P05"), (b"M", "exists")]))
    + msg(b"Z", b"E"),
    "capture-rows": msg(b"T", i16(0))
    + data_row(["TimeZone", "UTC"])
    + data_row(["app.x", "it's"])
    + msg(b"C", cstr("SELECT 2"))
    + msg(b"Z", b"I"),
    "notification": msg(b"A", i32(7) + cstr("chan") + cstr("hi")),
    "copy-in": msg(b"G", b"\0" + i16(1) + i16(0)) + msg(b"Z", b"I"),
    "negotiate": msg(b"v", i32(0) + i32(1) + cstr("_pq_.a")),
}

SQL = {
    "select": b"select 1",
    "set": b"SET search_path TO x; set local a = 1; SET SESSION app.Setting = 'v'",
    "set-config": b"select pg_catalog.set_config(E'app.x\\'s', 'v', false)",
    "listen": b"LISTEN a; unlisten \"B\"\"c\"; UNLISTEN *;",
    "comments": b"/* nested /* c */ */ LISTEN x -- tail\n;",
    "dollar": b"DO $f$ begin perform 1; end $f$; select $1, 'a''b', e'\\\\'",
    "temp": b"create temp table t(); declare c cursor with hold for select 1; "
    b"select pg_advisory_lock(1); select pg_advisory_unlock_all()",
    "discard": b"DISCARD ALL; DEALLOCATE ALL; PREPARE p AS select 1",
    "options": b"-c search_path=x --work_mem=4MB -c a.b=c\\ d",
    "guc-lines": b"app.x=1\nTimeZone=UTC\nweird.name=it's \\ \"q\"",
}


def main():
    for target, seeds in (("frontend", FRONTEND), ("backend", BACKEND), ("sql", SQL)):
        folder = os.path.join(HERE, "corpus", target)
        os.makedirs(folder, exist_ok=True)
        for name, data in seeds.items():
            with open(os.path.join(folder, "seed-" + name), "wb") as f:
                f.write(data)


if __name__ == "__main__":
    main()
