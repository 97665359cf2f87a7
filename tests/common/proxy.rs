//! Helpers for tests that talk to sleddog: configs, tokio-postgres clients, and a
//! raw protocol client for exchanges a driver will not produce.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// users.toml with every harness role; each logs in to sleddog with the same
/// password it has on Postgres.
pub const USERS: &str = r#"
[[users]]
name = "sd_scram"
database = "sleddog"
password = "scram_pw"

[[users]]
name = "sd_md5"
database = "sleddog"
password = "md5_pw"

[[users]]
name = "sd_plain"
database = "sleddog"
password = "plain_pw"

[[users]]
name = "sd_trust"
database = "sleddog"
"#;

/// A pgdog.toml for one database `sleddog` on the Postgres at `pg_port`;
/// `general` lines are added to the [general] table.
pub fn config(port: u16, pg_port: u16, general: &str) -> String {
    format!(
        "[general]\nhost = \"127.0.0.1\"\nport = {port}\nworkers = 2\n{general}\n\n\
         [[databases]]\nname = \"sleddog\"\nhost = \"127.0.0.1\"\nport = {pg_port}\n"
    )
}

pub fn conninfo(port: u16, user: &str, password: &str) -> String {
    format!(
        "host=127.0.0.1 port={port} user={user} password={password} dbname=sleddog \
         connect_timeout=10"
    )
}

/// Connects with tokio-postgres and drives the connection in the background.
pub async fn connect(port: u16, user: &str, password: &str) -> tokio_postgres::Client {
    try_connect(port, user, password)
        .await
        .unwrap_or_else(|e| panic!("connect as {user}: {e}"))
}

pub async fn try_connect(
    port: u16,
    user: &str,
    password: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) =
        tokio_postgres::connect(&conninfo(port, user, password), tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// The SQLSTATE of a tokio-postgres error, if the server sent one.
pub fn sqlstate(error: &tokio_postgres::Error) -> Option<String> {
    error.as_db_error().map(|e| e.code().code().to_owned())
}

/// A blocking client speaking raw protocol bytes.
pub struct Raw {
    pub stream: TcpStream,
}

/// One backend message: tag and body.
#[derive(Debug, Clone)]
pub struct Msg {
    pub tag: u8,
    pub body: Vec<u8>,
}

impl Msg {
    /// The SQLSTATE of an ErrorResponse.
    pub fn sqlstate(&self) -> Option<String> {
        self.field(b'C')
    }

    /// (name, value) of a ParameterStatus.
    pub fn parameter_status(&self) -> (String, String) {
        let mut parts = self.body.split(|b| *b == 0);
        let mut next = || String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
        (next(), next())
    }

    pub fn field(&self, code: u8) -> Option<String> {
        let mut fields = self.body.split(|b| *b == 0);
        fields.find_map(|f| {
            (f.first() == Some(&code)).then(|| String::from_utf8_lossy(&f[1..]).into_owned())
        })
    }
}

pub fn tagged(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

pub fn query(sql: &str) -> Vec<u8> {
    let mut body = sql.as_bytes().to_vec();
    body.push(0);
    tagged(b'Q', &body)
}

pub fn parse(sql: &str) -> Vec<u8> {
    let mut body = vec![0u8]; // unnamed statement
    body.extend_from_slice(sql.as_bytes());
    body.extend_from_slice(&[0, 0, 0]); // no parameter types
    tagged(b'P', &body)
}

pub fn bind_no_params() -> Vec<u8> {
    tagged(b'B', &[0, 0, 0, 0, 0, 0, 0, 0])
}

pub fn execute() -> Vec<u8> {
    tagged(b'E', &[0, 0, 0, 0, 0])
}

pub fn sync() -> Vec<u8> {
    tagged(b'S', &[])
}

pub fn flush() -> Vec<u8> {
    tagged(b'H', &[])
}

impl Raw {
    /// Connects and logs in as `user` with cleartext, md5-less trust or a
    /// cleartext password (sleddog must run with auth_type "trust" or "plain").
    pub fn login(port: u16, user: &str, password: Option<&str>) -> Raw {
        Raw::login_with(port, user, password, &[]).0
    }

    /// Logs in with `extra` startup parameters; returns the connection and
    /// the ParameterStatus values the login reported.
    pub fn login_with(
        port: u16,
        user: &str,
        password: Option<&str>,
        extra: &[(&str, &str)],
    ) -> (Raw, Vec<(String, String)>) {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to sleddog");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut raw = Raw { stream };
        let mut body = Vec::new();
        body.extend_from_slice(&196608u32.to_be_bytes());
        let mut reported = Vec::new();
        let base = [("user", user), ("database", "sleddog")];
        for &(k, v) in base.iter().chain(extra) {
            body.extend_from_slice(k.as_bytes());
            body.push(0);
            body.extend_from_slice(v.as_bytes());
            body.push(0);
        }
        body.push(0);
        let mut packet = ((body.len() + 4) as u32).to_be_bytes().to_vec();
        packet.extend_from_slice(&body);
        raw.send(&packet);
        loop {
            let msg = raw.recv().expect("login reply");
            match msg.tag {
                b'R' if msg.body[..4] == [0, 0, 0, 3] => {
                    let mut pw = password.expect("password requested").as_bytes().to_vec();
                    pw.push(0);
                    raw.send(&tagged(b'p', &pw));
                }
                b'R' => {}
                b'E' => panic!("login failed: {:?}", msg.field(b'M')),
                b'S' => reported.push(msg.parameter_status()),
                b'Z' => return (raw, reported),
                _ => {}
            }
        }
    }

    /// A second handle on the socket, to write from another thread while
    /// this one reads.
    pub fn writer(&self) -> TcpStream {
        self.stream.try_clone().expect("clone the socket")
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send to sleddog");
    }

    /// Reads one message; None when the connection closed.
    pub fn recv(&mut self) -> Option<Msg> {
        let mut header = [0u8; 5];
        self.stream.read_exact(&mut header).ok()?;
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        let mut body = vec![0u8; len.saturating_sub(4)];
        self.stream.read_exact(&mut body).ok()?;
        Some(Msg {
            tag: header[0],
            body,
        })
    }

    /// Reads through the next ReadyForQuery; returns every message.
    pub fn until_ready(&mut self) -> Vec<Msg> {
        let mut msgs = Vec::new();
        loop {
            let msg = self.recv().expect("connection closed before ReadyForQuery");
            let done = msg.tag == b'Z';
            msgs.push(msg);
            if done {
                return msgs;
            }
        }
    }

    /// Closes the socket without a Terminate message (a crashed client).
    pub fn kill(self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}
