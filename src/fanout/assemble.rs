//! One reply for the client out of every shard's reply to the same request.
//!
//! Every shard got the same messages (`Op`s, in order), so their replies
//! line up message for message except for DataRows and errors. Each shard's
//! reply is cut into the part that answers each op; the client then gets,
//! per op: shard 0's ParseComplete/BindComplete/ParameterDescription, one
//! RowDescription (every shard's must agree), the rows of all shards
//! (through [`Rows`]: streamed as they are, or merged), CommandComplete with
//! the counts summed, and one ReadyForQuery. An error on any shard is the
//! client's error for that sync group, as a single server would fail it.
//! Pure: the session's fan-out driver does the I/O.

use bytes::BytesMut;

use crate::fanout::merge::RowDescription;
use crate::protocol::backend::{BackendKind, TransactionStatus};
use crate::protocol::{frame, write, DEFAULT_MAX_MESSAGE_LEN};

/// What one message sent to every shard asks of it, and whether its reply
/// is the client's (sleddog adds messages of its own: a Parse for a
/// statement prepared earlier, a Describe so the merge knows the columns).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Parse {
        visible: bool,
    },
    Bind,
    /// Describe of the portal; its RowDescription/NoData.
    DescribePortal {
        visible: bool,
    },
    /// Describe of the statement; ParameterDescription then RowDescription/NoData.
    DescribeStatement,
    Execute,
    Sync,
    /// A simple Query: any number of results, then ReadyForQuery.
    Query,
    /// A Close sleddog answers itself (the shards use unnamed statements
    /// and portals): CloseComplete in its place, none after an error.
    Close,
}

/// Why rows could not be passed on or merged: the client's error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowsError {
    pub sqlstate: &'static str,
    pub message: String,
}

/// Where the rows of a result go: straight to the client, or into a merge.
pub trait Rows {
    /// One shard's RowDescription body; the first defines the columns and
    /// every later one must agree.
    fn description(&mut self, shard: usize, body: &[u8]) -> Result<(), RowsError>;
    /// The RowDescription message the client gets.
    fn client_description(&self, out: &mut BytesMut);
    /// One shard's DataRow body.
    fn row(&mut self, shard: usize, body: &[u8]) -> Result<(), RowsError>;
    /// Writes the client's DataRow messages not written yet; the row count.
    fn finish(&mut self, out: &mut BytesMut) -> Result<u64, RowsError>;
}

/// Rows passed through as they came, shard after shard.
#[derive(Default)]
pub struct Stream {
    description: Option<Vec<u8>>,
    rows: BytesMut,
    count: u64,
}

impl Rows for Stream {
    fn description(&mut self, shard: usize, body: &[u8]) -> Result<(), RowsError> {
        match &self.description {
            None => {
                self.description = Some(body.to_vec());
                Ok(())
            }
            Some(first) => check_columns(first, body, shard),
        }
    }

    fn client_description(&self, out: &mut BytesMut) {
        if let Some(body) = &self.description {
            write::message(out, BackendKind::RowDescription.tag(), body);
        }
    }

    fn row(&mut self, _shard: usize, body: &[u8]) -> Result<(), RowsError> {
        self.count += 1;
        write::message(&mut self.rows, BackendKind::DataRow.tag(), body);
        Ok(())
    }

    fn finish(&mut self, out: &mut BytesMut) -> Result<u64, RowsError> {
        out.extend_from_slice(&self.rows);
        self.rows.clear();
        Ok(std::mem::take(&mut self.count))
    }
}

/// Checks shard `shard`'s RowDescription body `other` against the first
/// shard's on what the client sees of a column: name, type, size, modifier
/// and format (the table oid and column number differ between shard
/// databases). Err: the client's error, naming the first difference.
pub fn check_columns(first: &[u8], other: &[u8], shard: usize) -> Result<(), RowsError> {
    let parse = |body| RowDescription::parse(body).map_err(|e| e.to_string());
    let difference = match (parse(first), parse(other)) {
        (Ok(a), Ok(b)) if a.len() != b.len() => {
            format!("{} columns against {}", a.len(), b.len())
        }
        (Ok(a), Ok(b)) => match a.fields.iter().zip(&b.fields).find(|(l, r)| l != r) {
            Some((column, _)) => format!("column \"{}\"", column.display_name()),
            None => return Ok(()),
        },
        (Err(why), _) | (_, Err(why)) => why,
    };
    Err(RowsError {
        sqlstate: "XX000",
        message: format!("shard {shard} returned different columns ({difference})"),
    })
}

/// Why the replies could not be put together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AssembleError {
    /// A shard sent something the protocol does not allow here.
    Protocol(String),
    /// The shards' results cannot be combined (columns differ, a merge
    /// failed): the client gets this as an error.
    Merge(RowsError),
}

impl std::fmt::Display for AssembleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AssembleError::Protocol(why) => write!(f, "a shard sent an unexpected reply: {why}"),
            AssembleError::Merge(why) => write!(f, "{}", why.message),
        }
    }
}

/// One message of a shard's reply.
#[derive(Clone, Copy)]
struct Message<'a> {
    kind: BackendKind,
    body: &'a [u8],
}

/// The messages of one shard's reply, in order.
fn messages(reply: &[u8]) -> impl Iterator<Item = Result<Message<'_>, AssembleError>> {
    let mut at = 0;
    std::iter::from_fn(move || {
        if at >= reply.len() {
            return None;
        }
        let message = frame::header(&reply[at..], DEFAULT_MAX_MESSAGE_LEN)
            .map_err(|e| AssembleError::Protocol(e.to_string()))
            .and_then(|header| {
                let header = header
                    .filter(|h| at + h.total_len <= reply.len())
                    .ok_or_else(|| AssembleError::Protocol("truncated message".to_owned()))?;
                let kind = BackendKind::from_tag(header.tag)
                    .map_err(|e| AssembleError::Protocol(e.to_string()))?;
                let body = &reply[at + 5..at + header.total_len];
                at += header.total_len;
                Ok(Message { kind, body })
            });
        if message.is_err() {
            at = reply.len();
        }
        Some(message)
    })
}

/// What one shard said in answer to one op.
#[derive(Default)]
struct Answer<'a> {
    messages: Vec<Message<'a>>,
    error: Option<&'a [u8]>,
}

/// Cuts one shard's reply into the answers to each op. After an error the
/// shard skips to the next Sync, as Postgres does; a Query's answer holds
/// all its results.
fn answers<'a>(ops: &[Op], reply: &'a [u8]) -> Result<Vec<Answer<'a>>, AssembleError> {
    let mut out: Vec<Answer<'a>> = (0..ops.len()).map(|_| Answer::default()).collect();
    let mut op = 0;
    let mut skipping = false;
    for message in messages(reply) {
        let message = message?;
        // Skip ops the server skipped after an error, up to the Sync, and
        // the ones it never saw.
        while (skipping && op < ops.len() && ops[op] != Op::Sync) || ops.get(op) == Some(&Op::Close)
        {
            op += 1;
        }
        let Some(&current) = ops.get(op) else {
            if matches!(
                message.kind,
                BackendKind::NoticeResponse | BackendKind::ParameterStatus
            ) {
                continue;
            }
            return Err(AssembleError::Protocol(format!(
                "{:?} after the last reply",
                message.kind
            )));
        };
        let answer = &mut out[op];
        match message.kind {
            BackendKind::NoticeResponse
            | BackendKind::ParameterStatus
            | BackendKind::NotificationResponse => answer.messages.push(message),
            BackendKind::ErrorResponse if current == Op::Query => {
                answer.error.get_or_insert(message.body);
                answer.messages.push(message);
            }
            BackendKind::ErrorResponse => {
                answer.error = Some(message.body);
                skipping = true;
            }
            BackendKind::ReadyForQuery => {
                answer.messages.push(message);
                skipping = false;
                op += 1;
            }
            kind => {
                answer.messages.push(message);
                let done = match current {
                    Op::Parse { .. } => kind == BackendKind::ParseComplete,
                    Op::Bind => kind == BackendKind::BindComplete,
                    Op::DescribePortal { .. } | Op::DescribeStatement => {
                        matches!(kind, BackendKind::RowDescription | BackendKind::NoData)
                    }
                    Op::Execute => matches!(
                        kind,
                        BackendKind::CommandComplete
                            | BackendKind::EmptyQueryResponse
                            | BackendKind::PortalSuspended
                    ),
                    Op::Sync | Op::Query | Op::Close => false,
                };
                if done {
                    op += 1;
                }
            }
        }
    }
    Ok(out)
}

/// The combined reply. `rows` takes the rows of the result the merge is
/// for (the Execute, or the Query's first result); other results stream.
/// Returns the transaction status of the last ReadyForQuery.
///
/// `visible`: the client's columns of a merged result (helper columns
/// follow), `usize::MAX` for all; a Describe of the statement is cut to it.
pub fn assemble<R: Rows>(
    ops: &[Op],
    replies: &[&[u8]],
    rows: &mut R,
    visible: usize,
    out: &mut BytesMut,
) -> Result<TransactionStatus, AssembleError> {
    let shards: Vec<Vec<Answer<'_>>> = replies
        .iter()
        .map(|reply| answers(ops, reply))
        .collect::<Result<_, _>>()?;
    let mut status = TransactionStatus::Idle;
    let mut failed = false;
    let mut merged = false;
    for (n, op) in ops.iter().enumerate() {
        let each: Vec<&Answer<'_>> = shards.iter().map(|answers| &answers[n]).collect();
        if *op == Op::Sync || *op == Op::Query {
            status = combined_status(&each)?;
        }
        if *op == Op::Query {
            query(&each, rows, &mut merged, out)?;
            write::ready_for_query(out, status);
            continue;
        }
        if let Some(error) = each.iter().find_map(|a| a.error) {
            if !failed {
                write::message(out, BackendKind::ErrorResponse.tag(), error);
                failed = true;
            }
        }
        if *op == Op::Sync {
            failed = false;
            write::ready_for_query(out, status);
            continue;
        }
        if failed {
            continue;
        }
        if *op == Op::Close {
            write::close_complete(out);
            continue;
        }
        // A Describe of the portal after the first result's Execute with
        // another Execute after it describes a later result.
        let later = merged && ops[n..].contains(&Op::Execute);
        extended(*op, &each, rows, visible, &mut merged, later, out)?;
    }
    Ok(status)
}

/// 'E' if any shard's transaction failed, else 'T' if any is in one.
fn combined_status(each: &[&Answer<'_>]) -> Result<TransactionStatus, AssembleError> {
    let mut status = TransactionStatus::Idle;
    for answer in each {
        let ready = answer
            .messages
            .iter()
            .rev()
            .find(|m| m.kind == BackendKind::ReadyForQuery)
            .ok_or_else(|| AssembleError::Protocol("no ReadyForQuery".to_owned()))?;
        let shard = TransactionStatus::from_byte(ready.body.first().copied().unwrap_or(0))
            .map_err(|e| AssembleError::Protocol(e.to_string()))?;
        status = combine_status(status, shard);
    }
    Ok(status)
}

/// Two shards' transaction statuses as one: failed if either failed, else
/// in a transaction if either is.
pub fn combine_status(a: TransactionStatus, b: TransactionStatus) -> TransactionStatus {
    match (a, b) {
        (TransactionStatus::Failed, _) | (_, TransactionStatus::Failed) => {
            TransactionStatus::Failed
        }
        (TransactionStatus::InTransaction, _) | (_, TransactionStatus::InTransaction) => {
            TransactionStatus::InTransaction
        }
        _ => TransactionStatus::Idle,
    }
}

/// One extended-protocol op that did not fail.
fn extended<R: Rows>(
    op: Op,
    each: &[&Answer<'_>],
    rows: &mut R,
    visible: usize,
    merged: &mut bool,
    later_result: bool,
    out: &mut BytesMut,
) -> Result<(), AssembleError> {
    let first = each[0];
    let notices = first.messages.iter().filter(|m| is_async(m.kind));
    for message in notices {
        write::message(out, message.kind.tag(), message.body);
    }
    // The first result is `rows`'; a later one (another Execute of the
    // request) has its own columns, checked across shards on their own.
    let mut later = Stream::default();
    let describing: &mut dyn RowsDyn = if later_result { &mut later } else { rows };
    match op {
        Op::Parse { visible } | Op::DescribePortal { visible } if !visible => {
            if let Op::DescribePortal { .. } = op {
                describe(each, describing)?;
            }
        }
        Op::DescribeStatement => {
            // Formats are not known before Bind (all zero here), so this
            // description is checked and cut on its own, not kept for rows.
            if let Some(parameters) = find(first, BackendKind::ParameterDescription) {
                write::message(out, BackendKind::ParameterDescription.tag(), parameters);
            }
            match find(first, BackendKind::RowDescription) {
                Some(body) => {
                    for (shard, answer) in each.iter().enumerate().skip(1) {
                        if let Some(other) = find(answer, BackendKind::RowDescription) {
                            check_columns(body, other, shard).map_err(AssembleError::Merge)?;
                        }
                    }
                    let description = RowDescription::parse(body)
                        .map_err(|e| AssembleError::Protocol(e.to_string()))?;
                    description.write_visible(visible.min(description.len()), out);
                }
                None => write::no_data(out),
            }
        }
        Op::DescribePortal { .. } => {
            if describe(each, describing)? {
                describing.client_description_dyn(out);
            } else {
                write::no_data(out);
            }
        }
        Op::Execute => {
            let tag = results(each, rows, merged, out)?;
            match tag {
                Some(tag) => write::command_complete(out, &tag),
                None => write::empty_query_response(out),
            }
        }
        _ => {
            for message in first.messages.iter().filter(|m| !is_async(m.kind)) {
                write::message(out, message.kind.tag(), message.body);
            }
        }
    }
    Ok(())
}

/// Feeds every shard's RowDescription to `rows`; false for NoData.
fn describe(each: &[&Answer<'_>], rows: &mut dyn RowsDyn) -> Result<bool, AssembleError> {
    let mut described = false;
    for (shard, answer) in each.iter().enumerate() {
        if let Some(body) = find(answer, BackendKind::RowDescription) {
            rows.description_dyn(shard, body)
                .map_err(AssembleError::Merge)?;
            described = true;
        }
    }
    Ok(described)
}

/// The rows of one Execute from every shard, then their summed tag (None
/// for an empty query).
fn results<R: Rows>(
    each: &[&Answer<'_>],
    rows: &mut R,
    merged: &mut bool,
    out: &mut BytesMut,
) -> Result<Option<String>, AssembleError> {
    let mut tags = Vec::with_capacity(each.len());
    let use_rows = !*merged;
    *merged = true;
    let mut stream = Stream::default();
    for (shard, answer) in each.iter().enumerate() {
        for message in &answer.messages {
            match message.kind {
                BackendKind::DataRow if use_rows => rows
                    .row(shard, message.body)
                    .map_err(AssembleError::Merge)?,
                BackendKind::DataRow => stream
                    .row(shard, message.body)
                    .map_err(AssembleError::Merge)?,
                BackendKind::CommandComplete => tags.push(cstr(message.body)),
                _ => {}
            }
        }
    }
    let count = if use_rows {
        rows.finish(out).map_err(AssembleError::Merge)?
    } else {
        stream.finish(out).map_err(AssembleError::Merge)?
    };
    if tags.is_empty() {
        return Ok(None);
    }
    Ok(Some(sum_tags(&tags, count)))
}

/// A simple Query on every shard: result by result, rows of all shards
/// together; the first error any shard had ends the reply, as it ends the
/// query on a single server.
fn query<R: Rows>(
    each: &[&Answer<'_>],
    rows: &mut R,
    merged: &mut bool,
    out: &mut BytesMut,
) -> Result<(), AssembleError> {
    let segmented: Vec<Vec<&[Message<'_>]>> = each.iter().map(|a| segments(a)).collect();
    let results = segmented.iter().map(Vec::len).max().unwrap_or(0);
    for k in 0..results {
        let parts: Vec<&[Message<'_>]> = segmented
            .iter()
            .map(|s| s.get(k).copied().unwrap_or(&[]))
            .collect();
        if let Some(error) = parts
            .iter()
            .find_map(|p| p.iter().find(|m| m.kind == BackendKind::ErrorResponse))
        {
            write::message(out, BackendKind::ErrorResponse.tag(), error.body);
            return Ok(());
        }
        for message in parts[0].iter().filter(|m| is_async(m.kind)) {
            write::message(out, message.kind.tag(), message.body);
        }
        let use_rows = !*merged;
        *merged = true;
        let mut stream = Stream::default();
        let sink: &mut dyn RowsDyn = if use_rows { rows } else { &mut stream };
        let mut described = false;
        for (shard, part) in parts.iter().enumerate() {
            for message in part.iter() {
                if message.kind == BackendKind::RowDescription {
                    sink.description_dyn(shard, message.body)
                        .map_err(AssembleError::Merge)?;
                    described = true;
                }
            }
        }
        if described {
            sink.client_description_dyn(out);
        }
        let mut tags = Vec::new();
        let mut empty = false;
        for (shard, part) in parts.iter().enumerate() {
            for message in part.iter() {
                match message.kind {
                    BackendKind::DataRow => sink
                        .row_dyn(shard, message.body)
                        .map_err(AssembleError::Merge)?,
                    BackendKind::CommandComplete => tags.push(cstr(message.body)),
                    BackendKind::EmptyQueryResponse => empty = true,
                    _ => {}
                }
            }
        }
        let count = sink.finish_dyn(out).map_err(AssembleError::Merge)?;
        if !tags.is_empty() {
            write::command_complete(out, &sum_tags(&tags, count));
        } else if empty {
            write::empty_query_response(out);
        }
    }
    Ok(())
}

/// [`Rows`] behind a reference, so one loop serves a merge or a stream.
trait RowsDyn {
    fn description_dyn(&mut self, shard: usize, body: &[u8]) -> Result<(), RowsError>;
    fn client_description_dyn(&self, out: &mut BytesMut);
    fn row_dyn(&mut self, shard: usize, body: &[u8]) -> Result<(), RowsError>;
    fn finish_dyn(&mut self, out: &mut BytesMut) -> Result<u64, RowsError>;
}

impl<R: Rows> RowsDyn for R {
    fn description_dyn(&mut self, shard: usize, body: &[u8]) -> Result<(), RowsError> {
        self.description(shard, body)
    }
    fn client_description_dyn(&self, out: &mut BytesMut) {
        self.client_description(out)
    }
    fn row_dyn(&mut self, shard: usize, body: &[u8]) -> Result<(), RowsError> {
        self.row(shard, body)
    }
    fn finish_dyn(&mut self, out: &mut BytesMut) -> Result<u64, RowsError> {
        self.finish(out)
    }
}

/// A Query's answer cut into its results: each ends with CommandComplete,
/// EmptyQueryResponse or ErrorResponse. The ReadyForQuery (last) is left out.
fn segments<'m, 'a>(answer: &'m Answer<'a>) -> Vec<&'m [Message<'a>]> {
    let messages = match answer.messages.split_last() {
        Some((last, rest)) if last.kind == BackendKind::ReadyForQuery => rest,
        _ => &answer.messages[..],
    };
    messages
        .split_inclusive(|m| {
            matches!(
                m.kind,
                BackendKind::CommandComplete
                    | BackendKind::EmptyQueryResponse
                    | BackendKind::ErrorResponse
            )
        })
        .collect()
}

fn is_async(kind: BackendKind) -> bool {
    matches!(
        kind,
        BackendKind::NoticeResponse
            | BackendKind::ParameterStatus
            | BackendKind::NotificationResponse
    )
}

fn find<'a>(answer: &Answer<'a>, kind: BackendKind) -> Option<&'a [u8]> {
    answer
        .messages
        .iter()
        .find(|m| m.kind == kind)
        .map(|m| m.body)
}

fn cstr(body: &[u8]) -> String {
    let end = body.iter().position(|&b| b == 0).unwrap_or(body.len());
    String::from_utf8_lossy(&body[..end]).into_owned()
}

/// The client's command tag: row counts summed over shards ("commands
/// CommandComplete"); a SELECT counts the rows the client got. Tags without
/// a count (CREATE TABLE) are the first shard's.
pub fn sum_tags(tags: &[String], rows: u64) -> String {
    let first = &tags[0];
    let mut words = first.split(' ');
    let command = words.next().unwrap_or("");
    match command {
        "SELECT" => format!("SELECT {rows}"),
        "INSERT" | "UPDATE" | "DELETE" | "MERGE" | "COPY" | "FETCH" | "MOVE" => {
            let total: u64 = tags
                .iter()
                .filter_map(|t| t.rsplit(' ').next()?.parse::<u64>().ok())
                .sum();
            if command == "INSERT" {
                format!("INSERT 0 {total}")
            } else {
                format!("{command} {total}")
            }
        }
        _ => first.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fanout::test_bodies;

    fn msg(out: &mut BytesMut, kind: BackendKind, body: &[u8]) {
        write::message(out, kind.tag(), body);
    }

    fn description(names: &[&str], table_oid: u32) -> Vec<u8> {
        let columns: Vec<(&str, u32)> = names.iter().map(|name| (*name, 20)).collect();
        test_bodies::description(&columns, table_oid)
    }

    fn row(value: &str) -> Vec<u8> {
        test_bodies::row(&[Some(value)])
    }

    fn simple_reply(table_oid: u32, values: &[&str], status: u8) -> BytesMut {
        let mut out = BytesMut::new();
        msg(
            &mut out,
            BackendKind::RowDescription,
            &description(&["id"], table_oid),
        );
        for value in values {
            msg(&mut out, BackendKind::DataRow, &row(value));
        }
        msg(
            &mut out,
            BackendKind::CommandComplete,
            format!("SELECT {}\0", values.len()).as_bytes(),
        );
        msg(&mut out, BackendKind::ReadyForQuery, &[status]);
        out
    }

    fn kinds(out: &[u8]) -> Vec<BackendKind> {
        messages(out).map(|m| m.unwrap().kind).collect()
    }

    #[test]
    fn a_query_on_every_shard_reads_as_one_result() {
        let a = simple_reply(100, &["1", "2"], b'I');
        let b = simple_reply(200, &["3"], b'I');
        let mut out = BytesMut::new();
        let status = assemble(
            &[Op::Query],
            &[&a, &b],
            &mut Stream::default(),
            usize::MAX,
            &mut out,
        )
        .unwrap();
        assert_eq!(status, TransactionStatus::Idle);
        use BackendKind::*;
        assert_eq!(
            kinds(&out),
            [
                RowDescription,
                DataRow,
                DataRow,
                DataRow,
                CommandComplete,
                ReadyForQuery
            ]
        );
        let all: Vec<Message<'_>> = messages(&out).map(Result::unwrap).collect();
        assert_eq!(cstr(all[4].body), "SELECT 3");
    }

    #[test]
    fn columns_that_differ_between_shards_are_an_error() {
        let a = simple_reply(100, &["1"], b'I');
        let mut b = BytesMut::new();
        msg(
            &mut b,
            BackendKind::RowDescription,
            &description(&["other"], 100),
        );
        msg(&mut b, BackendKind::CommandComplete, b"SELECT 0\0");
        msg(&mut b, BackendKind::ReadyForQuery, b"I");
        let mut out = BytesMut::new();
        let error = assemble(
            &[Op::Query],
            &[&a, &b],
            &mut Stream::default(),
            usize::MAX,
            &mut out,
        );
        let Err(AssembleError::Merge(why)) = error else {
            panic!("expected a merge error, got {error:?}");
        };
        let why = why.message;
        assert!(why.contains("shard 1") && why.contains("\"id\""), "{why}");
    }

    #[test]
    fn an_error_on_one_shard_fails_the_sync_group_once() {
        let mut ok = BytesMut::new();
        msg(&mut ok, BackendKind::ParseComplete, b"");
        msg(&mut ok, BackendKind::BindComplete, b"");
        msg(
            &mut ok,
            BackendKind::RowDescription,
            &description(&["id"], 1),
        );
        msg(&mut ok, BackendKind::CommandComplete, b"SELECT 0\0");
        msg(&mut ok, BackendKind::ReadyForQuery, b"T");
        let mut bad = BytesMut::new();
        msg(&mut bad, BackendKind::ParseComplete, b"");
        msg(
            &mut bad,
            BackendKind::ErrorResponse,
            b"SERROR\0C42P01\0Mno\0\0",
        );
        msg(&mut bad, BackendKind::ReadyForQuery, b"E");
        let ops = [
            Op::Parse { visible: true },
            Op::Bind,
            Op::DescribePortal { visible: false },
            Op::Execute,
            Op::Sync,
        ];
        let mut out = BytesMut::new();
        let status = assemble(
            &ops,
            &[&ok, &bad],
            &mut Stream::default(),
            usize::MAX,
            &mut out,
        )
        .unwrap();
        assert_eq!(status, TransactionStatus::Failed);
        use BackendKind::*;
        assert_eq!(kinds(&out), [ParseComplete, ErrorResponse, ReadyForQuery]);
    }

    #[test]
    fn extended_rows_and_hidden_describe() {
        let reply = |values: &[&str]| {
            let mut out = BytesMut::new();
            msg(&mut out, BackendKind::BindComplete, b"");
            msg(
                &mut out,
                BackendKind::RowDescription,
                &description(&["id"], 7),
            );
            for value in values {
                msg(&mut out, BackendKind::DataRow, &row(value));
            }
            msg(&mut out, BackendKind::CommandComplete, b"SELECT 1\0");
            msg(&mut out, BackendKind::ReadyForQuery, b"I");
            out
        };
        let (a, b) = (reply(&["1"]), reply(&["2"]));
        let ops = [
            Op::Bind,
            Op::DescribePortal { visible: false },
            Op::Execute,
            Op::Sync,
        ];
        let mut out = BytesMut::new();
        assemble(
            &ops,
            &[&a, &b],
            &mut Stream::default(),
            usize::MAX,
            &mut out,
        )
        .unwrap();
        use BackendKind::*;
        assert_eq!(
            kinds(&out),
            [
                BindComplete,
                DataRow,
                DataRow,
                CommandComplete,
                ReadyForQuery
            ]
        );
    }

    #[test]
    fn tags_are_summed() {
        let tags = ["UPDATE 2".to_owned(), "UPDATE 3".to_owned()];
        assert_eq!(sum_tags(&tags, 0), "UPDATE 5");
        let tags = ["INSERT 0 1".to_owned(), "INSERT 0 1".to_owned()];
        assert_eq!(sum_tags(&tags, 0), "INSERT 0 2");
        let tags = ["CREATE TABLE".to_owned(), "CREATE TABLE".to_owned()];
        assert_eq!(sum_tags(&tags, 0), "CREATE TABLE");
        assert_eq!(sum_tags(&["SELECT 4".to_owned()], 2), "SELECT 2");
    }
}
