//! [`QueryCache`]: one core's cache of classifications keyed by statement
//! text, so a statement is lexed and parsed once per core, not per query.
//!
//! It owns the cache policy: at most `limit` entries (PgDog's
//! `query_cache_limit`, default [`QUERY_CACHE_LIMIT_DEFAULT`]), least
//! recently used evicted first, all operations O(1). A hit does not
//! allocate: a hash lookup by `&str`, a relink in an index-linked list, and
//! a copy of the `Copy` answer. It is per-core plain data and must not be
//! shared across threads or hold a lock.
//!
//! Texts longer than [`QUERY_CACHE_STATEMENT_BYTES_MAX`] are classified
//! every time and never stored: a bulk `INSERT` of megabytes is rarely
//! repeated, and keeping a thousand of them would hold gigabytes.

use std::collections::HashMap;

use super::classified::Classified;
use super::classify::classify;
use super::lex::shape;

/// PgDog's default `query_cache_limit` (general settings).
pub const QUERY_CACHE_LIMIT_DEFAULT: usize = 1_000;

/// Statement texts longer than this are not cached.
pub const QUERY_CACHE_STATEMENT_BYTES_MAX: usize = 64 * 1024;

/// No entry: the end of the recency list.
const NIL: u32 = u32::MAX;

/// Counters since the cache was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueryCacheStats {
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that classified the text (including uncacheable ones).
    pub misses: u64,
    /// Entries dropped to make room.
    pub evictions: u64,
    /// Misses not stored because the text was too long or the limit is 0.
    pub uncached: u64,
}

struct Entry {
    text: Box<str>,
    classified: Classified,
    /// Toward the most recently used end.
    newer: u32,
    /// Toward the least recently used end.
    older: u32,
}

/// A bounded LRU cache of [`Classified`] keyed by statement text.
pub struct QueryCache {
    limit: usize,
    index: HashMap<Box<str>, u32>,
    entries: Vec<Entry>,
    newest: u32,
    oldest: u32,
    stats: QueryCacheStats,
    /// Scratch for the key of the statement at hand (`lex::shape`).
    key: String,
}

impl QueryCache {
    /// A cache holding at most `limit` statements; 0 disables caching.
    /// `limit` is capped below `u32::MAX` (entries are `u32`-indexed).
    pub fn new(limit: usize) -> Self {
        let limit = limit.min(NIL as usize - 1);
        QueryCache {
            limit,
            index: HashMap::new(),
            entries: Vec::new(),
            newest: NIL,
            oldest: NIL,
            stats: QueryCacheStats::default(),
            key: String::new(),
        }
    }

    /// A reload changed `query_cache_limit`: the cache starts over at the
    /// new size, keeping its counters (reloads are rare; the entries are
    /// re-parsed as they come back).
    pub fn set_limit(&mut self, limit: usize) {
        if limit.min(NIL as usize - 1) != self.limit {
            let stats = std::mem::take(&mut self.stats);
            *self = QueryCache::new(limit);
            self.stats = stats;
        }
    }

    /// The classification of `sql`, from the cache or by [`classify`].
    pub fn get_or_classify(&mut self, sql: &str) -> Classified {
        self.get_or_insert_with(sql, classify)
    }

    /// The cached classification of `sql`, or `classify_miss(sql)` stored.
    /// The classifier is a parameter so tests can count misses. Texts that
    /// differ only in their constants share one entry (`lex::shape`).
    pub fn get_or_insert_with(
        &mut self,
        sql: &str,
        classify_miss: impl FnOnce(&str) -> Classified,
    ) -> Classified {
        if sql.len() > QUERY_CACHE_STATEMENT_BYTES_MAX || self.limit == 0 {
            self.stats.misses += 1;
            self.stats.uncached += 1;
            return classify_miss(sql);
        }
        let mut key = std::mem::take(&mut self.key);
        let shaped = shape(sql, &mut key);
        let classified = self.lookup(if shaped { &key } else { sql }, sql, classify_miss);
        self.key = key;
        classified
    }

    fn lookup(
        &mut self,
        key: &str,
        sql: &str,
        classify_miss: impl FnOnce(&str) -> Classified,
    ) -> Classified {
        if let Some(&slot) = self.index.get(key) {
            self.stats.hits += 1;
            self.touch(slot);
            return self.entries[slot as usize].classified;
        }
        self.stats.misses += 1;
        let classified = classify_miss(sql);
        self.insert(key, classified);
        classified
    }

    /// Cached statements.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// The most statements this cache holds.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Hit, miss and eviction counters.
    pub fn stats(&self) -> QueryCacheStats {
        self.stats
    }

    /// Drops every entry (after a config reload changes the limit, say);
    /// counters are kept.
    pub fn clear(&mut self) {
        self.index.clear();
        self.entries.clear();
        self.newest = NIL;
        self.oldest = NIL;
    }

    fn insert(&mut self, sql: &str, classified: Classified) {
        let slot = if self.entries.len() < self.limit {
            let slot = u32::try_from(self.entries.len()).expect("limit is capped below u32::MAX");
            self.entries.push(Entry {
                text: sql.into(),
                classified,
                newer: NIL,
                older: NIL,
            });
            slot
        } else {
            let slot = self.oldest;
            self.unlink(slot);
            let entry = &mut self.entries[slot as usize];
            self.index.remove(&entry.text);
            entry.text = sql.into();
            entry.classified = classified;
            self.stats.evictions += 1;
            slot
        };
        self.index.insert(sql.into(), slot);
        self.push_newest(slot);
        debug_assert!(self.index.len() <= self.limit && self.entries.len() <= self.limit);
    }

    fn touch(&mut self, slot: u32) {
        if self.newest != slot {
            self.unlink(slot);
            self.push_newest(slot);
        }
    }

    fn unlink(&mut self, slot: u32) {
        let (newer, older) = {
            let entry = &self.entries[slot as usize];
            (entry.newer, entry.older)
        };
        match newer {
            NIL => self.newest = older,
            newer => self.entries[newer as usize].older = older,
        }
        match older {
            NIL => self.oldest = newer,
            older => self.entries[older as usize].newer = newer,
        }
    }

    fn push_newest(&mut self, slot: u32) {
        let previous = self.newest;
        {
            let entry = &mut self.entries[slot as usize];
            entry.newer = NIL;
            entry.older = previous;
        }
        match previous {
            NIL => self.oldest = slot,
            previous => self.entries[previous as usize].newer = slot,
        }
        self.newest = slot;
    }
}

impl Default for QueryCache {
    fn default() -> Self {
        QueryCache::new(QUERY_CACHE_LIMIT_DEFAULT)
    }
}

#[cfg(test)]
mod tests {
    use super::super::classified::Intent;
    use super::*;

    #[test]
    fn hit_after_miss() {
        let mut cache = QueryCache::new(10);
        let first = cache.get_or_classify("SELECT 1");
        let second = cache.get_or_classify("SELECT 1");
        assert_eq!(first, second);
        assert_eq!(first.intent, Intent::Read);
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.misses, stats.evictions), (1, 1, 0));
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn texts_differing_in_case_or_space_are_different_keys() {
        let mut cache = QueryCache::new(10);
        cache.get_or_classify("select 1");
        cache.get_or_classify("SELECT 1");
        cache.get_or_classify("select  1");
        assert_eq!(cache.stats().misses, 3);
    }

    #[test]
    fn limit_is_hit_and_least_recently_used_is_evicted() {
        let mut cache = QueryCache::new(3);
        let mut misses = 0;
        let mut get = |cache: &mut QueryCache, sql: &str| {
            cache.get_or_insert_with(sql, |sql| {
                misses += 1;
                classify(sql)
            });
        };
        for sql in ["SELECT a", "SELECT b", "SELECT c"] {
            get(&mut cache, sql);
        }
        get(&mut cache, "SELECT a"); // a is now newest; b is oldest.
        get(&mut cache, "SELECT d"); // evicts b.
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.stats().evictions, 1);
        get(&mut cache, "SELECT a");
        get(&mut cache, "SELECT c");
        get(&mut cache, "SELECT d");
        assert_eq!(cache.stats().hits, 4);
        get(&mut cache, "SELECT b"); // a miss again; evicts a (oldest now).
        assert_eq!(cache.stats().misses, 5);
        get(&mut cache, "SELECT a");
        assert_eq!(cache.stats().misses, 6);
        assert_eq!(cache.len(), 3);
        assert_eq!(misses, 6);
    }

    #[test]
    fn a_new_limit_applies_and_an_unchanged_one_keeps_the_entries() {
        let mut cache = QueryCache::new(4);
        for sql in ["SELECT a", "SELECT b", "SELECT c"] {
            cache.get_or_classify(sql);
        }
        cache.set_limit(4);
        assert_eq!(cache.len(), 3);
        cache.set_limit(1);
        assert_eq!(cache.len(), 0);
        assert_eq!(cache.stats().misses, 3, "counters carry over");
        cache.get_or_classify("SELECT a");
        cache.get_or_classify("SELECT b");
        assert_eq!((cache.len(), cache.stats().evictions), (1, 1));
    }

    #[test]
    fn limit_of_one_and_zero() {
        let mut one = QueryCache::new(1);
        for _ in 0..3 {
            one.get_or_classify("SELECT a");
            one.get_or_classify("SELECT b");
        }
        assert_eq!((one.stats().hits, one.stats().misses, one.len()), (0, 6, 1));
        let mut zero = QueryCache::new(0);
        zero.get_or_classify("SELECT a");
        zero.get_or_classify("SELECT a");
        assert_eq!(
            (zero.stats().misses, zero.stats().uncached, zero.len()),
            (2, 2, 0)
        );
    }

    #[test]
    fn texts_differing_only_in_constants_share_an_entry() {
        let mut cache = QueryCache::new(10);
        let hinted = "/* pgdog_sharding_key: 7 */ SELECT v FROM t WHERE id = 1 AND s = 'a'";
        cache.get_or_classify(hinted);
        let other = "/* pgdog_sharding_key: 7 */ SELECT v FROM t WHERE id = 9 AND s = 'b'";
        let got = cache.get_or_classify(other);
        assert_eq!(cache.stats().hits, 1);
        assert_eq!(got.hints.sharding_key.unwrap().slice(other), Some("7"));
        // Different lengths, dollar quotes and parameters are constants too.
        cache.get_or_classify("SELECT v FROM t WHERE id = 12345");
        cache.get_or_classify("SELECT v FROM t WHERE id = 54321");
        cache.get_or_classify("SELECT $a$x$a$, $1");
        cache.get_or_classify("SELECT $a$y$a$, $2");
        assert_eq!(cache.stats().hits, 3);
        // Where the value decides (SET pgdog.role), the text is the key.
        let replica = cache.get_or_classify("SET pgdog.role TO 'replica'");
        let primary = cache.get_or_classify("SET pgdog.role TO 'primary'");
        assert_ne!(replica.role_setting, primary.role_setting);
        // Identifiers and keywords are kept.
        assert_ne!(
            cache.get_or_classify("SELECT nextval('s')").intent,
            cache.get_or_classify("SELECT currval('s')").intent
        );
        let mut key = String::new();
        assert!(shape("SELECT 'é', 1.5e3, E'\\n' -- 'x'", &mut key));
        assert_eq!(
            key, "SELECT ????, ?????, ????? -- 'x'",
            "byte lengths are kept"
        );
    }

    #[test]
    fn long_texts_are_not_cached() {
        let mut cache = QueryCache::default();
        assert_eq!(cache.limit(), QUERY_CACHE_LIMIT_DEFAULT);
        let long = format!("SELECT '{}'", "x".repeat(QUERY_CACHE_STATEMENT_BYTES_MAX));
        cache.get_or_classify(&long);
        cache.get_or_classify(&long);
        assert_eq!((cache.stats().uncached, cache.len()), (2, 0));
    }

    #[test]
    fn churn_keeps_the_list_consistent() {
        let mut cache = QueryCache::new(16);
        let mut state = 0x2545_f491_u32;
        for _ in 0..5_000 {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            let sql = format!("SELECT c{}", state % 40);
            let got = cache.get_or_insert_with(&sql, classify);
            assert_eq!(got.intent, Intent::Read);
            assert!(cache.len() <= 16);
        }
        // Walk the list from newest to oldest: every entry once.
        let mut seen = 0;
        let mut at = cache.newest;
        while at != NIL {
            seen += 1;
            at = cache.entries[at as usize].older;
        }
        assert_eq!(seen, cache.len());
        let stats = cache.stats();
        assert_eq!(stats.hits + stats.misses, 5_000);
        assert_eq!(stats.evictions, stats.misses - 16);
        cache.clear();
        assert!(cache.is_empty());
    }
}
