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
        }
    }

    /// The classification of `sql`, from the cache or by [`classify`].
    pub fn get_or_classify(&mut self, sql: &str) -> Classified {
        self.get_or_insert_with(sql, classify)
    }

    /// The cached classification of `sql`, or `classify_miss(sql)` stored.
    /// The classifier is a parameter so tests can count misses.
    pub fn get_or_insert_with(
        &mut self,
        sql: &str,
        classify_miss: impl FnOnce(&str) -> Classified,
    ) -> Classified {
        if let Some(&slot) = self.index.get(sql) {
            self.stats.hits += 1;
            self.touch(slot);
            return self.entries[slot as usize].classified;
        }
        self.stats.misses += 1;
        let classified = classify_miss(sql);
        if self.limit == 0 || sql.len() > QUERY_CACHE_STATEMENT_BYTES_MAX {
            self.stats.uncached += 1;
        } else {
            self.insert(sql, classified);
        }
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
        for sql in ["SELECT 1", "SELECT 2", "SELECT 3"] {
            get(&mut cache, sql);
        }
        get(&mut cache, "SELECT 1"); // 1 is now newest; 2 is oldest.
        get(&mut cache, "SELECT 4"); // evicts 2.
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.stats().evictions, 1);
        get(&mut cache, "SELECT 1");
        get(&mut cache, "SELECT 3");
        get(&mut cache, "SELECT 4");
        assert_eq!(cache.stats().hits, 4);
        get(&mut cache, "SELECT 2"); // a miss again; evicts 1 (oldest now).
        assert_eq!(cache.stats().misses, 5);
        get(&mut cache, "SELECT 1");
        assert_eq!(cache.stats().misses, 6);
        assert_eq!(cache.len(), 3);
        assert_eq!(misses, 6);
    }

    #[test]
    fn limit_of_one_and_zero() {
        let mut one = QueryCache::new(1);
        for _ in 0..3 {
            one.get_or_classify("SELECT 1");
            one.get_or_classify("SELECT 2");
        }
        assert_eq!((one.stats().hits, one.stats().misses, one.len()), (0, 6, 1));
        let mut zero = QueryCache::new(0);
        zero.get_or_classify("SELECT 1");
        zero.get_or_classify("SELECT 1");
        assert_eq!(
            (zero.stats().misses, zero.stats().uncached, zero.len()),
            (2, 2, 0)
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
            let sql = format!("SELECT {}", state % 40);
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
