//! The reply plan: for each message sent to the server since the plan was last
//! empty, which reply it earns and what the client gets of it.
//!
//! Postgres answers extended-protocol messages in order, and after an error
//! skips everything up to the next Sync ("protocol-flow", "Extended Query").
//! The plan mirrors that: replies to messages sleddog injected are hidden,
//! messages sleddog answered itself get their answer at their place in the
//! stream, and the bookkeeping done when a message was sent is undone when the
//! server rejects or skips it.
//!
//! Must not: decide transaction state or count ReadyForQuery (the relay does);
//! it only shapes what the client sees and keeps the books true.

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

use bytes::{BufMut, Bytes, BytesMut};

use crate::protocol::backend::{BackendKind, ErrorFields};
use crate::protocol::frame::HEADER_LEN;
use crate::protocol::write;

use super::cache::{server_name, Statement, StatementId};
use super::rewrite::Books;

/// Where the reply to one message ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Expect {
    ParseComplete,
    BindComplete,
    /// ParameterDescription, then RowDescription or NoData.
    DescribeStatement,
    /// RowDescription or NoData.
    DescribePortal,
    /// Rows or COPY, then CommandComplete, EmptyQueryResponse or PortalSuspended.
    Execute,
    CloseComplete,
    /// Everything through ReadyForQuery: a Sync, or a simple Query or
    /// FunctionCall (whose errors do not skip anything after them).
    Ready {
        sync: bool,
    },
    /// Replies to requests sent before the plan began, each ended by a
    /// ReadyForQuery: the first `readies` of them go to the client as they are.
    Untracked {
        readies: u32,
    },
}

#[derive(Debug)]
pub(super) enum Action {
    Forward,
    /// The reply to a message sleddog injected (an error is still forwarded:
    /// the client's own message fails with it).
    Hide,
    /// Never sent: the client gets these bytes when the entry comes up.
    Answer(Bytes),
    /// Sent only to fail: the server's error is replaced by this one.
    ReplaceError(Bytes),
    /// An empty query stood in for a statement sleddog carried out itself: its
    /// EmptyQueryResponse becomes CommandComplete with this tag.
    EmptyAs(&'static str),
    /// A Query string whose first statement is a `PREPARE` sleddog added
    /// (SQL `EXECUTE` of a statement the connection lacks): that statement's
    /// CommandComplete is hidden, and once it arrives the statement is on the
    /// server whatever happens to the rest of the string (Postgres does not
    /// undo `PREPARE` on rollback).
    PreparedFirst,
}

/// Client bookkeeping done when the message was sent.
#[derive(Debug)]
pub(super) enum ClientUndo {
    None,
    /// A name was defined; before, it meant `previous`.
    Defined {
        name: Box<str>,
        previous: Option<Rc<Statement>>,
    },
    /// A name was closed.
    Closed {
        name: Box<str>,
        statement: Rc<Statement>,
    },
    /// Every name was dropped (DEALLOCATE ALL, DISCARD ALL); on success the
    /// server connection drops all of its statements too.
    ClosedAll(HashMap<Box<str>, Rc<Statement>>),
}

/// Server-connection bookkeeping done when the message was sent.
#[derive(Debug)]
pub(super) enum ServerUndo {
    None,
    /// A Parse was sent for it.
    Prepared(Rc<Statement>),
    /// A Close was sent for it.
    Closed(StatementId),
}

#[derive(Debug)]
pub(super) struct Entry {
    pub expect: Expect,
    pub action: Action,
    pub client: ClientUndo,
    pub server: ServerUndo,
    /// A DescribeStatement saw its ParameterDescription.
    described: bool,
    /// A Query-like entry saw an ErrorResponse.
    failed: bool,
    /// An Execute that stands for this LISTEN/UNLISTEN: carried out when it
    /// completes.
    pub listen: Option<crate::pubsub::ListenCommand>,
    /// The message named a statement by its server-side name: the server's
    /// errors are told in the client's terms.
    pub renamed: Option<Renamed>,
}

/// How a renamed message's errors read for the client. Built for every
/// renamed Bind, so it holds no copy of a name: the client's name is looked
/// up only when an error needs it.
#[derive(Debug)]
pub(super) struct Renamed {
    /// `"__sleddog_N"` in a message becomes the client's name for it. (An
    /// id, not the statement: an entry must not keep a failed Parse's
    /// statement alive in the cache.)
    pub statement: StatementId,
    /// A cursor position (`P`, in characters) past `after` moves by `shift`:
    /// the Query text sent differs from the client's in the name's length.
    pub after: u32,
    pub shift: i64,
}

impl Renamed {
    /// The ErrorResponse `msg` with the server's name and positions put back
    /// into the client's terms; None when nothing changes (or it does not
    /// decode).
    fn rewrite(&self, msg: &[u8], books: &Books<'_>) -> Option<BytesMut> {
        let fields = ErrorFields::parse(msg.get(HEADER_LEN..)?).ok()?;
        let quoted = format!("\"{}\"", server_name(self.statement));
        let changes = fields
            .iter()
            .any(|(code, value)| (code == b'P' && self.shift != 0) || value.contains(&quoted[..]));
        if !changes {
            return None;
        }
        // Were one statement known to the client by two names, this may
        // name the other: both stand for the same text.
        let client = format!("\"{}\"", books.client.name_of(self.statement)?);
        let mut body = BytesMut::new();
        for (code, value) in fields.iter() {
            body.put_u8(code);
            if code == b'P' {
                let position = value.parse::<i64>().ok()?;
                let moved = if position > i64::from(self.after) {
                    (position + self.shift).max(1)
                } else {
                    position
                };
                body.put_slice(moved.to_string().as_bytes());
            } else {
                body.put_slice(value.replace(&quoted[..], &client).as_bytes());
            }
            body.put_u8(0);
        }
        body.put_u8(0);
        let mut out = BytesMut::with_capacity(HEADER_LEN + body.len());
        out.put_u8(BackendKind::ErrorResponse.tag());
        out.put_u32((4 + body.len()) as u32);
        out.put_slice(&body);
        Some(out)
    }
}

/// Writes an error the server sent for `entry`, in the client's terms.
fn forward_error(renamed: Option<&Renamed>, books: &Books<'_>, msg: &[u8], out: &mut BytesMut) {
    match renamed.and_then(|renamed| renamed.rewrite(msg, books)) {
        Some(rewritten) => out.extend_from_slice(&rewritten),
        None => out.extend_from_slice(msg),
    }
}

impl Entry {
    pub fn new(expect: Expect, action: Action) -> Entry {
        Entry {
            expect,
            action,
            client: ClientUndo::None,
            server: ServerUndo::None,
            described: false,
            failed: false,
            listen: None,
            renamed: None,
        }
    }

    pub fn renamed(mut self, renamed: Renamed) -> Entry {
        self.renamed = Some(renamed);
        self
    }

    pub fn undo_client(mut self, undo: ClientUndo) -> Entry {
        self.client = undo;
        self
    }

    pub fn undo_server(mut self, undo: ServerUndo) -> Entry {
        self.server = undo;
        self
    }
}

/// What the relay must do after a reply went through the plan.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// The server connection's prepared statements are no longer known for
    /// sure: reset it (DISCARD ALL) before anyone else uses it.
    pub uncertain: bool,
}

#[derive(Debug, Default)]
pub struct ReplyPlan {
    entries: VecDeque<Entry>,
}

impl ReplyPlan {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub(super) fn push(&mut self, entry: Entry) {
        self.entries.push_back(entry);
    }

    /// Starts a plan behind `readies` requests already sent untracked: their
    /// replies, through that many ReadyForQuery messages, come first. (The
    /// relay only sends untracked requests that end with a sync point, so
    /// counting ReadyForQuery is enough to find where they end.)
    pub fn begin_after(&mut self, readies: u32) {
        if self.entries.is_empty() && readies > 0 {
            let expect = Expect::Untracked { readies };
            self.entries.push_back(Entry::new(expect, Action::Forward));
        }
    }

    /// Forgets the plan when every entry just forwards its reply and keeps no
    /// books: the replies can then go to the client untouched (the common case
    /// of a Bind renamed for a statement the connection has). Only for a plan
    /// holding nothing but the batch just rewritten, and only when that batch
    /// ended with a sync point, so that a later plan can find where its
    /// replies end by counting ReadyForQuery (`begin_after`).
    pub fn drop_if_plain(&mut self) {
        // A renamed Bind or Describe stays plain (steady-state `-M prepared`
        // keeps the zero-copy path; its rare errors then keep the server's
        // name), but a renamed SQL EXECUTE keeps its plan, so that its errors
        // and cursor positions read in the client's terms.
        let plain = self.entries.iter().all(|entry| {
            matches!(entry.action, Action::Forward)
                && matches!(entry.client, ClientUndo::None)
                && matches!(entry.server, ServerUndo::None)
                && !(entry.renamed.is_some() && matches!(entry.expect, Expect::Ready { .. }))
        });
        if plain {
            self.entries.clear();
        }
    }

    /// Writes the answers at the front of the plan: the server sends nothing
    /// for those messages, so nothing else is awaited before them.
    pub fn answer_ready(&mut self, out: &mut BytesMut) {
        while let Some(Entry {
            action: Action::Answer(_),
            ..
        }) = self.entries.front()
        {
            if let Some(Entry {
                action: Action::Answer(bytes),
                ..
            }) = self.entries.pop_front()
            {
                out.extend_from_slice(&bytes);
            }
        }
    }

    /// May the front entry's rows be forwarded before they are whole?
    pub fn forwards_rows(&self) -> bool {
        self.entries.front().is_some_and(|entry| {
            matches!(
                entry.expect,
                Expect::Execute | Expect::Ready { .. } | Expect::Untracked { .. }
            ) && !matches!(entry.action, Action::Hide)
        })
    }

    /// Takes one whole server message: writes what the client should see of
    /// it to `out` and keeps the books.
    pub fn on_message(
        &mut self,
        kind: BackendKind,
        msg: &[u8],
        books: &mut Books<'_>,
        out: &mut BytesMut,
    ) -> Verdict {
        self.answer_ready(out);
        let mut verdict = Verdict::default();
        if matches!(
            kind,
            BackendKind::NoticeResponse
                | BackendKind::NotificationResponse
                | BackendKind::ParameterStatus
        ) {
            out.extend_from_slice(msg);
            return verdict;
        }
        let Some(entry) = self.entries.front_mut() else {
            out.extend_from_slice(msg);
            return verdict;
        };
        if kind == BackendKind::ErrorResponse {
            self.on_error(msg, books, out);
            self.answer_ready(out);
            return verdict;
        }
        match &entry.action {
            Action::Hide => {}
            Action::EmptyAs(tag) if kind == BackendKind::EmptyQueryResponse => {
                write::command_complete(out, tag);
            }
            Action::PreparedFirst
                if kind == BackendKind::CommandComplete
                    && matches!(entry.server, ServerUndo::Prepared(_)) =>
            {
                // The added PREPARE ran: nothing to undo for it any more.
                entry.server = ServerUndo::None;
            }
            _ => out.extend_from_slice(msg),
        }
        if kind == BackendKind::CopyInResponse {
            // The Sync sent after this Execute reaches the server in copy-in
            // mode and is ignored: it earns no ReadyForQuery.
            self.drop_next_sync();
        }
        let entry = self.entries.front_mut().expect("checked above");
        if ends(entry, kind) {
            let entry = self.entries.pop_front().expect("checked above");
            complete(entry, books, &mut verdict);
            self.answer_ready(out);
        }
        verdict
    }

    /// An ErrorResponse: the front message failed. In the extended protocol
    /// the server then skips every message up to the next Sync.
    fn on_error(&mut self, msg: &[u8], books: &mut Books<'_>, out: &mut BytesMut) {
        let entry = self.entries.front_mut().expect("caller checked");
        if let Expect::Untracked { .. } = entry.expect {
            out.extend_from_slice(msg);
            return;
        }
        if let Expect::Ready { .. } = entry.expect {
            // A Query's statement failed, or a Sync's commit: the entry still
            // ends at ReadyForQuery.
            entry.failed = true;
            match &entry.action {
                Action::ReplaceError(error) => out.extend_from_slice(error),
                _ => forward_error(entry.renamed.as_ref(), books, msg, out),
            }
            return;
        }
        let entry = self.entries.pop_front().expect("caller checked");
        match &entry.action {
            Action::ReplaceError(error) => out.extend_from_slice(error),
            _ => forward_error(entry.renamed.as_ref(), books, msg, out),
        }
        undo(entry, books);
        // Only a Sync ends the skipping: Postgres ignores even a simple Query
        // that arrives before it.
        while let Some(entry) = self.entries.front() {
            if let Expect::Ready { sync: true } = entry.expect {
                break;
            }
            let entry = self.entries.pop_front().expect("front exists");
            undo(entry, books);
        }
    }

    fn drop_next_sync(&mut self) {
        if let Some(Entry {
            expect: Expect::Untracked { .. },
            ..
        }) = self.entries.front()
        {
            // A COPY among the untracked requests: the relay accounts for it;
            // pipelining past a COPY start fails on the server anyway.
            return;
        }
        if let Some(at) = self
            .entries
            .iter()
            .position(|entry| matches!(entry.expect, Expect::Ready { .. }))
        {
            if self.entries[at].expect == (Expect::Ready { sync: true }) {
                self.entries.remove(at);
            }
        }
    }

    /// The server connection is gone: nothing sent is confirmed. Client names
    /// defined or closed by unanswered messages go back to what they were.
    pub fn abandon(&mut self, books: &mut Books<'_>) {
        while let Some(entry) = self.entries.pop_back() {
            undo(entry, books);
        }
    }
}

/// Does `kind` end the reply `entry` waits for?
fn ends(entry: &mut Entry, kind: BackendKind) -> bool {
    match entry.expect {
        Expect::ParseComplete => kind == BackendKind::ParseComplete,
        Expect::BindComplete => kind == BackendKind::BindComplete,
        Expect::CloseComplete => kind == BackendKind::CloseComplete,
        Expect::DescribeStatement => {
            if kind == BackendKind::ParameterDescription {
                entry.described = true;
                return false;
            }
            entry.described && matches!(kind, BackendKind::RowDescription | BackendKind::NoData)
        }
        Expect::DescribePortal => {
            matches!(kind, BackendKind::RowDescription | BackendKind::NoData)
        }
        Expect::Execute => matches!(
            kind,
            BackendKind::CommandComplete
                | BackendKind::EmptyQueryResponse
                | BackendKind::PortalSuspended
        ),
        Expect::Ready { .. } => kind == BackendKind::ReadyForQuery,
        Expect::Untracked { ref mut readies } => {
            if kind == BackendKind::ReadyForQuery {
                *readies = readies.saturating_sub(1);
            }
            *readies == 0
        }
    }
}

/// The reply ended: the bookkeeping done at send time stands, unless the
/// Query it belonged to failed.
fn complete(mut entry: Entry, books: &mut Books<'_>, verdict: &mut Verdict) {
    if let Some(command) = entry.listen.take() {
        books.client.done_listens.push(command);
    }
    if entry.failed && !matches!(entry.client, ClientUndo::ClosedAll(_)) {
        undo(entry, books);
        return;
    }
    if let ClientUndo::ClosedAll(names) = entry.client {
        // DEALLOCATE ALL / DISCARD ALL: on success the server has none left;
        // on failure it may have some or all, so it is reset before reuse.
        books.server.clear();
        if entry.failed {
            books.client.restore(names);
            verdict.uncertain = true;
        }
    }
}

/// The message failed or was skipped: take back what sending it recorded.
fn undo(entry: Entry, books: &mut Books<'_>) {
    match entry.client {
        ClientUndo::None => {}
        ClientUndo::Defined { name, previous } => {
            books.client.remove(&name);
            if let Some(previous) = previous {
                books.client.insert(&name, previous);
            }
        }
        ClientUndo::Closed { name, statement } => {
            books.client.insert(&name, statement);
        }
        ClientUndo::ClosedAll(names) => books.client.restore(names),
    }
    match entry.server {
        ServerUndo::None => {}
        ServerUndo::Prepared(statement) => {
            books.server.remove(statement.id);
            books.cache.forget_if_unused(statement);
        }
        ServerUndo::Closed(id) => {
            books.server.insert(id);
        }
    }
}
