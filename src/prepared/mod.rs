//! Prepared statements under transaction pooling.
//!
//! Clients name their statements as if they owned a server connection; under
//! transaction pooling they do not. So each core keeps one cache of distinct
//! statements (`cache`), each under a server-side name of sleddog's own; each
//! client keeps its names mapped onto those (`client`); each server connection
//! remembers which it has prepared (`server`). A batch of client messages is
//! rewritten on its way to the server (`rewrite`), and the server's replies go
//! back through a reply plan (`plan`) that hides the replies to messages
//! sleddog added and answers the ones it kept from the server.
//!
//! Must not: do I/O, or know about pools and sessions beyond these books.

mod cache;
mod client;
mod plan;
mod rewrite;
mod server;

pub use cache::{Statement, StatementCache, StatementId};
pub use client::ClientStatements;
pub use plan::{ReplyPlan, Verdict};
pub use rewrite::{handles_query, needs_rewrite, rewrite_batch, Books};
pub use server::ServerStatements;

/// Prefix of the server-side names sleddog gives statements. Names a client
/// uses are never sent to the server, so they cannot collide with these.
pub const SERVER_NAME_PREFIX: &str = "__sleddog_";
