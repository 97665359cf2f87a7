//! Seeded pseudo-random robustness test for every decoder (tests only).
//!
//! Feeds random and mutated-valid inputs to framing and decoding and asserts
//! nothing panics and framing invariants hold. A failure names the seed and
//! case; set `SLEDDOG_FUZZ_SEED` to replay a run.

use bytes::BytesMut;

use super::backend::{BackendMessage, ErrorFields};
use super::frame::{header, split};
use super::frontend::{decode_password, decode_sasl_initial, FrontendMessage};
use super::startup::{encode_cancel, encode_ssl_request, encode_startup, split_startup};
use super::write::*;
use super::{ProtocolVersion, TransactionStatus, DEFAULT_MAX_MESSAGE_LEN};

const CASES: u64 = 200_000;
/// Small limit for `split`, so random headers cannot make the test allocate much.
const SPLIT_MAX_LEN: usize = 1 << 16;

use crate::test_rng::Rng;

/// Well-formed messages and packets of every family, to mutate.
fn corpus() -> Vec<Vec<u8>> {
    let mut items: Vec<Vec<u8>> = Vec::new();
    let mut add = |f: &dyn Fn(&mut BytesMut)| {
        let mut out = BytesMut::new();
        f(&mut out);
        items.push(out.to_vec());
    };
    add(&|o| {
        error_response(
            o,
            Severity::Error,
            "42P01",
            "no such table",
            Some("create it"),
        )
    });
    add(&|o| notice_response(o, "00000", "note"));
    add(&|o| authentication_ok(o));
    add(&|o| authentication_md5(o, *b"salt"));
    add(&|o| authentication_sasl(o, &["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"]));
    add(&|o| authentication_sasl_continue(o, b"r=abc,s=xyz,i=4096"));
    add(&|o| authentication_sasl_final(o, b"v=xyz"));
    add(&|o| parameter_status(o, "server_version", "17.0"));
    add(&|o| backend_key_data(o, 42, &[7; 32]));
    add(&|o| ready_for_query(o, TransactionStatus::Idle));
    add(&|o| negotiate_protocol_version(o, 0, &["_pq_.a", "_pq_.b"]));
    add(&|o| command_complete(o, "INSERT 0 1"));
    add(&|o| row_description_text(o, &["name", "value"]));
    add(&|o| data_row_text(o, &[Some("x"), None]));
    add(&|o| query(o, "select 1"));
    add(&|o| password_message(o, "md5deadbeef"));
    add(&|o| sasl_initial_response(o, "SCRAM-SHA-256", b"n,,n=,r=nonce"));
    add(&|o| sasl_response(o, b"c=biws,r=nonce,p=proof"));
    add(&|o| sync(o));
    add(&|o| {
        encode_startup(
            ProtocolVersion::V3_2,
            &[("user", "u"), ("database", "d")],
            o,
        )
    });
    add(&|o| encode_cancel(1, &[1, 2, 3, 4], o));
    add(&|o| encode_cancel(1, &[5; 32], o));
    add(&|o| encode_ssl_request(o));
    // Extended-protocol messages the proxy forwards but does not build.
    items.push(b"P\0\0\0\x17s1\0select $1\0\0\x01\0\0\0\x17".to_vec());
    items.push(b"B\0\0\0\x1a\0s1\0\0\x01\0\0\0\x02\0\0\0\x0242\xff\xff\xff\xff\0\0".to_vec());
    items.push(b"D\0\0\0\x08Ss1\0".to_vec());
    items.push(b"E\0\0\0\x09\0\0\0\0\x0a".to_vec());
    items.push(b"C\0\0\0\x06P\0".to_vec());
    items.push(b"d\0\0\0\x071\t2".to_vec());
    items.push(b"f\0\0\0\x08bad\0".to_vec());
    items.push(b"F\0\0\0\x13\0\0\0\x01\0\0\0\x01\0\0\0\x01x\0\0".to_vec());
    items.push(b"A\0\0\0\x10\0\0\0\x07chan\0hi\0".to_vec());
    items
}

fn random_input(rng: &mut Rng) -> Vec<u8> {
    let len = rng.below(48);
    let mut input: Vec<u8> = (0..len).map(|_| rng.byte()).collect();
    // Half the time give it a plausible header so bodies get exercised.
    if rng.below(2) == 0 && input.len() >= 5 {
        const TAGS: &[u8] = b"QPBDESHCdcfFXpRK23GWIVvnNAtT1sZ";
        input[0] = TAGS[rng.below(TAGS.len())];
        let declared = u32::try_from(input.len() - 1).unwrap_or(u32::MAX);
        input[1..5].copy_from_slice(&declared.to_be_bytes());
    }
    input
}

fn mutate(rng: &mut Rng, corpus: &[Vec<u8>]) -> Vec<u8> {
    let mut input = corpus[rng.below(corpus.len())].clone();
    for _ in 0..1 + rng.below(3) {
        match rng.below(6) {
            0 if !input.is_empty() => {
                let at = rng.below(input.len());
                input[at] = rng.byte();
            }
            1 => input.truncate(rng.below(input.len() + 1)),
            2 => input.extend((0..1 + rng.below(8)).map(|_| rng.byte())),
            3 if input.len() >= 5 => {
                // Nudge the length field of a tagged message or startup packet.
                let at = rng.below(2);
                let delta = rng.below(9) as i32 - 4;
                let field =
                    i32::from_be_bytes([input[at], input[at + 1], input[at + 2], input[at + 3]]);
                input[at..at + 4].copy_from_slice(&field.wrapping_add(delta).to_be_bytes());
            }
            4 => input.extend_from_slice(&corpus[rng.below(corpus.len())]),
            _ if !input.is_empty() => {
                let at = rng.below(input.len());
                input[at] = 0;
            }
            _ => {}
        }
    }
    input
}

/// Runs every entry point on `input`; true if some decoder accepted it.
fn exercise(input: &[u8]) -> bool {
    let _ = header(input, DEFAULT_MAX_MESSAGE_LEN);
    let mut accepted = decode_all(input);

    let mut buf = BytesMut::from(input);
    while let Ok(Some(msg)) = split(&mut buf, SPLIT_MAX_LEN) {
        assert!(msg.len() >= 5 && msg.len() <= SPLIT_MAX_LEN);
        accepted |= decode_all(&msg);
    }
    assert!(
        buf.capacity() <= 2 * input.len() + SPLIT_MAX_LEN + 64,
        "over-reserved"
    );

    let mut buf = BytesMut::from(input);
    while let Ok(Some(_)) = split_startup(&mut buf, DEFAULT_MAX_MESSAGE_LEN) {
        accepted = true;
    }
    assert!(
        buf.capacity() <= 2 * input.len() + 10_000 + 64,
        "over-reserved"
    );
    accepted
}

fn decode_all(msg: &[u8]) -> bool {
    let frontend = FrontendMessage::decode(msg);
    if let Ok(FrontendMessage::Password(body)) = frontend {
        let _ = decode_password(body);
        let _ = decode_sasl_initial(body);
    }
    let backend = BackendMessage::decode(msg);
    match backend {
        Ok(BackendMessage::ErrorResponse(fields) | BackendMessage::NoticeResponse(fields)) => {
            read_fields(fields);
        }
        Ok(ref message) => {
            let _ = message.kind();
        }
        Err(_) => {}
    }
    if msg.len() > 5 {
        if let Ok(fields) = ErrorFields::parse(&msg[5..]) {
            read_fields(fields);
        }
    }
    frontend.is_ok() || backend.is_ok()
}

fn read_fields(fields: ErrorFields<'_>) {
    let _ = (fields.severity(), fields.code(), fields.message());
    assert!(fields.iter().count() <= 10_000);
}

#[test]
fn decoders_never_panic() {
    let seed = std::env::var("SLEDDOG_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_d065_u64);
    let corpus = corpus();
    for item in &corpus {
        // The corpus itself must be valid, or mutation tests little.
        assert!(exercise(item), "invalid corpus item {item:02x?}");
    }
    let mut rng = Rng::new(seed);
    let mut accepted = 0u64;
    for case in 0..CASES {
        let input = if rng.below(2) == 0 {
            random_input(&mut rng)
        } else {
            mutate(&mut rng, &corpus)
        };
        let outcome = std::panic::catch_unwind(|| exercise(&input));
        match outcome {
            Ok(ok) => accepted += u64::from(ok),
            Err(_) => {
                panic!("fuzz failure: SLEDDOG_FUZZ_SEED={seed} case {case} input {input:02x?}")
            }
        }
    }
    // Inputs that are all rejected at the first byte would test little.
    assert!(
        accepted > CASES / 10,
        "only {accepted} of {CASES} inputs decoded (seed {seed})"
    );
}
