//! The client's socket with its read buffer and a write buffer for messages the
//! proxy makes itself (forwarded server bytes are written straight from the
//! server connection's buffer, without a copy).

use bytes::BytesMut;

use crate::pool::server_conn::read_more;
use crate::protocol::write::{self, Severity};
use crate::rt::{AsyncWriteExt, TcpStream};

pub struct Client {
    pub stream: TcpStream,
    /// Bytes read from the client and not yet handled.
    pub buf: BytesMut,
    /// Messages the proxy composes for the client, written at the next flush.
    pub out: BytesMut,
}

impl Client {
    pub fn new(stream: TcpStream) -> Client {
        Client {
            stream,
            buf: BytesMut::with_capacity(8 * 1024),
            out: BytesMut::with_capacity(1024),
        }
    }

    /// Reads what is available; 0 means the client closed.
    pub async fn read_more(&mut self) -> std::io::Result<usize> {
        read_more(&mut self.stream, &mut self.buf).await
    }

    /// Writes `out` in one go.
    pub async fn flush(&mut self) -> std::io::Result<()> {
        if !self.out.is_empty() {
            self.stream.write_all(&self.out).await?;
            self.out.clear();
        }
        Ok(())
    }

    /// Sends a FATAL error and gives up on the client; write errors are moot.
    pub async fn fatal(&mut self, sqlstate: &str, message: &str) {
        write::error_response(&mut self.out, Severity::Fatal, sqlstate, message, None);
        let _ = self.flush().await;
    }
}
