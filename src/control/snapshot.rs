//! The immutable configuration snapshot the control thread publishes to every core.
//!
//! Built once per (re)load on the control thread, where the expensive and
//! blocking work happens: PBKDF2 for every plaintext password (so cores never
//! derive SCRAM secrets on the login path) and DNS for every server host (so
//! cores never call getaddrinfo). Cores only read it. Each pool's shard map
//! and cross-shard settings ride in its `PoolSpec`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::auth::{self, ScramSecret};
use crate::config::{
    AuthType, Config, ConnectionRecovery, General, LoadBalancingStrategy, PoolSpec,
    PreparedStatements, ReadWriteSplit, ReadWriteStrategy, DEFAULT_DNS_REFRESH_MS,
};
use crate::control::resolve::{self, HostPort, ServerAddrs};
use crate::ids::Epoch;

/// How a user proves who they are, prepared for the configured `auth_type`.
#[derive(Debug, Clone)]
pub struct Login {
    pub name: String,
    /// Plaintext passwords from users.toml (`password`, `passwords`).
    pub passwords: Vec<String>,
    /// SCRAM candidates sharing one salt: the `password_hash` verifier if given,
    /// else one secret per plaintext password, derived here.
    pub scram: Vec<ScramSecret>,
}

/// Settings the cores read on every session, converted once.
#[derive(Debug, Clone)]
pub struct Timeouts {
    pub connect: Duration,
    pub checkout: Duration,
    pub idle: Duration,
    pub server_lifetime: Duration,
    pub query: Option<Duration>,
    pub client_idle: Option<Duration>,
    /// `client_idle_in_transaction_timeout`; None = disabled.
    pub client_idle_in_transaction: Option<Duration>,
    pub shutdown: Duration,
    /// How often control re-resolves server host names (`dns_ttl`, else
    /// `DEFAULT_DNS_REFRESH_MS`); at most once per control tick (1 s).
    pub dns_refresh: Duration,
}

/// How reads are routed and spread (`[general]` load-balancer keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Balancing {
    pub strategy: LoadBalancingStrategy,
    pub read_write_strategy: ReadWriteStrategy,
    pub split: ReadWriteSplit,
}

/// Health checks, bans and the replication probe, converted once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthSettings {
    /// A checkout checks a connection whose last check is older than this.
    pub healthcheck_interval: Duration,
    pub healthcheck_timeout: Duration,
    /// Never zero (config rejects it).
    pub idle_healthcheck_interval: Duration,
    pub idle_healthcheck_delay: Duration,
    /// Zero = bans disabled (as in PgDog); `pool::balance::Bans` refuses them.
    pub ban_timeout: Duration,
    /// None = no lag bans.
    pub ban_replica_lag: Option<Duration>,
    /// None = no lag bans.
    pub ban_replica_lag_bytes: Option<u64>,
    /// Never zero (config rejects it).
    pub lsn_check_interval: Duration,
    pub lsn_check_timeout: Duration,
    /// None = the replication/role probe never runs (PgDog's default).
    pub lsn_check_delay: Option<Duration>,
}

impl HealthSettings {
    fn from_general(general: &General) -> HealthSettings {
        let ms = Duration::from_millis;
        HealthSettings {
            healthcheck_interval: ms(general.healthcheck_interval_ms),
            healthcheck_timeout: ms(general.healthcheck_timeout_ms),
            idle_healthcheck_interval: ms(general.idle_healthcheck_interval_ms),
            idle_healthcheck_delay: ms(general.idle_healthcheck_delay_ms),
            ban_timeout: ms(general.ban_timeout_ms),
            ban_replica_lag: general.ban_replica_lag_ms.map(ms),
            ban_replica_lag_bytes: general.ban_replica_lag_bytes,
            lsn_check_interval: ms(general.lsn_check_interval_ms),
            lsn_check_timeout: ms(general.lsn_check_timeout_ms),
            lsn_check_delay: general.lsn_check_delay_ms.map(ms),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Snapshot {
    pub epoch: Epoch,
    pub general: General,
    pub timeouts: Timeouts,
    pub auth_type: AuthType,
    /// Client connections the process admits; see `client_connections_per_core`.
    pub max_client_connections: usize,
    pub prepared_statements: PreparedStatements,
    /// Prepared statements per server connection; None = unlimited.
    pub prepared_statements_limit: Option<usize>,
    pub connection_recovery: ConnectionRecovery,
    pub client_connection_recovery: ConnectionRecovery,
    /// 0 = pub/sub disabled.
    pub pub_sub_channel_size: usize,
    pub balancing: Balancing,
    pub health: HealthSettings,
    /// Parsed statements kept per core (`query_cache_limit`).
    pub query_cache_limit: usize,
    /// Every server's addresses, resolved when this snapshot was built.
    pub addrs: ServerAddrs,
    /// By user name.
    pub logins: HashMap<String, Login>,
    /// By (database, user): what a core needs to serve that login. Pool sizes are
    /// per process here; `per_core_share` divides them.
    pub pools: HashMap<(String, String), Arc<PoolSpec>>,
    pub workers: usize,
}

impl Snapshot {
    /// Builds a snapshot, resolving every server host with getaddrinfo. A host
    /// that does not resolve is logged; connecting to it fails at checkout.
    pub fn build(config: &Config, epoch: Epoch) -> Snapshot {
        let servers = config
            .databases
            .iter()
            .map(|database| (database.host.as_str(), database.port));
        let addrs = ServerAddrs::resolve(servers, resolve::system_lookup);
        for ((host, port), reason) in addrs.failures() {
            tracing::warn!(%host, port, %reason, "could not resolve host; connections to it fail until it resolves");
        }
        Snapshot::build_with_addrs(config, epoch, addrs)
    }

    /// Builds a snapshot with addresses resolved elsewhere (tests, DNS refresh).
    pub fn build_with_addrs(config: &Config, epoch: Epoch, addrs: ServerAddrs) -> Snapshot {
        let general = config.general.clone();
        let ms = Duration::from_millis;
        let timeouts = Timeouts {
            connect: ms(general.connect_timeout_ms),
            checkout: ms(general.checkout_timeout_ms),
            idle: ms(general.idle_timeout_ms),
            server_lifetime: ms(general.server_lifetime_ms),
            query: general.query_timeout_ms.map(ms),
            client_idle: general.client_idle_timeout_ms.map(ms),
            client_idle_in_transaction: general.client_idle_in_transaction_timeout_ms.map(ms),
            shutdown: ms(general.shutdown_timeout_ms),
            dns_refresh: ms(general.dns_ttl_ms.unwrap_or(DEFAULT_DNS_REFRESH_MS)),
        };
        let logins = config
            .users
            .iter()
            .map(|user| {
                let scram = scram_candidates(&user.passwords, user.password_hash.as_deref());
                let login = Login {
                    name: user.name.clone(),
                    passwords: user.passwords.clone(),
                    scram,
                };
                (user.name.clone(), login)
            })
            .collect();
        let pools = config
            .pools()
            .into_iter()
            .map(|spec| ((spec.database.clone(), spec.user.clone()), Arc::new(spec)))
            .collect();
        Snapshot {
            epoch,
            auth_type: general.auth_type,
            workers: general.workers.max(1),
            max_client_connections: general.max_client_connections,
            prepared_statements: general.prepared_statements,
            prepared_statements_limit: general.prepared_statements_limit,
            connection_recovery: general.connection_recovery,
            client_connection_recovery: general.client_connection_recovery,
            pub_sub_channel_size: general.pub_sub_channel_size,
            balancing: Balancing {
                strategy: general.load_balancing_strategy,
                read_write_strategy: general.read_write_strategy,
                split: general.read_write_split,
            },
            health: HealthSettings::from_general(&general),
            query_cache_limit: general.query_cache_limit,
            addrs,
            general,
            timeouts,
            logins,
            pools,
        }
    }

    /// A process-wide size split between cores: `ceil(size / workers)` each, so
    /// the process may open up to `workers - 1` more than `size` in total.
    pub fn per_core_share(&self, size: usize) -> usize {
        size.div_ceil(self.workers)
    }

    /// Client connections one core admits: `ceil(max_client_connections /
    /// workers)`. The kernel spreads clients over cores unevenly, so a core
    /// may refuse while another has room.
    pub fn client_connections_per_core(&self) -> usize {
        self.per_core_share(self.max_client_connections)
    }

    /// This snapshot with new server addresses, as the next epoch. Logins
    /// (and their SCRAM salts) carry over unchanged.
    pub fn with_addrs(&self, addrs: ServerAddrs, epoch: Epoch) -> Snapshot {
        Snapshot {
            epoch,
            addrs,
            ..self.clone()
        }
    }

    /// Servers named by host name: what a DNS refresh looks up again.
    pub fn named_servers(&self) -> Vec<HostPort> {
        self.addrs.named()
    }
}

fn scram_candidates(passwords: &[String], hash: Option<&str>) -> Vec<ScramSecret> {
    if let Some(hash) = hash {
        match ScramSecret::parse(hash) {
            Ok(secret) => return vec![secret],
            // Config validation already rejected bad verifiers; a parse failure
            // here means nobody can log in as this user, which is the safe side.
            Err(error) => {
                tracing::error!(%error, "password_hash is not a SCRAM-SHA-256 verifier");
                return Vec::new();
            }
        }
    }
    let salt: [u8; 16] = auth::random_bytes();
    passwords
        .iter()
        .map(|password| ScramSecret::from_password(password, &salt, auth::DEFAULT_ITERATIONS))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{self, PreparedStatements};
    use crate::control::resolve::Resolved;
    use std::path::Path;

    fn config(general: &str) -> Config {
        let text = format!(
            "[general]\nworkers = 4\n{general}\n[[databases]]\nname = \"app\"\nhost = \"db.invalid\"\n[[databases]]\nname = \"app\"\nhost = \"127.0.0.1\"\nrole = \"replica\"\n"
        );
        let users = "[[users]]\nname = \"alice\"\npassword = \"pw\"\ndatabase = \"app\"\n";
        config::parse(&text, Path::new("p"), users, Path::new("u"), &[])
            .unwrap()
            .config
    }

    #[test]
    fn settings_for_the_next_work_are_exposed() {
        let snapshot = Snapshot::build_with_addrs(
            &config("prepared_statements = \"full\"\nprepared_statements_limit = 7\nclient_idle_in_transaction_timeout = 1500\nconnection_recovery = \"drop\"\nclient_connection_recovery = \"recover\"\npub_sub_channel_size = 64\nmax_client_connections = 10\ndns_ttl = 2500"),
            Epoch(1),
            ServerAddrs::default(),
        );
        assert_eq!(snapshot.prepared_statements, PreparedStatements::Full);
        assert_eq!(snapshot.prepared_statements_limit, Some(7));
        assert_eq!(
            snapshot.timeouts.client_idle_in_transaction,
            Some(Duration::from_millis(1500))
        );
        assert_eq!(snapshot.connection_recovery, ConnectionRecovery::Drop);
        assert_eq!(
            snapshot.client_connection_recovery,
            ConnectionRecovery::Recover
        );
        assert_eq!(snapshot.pub_sub_channel_size, 64);
        assert_eq!(snapshot.max_client_connections, 10);
        assert_eq!(snapshot.client_connections_per_core(), 3);
        assert_eq!(snapshot.timeouts.dns_refresh, Duration::from_millis(2500));

        let defaults = Snapshot::build_with_addrs(&config(""), Epoch(1), ServerAddrs::default());
        assert_eq!(defaults.client_connections_per_core(), 2_500);
        assert_eq!(defaults.prepared_statements_limit, None);
        assert_eq!(defaults.timeouts.client_idle_in_transaction, None);
        assert_eq!(
            defaults.timeouts.dns_refresh,
            Duration::from_millis(DEFAULT_DNS_REFRESH_MS)
        );
    }

    #[test]
    fn balancing_and_health_are_typed() {
        let snapshot = Snapshot::build_with_addrs(
            &config("load_balancing_strategy = \"round_robin\"\nread_write_split = \"exclude_primary\"\nread_write_strategy = \"aggressive\"\nhealthcheck_interval = 100\nhealthcheck_timeout = 200\nidle_healthcheck_interval = 300\nidle_healthcheck_delay = 400\nban_timeout = 500\nban_replica_lag = 600\nban_replica_lag_bytes = 700\nlsn_check_interval = 800\nlsn_check_timeout = 900\nlsn_check_delay = 1000\nquery_cache_limit = 42"),
            Epoch(1),
            ServerAddrs::default(),
        );
        assert_eq!(
            snapshot.balancing,
            Balancing {
                strategy: LoadBalancingStrategy::RoundRobin,
                read_write_strategy: ReadWriteStrategy::Aggressive,
                split: ReadWriteSplit::ExcludePrimary,
            }
        );
        let ms = Duration::from_millis;
        assert_eq!(
            snapshot.health,
            HealthSettings {
                healthcheck_interval: ms(100),
                healthcheck_timeout: ms(200),
                idle_healthcheck_interval: ms(300),
                idle_healthcheck_delay: ms(400),
                ban_timeout: ms(500),
                ban_replica_lag: Some(ms(600)),
                ban_replica_lag_bytes: Some(700),
                lsn_check_interval: ms(800),
                lsn_check_timeout: ms(900),
                lsn_check_delay: Some(ms(1000)),
            }
        );
        assert_eq!(snapshot.query_cache_limit, 42);
        let weights: Vec<u8> = snapshot.pools[&("app".to_string(), "alice".to_string())]
            .servers
            .iter()
            .map(|s| s.lb_weight)
            .collect();
        assert_eq!(weights, [255, 255]);

        let defaults = Snapshot::build_with_addrs(&config(""), Epoch(1), ServerAddrs::default());
        assert_eq!(defaults.balancing.strategy, LoadBalancingStrategy::Random);
        assert_eq!(defaults.balancing.split, ReadWriteSplit::IncludePrimary);
        assert_eq!(defaults.health.ban_timeout, ms(300_000));
        assert_eq!(defaults.health.ban_replica_lag, None);
        assert_eq!(defaults.health.lsn_check_delay, None);
        assert_eq!(defaults.query_cache_limit, 1_000);
    }

    #[test]
    fn pools_carry_the_shard_map_and_cross_shard_settings() {
        let text = "[general]\ncross_shard_disabled = true\nomnisharded_sticky = true\n[[databases]]\nname = \"app\"\nhost = \"127.0.0.1\"\n[[databases]]\nname = \"app\"\nhost = \"127.0.0.1\"\nshard = 1\n[[sharded_tables]]\ndatabase = \"app\"\ncolumn = \"id\"\n";
        let users = "[[users]]\nname = \"alice\"\npassword = \"pw\"\ndatabase = \"app\"\n";
        let config = config::parse(text, Path::new("p"), users, Path::new("u"), &[])
            .unwrap()
            .config;
        let snapshot = Snapshot::build_with_addrs(&config, Epoch(1), ServerAddrs::default());
        let pool = &snapshot.pools[&("app".to_string(), "alice".to_string())];
        assert_eq!(pool.sharding.shards, 2);
        assert_eq!(pool.sharding.tables[0].column, "id");
        assert!(pool.cross_shard_disabled);
        assert!(pool.omnisharded_sticky);
    }

    #[test]
    fn a_host_that_does_not_resolve_still_builds() {
        let snapshot = Snapshot::build(&config(""), Epoch(1));
        assert!(matches!(
            snapshot.addrs.get("db.invalid", 5432),
            Resolved::Failed(_)
        ));
        assert_eq!(
            snapshot.addrs.get("127.0.0.1", 5432),
            Resolved::Addrs(vec!["127.0.0.1:5432".parse().unwrap()])
        );
        assert_eq!(snapshot.named_servers(), [("db.invalid".to_string(), 5432)]);
        let moved = snapshot.with_addrs(ServerAddrs::default(), Epoch(2));
        assert_eq!(moved.epoch, Epoch(2));
        assert_eq!(moved.logins.len(), snapshot.logins.len());
        assert_eq!(
            moved.logins["alice"].scram[0].salt,
            snapshot.logins["alice"].scram[0].salt
        );
    }
}
