//! Checks shared by the fuzz targets in `fuzz_targets/`: framing of tagged
//! messages and of startup packets, with the invariants the in-tree seeded
//! test (`src/protocol/fuzz.rs`) asserts plus a few stronger ones that are
//! cheap to state (the split messages and the rest add up to the input, and
//! the header of every split message agrees with its size).
//!
//! Must not: touch anything but sleddog's public API. Panicking is how a
//! check reports a broken invariant; libFuzzer turns it into a crash file.

use bytes::{Bytes, BytesMut};
use sleddog::protocol::frame::{header, split, HEADER_LEN};
use sleddog::protocol::startup::{
    encode_cancel, encode_ssl_request, encode_startup, split_startup, MAX_STARTUP_PACKET_LEN,
};
use sleddog::protocol::{StartupPacket, DEFAULT_MAX_MESSAGE_LEN};

/// Limit handed to `split`, equal to scripts/fuzz's `-max_len`, so a random
/// header cannot make a run reserve much.
pub const SPLIT_MAX_LEN: usize = 1 << 16;

/// Splits `input` into whole tagged messages with `frame::split`, checking
/// the framing invariants on the way. Returns the messages and the unsplit
/// rest (an incomplete or refused message).
pub fn split_all(input: &[u8]) -> (Vec<Bytes>, Bytes) {
    if let Ok(Some(head)) = header(input, DEFAULT_MAX_MESSAGE_LEN) {
        assert_eq!(head.tag, input[0]);
        assert!(head.total_len >= HEADER_LEN && head.total_len <= DEFAULT_MAX_MESSAGE_LEN);
    }
    let mut buf = BytesMut::from(input);
    let mut messages = Vec::new();
    let mut consumed = 0;
    let outcome = loop {
        match split(&mut buf, SPLIT_MAX_LEN) {
            Ok(Some(msg)) => {
                assert!(msg.len() >= HEADER_LEN && msg.len() <= SPLIT_MAX_LEN);
                let head = header(&msg, SPLIT_MAX_LEN)
                    .expect("a split message has a valid header")
                    .expect("a split message holds its header");
                assert_eq!(head.total_len, msg.len(), "header disagrees with split");
                assert_eq!(&msg[..], &input[consumed..consumed + msg.len()]);
                consumed += msg.len();
                messages.push(msg);
            }
            other => break other,
        }
    };
    // What is left is exactly the input after the split messages.
    assert_eq!(&buf[..], &input[consumed..]);
    match outcome {
        Ok(None) => match header(&buf, SPLIT_MAX_LEN) {
            Ok(None) => assert!(buf.len() < HEADER_LEN),
            Ok(Some(head)) => {
                assert!(buf.len() < head.total_len, "a whole message was left");
                assert!(
                    buf.capacity() >= head.total_len,
                    "missing part not reserved"
                );
            }
            Err(_) => panic!("split said incomplete for a bad header"),
        },
        Err(_) => assert!(header(&buf, SPLIT_MAX_LEN).is_err()),
        Ok(Some(_)) => unreachable!("the loop only stops on None or an error"),
    }
    assert!(
        buf.capacity() <= 2 * input.len() + SPLIT_MAX_LEN + 64,
        "over-reserved: {} for {} input bytes",
        buf.capacity(),
        input.len()
    );
    (messages, buf.freeze())
}

/// Splits startup-phase packets off `input` until one is incomplete or
/// refused. Each decoded packet must re-encode to the exact bytes it was
/// split from, since the decoder refuses anything the encoder cannot make.
pub fn split_startups(input: &[u8]) -> Vec<StartupPacket> {
    let mut buf = BytesMut::from(input);
    let mut packets = Vec::new();
    let mut consumed = 0;
    loop {
        let before = buf.len();
        match split_startup(&mut buf, DEFAULT_MAX_MESSAGE_LEN) {
            Ok(Some(packet)) => {
                let taken = before - buf.len();
                assert!((8..=MAX_STARTUP_PACKET_LEN).contains(&taken));
                let raw = &input[consumed..consumed + taken];
                assert_eq!(encode(&packet), raw, "{packet:?} does not round-trip");
                consumed += taken;
                packets.push(packet);
            }
            Ok(None) => {
                assert_eq!(buf.len(), before, "an incomplete packet was consumed");
                break;
            }
            Err(_) => {
                // A refused packet may have been split off before decoding
                // failed; it is never more than the startup limit.
                assert!(before - buf.len() <= MAX_STARTUP_PACKET_LEN);
                break;
            }
        }
    }
    assert!(
        buf.capacity() <= 2 * input.len() + MAX_STARTUP_PACKET_LEN + 64,
        "over-reserved: {} for {} input bytes",
        buf.capacity(),
        input.len()
    );
    packets
}

fn encode(packet: &StartupPacket) -> BytesMut {
    let mut out = BytesMut::new();
    match packet {
        StartupPacket::Startup { version, params } => {
            let params: Vec<(&str, &str)> = params
                .iter()
                .map(|(name, value)| (name.as_str(), value.as_str()))
                .collect();
            encode_startup(*version, &params, &mut out);
        }
        StartupPacket::SslRequest => encode_ssl_request(&mut out),
        StartupPacket::GssEncRequest => {
            // No encoder (the proxy refuses GSS encryption); build it by hand.
            out.extend_from_slice(&8u32.to_be_bytes());
            out.extend_from_slice(&sleddog::protocol::startup::GSSENC_REQUEST_CODE.to_be_bytes());
        }
        StartupPacket::Cancel {
            process_id,
            secret_key,
        } => encode_cancel(*process_id, secret_key, &mut out),
    }
    out
}
