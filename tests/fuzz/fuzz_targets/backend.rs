//! Fuzz target `backend`: what a server (or something posing as one) can send.
//!
//! The input is a byte stream as read from a server socket. It is framed with
//! `frame::split`; every whole message is decoded with
//! `BackendMessage::decode`, ErrorResponse/NoticeResponse fields are walked
//! and rebuilt, DataRow bodies go through the parameter-capture decoder, and
//! the messages are fed as replies to a prepared-statement reply plan made
//! for a fixed client batch.
#![no_main]

use bytes::{BufMut, BytesMut};
use libfuzzer_sys::fuzz_target;
use sleddog::prepared::{
    rewrite_batch, Books, ClientStatements, ReplyPlan, ServerStatements, StatementCache,
};
use sleddog::protocol::frame::HEADER_LEN;
use sleddog::protocol::{
    write, Authentication, BackendKind, BackendMessage, ErrorFields, TransactionStatus,
};
use sleddog::session::params::Params;
use sleddog_fuzz::split_all;

fuzz_target!(|input: &[u8]| {
    let (messages, _rest) = split_all(input);
    let mut data_rows: Vec<&[u8]> = Vec::new();
    for msg in &messages {
        check_message(msg);
        if BackendKind::from_tag(msg[0]) == Ok(BackendKind::DataRow) {
            data_rows.push(&msg[HEADER_LEN..]);
        }
    }
    if let Ok(message) = BackendMessage::decode(input) {
        assert_eq!(message.kind().tag(), input[0]);
    }
    // A body on its own, as `ErrorFields::parse` is also called.
    if let Ok(fields) = ErrorFields::parse(input) {
        check_fields(fields, input);
    }
    if let Ok(params) = Params::from_data_rows(&data_rows) {
        // Names are folded and kept sorted and unique, for binary search.
        let names: Vec<&str> = params.iter().map(|(name, _)| name).collect();
        assert!(names.windows(2).all(|w| w[0] < w[1]), "{names:?}");
        assert!(names
            .iter()
            .all(|n| !n.bytes().any(|b| b.is_ascii_uppercase())));
    }
    replay_through_plan(&messages, input.len());
});

fn check_message(msg: &[u8]) {
    let Ok(message) = BackendMessage::decode(msg) else {
        return;
    };
    assert_eq!(message.kind().tag(), msg[0]);
    let body = &msg[HEADER_LEN..];
    // Messages the proxy also writes must re-encode to the same bytes.
    let mut again = BytesMut::new();
    match &message {
        BackendMessage::ErrorResponse(fields) | BackendMessage::NoticeResponse(fields) => {
            check_fields(*fields, body);
        }
        BackendMessage::Authentication(auth) => match auth {
            Authentication::Ok => write::authentication_ok(&mut again),
            Authentication::CleartextPassword => write::authentication_cleartext(&mut again),
            Authentication::Md5Password { salt } => write::authentication_md5(&mut again, *salt),
            Authentication::Sasl { mechanisms } => {
                assert!(mechanisms.iter().all(|m| !m.is_empty()));
                write::authentication_sasl(&mut again, mechanisms);
            }
            Authentication::SaslContinue(data) => {
                write::authentication_sasl_continue(&mut again, data)
            }
            Authentication::SaslFinal(data) => write::authentication_sasl_final(&mut again, data),
            Authentication::Other(code) => assert!(![0, 3, 5, 10, 11, 12].contains(code)),
        },
        BackendMessage::BackendKeyData {
            process_id,
            secret_key,
        } => write::backend_key_data(&mut again, *process_id, secret_key),
        BackendMessage::ParameterStatus { name, value } => {
            write::parameter_status(&mut again, name, value)
        }
        BackendMessage::ReadyForQuery(status) => write::ready_for_query(&mut again, *status),
        BackendMessage::CommandComplete { tag } => write::command_complete(&mut again, tag),
        BackendMessage::NotificationResponse { .. } | BackendMessage::Other(_) => {}
    }
    if !again.is_empty() {
        assert_eq!(&again[..], msg, "{message:?} does not round-trip");
    }
}

/// Walks the fields and checks they rebuild the body exactly, and that the
/// named accessors return the first field of their code.
fn check_fields(fields: ErrorFields<'_>, body: &[u8]) {
    let mut rebuilt = Vec::with_capacity(body.len());
    for (code, value) in fields.iter() {
        assert_ne!(code, 0);
        rebuilt.push(code);
        rebuilt.extend_from_slice(value.as_bytes());
        rebuilt.push(0);
    }
    rebuilt.push(0);
    assert_eq!(rebuilt, body, "fields do not rebuild the body");
    let first = |code| fields.iter().find(|&(c, _)| c == code).map(|(_, v)| v);
    assert_eq!(fields.code(), first(b'C'));
    assert_eq!(fields.message(), first(b'M'));
    assert_eq!(fields.detail(), first(b'D'));
    assert_eq!(fields.hint(), first(b'H'));
    assert_eq!(fields.severity(), first(b'V').or_else(|| first(b'S')));
}

/// A client batch touching every kind of reply-plan entry: a named Parse, a
/// Bind and statement Describe of it, an Execute, a Close answered by the
/// proxy, a LISTEN prepared over the extended protocol, a Sync, and simple
/// Queries that DEALLOCATE one name and then all.
fn client_batch() -> BytesMut {
    let mut out = BytesMut::new();
    parse(&mut out, "s1", "select $1");
    parse(&mut out, "l1", "LISTEN chan");
    bind(&mut out, "s1");
    describe_statement(&mut out, "s1");
    execute(&mut out);
    write::close_statement(&mut out, "s0");
    bind(&mut out, "l1");
    execute(&mut out);
    write::sync(&mut out);
    write::query(&mut out, "DEALLOCATE s1");
    write::query(&mut out, "DEALLOCATE ALL");
    out
}

fn message(out: &mut BytesMut, tag: u8, body: &[u8]) {
    out.put_u8(tag);
    out.put_u32(u32::try_from(4 + body.len()).expect("small test message"));
    out.put_slice(body);
}

fn parse(out: &mut BytesMut, name: &str, sql: &str) {
    let body = [name.as_bytes(), b"\0", sql.as_bytes(), b"\0\0\0"].concat();
    message(out, b'P', &body);
}

fn bind(out: &mut BytesMut, statement: &str) {
    let body = [b"\0", statement.as_bytes(), b"\0\0\0\0\0\0\0"].concat();
    message(out, b'B', &body);
}

fn describe_statement(out: &mut BytesMut, name: &str) {
    message(out, b'D', &[b"S", name.as_bytes(), b"\0"].concat());
}

fn execute(out: &mut BytesMut) {
    message(out, b'E', b"\0\0\0\0\0");
}

/// Feeds the server messages as replies to the plan of `client_batch`:
/// whatever the server says, the client gets whole messages only, and an
/// abandoned plan ends empty. `seed` picks the client's settings.
fn replay_through_plan(messages: &[bytes::Bytes], seed: usize) {
    let mut client = ClientStatements::new(seed & 1 != 0, seed & 2 != 0);
    let mut server = ServerStatements::new(2);
    let mut cache = StatementCache::new(2);
    let mut books = Books {
        client: &mut client,
        server: &mut server,
        cache: &mut cache,
    };
    let mut plan = ReplyPlan::default();
    plan.begin_after(u32::from(seed & 4 != 0));
    let mut sent = BytesMut::new();
    rewrite_batch(
        &client_batch(),
        &mut books,
        TransactionStatus::Idle,
        &mut sent,
        &mut plan,
    )
    .expect("the fixed batch is valid");
    let mut out = BytesMut::new();
    for msg in messages {
        let Ok(kind) = BackendKind::from_tag(msg[0]) else {
            continue;
        };
        plan.on_message(kind, msg, &mut books, &mut out);
        plan.forwards_rows();
    }
    let (_, rest) = split_all(&out);
    assert!(rest.is_empty(), "the client was sent a partial message");
    plan.abandon(&mut books);
    assert!(plan.is_empty());
}
