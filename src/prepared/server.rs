//! Which statements one server connection has prepared, least recently used
//! first out when over `prepared_statements_limit`.
//!
//! Must not: guess. An entry means the server confirmed (or will confirm,
//! before anything else runs) the Parse; a reply plan undoes entries whose
//! Parse failed. A wrong entry either way is a client-visible error.

use std::collections::HashMap;

use super::cache::StatementId;

#[derive(Debug)]
pub struct ServerStatements {
    /// Statement → the clock value of its last use.
    used: HashMap<StatementId, u64>,
    clock: u64,
    limit: usize,
}

impl ServerStatements {
    pub fn new(limit: usize) -> ServerStatements {
        ServerStatements {
            used: HashMap::new(),
            clock: 0,
            limit: limit.max(1),
        }
    }

    /// A reload changed `prepared_statements_limit`: the next insert evicts
    /// down to it, one statement at a time.
    pub fn set_limit(&mut self, limit: usize) {
        self.limit = limit.max(1);
    }

    pub fn len(&self) -> usize {
        self.used.len()
    }

    pub fn is_empty(&self) -> bool {
        self.used.is_empty()
    }

    /// True when prepared here; marks it used.
    pub fn touch(&mut self, id: StatementId) -> bool {
        self.clock += 1;
        match self.used.get_mut(&id) {
            Some(used) => {
                *used = self.clock;
                true
            }
            None => false,
        }
    }

    /// Records a Parse sent for `id`; returns the statement to close first
    /// when that puts the connection over its limit.
    pub fn insert(&mut self, id: StatementId) -> Option<StatementId> {
        self.clock += 1;
        self.used.insert(id, self.clock);
        if self.used.len() <= self.limit {
            return None;
        }
        let oldest = self
            .used
            .iter()
            .filter(|(other, _)| **other != id)
            .min_by_key(|(_, used)| **used)
            .map(|(other, _)| *other)?;
        self.used.remove(&oldest);
        Some(oldest)
    }

    pub fn remove(&mut self, id: StatementId) {
        self.used.remove(&id);
    }

    /// The server dropped every prepared statement (DISCARD ALL, DEALLOCATE ALL).
    pub fn clear(&mut self) {
        self.used.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn least_recently_used_goes_first() {
        let mut server = ServerStatements::new(2);
        assert_eq!(server.insert(StatementId(1)), None);
        assert_eq!(server.insert(StatementId(2)), None);
        assert!(server.touch(StatementId(1)));
        assert_eq!(server.insert(StatementId(3)), Some(StatementId(2)));
        assert!(!server.touch(StatementId(2)));
        assert!(server.touch(StatementId(1)));
        assert!(server.touch(StatementId(3)));
        server.clear();
        assert!(server.is_empty());
    }
}
