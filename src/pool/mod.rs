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

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shards::ShardingSchema;

use balance::{Balancer, BanOutcome, BanReason, Bans, Intent, Target, TargetId, TargetRole};

pub use server_conn::{ScramCache, ServerConn, ServerError, ServerLogin};
pub use server_pool::{CheckoutError, CheckoutLimits, IdleLimits, PooledConn, ServerPool};

use crate::config::{PoolerMode, Role};
use crate::control::health::Health;
use crate::control::snapshot::Snapshot;
use crate::ids::ServerId;
use crate::router::plans::PlanCache;

/// One server of a cluster and its pool on this core.
pub struct ClusterServer {
    pub id: ServerId,
    pub role: Role,
    /// `lb_weight`, for `weighted_round_robin`.
    pub weight: u8,
    pub shard: u16,
    pub pool: Rc<ServerPool>,
}

/// Every server behind one (database, user) login, on this core.
pub struct Cluster {
    pub database: String,
    pub user: String,
    pub mode: PoolerMode,
    pub servers: Vec<ClusterServer>,
    /// One group per shard number `0..shards`: its servers, primary,
    /// balancer and bans. A cluster of one shard has one group.
    groups: Vec<ShardGroup>,
    limits: BanLimits,
    /// The sharded tables, schemas and omnisharded tables.
    pub sharding: Arc<ShardingSchema>,
    /// `cross_shard_disabled`: a request for several shards is refused.
    pub cross_shard_disabled: bool,
    /// Sharding plans by statement text (a cluster of several shards).
    pub plans: RefCell<PlanCache>,
    /// `omnisharded_sticky`: a session's reads that any shard can answer
    /// stay on one shard.
    pub omnisharded_sticky: bool,
    /// Turns for requests any shard can answer, spread over the shards.
    any_turn: Cell<usize>,
}

/// The servers of one shard: where its writes go, and load balancing and
/// bans among them.
struct ShardGroup {
    /// Indices into `Cluster::servers`; the load balancer knows the n-th as
    /// `TargetId(n)`. Fixed at build.
    servers: Vec<usize>,
    /// Index into `Cluster::servers` of where writes go: chosen at build,
    /// moved by the control thread's health snapshots where roles are `auto`.
    primary: Cell<usize>,
    /// `scratch` holds the balancer's view of the servers for one pick.
    balancer: RefCell<Balancer>,
    scratch: RefCell<Vec<Target>>,
    bans: RefCell<Bans>,
}

/// When a server leaves rotation.
#[derive(Debug, Clone, Copy)]
pub struct BanLimits {
    pub ban_timeout: Duration,
    pub replica_lag: Option<Duration>,
    pub replica_lag_bytes: Option<u64>,
}

impl Cluster {
    /// Number of shards.
    #[inline]
    pub fn shard_count(&self) -> usize {
        self.groups.len()
    }

    /// The server writes to shard 0 go to (the only shard of an unsharded
    /// cluster).
    #[inline]
    pub fn primary(&self) -> &Rc<ServerPool> {
        &self.servers[self.groups[0].primary.get()].pool
    }

    /// How many servers `shard` has.
    pub fn shard_servers(&self, shard: usize) -> usize {
        self.groups
            .get(shard)
            .map_or(0, |group| group.servers.len())
    }

    /// The next shard in turn for a request any shard can answer
    /// (round robin on this core).
    pub fn any_shard(&self) -> usize {
        let turn = self.any_turn.get();
        self.any_turn.set(turn.wrapping_add(1));
        turn % self.groups.len()
    }

    /// The group a server belongs to, and its `TargetId` there.
    fn group_of(&self, index: usize) -> Option<(&ShardGroup, TargetId)> {
        let group = self
            .groups
            .get(usize::from(self.servers.get(index)?.shard))?;
        let n = group.servers.iter().position(|&i| i == index)?;
        Some((group, TargetId(n as u16)))
    }

    /// Where to try a checkout on `shard` for `intent`, best first, as
    /// indices into `servers`, written to `out`: the shard's primary for
    /// writes (and when it has one server); for reads, what the balancer
    /// picks among the shard's servers in rotation.
    pub fn candidates(&self, shard: usize, intent: Intent, now: Instant, out: &mut Vec<usize>) {
        out.clear();
        let Some(group) = self.groups.get(shard) else {
            return;
        };
        if group.servers.len() == 1 || intent == Intent::Write {
            out.push(group.primary.get());
            return;
        }
        let primary = group.primary.get();
        let mut targets = group.scratch.borrow_mut();
        targets.clear();
        targets.extend(group.servers.iter().enumerate().map(|(n, &index)| {
            let server = &self.servers[index];
            let role = if index == primary {
                TargetRole::Primary
            } else if server.role == Role::Primary {
                // A configured primary that failover moved away from.
                TargetRole::Replica
            } else {
                TargetRole::from(server.role)
            };
            Target {
                id: TargetId(n as u16),
                role,
                weight: server.weight,
                active: server
                    .pool
                    .open_count()
                    .saturating_sub(server.pool.idle_count()),
            }
        }));
        let bans = group.bans.borrow();
        let mut balancer = group.balancer.borrow_mut();
        let order = balancer.candidates(intent, &targets, &bans, now);
        out.extend(order.iter().map(|id| group.servers[usize::from(id.0)]));
    }

    /// A checkout on `servers[index]` failed: it leaves rotation for
    /// `ban_timeout` (unless it is the last server of its shard in
    /// rotation). The server, for the caller to report to control, when it
    /// is one the balancer chooses from.
    pub fn ban(&self, index: usize, reason: BanReason, now: Instant) -> Option<&ServerId> {
        self.ban_for(index, reason, now, self.limits.ban_timeout)
    }

    /// True while `servers[index]` is out of rotation on this core.
    fn is_banned(&self, index: usize, now: Instant) -> bool {
        self.group_of(index)
            .is_some_and(|(group, target)| group.bans.borrow().is_banned(target, now))
    }

    fn ban_for(
        &self,
        index: usize,
        reason: BanReason,
        now: Instant,
        timeout: Duration,
    ) -> Option<&ServerId> {
        let (group, target) = self.group_of(index)?;
        if group.servers.len() < 2 {
            return None; // nothing to choose from: no bans
        }
        let outcome = group.bans.borrow_mut().ban(target, now, timeout, reason);
        let server = &self.servers[index].id;
        tracing::warn!(database = %self.database, host = %server.host, port = server.port, ?reason, ?outcome, "server banned");
        (outcome == BanOutcome::Banned).then_some(server)
    }

    /// Each shard follows its elected primary when its servers have
    /// `role = "auto"` (with none elected, writes keep going where they went,
    /// and a standby refuses them with its own error); bans servers the
    /// monitors see down or lagging past `ban_replica_lag(_bytes)`, and lets
    /// them back once they are well; bans servers a core reported, until
    /// the time control set, so every core has them out alike.
    fn apply_health(&self, health: &Health, now: Instant) {
        for (shard, group) in self.groups.iter().enumerate() {
            self.follow_primary(group, shard as u16, health);
            if group.servers.len() > 1 {
                self.apply_bans(group, health, now);
            }
        }
    }

    fn follow_primary(&self, group: &ShardGroup, shard: u16, health: &Health) {
        let Some(elected) = health.primaries.get(&(self.database.clone(), shard)) else {
            return;
        };
        let found = group.servers.iter().copied().find(|&i| {
            let server = &self.servers[i];
            server.role == Role::Auto && &server.id == elected
        });
        if let Some(index) = found {
            if index != group.primary.get() {
                tracing::info!(database = %self.database, shard, host = %elected.host, port = elected.port, "primary moved");
                group.primary.set(index);
            }
        }
    }

    fn apply_bans(&self, group: &ShardGroup, health: &Health, now: Instant) {
        for (n, &index) in group.servers.iter().enumerate() {
            let Some(seen) = health.get(&self.servers[index].id) else {
                continue;
            };
            let lagging = seen.in_recovery == Some(true)
                && (self
                    .limits
                    .replica_lag_bytes
                    .zip(seen.lag_bytes)
                    .is_some_and(|(limit, lag)| lag > limit)
                    || self
                        .limits
                        .replica_lag
                        .zip(seen.replay_delay)
                        .is_some_and(|(limit, lag)| lag > limit));
            let target = TargetId(n as u16);
            if !seen.up {
                self.ban(index, BanReason::HealthCheckFailed, now);
            } else if lagging {
                self.ban(index, BanReason::ReplicaLag, now);
            } else {
                let mut bans = group.bans.borrow_mut();
                // A failure a core reported stands until its time is up,
                // even when the monitor can reach the server.
                let reported = health
                    .reported
                    .get(&self.servers[index].id)
                    .is_some_and(|ban| ban.until > now);
                let by_health = !reported
                    && bans.ban_of(target, now).is_some_and(|ban| {
                        matches!(
                            ban.reason,
                            BanReason::HealthCheckFailed | BanReason::ReplicaLag
                        )
                    });
                if by_health {
                    bans.unban(target);
                    tracing::info!(database = %self.database, host = %self.servers[index].id.host, port = self.servers[index].id.port, "server back in rotation");
                }
            }
        }
        for (n, &index) in group.servers.iter().enumerate() {
            let Some(reported) = health.reported.get(&self.servers[index].id) else {
                continue;
            };
            let target = TargetId(n as u16);
            let bans = group.bans.borrow();
            let held = bans.ban_of(target, now).is_some();
            let last = !bans.others_in_rotation(target, now);
            drop(bans);
            // Over, out already (the core that reported it), or the last
            // server this core has in rotation: another core's report does
            // not set off this core's failsafe (which would lift its bans).
            if reported.until <= now || held || last {
                continue;
            }
            self.ban_for(index, reported.reason, now, reported.until - now);
        }
    }

    /// One group per shard number up to the highest; each group's primary is
    /// its `role = "primary"` server, else its first.
    fn groups(servers: &[ClusterServer], snapshot: &Snapshot) -> Vec<ShardGroup> {
        let shards = servers
            .iter()
            .map(|s| usize::from(s.shard) + 1)
            .max()
            .unwrap_or(1);
        (0..shards)
            .map(|shard| {
                let members: Vec<usize> = (0..servers.len())
                    .filter(|&i| usize::from(servers[i].shard) == shard)
                    .collect();
                let primary = members
                    .iter()
                    .copied()
                    .find(|&i| servers[i].role == Role::Primary)
                    .or_else(|| members.first().copied())
                    .unwrap_or(0);
                ShardGroup {
                    primary: Cell::new(primary),
                    scratch: RefCell::new(Vec::new()),
                    balancer: RefCell::new(Balancer::new(
                        snapshot.balancing.strategy,
                        snapshot.balancing.split,
                        balance::os_seed(),
                    )),
                    bans: RefCell::new(Bans::new(members.len())),
                    servers: members,
                }
            })
            .collect()
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
            healthcheck_interval: snapshot.health.healthcheck_interval,
            healthcheck_timeout: snapshot.health.healthcheck_timeout,
            idle_healthcheck_interval: snapshot.health.idle_healthcheck_interval,
            idle_healthcheck_delay: snapshot.health.idle_healthcheck_delay,
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
                        weight: server.lb_weight,
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
                groups: Cluster::groups(&servers, snapshot),
                sharding: spec.sharding.clone(),
                cross_shard_disabled: spec.cross_shard_disabled,
                plans: RefCell::new(PlanCache::default()),
                omnisharded_sticky: spec.omnisharded_sticky,
                any_turn: Cell::new(0),
                limits: BanLimits {
                    ban_timeout: snapshot.health.ban_timeout,
                    replica_lag: snapshot.health.ban_replica_lag,
                    replica_lag_bytes: snapshot.health.ban_replica_lag_bytes,
                },
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
        let now = Instant::now();
        for cluster in self.clusters.values() {
            cluster.apply_health(health, now);
        }
    }

    pub fn cluster(&self, database: &str, user: &str) -> Option<Rc<Cluster>> {
        // Login path only; the tuple key allocation is fine here.
        self.clusters
            .get(&(database.to_owned(), user.to_owned()))
            .cloned()
    }

    /// Every cluster on this core, for maintenance.
    pub fn clusters(&self) -> Vec<Rc<Cluster>> {
        self.clusters.values().cloned().collect()
    }

    /// Runs idle/lifetime expiry, min_pool_size warm-up and idle health
    /// checks on every pool. A server that fails its idle check, or cannot
    /// be connected to for warm-up, is banned here (where the cluster has a
    /// choice of servers); it is returned for the core to report to control.
    pub async fn maintain(
        clusters: Vec<Rc<Cluster>>,
        now: Instant,
        snapshot: &Snapshot,
    ) -> Vec<(ServerId, BanReason)> {
        let mut failed = Vec::new();
        for cluster in clusters {
            for (index, server) in cluster.servers.iter().enumerate() {
                // A banned server is not warmed up: it is out of rotation
                // precisely because connecting to it fails.
                let warm = !cluster.is_banned(index, now);
                let connect = snapshot.timeouts.connect;
                let failure = if !server.pool.maintain(now, connect, warm).await {
                    Some(BanReason::ConnectFailed)
                } else if !server.pool.idle_check(Instant::now()).await {
                    Some(BanReason::HealthCheckFailed)
                } else {
                    None
                };
                let Some(reason) = failure else {
                    continue;
                };
                if let Some(id) = cluster.ban(index, reason, Instant::now()) {
                    failed.push((id.clone(), reason));
                }
            }
        }
        failed
    }
}
