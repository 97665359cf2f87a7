//! Per-core server connection pools.
//!
//! Each core owns its pools outright (`Rc`, `Cell`): no locks, no atomics. A pool
//! serves one (database, user) on one server; a [`Cluster`] groups the pools of
//! every server behind one logical database. Pool sizes in config are per
//! process; each core gets `ceil(size / workers)` (see `Snapshot::per_core_share`).
//! Server addresses come resolved in the snapshot: nothing here calls DNS.

pub mod balance;
pub mod login;
pub mod permits;
pub mod server_conn;
pub mod server_pool;

use std::cell::Cell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Instant;

pub use server_conn::{ScramCache, ServerConn, ServerError, ServerLogin};
pub use server_pool::{CheckoutError, CheckoutLimits, IdleLimits, PooledConn, ServerPool};

use crate::config::{PoolerMode, Role};
use crate::control::health::Health;
use crate::control::snapshot::Snapshot;
use crate::ids::ServerId;

/// One server of a cluster and its pool on this core.
pub struct ClusterServer {
    pub id: ServerId,
    pub role: Role,
    pub shard: u16,
    pub pool: Rc<ServerPool>,
}

/// Every server behind one (database, user) login, on this core.
pub struct Cluster {
    pub database: String,
    pub user: String,
    pub mode: PoolerMode,
    pub servers: Vec<ClusterServer>,
    /// Index into `servers` of where writes go: chosen at build, moved by
    /// the control thread's health snapshots where roles are `auto`.
    primary: Cell<usize>,
}

impl Cluster {
    /// Number of distinct shards.
    pub fn shard_count(&self) -> usize {
        let mut shards: Vec<u16> = self.servers.iter().map(|s| s.shard).collect();
        shards.sort_unstable();
        shards.dedup();
        shards.len()
    }

    /// The server writes go to.
    #[inline]
    pub fn primary(&self) -> &Rc<ServerPool> {
        &self.servers[self.primary.get()].pool
    }

    /// Follows the elected primary of the first shard when its servers have
    /// `role = "auto"`. With none elected, writes keep going where they went
    /// (a standby refuses them with its own error).
    fn apply_health(&self, health: &Health) {
        let first_shard = self.servers.iter().map(|s| s.shard).min().unwrap_or(0);
        let Some(elected) = health.primaries.get(&(self.database.clone(), first_shard)) else {
            return;
        };
        let found = self
            .servers
            .iter()
            .position(|s| s.shard == first_shard && s.role == Role::Auto && &s.id == elected);
        if let Some(index) = found {
            if index != self.primary.get() {
                tracing::info!(database = %self.database, host = %elected.host, port = elected.port, "primary moved");
                self.primary.set(index);
            }
        }
    }

    /// The primary of the first shard, else its first server. (Replica routing
    /// and failover build on this.)
    fn choose_primary(servers: &[ClusterServer]) -> usize {
        let first_shard = servers.iter().map(|s| s.shard).min().unwrap_or(0);
        let on_shard = || {
            servers
                .iter()
                .enumerate()
                .filter(move |(_, s)| s.shard == first_shard)
        };
        on_shard()
            .find(|(_, s)| s.role == Role::Primary)
            .or_else(|| on_shard().next())
            .map(|(i, _)| i)
            .unwrap_or(0)
    }
}

/// All pools of one core.
#[derive(Default)]
pub struct Pools {
    clusters: HashMap<(String, String), Rc<Cluster>>,
    scram: Rc<ScramCache>,
}

impl Pools {
    /// Brings the pools in line with a new snapshot: pools whose server, login
    /// and size are unchanged carry over with their connections; the others are
    /// retired (idle connections close now, busy ones at checkin).
    pub fn apply(&mut self, snapshot: &Snapshot) {
        let limits = IdleLimits {
            idle: snapshot.timeouts.idle,
            lifetime: snapshot.timeouts.server_lifetime,
        };
        let mut old: Vec<Rc<ServerPool>> = self
            .clusters
            .values()
            .flat_map(|c| c.servers.iter().map(|s| s.pool.clone()))
            .collect();
        let mut clusters = HashMap::with_capacity(snapshot.pools.len());
        for (key, spec) in &snapshot.pools {
            let size = snapshot.per_core_share(spec.pool_size);
            let min_size = snapshot.per_core_share(spec.min_pool_size);
            let servers: Vec<ClusterServer> = spec
                .servers
                .iter()
                .map(|server| {
                    let login = ServerLogin {
                        user: server.user.clone(),
                        password: server.password.clone(),
                        database: server.database_name.clone(),
                    };
                    let addrs = snapshot.addrs.get(&server.host, server.port);
                    let reused = old
                        .iter()
                        .position(|p| p.same_as(&server.host, server.port, &addrs, &login, size))
                        .map(|i| old.swap_remove(i));
                    let pool = match reused {
                        Some(pool) => {
                            pool.set_limits(limits);
                            pool
                        }
                        None => ServerPool::new(
                            server.host.clone(),
                            server.port,
                            addrs,
                            login,
                            size,
                            min_size,
                            limits,
                            self.scram.clone(),
                        ),
                    };
                    ClusterServer {
                        id: ServerId {
                            host: server.host.clone(),
                            port: server.port,
                            database_name: server.database_name.clone(),
                        },
                        role: server.role,
                        shard: server.shard,
                        pool,
                    }
                })
                .collect();
            let servers: Vec<ClusterServer> = servers;
            if servers.is_empty() {
                continue; // config validation rejects this; never index an empty cluster
            }
            let cluster = Cluster {
                database: spec.database.clone(),
                user: spec.user.clone(),
                mode: spec.pooler_mode,
                primary: Cell::new(Cluster::choose_primary(&servers)),
                servers,
            };
            clusters.insert(key.clone(), Rc::new(cluster));
        }
        for pool in old {
            pool.retire();
        }
        self.clusters = clusters;
    }

    /// A new health snapshot: clusters follow their elected primaries.
    pub fn apply_health(&self, health: &Health) {
        for cluster in self.clusters.values() {
            cluster.apply_health(health);
        }
    }

    pub fn cluster(&self, database: &str, user: &str) -> Option<Rc<Cluster>> {
        // Login path only; the tuple key allocation is fine here.
        self.clusters
            .get(&(database.to_owned(), user.to_owned()))
            .cloned()
    }

    /// Every pool on this core, for maintenance.
    pub fn all(&self) -> Vec<Rc<ServerPool>> {
        self.clusters
            .values()
            .flat_map(|c| c.servers.iter().map(|s| s.pool.clone()))
            .collect()
    }

    /// Runs idle/lifetime expiry and min_pool_size warm-up on every pool.
    pub async fn maintain(pools: Vec<Rc<ServerPool>>, now: Instant, snapshot: &Snapshot) {
        for pool in pools {
            pool.maintain(now, snapshot.timeouts.connect).await;
        }
    }
}
