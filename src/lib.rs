//! sleddog: a thread-per-core PostgreSQL pooler, load balancer and sharding proxy.
//!
//! Module map (the directory tree is the architecture diagram):
//! - `rt`        the only module that names glommio: executors, spawn, timers, TCP.
//! - `protocol`  PostgreSQL wire protocol v3 codec; no I/O.
//! - `auth`      SCRAM-SHA-256 and md5, both sides; sans-IO.
//! - `config`    pgdog.toml + users.toml → validated immutable snapshot.
//! - `control`   the control thread: config reload, signals, cancel routing, shutdown.
//! - `core`      one pinned executor per CPU: listener, per-core state, inbox.
//! - `fanout`    cross-shard queries: the query each shard gets, and the in-memory merge; no I/O.
//! - `pool`      per-core server connection pools.
//! - `prepared`  prepared statements shared under transaction pooling; no I/O.
//! - `pubsub`    LISTEN/NOTIFY under transaction pooling: per-core listener connections.
//! - `router`    query classification for read/write routing (pg_query) and its per-core cache; no I/O.
//! - `session`   one client connection: startup, auth, query loop.
pub mod auth;
pub mod config;
pub mod control;
pub mod core;
pub mod fanout;
pub mod ids;
pub mod pool;
pub mod prepared;
pub mod protocol;
pub mod pubsub;
pub mod router;
pub mod rt;
pub mod session;
#[cfg(test)]
mod test_rng;
