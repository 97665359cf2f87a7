//! The validated config snapshot and the pools it implies.
//!
//! Owns the public config types and `Config::pools`, the one place that
//! applies PgDog's override order (users.toml > [[databases]] > [general]).
//! Values here are already validated; this file must not parse or reject.

use std::collections::HashMap;
use std::sync::Arc;

use shards::ShardingSchema;

/// How long a client keeps a server connection.
/// Source: pgdog-config/src/pooling.rs (`PoolerMode`, snake_case in TOML).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum PoolerMode {
    /// Server connection returns to the pool at the end of each transaction.
    #[default]
    Transaction,
    /// Server connection is held for the whole client session.
    Session,
}

/// What a server does in its cluster.
/// Source: pgdog-config/src/database.rs (`Role`, default `primary`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Role {
    #[default]
    Primary,
    Replica,
    /// Detected at runtime (PgDog queries `pg_is_in_recovery()`).
    Auto,
}

/// How clients authenticate to sleddog.
/// Source: pgdog-config/src/auth.rs (`AuthType`, default `scram`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum AuthType {
    #[default]
    Scram,
    Md5,
    Plain,
    Trust,
}

/// Which prepared statements the proxy keeps for clients across server
/// connections. Source: pgdog-config/src/pooling.rs (`PreparedStatements`,
/// default `extended`); docs.pgdog.dev/configuration/pgdog.toml/general.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum PreparedStatements {
    /// Prepared statements are passed through untouched.
    Disabled,
    /// Named statements of the extended protocol (Parse/Bind/Describe/Close).
    #[default]
    Extended,
    /// As `Extended`, and unnamed Parse statements are cached and renamed too.
    ExtendedAnonymous,
    /// As `Extended`, and simple-protocol `PREPARE`/`EXECUTE`/`DEALLOCATE` too.
    Full,
}

/// What to do with a connection whose client left, or with a client whose
/// connection failed. Source: pgdog-config/src/pooling.rs (`ConnectionRecovery`);
/// PgDog uses it for both `connection_recovery` (default `recover`) and
/// `client_connection_recovery` (default `drop` since pgdog PR #778).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectionRecovery {
    /// Roll back and resynchronise the server connection, keep it pooled
    /// (for clients: keep the client connected after a pool error).
    Recover,
    /// Only `ROLLBACK` an open transaction; do not resynchronise.
    RollbackOnly,
    /// Close it.
    Drop,
}

/// How reads are spread over a shard's servers. Source: pgdog-config/src/database.rs
/// (`LoadBalancingStrategy`, default `random`; `weighted_round_robin` uses
/// `[[databases]] lb_weight`); docs.pgdog.dev/features/load-balancer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum LoadBalancingStrategy {
    #[default]
    Random,
    RoundRobin,
    /// Fewest connections checked out on this core first.
    LeastActiveConnections,
    /// Smooth weighted round robin over `lb_weight`.
    WeightedRoundRobin,
}

/// How the query router decides an explicit transaction's target.
/// Source: pgdog-config/src/database.rs (`ReadWriteStrategy`, default `conservative`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ReadWriteStrategy {
    /// Transactions go to the primary unless declared `READ ONLY`.
    #[default]
    Conservative,
    /// A transaction goes where its first statement would go.
    Aggressive,
}

/// Whether the primary serves reads. Source: pgdog-config/src/database.rs
/// (`ReadWriteSplit`, default `include_primary`); docs.pgdog.dev general#read_write_split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ReadWriteSplit {
    /// The primary is one more read target.
    #[default]
    IncludePrimary,
    /// Reads go to replicas; the primary only when no replica is available.
    ExcludePrimary,
    /// The primary takes reads while any replica is banned.
    IncludePrimaryIfReplicaBanned,
    /// Every query goes to the primary unless a hint asks for a replica;
    /// such reads fall back to the primary when no replica is available.
    PreferPrimary,
}

impl LoadBalancingStrategy {
    /// The spelling PgDog uses in TOML.
    pub fn as_str(self) -> &'static str {
        match self {
            LoadBalancingStrategy::Random => "random",
            LoadBalancingStrategy::RoundRobin => "round_robin",
            LoadBalancingStrategy::LeastActiveConnections => "least_active_connections",
            LoadBalancingStrategy::WeightedRoundRobin => "weighted_round_robin",
        }
    }
}

impl ReadWriteStrategy {
    /// The spelling PgDog uses in TOML.
    pub fn as_str(self) -> &'static str {
        match self {
            ReadWriteStrategy::Conservative => "conservative",
            ReadWriteStrategy::Aggressive => "aggressive",
        }
    }
}

impl ReadWriteSplit {
    /// The spelling PgDog uses in TOML.
    pub fn as_str(self) -> &'static str {
        match self {
            ReadWriteSplit::IncludePrimary => "include_primary",
            ReadWriteSplit::ExcludePrimary => "exclude_primary",
            ReadWriteSplit::IncludePrimaryIfReplicaBanned => "include_primary_if_replica_banned",
            ReadWriteSplit::PreferPrimary => "prefer_primary",
        }
    }
}

impl PreparedStatements {
    /// The spelling PgDog uses in TOML.
    pub fn as_str(self) -> &'static str {
        match self {
            PreparedStatements::Disabled => "disabled",
            PreparedStatements::Extended => "extended",
            PreparedStatements::ExtendedAnonymous => "extended_anonymous",
            PreparedStatements::Full => "full",
        }
    }
}

impl ConnectionRecovery {
    /// The spelling PgDog uses in TOML.
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionRecovery::Recover => "recover",
            ConnectionRecovery::RollbackOnly => "rollback_only",
            ConnectionRecovery::Drop => "drop",
        }
    }
}

impl PoolerMode {
    /// The spelling PgDog uses in TOML.
    pub fn as_str(self) -> &'static str {
        match self {
            PoolerMode::Transaction => "transaction",
            PoolerMode::Session => "session",
        }
    }
}

impl Role {
    /// The spelling PgDog uses in TOML.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Replica => "replica",
            Role::Auto => "auto",
        }
    }
}

impl AuthType {
    /// The spelling PgDog uses in TOML.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthType::Scram => "scram",
            AuthType::Md5 => "md5",
            AuthType::Plain => "plain",
            AuthType::Trust => "trust",
        }
    }
}

/// `[general]`. Timeouts are milliseconds, as in PgDog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct General {
    pub host: String,
    pub port: u16,
    /// Cores to run. Default: CPUs this process may run on (PgDog: 2 Tokio threads).
    pub workers: usize,
    pub default_pool_size: usize,
    pub min_pool_size: usize,
    pub pooler_mode: PoolerMode,
    pub connect_timeout_ms: u64,
    pub checkout_timeout_ms: u64,
    pub idle_timeout_ms: u64,
    pub server_lifetime_ms: u64,
    /// None = unlimited (PgDog's default is its "max duration").
    pub query_timeout_ms: Option<u64>,
    /// None = unlimited (PgDog's default is its "max duration").
    pub client_idle_timeout_ms: Option<u64>,
    pub shutdown_timeout_ms: u64,
    pub auth_type: AuthType,
    /// Client connections the process admits at once. sleddog's own key (PgDog
    /// has no such limit); each core admits `ceil(max / workers)`.
    pub max_client_connections: usize,
    /// How often server host names are resolved again. None: PgDog's default
    /// (follow the records' TTL); getaddrinfo does not report TTLs, so sleddog
    /// then re-resolves every `DEFAULT_DNS_REFRESH_MS`.
    pub dns_ttl_ms: Option<u64>,
    pub prepared_statements: PreparedStatements,
    /// Prepared statements kept per server connection. None = unlimited
    /// (PgDog's default, `i64::MAX`).
    pub prepared_statements_limit: Option<usize>,
    /// None = disabled (PgDog's default is its "max duration").
    pub client_idle_in_transaction_timeout_ms: Option<u64>,
    pub connection_recovery: ConnectionRecovery,
    pub client_connection_recovery: ConnectionRecovery,
    /// Size of the pub/sub (LISTEN/NOTIFY) queue; 0 = pub/sub disabled.
    pub pub_sub_channel_size: usize,
    pub load_balancing_strategy: LoadBalancingStrategy,
    pub read_write_strategy: ReadWriteStrategy,
    pub read_write_split: ReadWriteSplit,
    /// A checkout health-checks a connection whose last check is older.
    pub healthcheck_interval_ms: u64,
    /// Period of the idle health check (at least 1).
    pub idle_healthcheck_interval_ms: u64,
    /// Idle health checks start this long after startup.
    pub idle_healthcheck_delay_ms: u64,
    pub healthcheck_timeout_ms: u64,
    /// How long a failed server stays out of rotation; 0 = never banned
    /// (PgDog's monitor bans only when `ban_timeout > 0`).
    pub ban_timeout_ms: u64,
    /// None = no lag bans (PgDog's default is `i64::MAX`, i.e. never).
    pub ban_replica_lag_ms: Option<u64>,
    /// None = no lag bans (PgDog's default is `i64::MAX`, i.e. never).
    pub ban_replica_lag_bytes: Option<u64>,
    /// Period of the replication/role probe (at least 1).
    pub lsn_check_interval_ms: u64,
    pub lsn_check_timeout_ms: u64,
    /// None = the probe never starts (PgDog's default is its "max duration").
    pub lsn_check_delay_ms: Option<u64>,
    /// Statements kept per core in the query parse cache.
    pub query_cache_limit: usize,
    /// Refuse queries that would go to more than one shard (PgDog's
    /// `cross_shard_disabled`, default false); users.toml may override it.
    pub cross_shard_disabled: bool,
    /// Keep a client's omnisharded reads on one shard for its whole
    /// connection instead of spreading them (default false).
    pub omnisharded_sticky: bool,
}

/// PgDog's defaults (pgdog-config/src/general.rs), except `workers`.
pub(crate) const DEFAULT_HOST: &str = "0.0.0.0";
pub(crate) const DEFAULT_PORT: u16 = 6432;
pub(crate) const DEFAULT_POOL_SIZE: usize = 10;
pub(crate) const DEFAULT_MIN_POOL_SIZE: usize = 1;
pub(crate) const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 5_000;
pub(crate) const DEFAULT_CHECKOUT_TIMEOUT_MS: u64 = 5_000;
pub(crate) const DEFAULT_IDLE_TIMEOUT_MS: u64 = 60_000;
pub(crate) const DEFAULT_SERVER_LIFETIME_MS: u64 = 86_400_000;
pub(crate) const DEFAULT_SHUTDOWN_TIMEOUT_MS: u64 = 60_000;
pub(crate) const DEFAULT_HEALTHCHECK_INTERVAL_MS: u64 = 30_000;
pub(crate) const DEFAULT_IDLE_HEALTHCHECK_INTERVAL_MS: u64 = 30_000;
pub(crate) const DEFAULT_IDLE_HEALTHCHECK_DELAY_MS: u64 = 5_000;
pub(crate) const DEFAULT_HEALTHCHECK_TIMEOUT_MS: u64 = 5_000;
pub(crate) const DEFAULT_BAN_TIMEOUT_MS: u64 = 300_000;
pub(crate) const DEFAULT_LSN_CHECK_INTERVAL_MS: u64 = 5_000;
pub(crate) const DEFAULT_LSN_CHECK_TIMEOUT_MS: u64 = 5_000;
/// pgdog-config/src/general.rs `query_cache_limit()` (its docs page still
/// says 50_000; the code is what PgDog runs).
pub(crate) const DEFAULT_QUERY_CACHE_LIMIT: usize = 1_000;
/// `[[databases]] lb_weight` default (pgdog-config/src/database.rs, a `u8`).
pub(crate) const DEFAULT_LB_WEIGHT: u8 = 255;
/// sleddog's own (PgDog has no client connection limit).
pub(crate) const DEFAULT_MAX_CLIENT_CONNECTIONS: usize = 10_000;
/// Re-resolution period when `dns_ttl` is unset (sleddog's choice: getaddrinfo
/// does not say how long a record may be cached).
pub const DEFAULT_DNS_REFRESH_MS: u64 = 30_000;
/// `[[databases]] port` default (pgdog-config/src/database.rs).
pub(crate) const DEFAULT_SERVER_PORT: u16 = 5432;

impl Default for General {
    fn default() -> Self {
        General {
            host: DEFAULT_HOST.to_string(),
            port: DEFAULT_PORT,
            workers: default_workers(),
            default_pool_size: DEFAULT_POOL_SIZE,
            min_pool_size: DEFAULT_MIN_POOL_SIZE,
            pooler_mode: PoolerMode::Transaction,
            connect_timeout_ms: DEFAULT_CONNECT_TIMEOUT_MS,
            checkout_timeout_ms: DEFAULT_CHECKOUT_TIMEOUT_MS,
            idle_timeout_ms: DEFAULT_IDLE_TIMEOUT_MS,
            server_lifetime_ms: DEFAULT_SERVER_LIFETIME_MS,
            query_timeout_ms: None,
            client_idle_timeout_ms: None,
            shutdown_timeout_ms: DEFAULT_SHUTDOWN_TIMEOUT_MS,
            auth_type: AuthType::Scram,
            max_client_connections: DEFAULT_MAX_CLIENT_CONNECTIONS,
            dns_ttl_ms: None,
            prepared_statements: PreparedStatements::Extended,
            prepared_statements_limit: None,
            client_idle_in_transaction_timeout_ms: None,
            connection_recovery: ConnectionRecovery::Recover,
            client_connection_recovery: ConnectionRecovery::Drop,
            pub_sub_channel_size: 0,
            load_balancing_strategy: LoadBalancingStrategy::Random,
            read_write_strategy: ReadWriteStrategy::Conservative,
            read_write_split: ReadWriteSplit::IncludePrimary,
            healthcheck_interval_ms: DEFAULT_HEALTHCHECK_INTERVAL_MS,
            idle_healthcheck_interval_ms: DEFAULT_IDLE_HEALTHCHECK_INTERVAL_MS,
            idle_healthcheck_delay_ms: DEFAULT_IDLE_HEALTHCHECK_DELAY_MS,
            healthcheck_timeout_ms: DEFAULT_HEALTHCHECK_TIMEOUT_MS,
            ban_timeout_ms: DEFAULT_BAN_TIMEOUT_MS,
            ban_replica_lag_ms: None,
            ban_replica_lag_bytes: None,
            lsn_check_interval_ms: DEFAULT_LSN_CHECK_INTERVAL_MS,
            lsn_check_timeout_ms: DEFAULT_LSN_CHECK_TIMEOUT_MS,
            lsn_check_delay_ms: None,
            query_cache_limit: DEFAULT_QUERY_CACHE_LIMIT,
            cross_shard_disabled: false,
            omnisharded_sticky: false,
        }
    }
}

/// Thread-per-core: one core per CPU we may run on (affinity and cgroup
/// limits included). PgDog defaults to 2 Tokio threads; we differ on purpose.
pub(crate) fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// One `[[databases]]` entry: one Postgres server of a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Database {
    /// Cluster name clients connect to.
    pub name: String,
    pub host: String,
    pub port: u16,
    /// Database name on the server; defaults to `name`.
    pub database_name: String,
    /// Server login override; wins over users.toml `server_user`.
    pub user: Option<String>,
    /// Server password override; wins over users.toml `server_password`.
    pub password: Option<String>,
    pub role: Role,
    pub shard: u16,
    pub pool_size: Option<usize>,
    pub min_pool_size: Option<usize>,
    pub pooler_mode: Option<PoolerMode>,
    /// Share of reads under `weighted_round_robin`, 0..=255 (PgDog's `u8`,
    /// default 255). 0 = tried only after every weighted server.
    pub lb_weight: u8,
}

impl Database {
    /// An entry with every optional key at its default (PgDog's): port 5432,
    /// role primary, shard 0, `database_name` = `name`, `lb_weight` 255.
    pub fn new(name: String, host: String) -> Database {
        Database {
            database_name: name.clone(),
            name,
            host,
            port: DEFAULT_SERVER_PORT,
            user: None,
            password: None,
            role: Role::Primary,
            shard: 0,
            pool_size: None,
            min_pool_size: None,
            pooler_mode: None,
            lb_weight: DEFAULT_LB_WEIGHT,
        }
    }
}

/// One users.toml `[[users]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    /// Clusters this user may use: `database`, or else `databases`, or every
    /// cluster with `all_databases = true` (PgDog's rule, users.rs).
    pub databases: Vec<String>,
    /// Plain passwords, in PgDog's order: `passwords` entries, then `password`.
    pub passwords: Vec<String>,
    /// A SCRAM verifier (`SCRAM-SHA-256$...`), kept verbatim.
    pub password_hash: Option<String>,
    pub server_user: Option<String>,
    pub server_password: Option<String>,
    pub pool_size: Option<usize>,
    pub min_pool_size: Option<usize>,
    pub pooler_mode: Option<PoolerMode>,
    /// Overrides `[general] cross_shard_disabled` for this user.
    pub cross_shard_disabled: Option<bool>,
}

impl User {
    /// A user with no databases, passwords or overrides yet.
    pub fn new(name: String) -> User {
        User {
            name,
            databases: Vec::new(),
            passwords: Vec::new(),
            password_hash: None,
            server_user: None,
            server_password: None,
            pool_size: None,
            min_pool_size: None,
            pooler_mode: None,
            cross_shard_disabled: None,
        }
    }
}

/// `[admin]` (pgdog.toml, replaced as a whole by users.toml `[admin]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admin {
    pub name: String,
    pub user: String,
    pub password: String,
}

/// The validated snapshot of both files (and `--database_url`s).
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub general: General,
    pub databases: Vec<Database>,
    pub users: Vec<User>,
    pub admin: Admin,
    /// Each cluster's shard map, by cluster name: its shard count and the
    /// `[[sharded_tables]]`, mappings, `[[omnisharded_tables]]` and
    /// `[[sharded_schemas]]` that name it.
    pub sharding: HashMap<String, Arc<ShardingSchema>>,
}

/// One pool per (cluster, user): what a core needs to serve that login.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolSpec {
    pub database: String,
    pub user: String,
    pub pool_size: usize,
    pub min_pool_size: usize,
    pub pooler_mode: PoolerMode,
    /// Every `[[databases]]` entry of the cluster, in file order.
    pub servers: Vec<ServerSpec>,
    /// The cluster's shard map; `shards` is max `shard` + 1 of `servers`.
    pub sharding: Arc<ShardingSchema>,
    /// users.toml `cross_shard_disabled` > `[general]`.
    pub cross_shard_disabled: bool,
    /// `[general] omnisharded_sticky`.
    pub omnisharded_sticky: bool,
}

/// How to reach and log into one server for one pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSpec {
    pub host: String,
    pub port: u16,
    pub database_name: String,
    pub role: Role,
    pub shard: u16,
    /// `[[databases]] lb_weight`.
    pub lb_weight: u8,
    pub user: String,
    pub password: Option<String>,
}

impl Config {
    /// One pool per user × cluster it names, in users.toml order.
    ///
    /// Sizes and mode: user > database > general, as PgDog's
    /// `backend/pool/config.rs` (`Config::new`). PgDog resolves them per
    /// server; a sleddog pool has one size, so the database level is the
    /// cluster's first `[[databases]]` entry (PgDog likewise keeps the first
    /// entry's `pooler_mode` and warns on the others, core.rs `check`).
    pub fn pools(&self) -> Vec<PoolSpec> {
        let mut pools = Vec::new();
        for user in &self.users {
            for cluster in &user.databases {
                let entries: Vec<&Database> = self
                    .databases
                    .iter()
                    .filter(|database| &database.name == cluster)
                    .collect();
                let Some(first) = entries.first() else {
                    continue;
                };
                pools.push(PoolSpec {
                    database: cluster.clone(),
                    user: user.name.clone(),
                    pool_size: user
                        .pool_size
                        .or(first.pool_size)
                        .unwrap_or(self.general.default_pool_size),
                    min_pool_size: user
                        .min_pool_size
                        .or(first.min_pool_size)
                        .unwrap_or(self.general.min_pool_size),
                    pooler_mode: user
                        .pooler_mode
                        .or(first.pooler_mode)
                        .unwrap_or(self.general.pooler_mode),
                    servers: entries
                        .iter()
                        .map(|database| server_spec(database, user))
                        .collect(),
                    sharding: self.sharding_of(cluster, &entries),
                    cross_shard_disabled: user
                        .cross_shard_disabled
                        .unwrap_or(self.general.cross_shard_disabled),
                    omnisharded_sticky: self.general.omnisharded_sticky,
                });
            }
        }
        pools
    }

    /// The users.toml entry for `name`, if any.
    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.iter().find(|user| user.name == name)
    }

    /// The cluster's shard map; a `Config` built by hand without one gets
    /// the shard count of its entries and no sharding rules.
    fn sharding_of(&self, cluster: &str, entries: &[&Database]) -> Arc<ShardingSchema> {
        if let Some(schema) = self.sharding.get(cluster) {
            return Arc::clone(schema);
        }
        let top = entries.iter().map(|d| d.shard).max().unwrap_or(0);
        Arc::new(ShardingSchema {
            shards: top.saturating_add(1),
            ..ShardingSchema::default()
        })
    }
}

/// Server login as PgDog's `backend/pool/address.rs` (`Address::new`):
/// user = database `user` > users.toml `server_user` > the user's name;
/// password = database `password` > `server_password` > the user's first
/// plain password (PgDog tries them all in order; a pool here uses the first).
fn server_spec(database: &Database, user: &User) -> ServerSpec {
    ServerSpec {
        host: database.host.clone(),
        port: database.port,
        database_name: database.database_name.clone(),
        role: database.role,
        shard: database.shard,
        lb_weight: database.lb_weight,
        user: database
            .user
            .clone()
            .or_else(|| user.server_user.clone())
            .unwrap_or_else(|| user.name.clone()),
        password: database
            .password
            .clone()
            .or_else(|| user.server_password.clone())
            .or_else(|| user.passwords.first().cloned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn database(name: &str, shard: u16) -> Database {
        Database {
            shard,
            ..Database::new(name.into(), "127.0.0.1".into())
        }
    }

    fn user(name: &str, databases: &[&str]) -> User {
        User {
            databases: databases.iter().map(|d| d.to_string()).collect(),
            passwords: vec!["secret".into()],
            ..User::new(name.into())
        }
    }

    fn config(databases: Vec<Database>, users: Vec<User>) -> Config {
        Config {
            general: General::default(),
            databases,
            users,
            admin: Admin {
                name: "admin".into(),
                user: "admin".into(),
                password: "x".into(),
            },
            sharding: HashMap::new(),
        }
    }

    #[test]
    fn sizes_follow_user_then_database_then_general() {
        let mut db = database("app", 0);
        let mut alice = user("alice", &["app"]);
        let general_only = config(vec![db.clone()], vec![alice.clone()]).pools();
        assert_eq!(general_only[0].pool_size, DEFAULT_POOL_SIZE);
        assert_eq!(general_only[0].min_pool_size, DEFAULT_MIN_POOL_SIZE);
        assert_eq!(general_only[0].pooler_mode, PoolerMode::Transaction);

        db.pool_size = Some(20);
        db.min_pool_size = Some(2);
        db.pooler_mode = Some(PoolerMode::Session);
        let database_wins = config(vec![db.clone()], vec![alice.clone()]).pools();
        assert_eq!(database_wins[0].pool_size, 20);
        assert_eq!(database_wins[0].min_pool_size, 2);
        assert_eq!(database_wins[0].pooler_mode, PoolerMode::Session);

        alice.pool_size = Some(5);
        alice.min_pool_size = Some(0);
        alice.pooler_mode = Some(PoolerMode::Transaction);
        let user_wins = config(vec![db], vec![alice]).pools();
        assert_eq!(user_wins[0].pool_size, 5);
        assert_eq!(user_wins[0].min_pool_size, 0);
        assert_eq!(user_wins[0].pooler_mode, PoolerMode::Transaction);
    }

    #[test]
    fn server_login_follows_database_then_server_then_user() {
        let mut db = database("app", 0);
        let mut alice = user("alice", &["app"]);
        let own = &config(vec![db.clone()], vec![alice.clone()]).pools()[0].servers[0];
        assert_eq!(
            (own.user.as_str(), own.password.as_deref()),
            ("alice", Some("secret"))
        );

        alice.server_user = Some("svc".into());
        alice.server_password = Some("svc-pass".into());
        let server = &config(vec![db.clone()], vec![alice.clone()]).pools()[0].servers[0];
        assert_eq!(
            (server.user.as_str(), server.password.as_deref()),
            ("svc", Some("svc-pass"))
        );

        db.user = Some("owner".into());
        db.password = Some("owner-pass".into());
        let database_level = &config(vec![db], vec![alice]).pools()[0].servers[0];
        assert_eq!(
            (
                database_level.user.as_str(),
                database_level.password.as_deref()
            ),
            ("owner", Some("owner-pass"))
        );
    }

    #[test]
    fn one_pool_per_user_and_cluster_with_every_shard() {
        let databases = vec![database("a", 0), database("a", 1), database("b", 0)];
        let users = vec![user("alice", &["a", "b"]), user("bob", &["b"])];
        let pools = config(databases, users).pools();
        let keys: Vec<_> = pools
            .iter()
            .map(|p| (p.user.as_str(), p.database.as_str(), p.servers.len()))
            .collect();
        assert_eq!(
            keys,
            [("alice", "a", 2), ("alice", "b", 1), ("bob", "b", 1)]
        );
        assert_eq!(pools[0].servers[1].shard, 1);
        assert_eq!(pools[0].sharding.shards, 2);
        assert_eq!(pools[1].sharding.shards, 1);
    }

    #[test]
    fn cross_shard_disabled_follows_user_then_general() {
        let mut cfg = config(vec![database("a", 0)], vec![user("alice", &["a"])]);
        assert!(!cfg.pools()[0].cross_shard_disabled);
        cfg.general.cross_shard_disabled = true;
        cfg.general.omnisharded_sticky = true;
        assert!(cfg.pools()[0].cross_shard_disabled);
        assert!(cfg.pools()[0].omnisharded_sticky);
        cfg.users[0].cross_shard_disabled = Some(false);
        assert!(!cfg.pools()[0].cross_shard_disabled);
    }

    #[test]
    fn user_lookup() {
        let cfg = config(vec![database("a", 0)], vec![user("alice", &["a"])]);
        assert!(cfg.user("alice").is_some());
        assert!(cfg.user("bob").is_none());
    }
}
