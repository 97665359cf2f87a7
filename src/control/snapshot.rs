//! The immutable configuration snapshot the control thread publishes to every core.
//!
//! Built once per (re)load on the control thread, where the expensive and
//! blocking work happens: PBKDF2 for every plaintext password (so cores never
//! derive SCRAM secrets on the login path) and DNS for every server host (so
//! cores never call getaddrinfo). Cores only read it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::auth::{self, ScramSecret};
use crate::config::{
    AuthType, Config, ConnectionRecovery, General, PoolSpec, PreparedStatements,
    DEFAULT_DNS_REFRESH_MS,
};
use crate::control::resolve::{self, HostPort, ServerAddrs};
use crate::ids::Epoch;

/// Until `lsn_check_interval` / `lsn_check_timeout` are read from config.
const LSN_CHECK_INTERVAL_MS: u64 = 1_000;
const LSN_CHECK_TIMEOUT_MS: u64 = 5_000;

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
    /// How often the health monitor probes each server, and how long a probe
    /// may take (`lsn_check_interval`, `lsn_check_timeout`).
    pub lsn_check_interval: Duration,
    pub lsn_check_timeout: Duration,
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
            lsn_check_interval: ms(LSN_CHECK_INTERVAL_MS),
            lsn_check_timeout: ms(LSN_CHECK_TIMEOUT_MS),
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
