#!/usr/bin/env bash
# pgbench against direct Postgres, sleddog and PgBouncer (when installed), interleaved.
#
# Starts its own Postgres (initdb, pgbench -i -s $SCALE), its own sleddog (release build,
# workers = 2, pool size $POOL_SIZE, transaction mode), a second sleddog, sleddog_lb, with
# that server listed twice (primary and replica), a third, sleddog_sharded, whose "bench"
# is hash-sharded over two databases of the same Postgres (bench_shard_0/1), and its own
# PgBouncer (transaction mode, same pool size), then for each repetition runs every test
# against every target it applies to in turn, so slow drift of the machine hits all
# targets alike.
#
# Tests: select-only (-S) at 16 clients with -M simple, extended and prepared; -S at 1 and
# 200 clients; TPC-B (pgbench's default script) at 16 clients: on direct, sleddog,
# sleddog_lb and pgbouncer. shard-direct-extended: `SELECT v FROM sd_users WHERE id = :id`
# (a random id, -M extended, 16 clients; a query that finds no row fails the run) on direct, where bench holds all $SHARD_ROWS rows
# in one table, and on sleddog_sharded, which must send each query to the one shard that
# holds the id (rows placed as PARTITION BY HASH (id) with MODULUS 2 places them). A
# target a test does not apply to shows "-".
#
# Per test and target it reports: tps (median of the repetitions), ratio to direct, p50
# and p99 latency (from pgbench --log per-transaction latencies, median of repetitions),
# and the proxy's CPU time per transaction in µs (utime+stime of the proxy process from
# /proc/<pid>/stat, all threads, before/after the run, divided by transactions).
# A target that fails to start or whose run fails is reported as FAIL and the rest go on.
#
# Env: DURATION (s, default 20), REPS (default 3), SCALE (default 10), POOL_SIZE (16),
#      TARGETS (default "direct sleddog sleddog_lb sleddog_sharded pgbouncer"), TESTS
#      (names below, default all), SHARD_ROWS (rows of sd_users, default SCALE * 10000),
#      SLEDDOG_BIN (default: cargo build --release, then target/release/sleddog),
#      RESULTS (default perf/RESULTS.md; "-" to skip writing), KEEP=1 keeps the work dir.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"

DURATION=${DURATION:-20}
REPS=${REPS:-3}
SCALE=${SCALE:-10}
POOL_SIZE=${POOL_SIZE:-16}
TARGETS=${TARGETS:-direct sleddog sleddog_lb sleddog_sharded pgbouncer}
RESULTS=${RESULTS:-$ROOT/perf/RESULTS.md}
SHARD_ROWS=${SHARD_ROWS:-$((SCALE * 10000))}

# name | clients | pgbench arguments (@WORK@: the work dir) | targets (empty: the
# unsharded ones, UNSHARDED_TARGETS)
UNSHARDED_TARGETS="direct sleddog sleddog_lb pgbouncer"
ALL_TESTS="
select-simple|16|-S -M simple|
select-extended|16|-S -M extended|
select-prepared|16|-S -M prepared|
select-1client|1|-S -M simple|
select-200clients|200|-S -M simple|
tpcb|16|-M simple|
shard-direct-extended|16|-M extended -f @WORK@/shard-direct.sql|direct sleddog_sharded
"
TESTS=${TESTS:-$(echo "$ALL_TESTS" | cut -d'|' -f1 | xargs)}

CLK_TCK=$(getconf CLK_TCK)
WORK=$(mktemp -d /tmp/sleddog-perf.XXXXXX)
chmod 755 "$WORK"
chown_pg "$WORK"
PGBIN=$(pg_bindir)
PG_PORT=$(free_port "")
SD_PORT=$(free_port "")
LB_PORT=$(free_port "")
PB_PORT=$(free_port "")
SH_PORT=$(free_port "")
declare -A PORT=([direct]=$PG_PORT [sleddog]=$SD_PORT [sleddog_lb]=$LB_PORT [pgbouncer]=$PB_PORT
    [sleddog_sharded]=$SH_PORT)
declare -A PID=()
declare -A BROKEN=()  # target -> why it could not be started
FAILURES=()

cleanup() {
    local t
    for t in sleddog sleddog_lb sleddog_sharded pgbouncer; do
        [ -n "${PID[$t]:-}" ] || continue
        kill -TERM "${PID[$t]}" 2>/dev/null || true
        for _ in $(seq 30); do
            kill -0 "${PID[$t]}" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "${PID[$t]}" 2>/dev/null || true
    done
    as_pg "$PGBIN/pg_ctl" stop -D "$WORK/pg" -m immediate -w >/dev/null 2>&1 || true
    if [ -z "${KEEP:-}" ]; then
        rm -rf "$WORK"
    else
        log "kept $WORK"
    fi
}
trap cleanup EXIT

# ---------------------------------------------------------------------------------------
# Targets
# ---------------------------------------------------------------------------------------

start_postgres() {
    log "initdb + start Postgres on $PG_PORT"
    mkdir -p "$WORK/sock"
    chown_pg "$WORK/sock"
    as_pg "$PGBIN/initdb" -D "$WORK/pg" -U postgres -A trust -E UTF8 --locale=C --no-sync >/dev/null
    cat >"$WORK/pg/pg_hba.conf" <<'HBA'
local all all trust
host  all all 127.0.0.1/32 trust
HBA
    cat >>"$WORK/pg/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$WORK/sock'
max_connections = 300
shared_buffers = 256MB
synchronous_commit = off
checkpoint_timeout = 30min
max_wal_size = 4GB
CONF
    as_pg "$PGBIN/pg_ctl" start -D "$WORK/pg" -l "$WORK/postgres.log" -w -t 60 >/dev/null
    psql_su postgres -c "CREATE ROLE bench LOGIN PASSWORD 'bench'" -c "CREATE DATABASE bench OWNER bench"
    log "pgbench -i -s $SCALE"
    "$PGBIN/pgbench" -i -q -s "$SCALE" -h "$WORK/sock" -p "$PG_PORT" -U bench bench >"$WORK/init.log" 2>&1 ||
        { cat "$WORK/init.log" >&2; die "pgbench -i failed"; }
    PID[direct]=$(head -1 "$WORK/pg/postmaster.pid")
}

psql_su() {
    local db=$1
    shift
    "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$WORK/sock" -p "$PG_PORT" -U postgres -d "$db" "$@"
}

# sd_users (id bigint primary key, v text) with ids 1..SHARD_ROWS: whole in bench (for
# direct), split over bench_shard_0/1 (for sleddog_sharded). Placement is Postgres's own:
# the rows go through a table PARTITION BY HASH (id) with MODULUS 2, and partition n's
# rows are copied to shard n, which is where hash sharding of a bigint column puts them.
setup_shard_data() {
    local n=$SHARD_ROWS s table="CREATE TABLE sd_users (id bigint PRIMARY KEY, v text)"
    log "sd_users: $n rows in bench, and split by hash over bench_shard_0/1"
    psql_su postgres -c "CREATE DATABASE bench_shard_0 OWNER bench" \
        -c "CREATE DATABASE bench_shard_1 OWNER bench"
    psql_su bench <<SQL
SET ROLE bench;
$table;
INSERT INTO sd_users SELECT i, md5(i::text) FROM generate_series(1, $n) AS i;
CREATE TABLE sd_place (id bigint, v text) PARTITION BY HASH (id);
CREATE TABLE sd_place_0 PARTITION OF sd_place FOR VALUES WITH (MODULUS 2, REMAINDER 0);
CREATE TABLE sd_place_1 PARTITION OF sd_place FOR VALUES WITH (MODULUS 2, REMAINDER 1);
INSERT INTO sd_place SELECT id, v FROM sd_users;
SQL
    for s in 0 1; do
        psql_su "bench_shard_$s" -c "SET ROLE bench" -c "$table"
        psql_su bench -c "COPY sd_place_$s TO STDOUT" |
            psql_su "bench_shard_$s" -c "COPY sd_users FROM STDIN"
    done
    psql_su bench -c "DROP TABLE sd_place" -c "VACUUM ANALYZE sd_users"
    local c0 c1
    c0=$(psql_su bench_shard_0 -Atc "VACUUM ANALYZE sd_users" -c "SELECT count(*) FROM sd_users")
    c1=$(psql_su bench_shard_1 -Atc "VACUUM ANALYZE sd_users" -c "SELECT count(*) FROM sd_users")
    if [ "$c0" -eq 0 ] || [ "$c1" -eq 0 ] || [ $((c0 + c1)) -ne "$n" ]; then
        die "sd_users split wrong: $c0 + $c1 rows for $n"
    fi
    log "sd_users: $c0 rows on shard 0, $c1 on shard 1"
    # \gset wants exactly one row: a query sent to the wrong shard finds none and fails
    # the run rather than counting as a (fast) transaction.
    cat >"$WORK/shard-direct.sql" <<SQL
\set id random(1, $n)
SELECT v FROM sd_users WHERE id = :id \gset
SQL
}

sleddog_bin() {
    if [ -n "${SLEDDOG_BIN:-}" ]; then
        echo "$SLEDDOG_BIN"
        return
    fi
    (cd "$ROOT" && cargo build --release --bin sleddog >&2) || return 1
    echo "${CARGO_TARGET_DIR:-$ROOT/target}/release/sleddog"
}

# The [[databases]] entry of "bench" on the one Postgres database bench.
bench_database() {
    cat <<TOML
[[databases]]
name = "bench"
host = "127.0.0.1"
port = $PG_PORT
database_name = "bench"
TOML
}

start_sleddog() {
    launch_sleddog sleddog "$(bench_database)"
}

# The same Postgres listed twice, as primary and replica: every query is then
# classified and balanced (issue 4's "cost of a cluster" figure).
start_sleddog_lb() {
    launch_sleddog sleddog_lb "$(bench_database)

[[databases]]
name = \"bench\"
host = \"127.0.0.1\"
port = $PG_PORT
database_name = \"bench\"
role = \"replica\"
"
}

# "bench" hash-sharded over bench_shard_0 and bench_shard_1 (see setup_shard_data), with
# sd_users sharded by id: a query naming one id must reach the one shard holding it.
start_sleddog_sharded() {
    launch_sleddog sleddog_sharded "[[databases]]
name = \"bench\"
host = \"127.0.0.1\"
port = $PG_PORT
database_name = \"bench_shard_0\"
shard = 0

[[databases]]
name = \"bench\"
host = \"127.0.0.1\"
port = $PG_PORT
database_name = \"bench_shard_1\"
shard = 1

[[sharded_tables]]
database = \"bench\"
name = \"sd_users\"
column = \"id\"
data_type = \"bigint\"
"
}

# launch_sleddog TARGET DATABASES_TOML: a sleddog on PORT[TARGET] serving DATABASES_TOML.
launch_sleddog() {
    local t=$1 databases=$2 bin
    bin=$(sleddog_bin) || { BROKEN[$t]="release build failed"; return; }
    mkdir -p "$WORK/$t"
    cat >"$WORK/$t/pgdog.toml" <<TOML
[general]
host = "127.0.0.1"
port = ${PORT[$t]}
workers = 2
default_pool_size = $POOL_SIZE
pooler_mode = "transaction"

$databases
TOML
    cat >"$WORK/$t/users.toml" <<TOML
[[users]]
name = "bench"
database = "bench"
password = "bench"
pool_size = $POOL_SIZE
TOML
    log "starting $t on ${PORT[$t]}"
    (cd "$WORK/$t" && exec "$bin" -c pgdog.toml -u users.toml >>"$WORK/$t.log" 2>&1 </dev/null) &
    PID[$t]=$!
    wait_target "$t"
}

start_pgbouncer() {
    local bin
    bin=$(command -v pgbouncer || ls /usr/sbin/pgbouncer 2>/dev/null) ||
        { BROKEN[pgbouncer]="not installed"; return; }
    printf '"bench" "bench"\n' >"$WORK/userlist.txt"
    cat >"$WORK/pgbouncer.ini" <<INI
[databases]
bench = host=127.0.0.1 port=$PG_PORT dbname=bench user=bench

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $PB_PORT
unix_socket_dir =
auth_type = md5
auth_file = $WORK/userlist.txt
pool_mode = transaction
default_pool_size = $POOL_SIZE
min_pool_size = 0
reserve_pool_size = 0
max_client_conn = 1000
logfile = $WORK/pgbouncer.log
log_connections = 0
log_disconnections = 0
ignore_startup_parameters = extra_float_digits
INI
    chown_pg "$WORK/userlist.txt" "$WORK/pgbouncer.ini"
    log "starting pgbouncer on $PB_PORT"
    # PgBouncer refuses to run as root; exec_as_pg execs in place, so $! is pgbouncer.
    exec_as_pg "$bin" "$WORK/pgbouncer.ini" >>"$WORK/pgbouncer.out" 2>&1 </dev/null &
    PID[pgbouncer]=$!
    wait_target pgbouncer
}

wait_target() {
    local t=$1 i
    for ((i = 0; i < 100; i++)); do
        port_busy "${PORT[$t]}" && return 0
        kill -0 "${PID[$t]}" 2>/dev/null || break
        sleep 0.1
    done
    local status=0 last
    if kill -0 "${PID[$t]}" 2>/dev/null; then
        kill -KILL "${PID[$t]}" 2>/dev/null || true
        BROKEN[$t]="did not listen on ${PORT[$t]} within 10 s"
    else
        wait "${PID[$t]}" 2>/dev/null || status=$?
        BROKEN[$t]="exited with status $status before listening on ${PORT[$t]}"
    fi
    last=$(tail -n 1 "$WORK/$t.log" "$WORK/$t.out" 2>/dev/null | grep -v '^==>' | grep . | tail -1 | cut -c1-160 || true)
    [ -n "$last" ] && BROKEN[$t]="${BROKEN[$t]}; log: $last"
    unset "PID[$t]"
    log "$t: ${BROKEN[$t]}"
    tail -5 "$WORK/$t.log" "$WORK/$t.out" 2>/dev/null >&2 || true
}

# A proxy that died mid-way is restarted once per run; if that fails the run is a FAIL.
ensure_target() {
    local t=$1
    [ "$t" = direct ] && return 0
    [ -n "${BROKEN[$t]:-}" ] && return 1
    if [ -n "${PID[$t]:-}" ] && kill -0 "${PID[$t]}" 2>/dev/null; then
        return 0
    fi
    log "$t is not running; restarting it"
    "start_$t"
    [ -z "${BROKEN[$t]:-}" ]
}

# ---------------------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------------------

cpu_ticks() { # utime + stime of a process (all threads); fields after the ")" of comm
    awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat" 2>/dev/null || echo 0
}

# Prints "p50_ms p99_ms" from pgbench per-transaction logs (3rd field: latency in µs).
latency_percentiles() {
    cat "$@" | awk '$3 ~ /^[0-9]+$/ { print $3 }' | sort -n | awk '
        { v[NR] = $1 }
        END {
            if (NR == 0) { print "- -"; exit }
            i50 = int(NR * 0.50); if (i50 < 1) i50 = 1
            i99 = int(NR * 0.99); if (i99 < 1) i99 = 1
            printf "%.3f %.3f\n", v[i50] / 1000, v[i99] / 1000
        }'
}

# test_field TEST N: field N of TEST's line in ALL_TESTS (dies on an unknown test).
test_field() {
    local line
    line=$(echo "$ALL_TESTS" | grep "^$1|") || die "unknown test $1"
    echo "$line" | cut -d'|' -f"$2"
}

# applies TEST TARGET: whether TEST runs on TARGET.
applies() {
    local targets
    targets=$(test_field "$1" 4)
    [[ " ${targets:-$UNSHARDED_TARGETS} " == *" $2 "* ]]
}

# wanted TARGET: whether a selected test runs on TARGET (else it is not started).
wanted() {
    local test
    for test in $TESTS; do
        if applies "$test" "$1"; then
            return 0
        fi
    done
    return 1
}

# selected TEST: whether TEST is in TESTS.
selected() {
    [[ " $(echo "$TESTS" | xargs) " == *" $1 "* ]]
}

# run_one TEST CLIENTS "ARGS" TARGET REP -> appends "tps p50 p99 cpu_us" to results
run_one() {
    local test=$1 clients=$2 args=$3 target=$4 rep=$5
    local out=$WORK/results/$test.$target
    local runlog=$WORK/run.$test.$target.$rep.log
    local prefix=$WORK/lat/$test.$target.$rep
    mkdir -p "$WORK/results" "$WORK/lat"
    if ! ensure_target "$target"; then
        FAILURES+=("$test/$target rep $rep: ${BROKEN[$target]:-could not start}")
        echo "FAIL" >>"$out"
        return
    fi
    if [ "$test" = tpcb ]; then
        psql_su bench -c "VACUUM ANALYZE pgbench_branches, pgbench_tellers" \
            -c "TRUNCATE pgbench_history" >/dev/null
    fi
    local jobs=2
    [ "$clients" -lt 2 ] && jobs=1
    local pid=${PID[$target]:-} before=0 after=0
    [ "$target" != direct ] && before=$(cpu_ticks "$pid")
    local rc=0
    # shellcheck disable=SC2086 # args is a word list on purpose
    PGPASSWORD=bench "$PGBIN/pgbench" -h 127.0.0.1 -p "${PORT[$target]}" -U bench -n \
        -T "$DURATION" -c "$clients" -j "$jobs" $args \
        --log --log-prefix="$prefix" bench >"$runlog" 2>&1 || rc=$?
    [ "$target" != direct ] && after=$(cpu_ticks "$pid")
    local txns tps
    txns=$(awk -F': ' '/number of transactions actually processed/ { split($2, a, "/"); print a[1] }' "$runlog")
    tps=$(awk '/^tps = / { print $3; exit }' "$runlog")
    if [ $rc -ne 0 ] || [ -z "$txns" ] || [ "${txns:-0}" -eq 0 ] || [ -z "$tps" ]; then
        FAILURES+=("$test/$target rep $rep: pgbench exit $rc: $(grep -m1 -iE 'error|fatal|abort' "$runlog" | cut -c1-160)")
        echo "FAIL" >>"$out"
        rm -f "$prefix".*
        log "  $test $target rep $rep: FAIL"
        return
    fi
    local lat cpu=-
    lat=$(latency_percentiles "$prefix".*)
    rm -f "$prefix".*
    if [ "$target" != direct ]; then
        cpu=$(awk -v d=$((after - before)) -v hz="$CLK_TCK" -v n="$txns" 'BEGIN { printf "%.1f", d * 1e6 / hz / n }')
    fi
    echo "$tps $lat $cpu" >>"$out"
    log "  $test $target rep $rep: tps $tps, p50/p99 ms $lat, cpu µs/txn $cpu"
}

# Median of column $2 over the lines of file $1 that are not FAIL; "-" when none.
median_col() {
    [ -f "$1" ] || { echo -; return; }
    grep -v '^FAIL' "$1" | awk -v c="$2" '$c != "-" { print $c }' | sort -g | awk '
        { v[NR] = $1 }
        END { if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2];
              else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# ---------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------

table() {
    local test target f tps direct_tps ratio p50 p99 cpu ok n
    echo "| test | target | tps | vs direct | p50 ms | p99 ms | proxy CPU µs/txn |"
    echo "|---|---|---:|---:|---:|---:|---:|"
    for test in $TESTS; do
        direct_tps=$(median_col "$WORK/results/$test.direct" 1)
        for target in $TARGETS; do
            if ! applies "$test" "$target"; then
                echo "| $test | $target | - | | | | |"
                continue
            fi
            f=$WORK/results/$test.$target
            tps=$(median_col "$f" 1)
            n=$(grep -c . "$f" 2>/dev/null || true)
            ok=$(grep -vc '^FAIL' "$f" 2>/dev/null || true)
            if [ "$tps" = - ]; then
                echo "| $test | $target | FAIL | | | | |"
                continue
            fi
            p50=$(median_col "$f" 2)
            p99=$(median_col "$f" 3)
            cpu=$(median_col "$f" 4)
            [ "$cpu" != - ] && cpu=$(printf '%.1f' "$cpu")
            ratio=-
            if [ "$direct_tps" != - ]; then
                ratio=$(awk -v a="$tps" -v b="$direct_tps" 'BEGIN { printf "%.2f", a / b }')
            fi
            tps=$(printf '%.0f' "$tps")
            [ "$ok" != "$n" ] && tps="$tps ($ok/$n ok)"
            echo "| $test | $target | $tps | $ratio | $p50 | $p99 | $cpu |"
        done
    done
}

machine() {
    local cpu mem
    cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
    mem=$(awk '/^MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)
    echo "$(uname -sr), $(nproc) cores ($cpu), $mem"
}

report() {
    local commit dirty="" pgver pbver="-"
    commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
    [ -n "$(git -C "$ROOT" status --porcelain 2>/dev/null)" ] && dirty=" (with uncommitted changes)"
    pgver=$("$PGBIN/postgres" --version)
    if [ -z "${BROKEN[pgbouncer]:-}" ] && [[ " $TARGETS " == *" pgbouncer "* ]]; then
        pbver=$(as_pg pgbouncer --version 2>/dev/null | head -1 || echo "?")
    fi
    cat <<EOF
# pgbench: direct vs sleddog vs PgBouncer

- date: $(date -u '+%Y-%m-%d %H:%M UTC')
- machine: $(machine)
- commit: $commit$dirty
- servers: $pgver; $pbver; sleddog workers = 2
- settings: DURATION=${DURATION}s REPS=$REPS, pgbench scale $SCALE, pool size $POOL_SIZE
  (transaction mode) for both proxies, pgbench -j 2, synchronous_commit = off
- pgbench, Postgres and the proxy share the machine's cores, so proxy CPU competes with
  the others: compare ratios, not absolute numbers across machines.
- tps, p50 and p99 are medians over the repetitions; latency is pgbench's per-transaction
  time (--log); proxy CPU is utime+stime of the proxy process per transaction.
- sleddog_lb: sleddog with the same Postgres listed twice (primary and replica), so every
  transaction is classified (read/write) and balanced: the cost of a cluster.
- shard-direct-extended: \`SELECT v FROM sd_users WHERE id = :id\` (id random in
  1..$SHARD_ROWS, -M extended; a query that finds no row fails the run) on direct (one
  table with every row) and on sleddog_sharded (sd_users hash-sharded by id over two
  databases of the same Postgres): the cost of routing a query to its one shard.
  "-": the test does not run on that target.

$(table)
EOF
    if [ ${#FAILURES[@]} -gt 0 ]; then
        echo
        echo "Failures:"
        echo
        local f
        for f in "${FAILURES[@]}"; do
            echo "- $f"
        done
    fi
}

# ---------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------

command -v "$PGBIN/pgbench" >/dev/null || die "pgbench not found in $PGBIN"
for test in $TESTS; do
    test_field "$test" 1 >/dev/null
done
start_postgres
if selected shard-direct-extended; then
    setup_shard_data
fi
for t in $TARGETS; do
    case $t in
    direct) ;;
    sleddog | sleddog_lb | sleddog_sharded | pgbouncer)
        if wanted "$t"; then
            "start_$t"
        fi
        ;;
    *) die "unknown target $t" ;;
    esac
done

for rep in $(seq "$REPS"); do
    for test in $TESTS; do
        clients=$(test_field "$test" 2)
        args=$(test_field "$test" 3)
        args=${args//@WORK@/$WORK}
        for target in $TARGETS; do
            if ! applies "$test" "$target"; then
                continue
            fi
            run_one "$test" "$clients" "$args" "$target" "$rep"
        done
    done
done

REPORT=$(report)
echo
echo "$REPORT"
if [ "$RESULTS" != - ]; then
    echo "$REPORT" >"$RESULTS"
    log "wrote $RESULTS"
fi
