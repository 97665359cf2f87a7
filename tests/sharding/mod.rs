//! Support for `tests/sharding_diff.rs`: the data set, the query corpus and
//! result comparison. Not a test target of its own (no `main.rs`).

pub mod corpus;
pub mod data;
pub mod value;
