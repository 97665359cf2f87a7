//! Time per statement of the read/write classifier: a cache hit, a cache
//! miss (lex + fast path or pg_query parse + tree walk), over a mix shaped
//! like pgbench plus a typical ORM. Also checks that a hit never allocates,
//! with a counting global allocator.
//!
//! Run: `cargo bench --bench classify`. Prints ns/statement.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use sleddog::router::{classify, QueryCache, Source};

/// Counts allocations so the hit loop can prove it makes none.
struct CountingAllocator;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwards the caller's layout to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

const MIX: &[&str] = &[
    // pgbench -b tpcb-like, as sent by the extended protocol.
    "BEGIN",
    "UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2",
    "SELECT abalance FROM pgbench_accounts WHERE aid = $1",
    "UPDATE pgbench_tellers SET tbalance = tbalance + $1 WHERE tid = $2",
    "UPDATE pgbench_branches SET bbalance = bbalance + $1 WHERE bid = $2",
    "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES ($1, $2, $3, $4, CURRENT_TIMESTAMP)",
    "END",
    // An ORM's reads and writes.
    "SELECT \"users\".* FROM \"users\" WHERE \"users\".\"id\" = $1 LIMIT $2",
    "SELECT \"orders\".\"id\", \"orders\".\"total\", \"orders\".\"created_at\" FROM \"orders\" \
     INNER JOIN \"users\" ON \"users\".\"id\" = \"orders\".\"user_id\" WHERE \"users\".\"email\" = $1 \
     AND \"orders\".\"status\" IN ($2, $3, $4) ORDER BY \"orders\".\"created_at\" DESC LIMIT 20",
    "SELECT count(*) FROM \"products\" WHERE \"products\".\"category_id\" = $1",
    "SELECT * FROM jobs WHERE queue = $1 AND run_at <= now() ORDER BY priority LIMIT 1 FOR UPDATE SKIP LOCKED",
    "WITH recent AS (SELECT user_id, max(created_at) AS last FROM events GROUP BY user_id) \
     SELECT u.id, r.last FROM users u JOIN recent r ON r.user_id = u.id WHERE u.active",
    "INSERT INTO \"sessions\" (\"token\", \"user_id\", \"expires_at\") VALUES ($1, $2, $3) RETURNING \"id\"",
    "DELETE FROM \"sessions\" WHERE \"expires_at\" < $1",
    "/* pgdog_role: primary */ SELECT balance FROM accounts WHERE id = $1",
    "SELECT nextval('orders_id_seq')",
    "SET application_name = 'web'",
    "SHOW transaction_isolation",
    "COMMIT",
    "SELECT 1",
];

fn ns_per(elapsed_ns: u128, count: u64) -> f64 {
    elapsed_ns as f64 / count as f64
}

fn time_misses(statements: &[&str], rounds: u64) -> f64 {
    let start = Instant::now();
    for _ in 0..rounds {
        for sql in statements {
            black_box(classify(black_box(sql)));
        }
    }
    ns_per(start.elapsed().as_nanos(), rounds * statements.len() as u64)
}

fn main() {
    // Warm up pg_query's per-thread state and the CPU caches.
    let _ = time_misses(MIX, 50);

    let rounds = 2_000u64;
    let miss_ns = time_misses(MIX, rounds);
    let parsed: Vec<&str> = MIX
        .iter()
        .copied()
        .filter(|sql| classify(sql).source == Source::Parsed)
        .collect();
    let fast: Vec<&str> = MIX
        .iter()
        .copied()
        .filter(|sql| classify(sql).source == Source::FastPath)
        .collect();
    let parsed_ns = time_misses(&parsed, rounds);
    let fast_ns = time_misses(&fast, rounds * 10);

    let mut cache = QueryCache::default();
    for sql in MIX {
        cache.get_or_classify(sql);
    }
    let hit_rounds = 200_000u64;
    let allocations_before = ALLOCATIONS.load(Ordering::Relaxed);
    let start = Instant::now();
    for _ in 0..hit_rounds {
        for sql in MIX {
            black_box(cache.get_or_classify(black_box(sql)));
        }
    }
    let hit_ns = ns_per(start.elapsed().as_nanos(), hit_rounds * MIX.len() as u64);
    let hit_allocations = ALLOCATIONS.load(Ordering::Relaxed) - allocations_before;
    let stats = cache.stats();
    assert_eq!(stats.misses, MIX.len() as u64);
    assert_eq!(hit_allocations, 0, "a cache hit allocated");

    println!(
        "classify: {} statements in the mix ({} parsed, {} fast path)",
        MIX.len(),
        parsed.len(),
        fast.len()
    );
    println!("  cache miss, whole mix      {miss_ns:>10.0} ns/statement");
    println!("  cache miss, parsed only    {parsed_ns:>10.0} ns/statement");
    println!("  cache miss, fast path only {fast_ns:>10.0} ns/statement");
    println!("  cache hit                  {hit_ns:>10.1} ns/statement ({hit_allocations} allocations in {} hits)", stats.hits);
}
