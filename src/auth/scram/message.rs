//! Parsing of the four SCRAM messages (RFC 5802 section 7, "Formal Syntax"). The only place
//! that looks inside SCRAM message text; the state machines work on the parsed structs.
//!
//! Every parser returns `Err` on anything unexpected and never panics: the input comes from an
//! unauthenticated peer. Slicing is done only at ASCII delimiters found by `split`.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;

use super::super::{AuthError, SCRAM_MESSAGE_LEN_MAX};
use super::iterations_in_range;

/// client-first-message = gs2-header client-first-message-bare.
#[derive(Debug)]
pub(super) struct ClientFirst<'a> {
    /// "n,," or "y,,": echoed back (base64) in the client-final `c=` attribute.
    pub gs2_header: &'a str,
    pub bare: &'a str,
    pub client_nonce: &'a str,
}

/// client-final-message = client-final-message-without-proof "," proof.
#[derive(Debug)]
pub(super) struct ClientFinal<'a> {
    pub without_proof: &'a str,
    pub channel_binding: Vec<u8>,
    pub nonce: &'a str,
    pub proof: [u8; 32],
}

/// server-first-message = nonce "," salt "," iteration-count ["," extensions].
#[derive(Debug)]
pub(super) struct ServerFirst<'a> {
    pub nonce: &'a str,
    pub salt: Vec<u8>,
    pub iterations: u32,
}

/// server-final-message = (server-error / verifier) ["," extensions].
#[derive(Debug)]
pub(super) enum ServerFinal<'a> {
    Verifier([u8; 32]),
    Error(&'a str),
}

/// Checks the length limit and UTF-8 (saslname values may be any UTF-8).
pub(super) fn text(msg: &[u8]) -> Result<&str, AuthError> {
    if msg.len() > SCRAM_MESSAGE_LEN_MAX {
        return Err(AuthError::Malformed("SCRAM message too long"));
    }
    std::str::from_utf8(msg).map_err(|_| AuthError::Malformed("SCRAM message is not UTF-8"))
}

pub(super) fn parse_client_first(msg: &str) -> Result<ClientFirst<'_>, AuthError> {
    let (flag, rest) = msg
        .split_once(',')
        .ok_or(AuthError::Malformed("missing gs2 header"))?;
    match flag {
        "n" | "y" => {}
        _ if flag.starts_with("p=") => return Err(AuthError::UnsupportedChannelBinding),
        _ => return Err(AuthError::Malformed("unknown channel binding flag")),
    }
    let (authzid, bare) = rest
        .split_once(',')
        .ok_or(AuthError::Malformed("missing gs2 header"))?;
    if !authzid.is_empty() {
        // Postgres refuses "a=" too: the role comes from the startup packet.
        return Err(AuthError::Malformed(
            "authorization identity is not supported",
        ));
    }
    let gs2_header = &msg[..flag.len() + authzid.len() + 2];
    let mut attrs = bare.split(',').peekable();
    reject_mandatory_extension(&mut attrs)?;
    // The username is ignored, as Postgres does; it only has to be present.
    expect_attr(&mut attrs, b'n', "missing username")?;
    let client_nonce = expect_attr(&mut attrs, b'r', "missing nonce")?;
    if !is_printable(client_nonce) {
        return Err(AuthError::Malformed("nonce is not printable"));
    }
    skip_extensions(attrs)?;
    Ok(ClientFirst {
        gs2_header,
        bare,
        client_nonce,
    })
}

pub(super) fn parse_client_final(msg: &str) -> Result<ClientFinal<'_>, AuthError> {
    // The proof is always the last attribute, and no attribute value contains ','.
    let (without_proof, proof) = msg
        .rsplit_once(',')
        .ok_or(AuthError::Malformed("missing proof"))?;
    let proof = match split_attr(proof)? {
        (b'p', value) => decode_key(value, "proof is not 32 bytes of base64")?,
        _ => return Err(AuthError::Malformed("proof must be the last attribute")),
    };
    let mut attrs = without_proof.split(',');
    let channel_binding = expect_attr(&mut attrs, b'c', "missing channel binding")?;
    let channel_binding = BASE64
        .decode(channel_binding)
        .map_err(|_| AuthError::Malformed("channel binding is not base64"))?;
    let nonce = expect_attr(&mut attrs, b'r', "missing nonce")?;
    skip_extensions(attrs)?;
    Ok(ClientFinal {
        without_proof,
        channel_binding,
        nonce,
        proof,
    })
}

pub(super) fn parse_server_first(msg: &str) -> Result<ServerFirst<'_>, AuthError> {
    let mut attrs = msg.split(',').peekable();
    reject_mandatory_extension(&mut attrs)?;
    let nonce = expect_attr(&mut attrs, b'r', "missing nonce")?;
    if !is_printable(nonce) {
        return Err(AuthError::Malformed("nonce is not printable"));
    }
    let salt = expect_attr(&mut attrs, b's', "missing salt")?;
    let salt = BASE64
        .decode(salt)
        .map_err(|_| AuthError::Malformed("salt is not base64"))?;
    if salt.is_empty() {
        return Err(AuthError::Malformed("salt is empty"));
    }
    let iterations = expect_attr(&mut attrs, b'i', "missing iteration count")?;
    let iterations: u32 = iterations
        .parse()
        .map_err(|_| AuthError::Malformed("iteration count is not a number"))?;
    if !iterations_in_range(iterations) {
        return Err(AuthError::Malformed("iteration count out of range"));
    }
    skip_extensions(attrs)?;
    Ok(ServerFirst {
        nonce,
        salt,
        iterations,
    })
}

pub(super) fn parse_server_final(msg: &str) -> Result<ServerFinal<'_>, AuthError> {
    let mut attrs = msg.split(',');
    let first = attrs
        .next()
        .ok_or(AuthError::Malformed("empty server-final message"))?;
    let parsed = match split_attr(first)? {
        (b'e', reason) => ServerFinal::Error(reason),
        (b'v', signature) => ServerFinal::Verifier(decode_key(
            signature,
            "signature is not 32 bytes of base64",
        )?),
        _ => return Err(AuthError::Malformed("expected v= or e=")),
    };
    skip_extensions(attrs)?;
    Ok(parsed)
}

/// attr-val = ALPHA "=" value; returns the attribute letter and the value.
fn split_attr(attr: &str) -> Result<(u8, &str), AuthError> {
    match attr.as_bytes() {
        [name, b'=', ..] if name.is_ascii_alphabetic() => Ok((*name, &attr[2..])),
        _ => Err(AuthError::Malformed("attribute is not of the form x=value")),
    }
}

fn expect_attr<'a>(
    attrs: &mut impl Iterator<Item = &'a str>,
    name: u8,
    missing: &'static str,
) -> Result<&'a str, AuthError> {
    let attr = attrs.next().ok_or(AuthError::Malformed(missing))?;
    match split_attr(attr)? {
        (found, value) if found == name => Ok(value),
        _ => Err(AuthError::Malformed(missing)),
    }
}

/// reserved-mext = "m=" 1*(value-char): no mandatory extension is defined, so any is fatal.
/// Only peeks, so the next attribute is still there for the caller.
fn reject_mandatory_extension<'a>(
    attrs: &mut std::iter::Peekable<impl Iterator<Item = &'a str>>,
) -> Result<(), AuthError> {
    match attrs.peek() {
        Some(attr) if attr.starts_with("m=") => Err(AuthError::Malformed(
            "mandatory extensions are not supported",
        )),
        _ => Ok(()),
    }
}

/// Optional extensions are allowed by the grammar and ignored, but must be well formed.
fn skip_extensions<'a>(attrs: impl Iterator<Item = &'a str>) -> Result<(), AuthError> {
    for attr in attrs {
        split_attr(attr)?;
    }
    Ok(())
}

/// printable = %x21-2B / %x2D-7E: visible ASCII except ','.
fn is_printable(nonce: &str) -> bool {
    !nonce.is_empty()
        && nonce
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

fn decode_key(value: &str, error: &'static str) -> Result<[u8; 32], AuthError> {
    let bytes = BASE64
        .decode(value)
        .map_err(|_| AuthError::Malformed(error))?;
    bytes.try_into().map_err(|_| AuthError::Malformed(error))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_first_parses_gs2_and_nonce() {
        let parsed = parse_client_first("n,,n=user,r=abc").unwrap();
        assert_eq!(parsed.gs2_header, "n,,");
        assert_eq!(parsed.bare, "n=user,r=abc");
        assert_eq!(parsed.client_nonce, "abc");
        let parsed = parse_client_first("y,,n=,r=x,z=ext").unwrap();
        assert_eq!(parsed.gs2_header, "y,,");
        assert_eq!(parsed.client_nonce, "x");
    }

    #[test]
    fn client_first_rejects() {
        let cases: &[(&str, AuthError)] = &[
            (
                "p=tls-server-end-point,,n=,r=a",
                AuthError::UnsupportedChannelBinding,
            ),
            (
                "x,,n=,r=a",
                AuthError::Malformed("unknown channel binding flag"),
            ),
            (
                "n,a=bob,n=,r=a",
                AuthError::Malformed("authorization identity is not supported"),
            ),
            (
                "n,,m=ext,n=,r=a",
                AuthError::Malformed("mandatory extensions are not supported"),
            ),
            ("n,,n=,r=", AuthError::Malformed("nonce is not printable")),
            (
                "n,,n=,r=a b",
                AuthError::Malformed("nonce is not printable"),
            ),
            (
                "n,,n=,r=\u{e9}",
                AuthError::Malformed("nonce is not printable"),
            ),
            ("n,,r=a", AuthError::Malformed("missing username")),
            ("n,,n=", AuthError::Malformed("missing nonce")),
            ("n", AuthError::Malformed("missing gs2 header")),
            (
                "n,,n=,r=a,bogus",
                AuthError::Malformed("attribute is not of the form x=value"),
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(&parse_client_first(input).unwrap_err(), expected, "{input}");
        }
    }

    #[test]
    fn client_final_parses() {
        let proof = BASE64.encode([7u8; 32]);
        let msg = format!("c=biws,r=abc,x=ext,p={proof}");
        let parsed = parse_client_final(&msg).unwrap();
        assert_eq!(parsed.without_proof, "c=biws,r=abc,x=ext");
        assert_eq!(parsed.channel_binding, b"n,,");
        assert_eq!(parsed.nonce, "abc");
        assert_eq!(parsed.proof, [7u8; 32]);
    }

    #[test]
    fn client_final_rejects_short_proof_and_order() {
        let short = format!("c=biws,r=abc,p={}", BASE64.encode([7u8; 31]));
        assert!(parse_client_final(&short).is_err());
        let reordered = format!("r=abc,c=biws,p={}", BASE64.encode([7u8; 32]));
        assert!(parse_client_final(&reordered).is_err());
        let no_proof = "c=biws,r=abc";
        assert!(parse_client_final(no_proof).is_err());
    }

    #[test]
    fn server_first_limits_iterations() {
        assert!(parse_server_first("r=ab,s=QUJD,i=4096").is_ok());
        for bad in ["i=0", "i=10000001", "i=-1", "i=", "i=4096x"] {
            let msg = format!("r=ab,s=QUJD,{bad}");
            assert!(parse_server_first(&msg).is_err(), "{msg}");
        }
        assert!(parse_server_first("r=ab,s=QUJD,i=10000000").is_ok());
        assert!(parse_server_first("r=ab,s=,i=4096").is_err());
        assert!(parse_server_first("m=x,r=ab,s=QUJD,i=4096").is_err());
    }

    #[test]
    fn server_final_error_and_verifier() {
        match parse_server_final("e=invalid-proof").unwrap() {
            ServerFinal::Error(reason) => assert_eq!(reason, "invalid-proof"),
            other => panic!("{other:?}"),
        }
        let msg = format!("v={}", BASE64.encode([1u8; 32]));
        match parse_server_final(&msg).unwrap() {
            ServerFinal::Verifier(signature) => assert_eq!(signature, [1u8; 32]),
            other => panic!("{other:?}"),
        }
        assert!(parse_server_final("").is_err());
        assert!(parse_server_final("x=1").is_err());
    }

    #[test]
    fn message_length_limit() {
        let long = vec![b'a'; SCRAM_MESSAGE_LEN_MAX + 1];
        assert_eq!(
            text(&long).unwrap_err(),
            AuthError::Malformed("SCRAM message too long")
        );
        assert!(text(&long[1..]).is_ok());
        assert!(text(&[0xff]).is_err());
    }
}
