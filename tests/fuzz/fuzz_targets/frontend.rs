//! Fuzz target `frontend`: what a client can send.
//!
//! The input is a byte stream as read from a client socket. It is framed
//! with `frame::split` (and, separately, as startup packets with
//! `split_startup`); every whole message is decoded with
//! `FrontendMessage::decode`, the auth bodies with `decode_password` and
//! `decode_sasl_initial`, the hot-path `statement_name_span` is checked
//! against the full decoder, startup parameters become session GUC state
//! (the `options` switch parser), and the complete messages go through the
//! prepared-statement rewriter as one client batch.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use sleddog::prepared::{
    needs_rewrite, rewrite_batch, Books, ClientStatements, ReplyPlan, ServerStatements,
    StatementCache,
};
use sleddog::protocol::frame::HEADER_LEN;
use sleddog::protocol::frontend::{
    decode_password, decode_sasl_initial, statement_name_span, DescribeTarget, FrontendKind,
    FrontendMessage,
};
use sleddog::protocol::{write, StartupPacket, TransactionStatus};
use sleddog::session::params::startup_params;
use sleddog_fuzz::{split_all, split_startups};

fuzz_target!(|input: &[u8]| {
    let (messages, _rest) = split_all(input);
    for msg in &messages {
        check_message(msg);
    }
    // A message need not be split to be decoded: the decoder checks the
    // length field against the slice itself.
    if let Ok(message) = FrontendMessage::decode(input) {
        assert_eq!(message.kind().tag(), input[0]);
    }
    for packet in split_startups(input) {
        if let StartupPacket::Startup { params, .. } = packet {
            // The session turns the packet into GUC state: names fold.
            let state = startup_params(&params);
            assert!(state
                .iter()
                .all(|(name, _)| !name.bytes().any(|b| b.is_ascii_uppercase())));
        }
    }

    let whole: usize = messages.iter().map(|m| m.len()).sum();
    check_rewrite(&input[..whole], input.len());
});

fn check_message(msg: &[u8]) {
    let tag = msg[0];
    let body = &msg[HEADER_LEN..];
    let decoded = FrontendMessage::decode(msg);
    // The hot path's name lookup must agree with the full decoder wherever
    // the decoder accepts the message.
    if let Ok(kind) = FrontendKind::from_tag(tag) {
        let span = statement_name_span(kind, body);
        if let Some(span) = &span {
            assert!(span.end < body.len(), "span {span:?} past the body");
            assert_eq!(body[span.end], 0, "span does not end at a NUL");
        }
        if let Ok(message) = &decoded {
            if let Some(name) = statement_name(message) {
                let span = span.expect("decoded statement name has a span");
                assert_eq!(&body[span], name.as_bytes());
            } else {
                assert!(span.is_none(), "span for {message:?}");
            }
        }
    }
    let Ok(message) = decoded else {
        return;
    };
    assert_eq!(message.kind().tag(), tag);
    // Messages the proxy also writes must re-encode to the same bytes.
    let mut again = BytesMut::new();
    match &message {
        FrontendMessage::Query { sql } => write::query(&mut again, sql),
        FrontendMessage::Sync => write::sync(&mut again),
        FrontendMessage::Flush => write::flush(&mut again),
        FrontendMessage::Terminate => write::terminate(&mut again),
        FrontendMessage::CopyFail { message } => write::copy_fail(&mut again, message),
        FrontendMessage::Close {
            target: DescribeTarget::Statement,
            name,
        } => write::close_statement(&mut again, name),
        FrontendMessage::Password(body) => {
            write::sasl_response(&mut again, body);
            assert_eq!(&again[..], msg);
            again.clear();
            if let Ok(password) = decode_password(body) {
                write::password_message(&mut again, password);
                assert_eq!(&again[..], msg);
                again.clear();
            }
            if let Ok((mechanism, data)) = decode_sasl_initial(body) {
                if let Some(data) = data {
                    write::sasl_initial_response(&mut again, mechanism, data);
                    assert_eq!(&again[..], msg);
                }
                again.clear();
            }
        }
        _ => {}
    }
    if !again.is_empty() {
        assert_eq!(&again[..], msg, "{message:?} does not round-trip");
    }
}

/// The prepared-statement name a decoded message carries, if any.
fn statement_name<'a>(message: &FrontendMessage<'a>) -> Option<&'a str> {
    match *message {
        FrontendMessage::Parse { name, .. } => Some(name),
        FrontendMessage::Bind { statement, .. } => Some(statement),
        FrontendMessage::Describe {
            target: DescribeTarget::Statement,
            name,
        }
        | FrontendMessage::Close {
            target: DescribeTarget::Statement,
            name,
        } => Some(name),
        _ => None,
    }
}

/// Runs the complete messages through the rewriter as one client batch, twice
/// on the same books: the first plan is dropped as if every reply came back
/// fine, so the second pass meets statements already defined and prepared;
/// the second is abandoned, as when the server connection dies. `seed` picks
/// the client's settings.
fn check_rewrite(batch: &[u8], seed: usize) {
    let mut client = ClientStatements::new(seed & 1 != 0, seed & 2 != 0);
    // Small limits, so eviction and its hidden Close are reached.
    let mut server = ServerStatements::new(2);
    let mut cache = StatementCache::new(2);
    let status = if seed & 4 != 0 {
        TransactionStatus::Failed
    } else {
        TransactionStatus::Idle
    };
    for pass in 0..2 {
        let needed = needs_rewrite(batch, &client);
        let mut books = Books {
            client: &mut client,
            server: &mut server,
            cache: &mut cache,
        };
        let mut out = BytesMut::new();
        let mut plan = ReplyPlan::default();
        let Ok(()) = rewrite_batch(batch, &mut books, status, &mut out, &mut plan) else {
            return;
        };
        // The rewrite sends only whole, valid client messages.
        let (rewritten, rest) = split_all(&out);
        assert!(rest.is_empty(), "rewrite left a partial message");
        for msg in &rewritten {
            if let Err(e) = FrontendMessage::decode(msg) {
                panic!("rewrite wrote an invalid message {msg:02x?}: {e}");
            }
        }
        // The relay forwards a batch untouched when `needs_rewrite` says no,
        // so the rewrite must then have nothing to change.
        if !needed {
            assert_eq!(&out[..], batch, "needs_rewrite said no, rewrite changed it");
        }
        if pass == 1 {
            plan.abandon(&mut books);
        }
    }
}
