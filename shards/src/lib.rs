//! Postgres-compatible sharding functions and shard maps. Pure: no I/O.
