//! PostgreSQL wire protocol v3 codec: framing, decoding and encoding of messages.
//!
//! Owns every byte-level fact about the protocol ("protocol-overview",
//! "protocol-message-formats" in the PostgreSQL docs). It is the only module
//! that may match on tag bytes such as `b'Q'`; the rest of sleddog matches on
//! [`FrontendKind`], [`BackendKind`], [`FrontendMessage`] and [`BackendMessage`].
//!
//! It does no I/O, keeps no state between calls, never panics on input and
//! never allocates more than a message header allows. The hot path uses two
//! levels: [`frame::header`]/[`frame::split`] plus `*Kind::from_tag` to forward
//! whole messages cheaply, and `*Message::decode` only when the contents matter.

pub mod backend;
pub mod error;
pub mod frame;
pub mod frontend;
pub mod startup;
pub mod write;

mod read;

#[cfg(test)]
mod fuzz;

pub use backend::{Authentication, BackendKind, BackendMessage, ErrorFields, TransactionStatus};
pub use error::ProtocolError;
pub use frame::Header;
pub use frontend::{DescribeTarget, FrontendKind, FrontendMessage};
pub use startup::{ProtocolVersion, StartupPacket};
pub use write::Severity;

/// Limit for one tagged message including its tag and length field. Postgres
/// itself caps most messages at 1 GB; 64 MB keeps one client from pinning
/// much memory while still fitting large COPY rows and bind parameters.
pub const DEFAULT_MAX_MESSAGE_LEN: usize = 64 * 1024 * 1024;
