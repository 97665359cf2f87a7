//! The in-memory merge of a cross-shard SELECT: 1M rows from 4 shards, as
//! `fanout::merge::Merge` gets them (RowDescription and DataRow bodies in
//! Postgres's text format), for ORDER BY + LIMIT and for GROUP BY with
//! aggregates. Prints rows/s and the memory the merge held at its peak
//! (bytes allocated and not yet freed, from a counting global allocator).
//!
//! Run: `cargo bench --bench merge`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::rc::Rc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Instant;

use bytes::{BufMut, BytesMut};
use sleddog::fanout::merge::Merge;
use sleddog::fanout::plan::{AggKind, AggregateColumn, AggregatePlan, Count, MergePlan, SortKey};

/// Tracks bytes live and the peak since the last reset.
struct CountingAllocator;

static LIVE: AtomicI64 = AtomicI64::new(0);
static PEAK: AtomicI64 = AtomicI64::new(0);

unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size() as i64, Ordering::Relaxed) + layout.size() as i64;
        PEAK.fetch_max(live, Ordering::Relaxed);
        // SAFETY: forwards the caller's layout to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

const SHARDS: usize = 4;
const ROWS_PER_SHARD: usize = 250_000;
const GROUPS: u64 = 1_000;

/// RowDescription body: text-format columns of the given (name, type oid).
fn description(columns: &[(&str, u32)]) -> Vec<u8> {
    let mut body = BytesMut::new();
    body.put_u16(columns.len() as u16);
    for (name, oid) in columns {
        body.put_slice(name.as_bytes());
        body.put_u8(0);
        body.put_u32(0);
        body.put_i16(0);
        body.put_u32(*oid);
        body.put_i16(if *oid == 20 { 8 } else { -1 });
        body.put_i32(-1);
        body.put_i16(0);
    }
    body.to_vec()
}

/// DataRow body of text values.
fn row(values: &[&str]) -> Vec<u8> {
    let mut body = BytesMut::new();
    body.put_u16(values.len() as u16);
    for value in values {
        body.put_i32(value.len() as i32);
        body.put_slice(value.as_bytes());
    }
    body.to_vec()
}

/// Pseudo-random but fixed values (xorshift).
fn rows_of(shard: usize, f: impl Fn(u64) -> Vec<u8>) -> Vec<Vec<u8>> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ (shard as u64 + 1);
    (0..ROWS_PER_SHARD)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            f(x)
        })
        .collect()
}

fn run(name: &str, plan: MergePlan, columns: &[(&str, u32)], shards: &[Vec<Vec<u8>>]) {
    let description = description(columns);
    let plan = Rc::new(plan);
    let mut best = f64::MAX;
    let mut peak_bytes = 0;
    let mut out_rows = 0;
    for _ in 0..3 {
        let base = LIVE.load(Ordering::Relaxed);
        PEAK.store(base, Ordering::Relaxed);
        let start = Instant::now();
        let mut merge = Merge::new(plan.clone(), &[], &[]).expect("plan");
        for (shard, rows) in shards.iter().enumerate() {
            merge
                .row_description(shard, &description)
                .expect("description");
            for body in rows {
                merge.data_row(shard, body).expect("row");
            }
        }
        let mut out = BytesMut::new();
        out_rows = merge.finish(&mut out).expect("finish");
        black_box(&out);
        let elapsed = start.elapsed().as_secs_f64();
        best = best.min(elapsed);
        peak_bytes = PEAK.load(Ordering::Relaxed) - base;
    }
    let rows = (SHARDS * ROWS_PER_SHARD) as f64;
    println!(
        "{name}: {:.2} M rows/s ({:.0} ms for {} rows in, {out_rows} out), peak {:.1} MiB",
        rows / best / 1e6,
        best * 1e3,
        SHARDS * ROWS_PER_SHARD,
        peak_bytes as f64 / (1024.0 * 1024.0)
    );
}

fn main() {
    // ORDER BY id DESC LIMIT 100 over (id bigint, name text).
    let shards: Vec<Vec<Vec<u8>>> = (0..SHARDS)
        .map(|s| {
            rows_of(s, |x| {
                let id = (x >> 1) as i64;
                row(&[&id.to_string(), &format!("name-{}", x % 9973)])
            })
        })
        .collect();
    let top = MergePlan {
        visible: 2,
        aggregate: None,
        distinct: false,
        order_by: vec![SortKey {
            column: 0,
            descending: true,
            nulls_first: true,
        }],
        offset: None,
        limit: Some(Count::Literal(100)),
        sort_names: vec![],
    };
    let columns = [("id", 20), ("name", 25)];
    run("ORDER BY id DESC LIMIT 100", top.clone(), &columns, &shards);
    let mut by_name = top.clone();
    by_name.order_by[0].column = 1;
    run("ORDER BY name DESC LIMIT 100", by_name, &columns, &shards);
    let mut all = top;
    all.limit = None;
    run("ORDER BY id DESC, no LIMIT", all, &columns, &shards);
    drop(shards);

    // SELECT grp, count(*), sum(v), avg(v) ... GROUP BY grp: each shard
    // sends one row per group; here every shard row is a partial row, which
    // is the merge's worst case (1M partials into 1,000 groups).
    let shards: Vec<Vec<Vec<u8>>> = (0..SHARDS)
        .map(|s| {
            rows_of(s, |x| {
                let grp = x % GROUPS;
                let v = (x >> 20) % 100_000;
                let count = 1 + x % 7;
                row(&[
                    &grp.to_string(),
                    &count.to_string(),
                    &(v * count).to_string(),
                    "0",
                    &(v * count).to_string(),
                    &count.to_string(),
                ])
            })
        })
        .collect();
    let grouped = MergePlan {
        visible: 4,
        aggregate: Some(AggregatePlan {
            group_by: vec![0],
            aggregates: vec![
                AggregateColumn {
                    column: 1,
                    kind: AggKind::Count,
                    partials: vec![],
                },
                AggregateColumn {
                    column: 2,
                    kind: AggKind::Sum,
                    partials: vec![],
                },
                AggregateColumn {
                    column: 3,
                    kind: AggKind::Avg,
                    partials: vec![4, 5],
                },
            ],
            having: None,
        }),
        distinct: false,
        order_by: vec![SortKey {
            column: 0,
            descending: false,
            nulls_first: false,
        }],
        offset: None,
        limit: None,
        sort_names: vec![],
    };
    run(
        "GROUP BY grp: count, sum, avg",
        grouped,
        &[
            ("grp", 20),
            ("count", 20),
            ("sum", 1700),
            ("avg", 1700),
            ("sum", 1700),
            ("count", 20),
        ],
        &shards,
    );
}
