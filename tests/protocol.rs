//! The wire protocol at session start and with real clients: SSL/GSS requests
//! declined with `N`, protocol 3.2 and its 32-byte cancel keys,
//! NegotiateProtocolVersion, a stalled half message holding no server
//! connection, and psql and pgbench runs through sleddog.
//! (PostgreSQL docs: "protocol-flow", "protocol-message-formats".)

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::proxy::{bind_no_params, config, execute, parse, query, sync, Msg, Raw, USERS};
use common::{free_port, pg, pg_bin_dir, psql_tcp, Sleddog};

const SSL_REQUEST_CODE: u32 = 80_877_103;
const GSSENC_REQUEST_CODE: u32 = 80_877_104;
const CANCEL_REQUEST_CODE: u32 = 80_877_102;

fn trust_proxy(general: &str) -> Sleddog {
    let general = format!("auth_type = \"trust\"\n{general}");
    Sleddog::start(&config(free_port(), pg().port(), &general), USERS)
}

/// An untagged startup-phase packet: length, code, body.
fn untagged(code: u32, body: &[u8]) -> Vec<u8> {
    let mut packet = ((body.len() + 8) as u32).to_be_bytes().to_vec();
    packet.extend_from_slice(&code.to_be_bytes());
    packet.extend_from_slice(body);
    packet
}

fn startup_packet(major: u16, minor: u16, params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (key, value) in params {
        body.extend_from_slice(key.as_bytes());
        body.push(0);
        body.extend_from_slice(value.as_bytes());
        body.push(0);
    }
    body.push(0);
    untagged((u32::from(major) << 16) | u32::from(minor), &body)
}

fn connect_raw(port: u16) -> Raw {
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    Raw { stream }
}

/// Sends a StartupMessage as `sd_scram` (trust) on `raw`; returns every
/// message through the first ReadyForQuery.
fn start(raw: &mut Raw, major: u16, minor: u16, extra: &[(&str, &str)]) -> Vec<Msg> {
    let mut params = vec![("user", "sd_scram"), ("database", "sleddog")];
    params.extend_from_slice(extra);
    raw.send(&startup_packet(major, minor, &params));
    let msgs = raw.until_ready();
    if let Some(error) = msgs.iter().find(|m| m.tag == b'E') {
        panic!("login failed: {:?}", error.field(b'M'));
    }
    msgs
}

fn login(port: u16, minor: u16, extra: &[(&str, &str)]) -> (Raw, Vec<Msg>) {
    let mut raw = connect_raw(port);
    let msgs = start(&mut raw, 3, minor, extra);
    (raw, msgs)
}

/// BackendKeyData: process id and secret key.
fn backend_key(msgs: &[Msg]) -> (u32, Vec<u8>) {
    let key = msgs.iter().find(|m| m.tag == b'K').expect("BackendKeyData");
    let pid = u32::from_be_bytes(key.body[..4].try_into().unwrap());
    (pid, key.body[4..].to_vec())
}

/// Runs a simple query; returns the first column of each row.
fn select(raw: &mut Raw, sql: &str) -> Vec<String> {
    raw.send(&query(sql));
    let msgs = raw.until_ready();
    if let Some(error) = msgs.iter().find(|m| m.tag == b'E') {
        panic!("{sql}: {:?} {:?}", error.sqlstate(), error.field(b'M'));
    }
    msgs.iter()
        .filter(|m| m.tag == b'D')
        .map(|m| {
            let len = i32::from_be_bytes(m.body[2..6].try_into().unwrap());
            String::from_utf8(m.body[6..6 + len as usize].to_vec()).unwrap()
        })
        .collect()
}

#[test]
fn ssl_and_gss_requests_are_declined_then_login_proceeds() {
    let proxy = trust_proxy("");
    let mut raw = connect_raw(proxy.port);
    for code in [SSL_REQUEST_CODE, GSSENC_REQUEST_CODE] {
        raw.send(&untagged(code, &[]));
        let mut answer = [0u8; 1];
        raw.stream.read_exact(&mut answer).unwrap();
        assert_eq!(answer[0], b'N', "answer to {code}");
    }
    start(&mut raw, 3, 0, &[]);
    assert_eq!(select(&mut raw, "select 40 + 2"), ["42"]);
}

#[test]
fn protocol_3_2_gets_a_32_byte_cancel_key_and_3_0_a_4_byte_one() {
    let proxy = trust_proxy("");
    let (mut raw, msgs) = login(proxy.port, 2, &[]);
    assert!(
        msgs.iter().all(|m| m.tag != b'v'),
        "3.2 needs no negotiation"
    );
    assert_eq!(backend_key(&msgs).1.len(), 32);
    assert_eq!(select(&mut raw, "select 1"), ["1"]);

    let (_, msgs) = login(proxy.port, 0, &[]);
    assert_eq!(backend_key(&msgs).1.len(), 4);
}

#[test]
fn newer_minor_and_pq_options_get_negotiate_protocol_version() {
    let proxy = trust_proxy("");
    let (mut raw, msgs) = login(proxy.port, 5, &[("_pq_.foo", "bar")]);
    let negotiate = msgs
        .iter()
        .find(|m| m.tag == b'v')
        .expect("NegotiateProtocolVersion");
    let body = &negotiate.body;
    assert_eq!(
        u32::from_be_bytes(body[..4].try_into().unwrap()),
        2,
        "newest minor"
    );
    assert_eq!(
        u32::from_be_bytes(body[4..8].try_into().unwrap()),
        1,
        "option count"
    );
    assert_eq!(&body[8..], b"_pq_.foo\0");
    // Negotiated down to 3.2: its long cancel key, and a working session.
    assert_eq!(backend_key(&msgs).1.len(), 32);
    assert_eq!(select(&mut raw, "select 'ok'"), ["ok"]);
}

fn cancel_request(port: u16, pid: u32, secret: &[u8]) {
    let mut body = pid.to_be_bytes().to_vec();
    body.extend_from_slice(secret);
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .write_all(&untagged(CANCEL_REQUEST_CODE, &body))
        .unwrap();
    // The proxy closes the connection without a reply.
    let mut rest = Vec::new();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _ = stream.read_to_end(&mut rest);
    assert!(rest.is_empty(), "a reply to CancelRequest: {rest:?}");
}

#[test]
fn cancel_request_with_a_32_byte_key_cancels_pg_sleep() {
    let proxy = trust_proxy("");
    let (mut raw, msgs) = login(proxy.port, 2, &[]);
    let (pid, secret) = backend_key(&msgs);
    raw.send(&query("select pg_sleep(10)"));
    std::thread::sleep(Duration::from_millis(200));

    // The first four bytes of the key are not the key.
    cancel_request(proxy.port, pid, &secret[..4]);
    raw.stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    assert!(
        raw.stream.peek(&mut [0u8; 1]).is_err(),
        "a 4-byte prefix of the key cancelled the query"
    );
    raw.stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();

    let started = Instant::now();
    cancel_request(proxy.port, pid, &secret);
    let reply = raw.until_ready();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let error = reply.iter().find(|m| m.tag == b'E').expect("an error");
    assert_eq!(error.sqlstate().as_deref(), Some("57014"));
    assert_eq!(select(&mut raw, "select 1"), ["1"]);
}

/// One server connection in all: clients that have sent only part of a
/// request (half a message; a Parse/Bind/Execute with no Sync yet) must not
/// hold it while they stall.
#[test]
fn an_incomplete_request_holds_no_server_connection() {
    let general = "default_pool_size = 1\ncheckout_timeout = 1000";
    let toml = config(
        free_port(),
        pg().port(),
        &format!("auth_type = \"trust\"\n{general}"),
    )
    .replace("workers = 2", "workers = 1");
    let proxy = Sleddog::start(&toml, USERS);
    let mut half = Raw::login(proxy.port, "sd_scram", None);
    let mut unsynced = Raw::login(proxy.port, "sd_scram", None);
    let mut other = Raw::login(proxy.port, "sd_scram", None);

    let half_query = query("select 'half'");
    half.send(&half_query[..3]);
    let mut batch = parse("select 'unsynced'");
    batch.extend(bind_no_params());
    batch.extend(execute());
    unsynced.send(&batch);
    std::thread::sleep(Duration::from_millis(100));
    for n in 0..3 {
        assert_eq!(select(&mut other, &format!("select {n}")), [n.to_string()]);
    }

    // Both finish their requests and get their answers.
    half.send(&half_query[3..]);
    assert_eq!(select_reply(&mut half), ["half"]);
    unsynced.send(&sync());
    assert_eq!(select_reply(&mut unsynced), ["unsynced"]);
}

/// The rows of a reply already asked for.
fn select_reply(raw: &mut Raw) -> Vec<String> {
    let msgs = raw.until_ready();
    assert!(msgs.iter().all(|m| m.tag != b'E'), "{msgs:?}");
    msgs.iter()
        .filter(|m| m.tag == b'D')
        .map(|m| String::from_utf8_lossy(&m.body[6..]).into_owned())
        .collect()
}

#[test]
fn psql_runs_a_script() {
    let port = free_port();
    let _proxy = Sleddog::start(&config(port, pg().port(), ""), USERS);
    let script = "\
begin;
create temp table psql_notes (id int primary key, note text);
copy psql_notes from stdin;
1\tone
2\ttwo
\\.
insert into psql_notes select g, 'n' || g from generate_series(3, 100) g;
select count(*) as n, max(id) as top from psql_notes \\gset
commit;
select :n + :top;
";
    let out = psql_tcp(port, "sd_scram", Some("scram_pw"), "sleddog", script).unwrap();
    assert_eq!(out, "200");
    // ON_ERROR_STOP: the first error ends the script with a failure.
    let error = psql_tcp(
        port,
        "sd_scram",
        Some("scram_pw"),
        "sleddog",
        "select 1/0;\nselect 'not reached';\n",
    )
    .unwrap_err();
    assert!(error.contains("division by zero"), "{error}");
    assert!(!error.contains("not reached"), "{error}");
}

fn pgbench_bin() -> PathBuf {
    let dir = pg_bin_dir();
    if dir.as_os_str().is_empty() {
        PathBuf::from("pgbench")
    } else {
        dir.join("pgbench")
    }
}

/// Runs pgbench against sleddog; returns stdout, panicking on failure.
fn pgbench(port: u16, args: &[&str]) -> String {
    let out = Command::new(pgbench_bin())
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "sd_scram"])
        .args(args)
        .arg("sleddog")
        .env("PGPASSWORD", "scram_pw")
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "pgbench {args:?}: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// `tps = 1234.5 (without initial connection time)` and
/// `number of failed transactions: 0 (0.000%)` from a pgbench report.
fn tps_and_failed(report: &str) -> (f64, u64) {
    let tps = report
        .lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no tps in:\n{report}"));
    let failed = report
        .lines()
        .find_map(|l| l.strip_prefix("number of failed transactions: "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no failed count in:\n{report}"));
    (tps, failed)
}

#[test]
fn pgbench_initializes_and_runs_in_every_protocol_mode() {
    let port = free_port();
    let _proxy = Sleddog::start(&config(port, pg().port(), "default_pool_size = 4"), USERS);
    pgbench(port, &["-i", "-s", "1", "-q"]);
    for mode in ["simple", "extended", "prepared"] {
        let report = pgbench(port, &["-n", "-T", "3", "-c", "4", "-S", "-M", mode]);
        let (tps, failed) = tps_and_failed(&report);
        assert!(tps > 0.0, "{mode}: {report}");
        assert_eq!(failed, 0, "{mode}: {report}");
    }
}
