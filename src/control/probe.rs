//! A blocking connection from the control thread's health monitor to one
//! Postgres server: log in, run a query of sleddog's own, read its rows. Every
//! read and write is bounded by the probe's timeout, so a server that hangs
//! cannot hang the monitor.
//!
//! Must not: run on a core (it blocks), or be used for client traffic.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use crate::auth;
use crate::pool::login::{row_values, LoginSteps, OwnQueryReply};
use crate::pool::server_conn::{ServerError, ServerLogin};
use crate::protocol::{frame, write, DEFAULT_MAX_MESSAGE_LEN};

/// The application_name probes log in with, so they can be told apart in
/// `pg_stat_activity`.
pub const PROBE_APPLICATION_NAME: &str = "sleddog health";

pub struct Probe {
    stream: TcpStream,
    buf: BytesMut,
    params: Vec<(String, String)>,
}

impl Probe {
    /// Connects and logs in; each step waits at most `timeout`.
    pub fn connect(
        addr: SocketAddr,
        login: &ServerLogin,
        timeout: Duration,
    ) -> Result<Probe, ServerError> {
        let timeout = timeout.max(Duration::from_millis(1));
        let stream = TcpStream::connect_timeout(&addr, timeout).map_err(|error| {
            if error.kind() == std::io::ErrorKind::TimedOut {
                ServerError::ConnectTimeout
            } else {
                ServerError::Io(error)
            }
        })?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        stream.set_nodelay(true)?;
        let mut probe = Probe {
            stream,
            buf: BytesMut::with_capacity(4096),
            params: Vec::new(),
        };
        let mut out = BytesMut::new();
        let mut steps = LoginSteps::start(login, PROBE_APPLICATION_NAME, &mut out);
        loop {
            if !out.is_empty() {
                probe.stream.write_all(&out)?;
                out.clear();
            }
            let message = probe.read_message()?;
            let salted = |password: &str, salt: &[u8], iterations: u32| {
                auth::salted_password(password, salt, iterations)
            };
            if let Some(done) = steps.on_message(&message, salted, &mut out)? {
                probe.params = done.params;
                return Ok(probe);
            }
        }
    }

    /// Runs one simple query and returns its rows as text (None for NULL).
    pub fn query(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, ServerError> {
        let mut out = BytesMut::new();
        write::query(&mut out, sql);
        self.stream.write_all(&out)?;
        let mut reply = OwnQueryReply::default();
        loop {
            let message = self.read_message()?;
            if let Some(rows) = reply.on_message(&message, &mut self.params)? {
                return rows.iter().map(|row| row_values(row)).collect();
            }
        }
    }

    /// A ParameterStatus value the server reported.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn read_message(&mut self) -> Result<Bytes, ServerError> {
        loop {
            if let Some(message) = frame::split(&mut self.buf, DEFAULT_MAX_MESSAGE_LEN)? {
                return Ok(message);
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(ServerError::Closed);
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}
