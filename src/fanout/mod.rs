//! Cross-shard queries: what to send every shard and how to merge the
//! replies in memory, on the client's core. No I/O here.
