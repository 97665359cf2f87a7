//! Cross-shard queries: what to send every shard and how to merge the
//! replies in memory, on the client's core. No I/O here.
//!
//! - `plan`: from a SELECT's parse tree, the query every shard runs (with
//!   helper columns for sorting and aggregates) and the [`plan::MergePlan`].
//! - `datum`: result values decoded from text or binary, compared, and the
//!   partial aggregates combined with Postgres's types and precision.
//! - `merge`: the sans-IO merger: RowDescriptions and DataRows in, the
//!   client's RowDescription and DataRows out.

pub mod aggregate;
pub mod assemble;
pub mod datum;
pub mod merge;
pub mod numeric;
pub mod plan;
#[cfg(test)]
pub(crate) mod test_bodies;

/// A cross-shard query sleddog cannot answer correctly. Sent to the client as
/// an ErrorResponse with SQLSTATE 0A000 (feature_not_supported), never run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsupported {
    /// What is unsupported, e.g. "window functions in a cross-shard query".
    pub what: String,
    /// How to run it anyway: a sharding key, a comment, `SET pgdog.shard`.
    pub hint: String,
}

impl Unsupported {
    /// The usual hint: route the query to one shard.
    pub fn route_hint() -> String {
        "send it to one shard: add the sharding key to WHERE, a /* pgdog_shard: N */ comment, \
         or SET pgdog.shard TO N"
            .to_string()
    }
}

impl std::fmt::Display for Unsupported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "not supported across shards: {}", self.what)
    }
}
