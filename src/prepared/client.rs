//! One client's statement names, mapped onto the core's shared statements.
//!
//! Must not: outlive the session or be seen by another client.

use std::collections::HashMap;
use std::rc::Rc;

use crate::pubsub::ListenCommand;

use super::cache::{Statement, StatementId};

#[derive(Default)]
pub struct ClientStatements {
    by_name: HashMap<Box<str>, Rc<Statement>>,
    /// LISTEN/UNLISTEN over the extended protocol is carried out by the core's
    /// listener (pub/sub on, transaction mode): the server gets an empty
    /// statement in its place, and these remember what it stood for.
    pub listen_enabled: bool,
    /// `prepared_statements = "extended_anonymous"`: the unnamed statement is
    /// renamed and shared too.
    pub anonymous: bool,
    /// `prepared_statements = "full"`: SQL `PREPARE` and `EXECUTE` are
    /// renamed too.
    pub sql: bool,
    pub(super) listen_statements: HashMap<Box<str>, ListenCommand>,
    pub(super) unnamed_listen: Option<ListenCommand>,
    pub(super) portal_listen: Option<ListenCommand>,
    /// Commands whose Execute completed, for the relay to carry out.
    pub done_listens: Vec<ListenCommand>,
}

impl ClientStatements {
    /// `listen_enabled`: LISTEN over the extended protocol goes to the core's
    /// listener (see the field); `anonymous` and `sql` as the fields say.
    pub fn new(listen_enabled: bool, anonymous: bool, sql: bool) -> ClientStatements {
        ClientStatements {
            listen_enabled,
            anonymous,
            sql,
            ..ClientStatements::default()
        }
    }

    pub fn get(&self, name: &str) -> Option<&Rc<Statement>> {
        self.by_name.get(name)
    }

    /// Returns what the name meant before, if anything.
    pub fn insert(&mut self, name: &str, statement: Rc<Statement>) -> Option<Rc<Statement>> {
        self.by_name.insert(name.into(), statement)
    }

    /// A name the client calls `statement` by (for its errors; not fast).
    pub fn name_of(&self, statement: StatementId) -> Option<&str> {
        self.by_name
            .iter()
            .find(|(_, s)| s.id == statement)
            .map(|(name, _)| &**name)
    }

    pub fn remove(&mut self, name: &str) -> Option<Rc<Statement>> {
        self.by_name.remove(name)
    }

    /// Empties the map, returning what it held (for an undo).
    pub fn take_all(&mut self) -> HashMap<Box<str>, Rc<Statement>> {
        std::mem::take(&mut self.by_name)
    }

    /// Puts back names taken by `take_all`, keeping any defined since.
    pub fn restore(&mut self, names: HashMap<Box<str>, Rc<Statement>>) {
        for (name, statement) in names {
            self.by_name.entry(name).or_insert(statement);
        }
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}
