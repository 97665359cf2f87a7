//! Rewrites a batch of client messages for the server connection at hand:
//! client statement names become the core's server-side names, a Parse the
//! server already has is answered here, a statement the server lacks is
//! prepared first, and Close and DEALLOCATE act on the client's names only.
//! Every message sent or answered gets its entry in the reply plan.
//!
//! Must not: allocate or copy for batches that name no statement (the relay
//! asks `needs_rewrite` first and forwards those bytes untouched).

use std::rc::Rc;

use bytes::{BufMut, BytesMut};

use crate::protocol::backend::TransactionStatus;
use crate::protocol::frame::{self, HEADER_LEN};
use crate::protocol::frontend::{
    statement_name_span, DescribeTarget, FrontendKind, FrontendMessage,
};
use crate::protocol::write::{self, Severity};
use crate::protocol::{ProtocolError, DEFAULT_MAX_MESSAGE_LEN};
use crate::pubsub;

use super::cache::{server_name, Statement, StatementCache};
use super::client::ClientStatements;
use super::plan::{Action, ClientUndo, Entry, Expect, Renamed, ReplyPlan, ServerUndo};
use super::server::ServerStatements;

/// The three sets of books a rewrite and its replies keep.
pub struct Books<'a> {
    pub client: &'a mut ClientStatements,
    pub server: &'a mut ServerStatements,
    pub cache: &'a mut StatementCache,
}

/// True when some message in `batch` (complete messages) names a prepared
/// statement or may drop them, or is part of a LISTEN over the extended
/// protocol: only then is the batch rewritten.
pub fn needs_rewrite(batch: &[u8], client: &ClientStatements) -> bool {
    let mut offset = 0;
    while let Ok(Some(header)) = frame::header(&batch[offset..], DEFAULT_MAX_MESSAGE_LEN) {
        let end = offset + header.total_len;
        let Some(body) = batch.get(offset + HEADER_LEN..end) else {
            return false;
        };
        match FrontendKind::from_tag(header.tag) {
            Ok(FrontendKind::Query) => {
                if drops_statements(body) || (client.sql && names_sql_statement(body)) {
                    return true;
                }
            }
            Ok(kind) => {
                let span = statement_name_span(kind, body);
                if span
                    .as_ref()
                    .is_some_and(|span| !span.is_empty() || client.anonymous)
                {
                    return true;
                }
                if client.listen_enabled && listen_related(kind, body, span, client) {
                    return true;
                }
            }
            Err(_) => return false,
        }
        offset = end;
    }
    false
}

/// Rewrites `batch` into `out`, adding an entry to `plan` for each message
/// that earns a reply. `status` is the server's transaction status before
/// the batch.
pub fn rewrite_batch(
    batch: &[u8],
    books: &mut Books<'_>,
    status: TransactionStatus,
    out: &mut BytesMut,
    plan: &mut ReplyPlan,
) -> Result<(), ProtocolError> {
    let mut offset = 0;
    while let Some(header) = frame::header(&batch[offset..], DEFAULT_MAX_MESSAGE_LEN)? {
        let end = offset + header.total_len;
        let Some(msg) = batch.get(offset..end) else {
            break;
        };
        rewrite_message(msg, books, status, out, plan)?;
        offset = end;
    }
    Ok(())
}

fn rewrite_message(
    msg: &[u8],
    books: &mut Books<'_>,
    status: TransactionStatus,
    out: &mut BytesMut,
    plan: &mut ReplyPlan,
) -> Result<(), ProtocolError> {
    let forward = |out: &mut BytesMut, plan: &mut ReplyPlan, expect| {
        out.extend_from_slice(msg);
        plan.push(Entry::new(expect, Action::Forward));
    };
    match FrontendMessage::decode(msg)? {
        FrontendMessage::Parse { name, sql, .. } => {
            let tail = &msg[HEADER_LEN + name.len() + 1..];
            let listen = books
                .client
                .listen_enabled
                .then(|| pubsub::parse_listen(sql.as_bytes()))
                .flatten();
            // A LISTEN is prepared as an empty statement with the same
            // parameter types: it describes and binds alike, and executing it
            // changes nothing on the server connection.
            let empty_tail;
            let tail = match &listen {
                Some(_) => {
                    empty_tail = [&[0u8][..], &tail[sql.len() + 1..]].concat();
                    &empty_tail[..]
                }
                None => tail,
            };
            if name.is_empty() && books.client.anonymous {
                // extended_anonymous: the unnamed statement is shared and
                // kept like a named one; a new Parse simply replaces it.
                books.client.unnamed_listen = listen;
                parse(name, tail, books, out, plan);
            } else if name.is_empty() {
                books.client.unnamed_listen = listen;
                out.put_u8(FrontendKind::Parse.tag());
                out.put_u32((4 + 1 + tail.len()) as u32);
                out.put_u8(0);
                out.put_slice(tail);
                plan.push(Entry::new(Expect::ParseComplete, Action::Forward));
            } else {
                match listen {
                    Some(command) => books.client.listen_statements.insert(name.into(), command),
                    None => books.client.listen_statements.remove(name),
                };
                parse(name, tail, books, out, plan);
            }
        }
        FrontendMessage::Bind { portal, statement } => {
            if portal.is_empty() {
                books.client.portal_listen = if statement.is_empty() {
                    books.client.unnamed_listen.clone()
                } else {
                    books.client.listen_statements.get(statement).cloned()
                };
            }
            renamed(msg, statement, books, out, plan, Expect::BindComplete);
        }
        FrontendMessage::Describe {
            target: DescribeTarget::Statement,
            name,
        } => renamed(msg, name, books, out, plan, Expect::DescribeStatement),
        FrontendMessage::Describe { .. } => forward(out, plan, Expect::DescribePortal),
        FrontendMessage::Close {
            target: DescribeTarget::Statement,
            name,
        } if !name.is_empty() || books.client.anonymous => close(name, books, plan),
        FrontendMessage::Close { .. } => forward(out, plan, Expect::CloseComplete),
        FrontendMessage::Execute { portal, .. } => match books.client.portal_listen.take() {
            Some(command) if portal.is_empty() => {
                out.extend_from_slice(msg);
                let mut entry = Entry::new(Expect::Execute, Action::EmptyAs(command.tag()));
                entry.listen = Some(command);
                plan.push(entry);
            }
            _ => forward(out, plan, Expect::Execute),
        },
        FrontendMessage::Sync => forward(out, plan, Expect::Ready { sync: true }),
        FrontendMessage::Query { sql } => query(msg, sql, books, status, out, plan),
        FrontendMessage::FunctionCall(_) => forward(out, plan, Expect::Ready { sync: false }),
        FrontendMessage::Flush
        | FrontendMessage::CopyData(_)
        | FrontendMessage::CopyDone
        | FrontendMessage::CopyFail { .. } => out.extend_from_slice(msg),
        FrontendMessage::Terminate | FrontendMessage::Password(_) => {
            return Err(ProtocolError::Malformed("unexpected message in a request"));
        }
    }
    Ok(())
}

/// A named Parse.
fn parse(name: &str, tail: &[u8], books: &mut Books<'_>, out: &mut BytesMut, plan: &mut ReplyPlan) {
    let statement = books.cache.intern(tail);
    // Only the unnamed statement may be redefined.
    if !name.is_empty() && books.client.get(name).is_some() {
        // Postgres refuses to redefine a name. The server is made to refuse
        // too (a second Parse of a name it has), so the transaction fails as
        // it would, and its error is replaced by one naming the client's name.
        prepare_if_missing(&statement, books, out, plan);
        out.extend_from_slice(&statement.parse);
        let mut error = BytesMut::new();
        let message = format!("prepared statement \"{name}\" already exists");
        write::error_response(&mut error, Severity::Error, "42P05", &message, None);
        plan.push(Entry::new(
            Expect::ParseComplete,
            Action::ReplaceError(error.freeze()),
        ));
        return;
    }
    let previous = books.client.insert(name, statement.clone());
    let undo = ClientUndo::Defined {
        name: name.into(),
        previous,
    };
    if books.server.touch(statement.id) {
        let mut answer = BytesMut::with_capacity(HEADER_LEN);
        write::parse_complete(&mut answer);
        plan.push(
            Entry::new(Expect::ParseComplete, Action::Answer(answer.freeze())).undo_client(undo),
        );
        return;
    }
    close_evicted(books.server.insert(statement.id), out, plan);
    out.extend_from_slice(&statement.parse);
    plan.push(
        Entry::new(Expect::ParseComplete, Action::Forward)
            .undo_client(undo)
            .undo_server(ServerUndo::Prepared(statement)),
    );
}

/// A Bind or a statement Describe: the client's name becomes the server's,
/// preparing the statement first if this server connection lacks it. A name
/// the client never defined goes through as it is, for Postgres to refuse.
fn renamed(
    msg: &[u8],
    name: &str,
    books: &mut Books<'_>,
    out: &mut BytesMut,
    plan: &mut ReplyPlan,
    expect: Expect,
) {
    let statement = match books.client.get(name) {
        Some(statement) if !name.is_empty() || books.client.anonymous => statement.clone(),
        _ => {
            out.extend_from_slice(msg);
            plan.push(Entry::new(expect, Action::Forward));
            return;
        }
    };
    // A statement defined by SQL can only be prepared again by a simple
    // Query, which cannot go amid extended-protocol messages (it would end
    // their implicit transaction): without it on this connection, the
    // server refuses the message.
    if !statement.defined_by_sql {
        prepare_if_missing(&statement, books, out, plan);
    }
    let tag = msg[0];
    let body = &msg[HEADER_LEN..];
    let kind = FrontendKind::from_tag(tag).expect("decoded by the caller");
    let span = statement_name_span(kind, body).expect("decoded by the caller");
    let new_name = statement.server_name.as_bytes();
    let body_len = body.len() - span.len() + new_name.len();
    out.reserve(HEADER_LEN + body_len);
    out.put_u8(tag);
    out.put_u32((4 + body_len) as u32);
    out.put_slice(&body[..span.start]);
    out.put_slice(new_name);
    out.put_slice(&body[span.end..]);
    plan.push(Entry::new(expect, Action::Forward).renamed(Renamed {
        statement: statement.id,
        after: 0,
        shift: 0,
    }));
}

/// Sends a hidden Parse when the server connection lacks `statement`.
fn prepare_if_missing(
    statement: &Rc<Statement>,
    books: &mut Books<'_>,
    out: &mut BytesMut,
    plan: &mut ReplyPlan,
) {
    if books.server.touch(statement.id) {
        return;
    }
    close_evicted(books.server.insert(statement.id), out, plan);
    out.extend_from_slice(&statement.parse);
    plan.push(
        Entry::new(Expect::ParseComplete, Action::Hide)
            .undo_server(ServerUndo::Prepared(statement.clone())),
    );
}

/// Closes, with a hidden reply, a statement evicted from the connection.
fn close_evicted(
    evicted: Option<super::cache::StatementId>,
    out: &mut BytesMut,
    plan: &mut ReplyPlan,
) {
    let Some(id) = evicted else {
        return;
    };
    write::close_statement(out, &server_name(id));
    plan.push(Entry::new(Expect::CloseComplete, Action::Hide).undo_server(ServerUndo::Closed(id)));
}

/// Close of a named statement: the client's name goes; the server keeps the
/// statement for other clients. Closing an unknown name is not an error.
fn close(name: &str, books: &mut Books<'_>, plan: &mut ReplyPlan) {
    let mut answer = BytesMut::with_capacity(HEADER_LEN);
    write::close_complete(&mut answer);
    let mut entry = Entry::new(Expect::CloseComplete, Action::Answer(answer.freeze()));
    if let Some(statement) = books.client.remove(name) {
        entry = entry.undo_client(ClientUndo::Closed {
            name: name.into(),
            statement,
        });
    }
    plan.push(entry);
}

/// A simple Query: DEALLOCATE of a client name is carried out here (an empty
/// query takes its place, so the transaction state stays the server's);
/// DEALLOCATE ALL and DISCARD ALL drop every client name.
fn query(
    msg: &[u8],
    sql: &str,
    books: &mut Books<'_>,
    status: TransactionStatus,
    out: &mut BytesMut,
    plan: &mut ReplyPlan,
) {
    let ready = Expect::Ready { sync: false };
    // In a failed transaction Postgres refuses these: let it.
    if books.client.sql && status != TransactionStatus::Failed {
        if let Some((name, definition)) = sql_prepare(sql) {
            // Where the definition starts in the client's text, in characters.
            let offset = definition.as_ptr() as usize - sql.as_ptr() as usize;
            let definition_at = chars(&sql[..offset]);
            return sql_prepare_named(&name, definition, definition_at, books, out, plan);
        }
        if let Some((name, span)) = sql_execute(sql) {
            if let Some(statement) = books.client.get(&name).cloned() {
                return sql_execute_named(sql, span, &statement, books, out, plan);
            }
        }
    }
    match drop_target(sql.as_bytes()) {
        Some(Drop::All) => {
            let names = books.client.take_all();
            out.extend_from_slice(msg);
            plan.push(Entry::new(ready, Action::Forward).undo_client(ClientUndo::ClosedAll(names)));
        }
        // In a failed transaction Postgres refuses DEALLOCATE: let it.
        Some(Drop::Name(name)) if status != TransactionStatus::Failed => {
            match books.client.remove(&name) {
                Some(statement) => {
                    write::query(out, "");
                    plan.push(
                        Entry::new(ready, Action::EmptyAs("DEALLOCATE")).undo_client(
                            ClientUndo::Closed {
                                name: name.into_boxed_str(),
                                statement,
                            },
                        ),
                    );
                }
                None => {
                    out.extend_from_slice(msg);
                    plan.push(Entry::new(ready, Action::Forward));
                }
            }
        }
        _ => {
            out.extend_from_slice(msg);
            plan.push(Entry::new(ready, Action::Forward));
        }
    }
}

/// `PREPARE name ...` in full mode: the client's name maps onto the core's
/// statement for the definition, prepared under its server-side name.
fn sql_prepare_named(
    name: &str,
    definition: &str,
    definition_at: usize,
    books: &mut Books<'_>,
    out: &mut BytesMut,
    plan: &mut ReplyPlan,
) {
    let ready = Expect::Ready { sync: false };
    if books.client.get(name).is_some() {
        // The name is taken: the transaction must fail as on Postgres, so a
        // statement that fails without side effects goes in its place and
        // its error is replaced by the one Postgres gives.
        write::query(out, DUPLICATE_PREPARE_SQL);
        let mut error = BytesMut::new();
        let message = format!("prepared statement \"{name}\" already exists");
        write::error_response(&mut error, Severity::Error, "42P05", &message, None);
        plan.push(Entry::new(ready, Action::ReplaceError(error.freeze())));
        return;
    }
    let statement = books.cache.intern_sql(definition);
    let undo = ClientUndo::Defined {
        name: name.into(),
        previous: books.client.insert(name, statement.clone()),
    };
    if books.server.touch(statement.id) {
        // An empty query keeps the transaction's state the server's.
        write::query(out, "");
        plan.push(Entry::new(ready, Action::EmptyAs("PREPARE")).undo_client(undo));
        return;
    }
    close_evicted(books.server.insert(statement.id), out, plan);
    out.extend_from_slice(&statement.parse);
    // The server's text is `PREPARE <server name> <definition>`; the
    // client's has the definition at `definition_at`.
    let sent_at = chars("PREPARE ") + chars(&statement.server_name) + 1;
    let renamed = Renamed {
        statement: statement.id,
        after: sent_at as u32,
        shift: definition_at as i64 - sent_at as i64,
    };
    plan.push(
        Entry::new(ready, Action::Forward)
            .undo_client(undo)
            .undo_server(ServerUndo::Prepared(statement))
            .renamed(renamed),
    );
}

fn chars(text: &str) -> usize {
    text.chars().count()
}

/// Fails with no side effects; its error is replaced (a duplicate `PREPARE`).
const DUPLICATE_PREPARE_SQL: &str = "DO $$BEGIN RAISE EXCEPTION 'sleddog: prepared statement name already in use' USING ERRCODE = 'duplicate_prepared_statement'; END$$";

/// `EXECUTE name ...` of a statement the client defined: the name in the
/// text becomes the server's, the statement prepared first when missing.
fn sql_execute_named(
    sql: &str,
    span: std::ops::Range<usize>,
    statement: &Rc<Statement>,
    books: &mut Books<'_>,
    out: &mut BytesMut,
    plan: &mut ReplyPlan,
) {
    let ready = Expect::Ready { sync: false };
    let execute = format!(
        "{}{}{}",
        &sql[..span.start],
        statement.server_name,
        &sql[span.end..]
    );
    let name_at = chars(&sql[..span.start]);
    let renamed = || Renamed {
        statement: statement.id,
        after: name_at as u32,
        shift: chars(&sql[span.clone()]) as i64 - chars(&statement.server_name) as i64,
    };
    if books.server.touch(statement.id) {
        write::query(out, &execute);
        plan.push(Entry::new(ready, Action::Forward).renamed(renamed()));
        return;
    }
    close_evicted(books.server.insert(statement.id), out, plan);
    let undo = ServerUndo::Prepared(statement.clone());
    if statement.defined_by_sql {
        // One string: if the PREPARE fails, the EXECUTE is not run, and the
        // client sees one error, as for a missing statement.
        let definition = std::str::from_utf8(statement.sql()).expect("defined from a &str");
        let both = format!("PREPARE {} {definition};{execute}", statement.server_name);
        write::query(out, &both);
        plan.push(Entry::new(ready, Action::PreparedFirst).undo_server(undo));
        return;
    }
    // A statement defined by Parse: its Parse, and a Sync so that a failure
    // cannot make the server skip the Query.
    out.extend_from_slice(&statement.parse);
    plan.push(Entry::new(Expect::ParseComplete, Action::Hide).undo_server(undo));
    write::sync(out);
    plan.push(Entry::new(Expect::Ready { sync: true }, Action::Hide));
    write::query(out, &execute);
    plan.push(Entry::new(ready, Action::Forward).renamed(renamed()));
}

/// Cheap first look: does the Query start with PREPARE or EXECUTE?
fn names_sql_statement(body: &[u8]) -> bool {
    let (word, _) = word(body);
    word.eq_ignore_ascii_case(b"prepare") || word.eq_ignore_ascii_case(b"execute")
}

/// Is `sql` (a simple Query) a statement the rewriter carries out on the
/// client's names, so that running it leaves nothing on the connection that
/// sleddog does not know of? `sql_statements`: `prepared_statements = "full"`.
pub fn handles_query(sql: &[u8], sql_statements: bool) -> bool {
    if let Some(Drop::Name(_)) = drop_target(sql) {
        return true;
    }
    sql_statements
        && std::str::from_utf8(sql)
            .ok()
            .and_then(sql_prepare)
            .is_some()
}

/// `PREPARE name [(types)] AS statement`, alone in the string: the name
/// (folded as Postgres folds identifiers) and what follows it, trimmed.
fn sql_prepare(sql: &str) -> Option<(String, &str)> {
    let (first, rest) = word(sql.as_bytes());
    if !first.eq_ignore_ascii_case(b"prepare") {
        return None;
    }
    let (name, rest) = identifier(rest)?;
    // `PREPARE TRANSACTION 'id'` is two-phase commit.
    if name == "transaction" {
        return None;
    }
    let definition = &sql[sql.len() - rest.len()..];
    let definition = definition.trim_start();
    let definition = definition.trim_end().trim_end_matches(';').trim_end();
    let (next, _) = word(definition.as_bytes());
    let well_formed = definition.starts_with('(') || next.eq_ignore_ascii_case(b"as");
    (well_formed && single_statement(sql)).then_some((name, definition))
}

/// `EXECUTE name [(arguments)]`, alone in the string: the name and where it
/// is in `sql`.
fn sql_execute(sql: &str) -> Option<(String, std::ops::Range<usize>)> {
    let (first, rest) = word(sql.as_bytes());
    if !first.eq_ignore_ascii_case(b"execute") {
        return None;
    }
    let rest = trim_start(rest);
    let start = sql.len() - rest.len();
    let (name, after) = identifier(rest)?;
    let end = sql.len() - after.len();
    single_statement(sql).then_some((name, start..end))
}

fn single_statement(sql: &str) -> bool {
    crate::session::sql_scan::scan_statements(sql.as_bytes()).statements == 1
}

/// An identifier after white space: quoted (kept as written) or unquoted
/// (folded to lower case); and what follows it.
fn identifier(sql: &[u8]) -> Option<(String, &[u8])> {
    let sql = trim_start(sql);
    if sql.starts_with(b"\"") {
        return quoted_identifier(sql);
    }
    let (name, rest) = word(sql);
    let first = *name.first()?;
    if !(first.is_ascii_alphabetic() || first == b'_' || first >= 0x80) {
        return None;
    }
    let name = String::from_utf8(name.to_ascii_lowercase()).ok()?;
    Some((name, rest))
}

/// Is this message part of a LISTEN over the extended protocol: its Parse,
/// or a Bind or Execute of a statement or portal that stands for one?
fn listen_related(
    kind: FrontendKind,
    body: &[u8],
    span: Option<std::ops::Range<usize>>,
    client: &ClientStatements,
) -> bool {
    match kind {
        // Only an unnamed Parse gets here (a named one is always rewritten).
        // The rewrite replaces it when it is a LISTEN, by the same parser, so
        // comments before the verb count; and it clears a LISTEN the unnamed
        // statement stood for before, which a Parse forwarded untouched would
        // leave behind for the next Bind.
        FrontendKind::Parse => {
            let sql = span
                .and_then(|span| body.get(span.end + 1..))
                .unwrap_or_default();
            let sql = sql.split(|b| *b == 0).next().unwrap_or_default();
            client.unnamed_listen.is_some() || pubsub::parse_listen(sql).is_some()
        }
        FrontendKind::Bind => client.unnamed_listen.is_some(),
        FrontendKind::Execute => client.portal_listen.is_some(),
        _ => false,
    }
}

/// What a single-statement DEALLOCATE or DISCARD drops.
#[derive(Debug, PartialEq, Eq)]
enum Drop {
    All,
    Name(String),
}

/// Cheap first look: does the Query start with DEALLOCATE or DISCARD?
fn drops_statements(body: &[u8]) -> bool {
    let (word, _) = word(body);
    word.eq_ignore_ascii_case(b"deallocate") || word.eq_ignore_ascii_case(b"discard")
}

/// Parses `DEALLOCATE [PREPARE] {name | ALL}` and `DISCARD ALL`, alone in
/// the string (a trailing semicolon allowed). Unquoted names fold to lower
/// case, as Postgres folds identifiers.
fn drop_target(sql: &[u8]) -> Option<Drop> {
    let (first, rest) = word(sql);
    let target = if first.eq_ignore_ascii_case(b"discard") {
        let (second, rest) = word(rest);
        if !second.eq_ignore_ascii_case(b"all") {
            return None;
        }
        (Drop::All, rest)
    } else if first.eq_ignore_ascii_case(b"deallocate") {
        let (mut second, mut rest) = word(rest);
        if second.eq_ignore_ascii_case(b"prepare") {
            (second, rest) = word(rest);
        }
        if second.eq_ignore_ascii_case(b"all") {
            (Drop::All, rest)
        } else if second.is_empty() {
            let (name, rest) = quoted_identifier(rest)?;
            (Drop::Name(name), rest)
        } else {
            let name = String::from_utf8(second.to_ascii_lowercase()).ok()?;
            (Drop::Name(name), rest)
        }
    } else {
        return None;
    };
    let (target, rest) = target;
    let rest = trim_start(rest);
    let rest = rest.strip_prefix(b";").unwrap_or(rest);
    trim_start(rest).is_empty().then_some(target)
}

/// The identifier-like word after leading white space, and what follows.
fn word(sql: &[u8]) -> (&[u8], &[u8]) {
    let sql = trim_start(sql);
    let end = sql
        .iter()
        .position(|b| !(b.is_ascii_alphanumeric() || *b == b'_' || *b == b'$'))
        .unwrap_or(sql.len());
    sql.split_at(end)
}

fn trim_start(sql: &[u8]) -> &[u8] {
    let start = sql
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(sql.len());
    &sql[start..]
}

/// A `"quoted"` identifier (`""` inside stands for one quote).
fn quoted_identifier(sql: &[u8]) -> Option<(String, &[u8])> {
    let sql = trim_start(sql).strip_prefix(b"\"")?;
    let mut name = Vec::new();
    let mut i = 0;
    loop {
        match sql.get(i)? {
            b'"' if sql.get(i + 1) == Some(&b'"') => {
                name.push(b'"');
                i += 2;
            }
            b'"' => return Some((String::from_utf8(name).ok()?, &sql[i + 1..])),
            byte => {
                name.push(*byte);
                i += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests;
