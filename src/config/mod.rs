//! config: PgDog's `pgdog.toml` + `users.toml` (+ `--database_url`) → a
//! validated, immutable `Config` snapshot.
//!
//! sleddog reads PgDog's files with PgDog's keys, defaults and units
//! (milliseconds), so an existing PgDog deployment starts unchanged. Keys
//! PgDog knows that sleddog does not implement yet are accepted with a
//! warning (see `known.rs`); anything else wrong fails startup with every
//! error at once, each as `file:line: key `k`: why`.
//!
//! Layers, one per file: `raw` (TOML → located tree), `read` (typed values),
//! `sections` (one PgDog section at a time), `sharding` (the sharding
//! sections), `url` (`--database_url`), `validate` (cross-entry rules,
//! assembly), `shard_map` (each cluster's shard map), `model` (public
//! types, pools).
//! This module must not open sockets, spawn, or log; callers log `warnings`.

mod diagnostic;
mod known;
mod model;
mod raw;
mod read;
mod sections;
mod shard_map;
mod sharding;
mod url;
mod validate;

use std::io::ErrorKind;
use std::path::Path;

pub use diagnostic::{ConfigError, ConfigErrors, ConfigWarning};
pub use model::{
    Admin, AuthType, Config, ConnectionRecovery, Database, General, LoadBalancingStrategy,
    PoolSpec, PoolerMode, PreparedStatements, ReadWriteSplit, ReadWriteStrategy, Role, ServerSpec,
    User, DEFAULT_DNS_REFRESH_MS,
};

use diagnostic::Diagnostics;
use read::Ctx;
use sections::{PgdogFile, UsersFile};
use validate::{Files, FromUrls};

/// A config that passed validation, and what the operator should be told.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<ConfigWarning>,
}

/// Reads both files and validates them with `database_urls`.
///
/// A missing file is not an error, as in PgDog (core.rs `load`): its
/// defaults apply and a warning says so. Any other read failure is an error.
pub fn load(
    config_path: &Path,
    users_path: &Path,
    database_urls: &[String],
) -> Result<Loaded, ConfigErrors> {
    let mut diagnostics = Diagnostics::default();
    let config_text = read_file(&mut diagnostics, config_path);
    let users_text = read_file(&mut diagnostics, users_path);
    build(
        diagnostics,
        (config_path, config_text.as_deref()),
        (users_path, users_text.as_deref()),
        database_urls,
    )
}

/// Validates config text without touching the filesystem. `config_name`
/// and `users_name` only label findings.
pub fn parse(
    config_text: &str,
    config_name: &Path,
    users_text: &str,
    users_name: &Path,
    database_urls: &[String],
) -> Result<Loaded, ConfigErrors> {
    build(
        Diagnostics::default(),
        (config_name, Some(config_text)),
        (users_name, Some(users_text)),
        database_urls,
    )
}

fn read_file(diagnostics: &mut Diagnostics, path: &Path) -> Option<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => Some(text),
        Err(error) if error.kind() == ErrorKind::NotFound => {
            diagnostics.warn(path, 0, "", "not found; using defaults (as PgDog does)");
            None
        }
        Err(error) => {
            diagnostics.error(path, 0, "", format!("cannot read: {error}"));
            None
        }
    }
}

/// `(name, text)`; `None` text means "file absent, use defaults".
type Source<'a> = (&'a Path, Option<&'a str>);

fn build(
    mut diagnostics: Diagnostics,
    (config_name, config_text): Source<'_>,
    (users_name, users_text): Source<'_>,
    database_urls: &[String],
) -> Result<Loaded, ConfigErrors> {
    let config_root = config_text.map(|text| parse_toml(&mut diagnostics, config_name, text));
    let users_root = users_text.map(|text| parse_toml(&mut diagnostics, users_name, text));
    // A file that is not TOML leaves nothing to cross-check against; stop
    // here rather than report follow-on errors that are not real.
    if !diagnostics.errors.is_empty() {
        return Err(diagnostics.into_errors());
    }
    let pgdog = match config_root.flatten() {
        Some(root) => sections::read_pgdog_file(&mut ctx(&mut diagnostics, config_name), &root),
        None => PgdogFile::default(),
    };
    let users = match users_root.flatten() {
        Some(root) => sections::read_users_file(&mut ctx(&mut diagnostics, users_name), &root),
        None => UsersFile::default(),
    };
    let from_urls = (!database_urls.is_empty()).then(|| {
        let (databases, users) = url::read_urls(&mut diagnostics, database_urls);
        FromUrls { databases, users }
    });
    let files = Files {
        config: config_name,
        users: users_name,
    };
    let config = validate::assemble(&mut diagnostics, &files, pgdog, users, from_urls);
    diagnostics
        .into_result(config)
        .map(|(config, warnings)| Loaded { config, warnings })
}

fn ctx<'a>(diagnostics: &'a mut Diagnostics, file: &'a Path) -> Ctx<'a> {
    Ctx { file, diagnostics }
}

fn parse_toml(diagnostics: &mut Diagnostics, file: &Path, text: &str) -> Option<raw::RawTable> {
    match raw::parse(text) {
        Ok(root) => Some(root),
        Err(error) => {
            let message = format!("invalid TOML: {}", error.message);
            diagnostics.error(file, error.line, "", message);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shards::Mapping;
    use std::path::PathBuf;

    fn run(config: &str, users: &str) -> Result<Loaded, ConfigErrors> {
        parse(
            config,
            Path::new("pgdog.toml"),
            users,
            Path::new("users.toml"),
            &[],
        )
    }

    fn errors(config: &str, users: &str) -> Vec<String> {
        match run(config, users) {
            Ok(loaded) => panic!("expected errors, got {:#?}", loaded.config),
            Err(errors) => errors.0.iter().map(|e| e.to_string()).collect(),
        }
    }

    fn ok(config: &str, users: &str) -> Loaded {
        run(config, users).unwrap_or_else(|errors| panic!("unexpected errors:\n{errors}"))
    }

    const ONE_DB: &str = "[[databases]]\nname = \"app\"\nhost = \"10.0.0.1\"\n";
    const ONE_USER: &str = "[[users]]\nname = \"alice\"\npassword = \"pw\"\ndatabase = \"app\"\n";

    fn config_dir_pairs(dir: &Path, pairs: &mut Vec<(PathBuf, PathBuf)>) {
        let mut tomls = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                config_dir_pairs(&path, pairs);
            } else if path.extension().is_some_and(|e| e == "toml") {
                tomls.push(path);
            }
        }
        for path in &tomls {
            let name = path.file_name().unwrap().to_str().unwrap();
            assert!(
                name == "pgdog.toml" || name == "users.toml",
                "{}: example configs come as pgdog.toml + users.toml",
                path.display()
            );
        }
        if !tomls.is_empty() {
            pairs.push((dir.join("pgdog.toml"), dir.join("users.toml")));
        }
    }

    #[test]
    fn every_example_config_loads_without_errors() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let mut pairs = Vec::new();
        config_dir_pairs(&root, &mut pairs);
        assert!(
            pairs.len() >= 3,
            "expected config/, config/demo/ and config/sharded/"
        );
        for (config, users) in pairs {
            let loaded = load(&config, &users, &[])
                .unwrap_or_else(|errors| panic!("{}:\n{errors}", config.display()));
            assert!(!loaded.config.pools().is_empty(), "{}", config.display());
            // Both examples set files explicitly; a missing-file warning
            // would mean the pairing above is wrong.
            assert!(loaded
                .warnings
                .iter()
                .all(|w| w.line != 0 || !w.key.is_empty()));
        }
    }

    #[test]
    fn demo_has_three_shards_and_hash_sharded_tables() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/demo");
        let loaded = load(&root.join("pgdog.toml"), &root.join("users.toml"), &[]).unwrap();
        let pools = loaded.config.pools();
        assert_eq!(pools.len(), 2);
        let sharded = pools.iter().find(|p| p.database == "pgdog").unwrap();
        let single = pools
            .iter()
            .find(|p| p.database == "pgdog_shard_0")
            .unwrap();
        assert_eq!(single.servers.len(), 1);
        let shards: Vec<_> = sharded
            .servers
            .iter()
            .map(|s| (s.shard, s.database_name.as_str(), s.user.as_str()))
            .collect();
        assert_eq!(
            shards,
            [
                (0, "shard_0", "pgdog"),
                (1, "shard_1", "pgdog"),
                (2, "shard_2", "pgdog")
            ]
        );
        assert!(loaded.warnings.iter().all(|w| w.message != known::IGNORED));
        let schema = &sharded.sharding;
        assert_eq!(schema.shards, 3);
        let tables: Vec<_> = schema
            .tables
            .iter()
            .map(|t| (t.name.as_deref(), t.column.as_str(), &t.mapping))
            .collect();
        assert_eq!(
            tables,
            [
                (Some("users"), "id", &Mapping::Hash),
                (Some("payments"), "user_id", &Mapping::Hash)
            ]
        );
        assert_eq!(single.sharding.shards, 1);
        assert!(single.sharding.tables.is_empty());
    }

    #[test]
    fn sharded_example_shows_every_kind_of_sharding() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/sharded");
        let loaded = load(&root.join("pgdog.toml"), &root.join("users.toml"), &[]).unwrap();
        assert!(loaded.warnings.iter().all(|w| w.message != known::IGNORED));
        let pools = loaded.config.pools();
        let schema = &pools[0].sharding;
        assert_eq!(schema.shards, 3);
        let kinds: Vec<_> = schema
            .tables
            .iter()
            .map(|t| match &t.mapping {
                Mapping::Hash => "hash",
                Mapping::Map { list, .. } if !list.is_empty() => "list",
                Mapping::Map { .. } => "range",
            })
            .collect();
        assert_eq!(kinds, ["hash", "list", "range"]);
        assert_eq!(schema.omnisharded.len(), 2);
        assert_eq!(schema.schemas.len(), 2);
        let users: Vec<_> = pools
            .iter()
            .map(|p| (p.user.as_str(), p.cross_shard_disabled))
            .collect();
        assert_eq!(users, [("shop", false), ("reports", false)]);
    }

    #[test]
    fn defaults_match_pgdog() {
        let loaded = ok("", "");
        let general = &loaded.config.general;
        assert_eq!(general.host, "0.0.0.0");
        assert_eq!(general.port, 6432);
        assert_eq!(general.workers, model::default_workers());
        assert_eq!(general.default_pool_size, 10);
        assert_eq!(general.min_pool_size, 1);
        assert_eq!(general.pooler_mode, PoolerMode::Transaction);
        assert_eq!(general.connect_timeout_ms, 5_000);
        assert_eq!(general.checkout_timeout_ms, 5_000);
        assert_eq!(general.idle_timeout_ms, 60_000);
        assert_eq!(general.server_lifetime_ms, 86_400_000);
        assert_eq!(general.query_timeout_ms, None);
        assert_eq!(general.client_idle_timeout_ms, None);
        assert_eq!(general.shutdown_timeout_ms, 60_000);
        assert_eq!(general.auth_type, AuthType::Scram);
        assert_eq!(general.max_client_connections, 10_000);
        assert_eq!(general.dns_ttl_ms, None);
        assert_eq!(general.prepared_statements, PreparedStatements::Extended);
        assert_eq!(general.prepared_statements_limit, None);
        assert_eq!(general.client_idle_in_transaction_timeout_ms, None);
        assert_eq!(general.connection_recovery, ConnectionRecovery::Recover);
        assert_eq!(general.client_connection_recovery, ConnectionRecovery::Drop);
        assert_eq!(general.pub_sub_channel_size, 0);
        assert_eq!(
            general.load_balancing_strategy,
            LoadBalancingStrategy::Random
        );
        assert_eq!(general.read_write_strategy, ReadWriteStrategy::Conservative);
        assert_eq!(general.read_write_split, ReadWriteSplit::IncludePrimary);
        assert_eq!(general.healthcheck_interval_ms, 30_000);
        assert_eq!(general.idle_healthcheck_interval_ms, 30_000);
        assert_eq!(general.idle_healthcheck_delay_ms, 5_000);
        assert_eq!(general.healthcheck_timeout_ms, 5_000);
        assert_eq!(general.ban_timeout_ms, 300_000);
        assert_eq!(general.ban_replica_lag_ms, None);
        assert_eq!(general.ban_replica_lag_bytes, None);
        assert_eq!(general.lsn_check_interval_ms, 5_000);
        assert_eq!(general.lsn_check_timeout_ms, 5_000);
        assert_eq!(general.lsn_check_delay_ms, None);
        assert_eq!(general.query_cache_limit, 1_000);
        let admin = &loaded.config.admin;
        assert_eq!(
            (admin.name.as_str(), admin.user.as_str()),
            ("admin", "admin")
        );
        assert!(admin.password.starts_with("_pgdog_"));
        assert!(loaded.warnings.iter().any(|w| w.key == "admin.password"));

        let loaded = ok(ONE_DB, ONE_USER);
        let db = &loaded.config.databases[0];
        assert_eq!((db.port, db.role, db.shard), (5432, Role::Primary, 0));
        assert_eq!(db.lb_weight, 255);
        assert_eq!(db.database_name, "app");
    }

    #[test]
    fn values_are_read() {
        let config = "[general]\nhost = \"127.0.0.1\"\nport = 7432\nworkers = 3\ndefault_pool_size = 20\nmin_pool_size = 2\npooler_mode = \"session\"\nconnect_timeout = 1_000\ncheckout_timeout = 2_000\nidle_timeout = 3_000\nserver_lifetime = 4_000\nquery_timeout = 5_000\nclient_idle_timeout = 6_000\nshutdown_timeout = 7_000\nauth_type = \"md5\"\nmax_client_connections = 50\ndns_ttl = 8_000\nprepared_statements = \"full\"\nprepared_statements_limit = 100\nclient_idle_in_transaction_timeout = 9_000\nconnection_recovery = \"rollback_only\"\nclient_connection_recovery = \"recover\"\npub_sub_channel_size = 4096\nload_balancing_strategy = \"weighted_round_robin\"\nread_write_strategy = \"aggressive\"\nread_write_split = \"prefer_primary\"\nhealthcheck_interval = 11\nidle_healthcheck_interval = 12\nidle_healthcheck_delay = 13\nhealthcheck_timeout = 14\nban_timeout = 15\nban_replica_lag = 16\nban_replica_lag_bytes = 17\nlsn_check_interval = 18\nlsn_check_timeout = 19\nlsn_check_delay = 20\nquery_cache_limit = 21\ncross_shard_disabled = true\nomnisharded_sticky = true\n";
        let general = ok(config, "").config.general;
        assert_eq!(
            general,
            General {
                host: "127.0.0.1".into(),
                port: 7432,
                workers: 3,
                default_pool_size: 20,
                min_pool_size: 2,
                pooler_mode: PoolerMode::Session,
                connect_timeout_ms: 1_000,
                checkout_timeout_ms: 2_000,
                idle_timeout_ms: 3_000,
                server_lifetime_ms: 4_000,
                query_timeout_ms: Some(5_000),
                client_idle_timeout_ms: Some(6_000),
                shutdown_timeout_ms: 7_000,
                auth_type: AuthType::Md5,
                max_client_connections: 50,
                dns_ttl_ms: Some(8_000),
                prepared_statements: PreparedStatements::Full,
                prepared_statements_limit: Some(100),
                client_idle_in_transaction_timeout_ms: Some(9_000),
                connection_recovery: ConnectionRecovery::RollbackOnly,
                client_connection_recovery: ConnectionRecovery::Recover,
                pub_sub_channel_size: 4096,
                load_balancing_strategy: LoadBalancingStrategy::WeightedRoundRobin,
                read_write_strategy: ReadWriteStrategy::Aggressive,
                read_write_split: ReadWriteSplit::PreferPrimary,
                healthcheck_interval_ms: 11,
                idle_healthcheck_interval_ms: 12,
                idle_healthcheck_delay_ms: 13,
                healthcheck_timeout_ms: 14,
                ban_timeout_ms: 15,
                ban_replica_lag_ms: Some(16),
                ban_replica_lag_bytes: Some(17),
                lsn_check_interval_ms: 18,
                lsn_check_timeout_ms: 19,
                lsn_check_delay_ms: Some(20),
                query_cache_limit: 21,
                cross_shard_disabled: true,
                omnisharded_sticky: true,
            }
        );
    }

    #[test]
    fn max_pool_size_is_an_alias() {
        let general = ok("[general]\nmax_pool_size = 3\nmin_pool_size = 0\n", "")
            .config
            .general;
        assert_eq!(general.default_pool_size, 3);
        let found = errors("[general]\ndefault_pool_size = 3\nmax_pool_size = 4\n", "");
        assert_eq!(
            found,
            ["pgdog.toml:3: key `general.max_pool_size`: set twice (`max_pool_size` is an alias of `default_pool_size`)"]
        );
    }

    #[test]
    fn workers_zero_means_one_core() {
        let loaded = ok("[general]\nworkers = 0\n", "");
        assert_eq!(loaded.config.general.workers, 1);
        assert!(loaded
            .warnings
            .iter()
            .any(|w| w.key == "general.workers" && w.line == 2));
    }

    #[test]
    fn unknown_key() {
        assert_eq!(
            errors("[general]\nport = 6432\nprot = 1\n", ""),
            ["pgdog.toml:3: key `general.prot`: unknown key (not a PgDog setting)"]
        );
        assert_eq!(
            errors(
                ONE_DB,
                "[[users]]\nname = \"a\"\ndatabase = \"app\"\ncolour = 1\n"
            ),
            ["users.toml:4: key `users[0].colour`: unknown key (not a PgDog setting)"]
        );
        assert_eq!(
            errors("[genral]\nport = 1\n", ""),
            ["pgdog.toml:1: key `genral`: unknown key (not a PgDog setting)"]
        );
    }

    #[test]
    fn wrong_type() {
        assert_eq!(
            errors("[general]\n\nport = \"6432\"\n", ""),
            ["pgdog.toml:3: key `general.port`: expected an integer, found string"]
        );
        assert_eq!(
            errors("[general]\ncheckout_timeout = \"5s\"\n", ""),
            ["pgdog.toml:2: key `general.checkout_timeout`: expected an integer, found string"]
        );
        assert_eq!(
            errors("general = 5\n", ""),
            ["pgdog.toml:1: key `general`: expected a table, found integer"]
        );
    }

    #[test]
    fn bad_values() {
        assert_eq!(
            errors("[general]\nport = 0\n", ""),
            ["pgdog.toml:2: key `general.port`: must be between 1 and 65535, found 0"]
        );
        assert_eq!(
            errors(
                "[[databases]]\nname = \"a\"\nhost = \"h\"\npool_size = 0\n",
                ""
            ),
            ["pgdog.toml:4: key `databases[0].pool_size`: must be at least 1"]
        );
        assert_eq!(
            errors("[general]\npooler_mode = \"Transaction\"\n", ""),
            ["pgdog.toml:2: key `general.pooler_mode`: unknown value `Transaction`; expected one of `transaction`, `session`"]
        );
        assert_eq!(
            errors("[general]\npooler_mode = \"statement\"\n", ""),
            ["pgdog.toml:2: key `general.pooler_mode`: `statement` is accepted by PgDog's parser but not supported by sleddog; expected one of `transaction`, `session`"]
        );
        assert_eq!(
            errors("[[databases]]\nname = \"a\"\nhost = \"h\"\nrole = \"leader\"\n", ""),
            ["pgdog.toml:4: key `databases[0].role`: unknown value `leader`; expected one of `primary`, `replica`, `auto`"]
        );
    }

    #[test]
    fn keys_for_the_next_work_take_pgdog_values() {
        for (value, expected) in [
            ("disabled", PreparedStatements::Disabled),
            ("extended", PreparedStatements::Extended),
            ("extended_anonymous", PreparedStatements::ExtendedAnonymous),
            ("full", PreparedStatements::Full),
        ] {
            let config = format!("[general]\nprepared_statements = \"{value}\"\n");
            let loaded = ok(&config, "");
            assert_eq!(loaded.config.general.prepared_statements, expected);
            assert_eq!(expected.as_str(), value);
        }
        for (value, expected) in [
            ("recover", ConnectionRecovery::Recover),
            ("rollback_only", ConnectionRecovery::RollbackOnly),
            ("drop", ConnectionRecovery::Drop),
        ] {
            let config = format!(
                "[general]\nconnection_recovery = \"{value}\"\nclient_connection_recovery = \"{value}\"\n"
            );
            let general = ok(&config, "").config.general;
            assert_eq!(general.connection_recovery, expected);
            assert_eq!(general.client_connection_recovery, expected);
            assert_eq!(expected.as_str(), value);
        }
        // Implemented (or wired by the lead) keys do not warn; the rest do.
        let config = "[general]\nprepared_statements = \"full\"\nprepared_statements_limit = 0\ndns_ttl = 0\nmax_client_connections = 1\nclient_idle_in_transaction_timeout = 0\nconnection_recovery = \"drop\"\nclient_connection_recovery = \"drop\"\npub_sub_channel_size = 1\n";
        let loaded = ok(config, "");
        let warned: Vec<_> = loaded
            .warnings
            .iter()
            .filter(|w| w.message == known::IGNORED)
            .map(|w| (w.line, w.key.as_str()))
            .collect();
        assert!(warned.is_empty(), "{warned:?}");
        let general = &loaded.config.general;
        assert_eq!(general.prepared_statements_limit, Some(0));
        assert_eq!(general.dns_ttl_ms, Some(0));
        assert_eq!(general.client_idle_in_transaction_timeout_ms, Some(0));
    }

    #[test]
    fn keys_for_the_next_work_reject_bad_values() {
        let found = errors(
            "[general]\nprepared_statements = \"on\"\nprepared_statements_limit = -1\nclient_idle_in_transaction_timeout = \"5s\"\nconnection_recovery = \"rollbackonly\"\nclient_connection_recovery = true\npub_sub_channel_size = 1.5\nmax_client_connections = 0\ndns_ttl = -5\n",
            "",
        );
        assert_eq!(
            found,
            [
                "pgdog.toml:2: key `general.prepared_statements`: unknown value `on`; expected one of `disabled`, `extended`, `extended_anonymous`, `full`",
                "pgdog.toml:3: key `general.prepared_statements_limit`: must not be negative, found -1",
                "pgdog.toml:4: key `general.client_idle_in_transaction_timeout`: expected an integer, found string",
                "pgdog.toml:5: key `general.connection_recovery`: unknown value `rollbackonly`; expected one of `recover`, `rollback_only`, `drop`",
                "pgdog.toml:6: key `general.client_connection_recovery`: expected a string, found boolean",
                "pgdog.toml:7: key `general.pub_sub_channel_size`: expected an integer, found float",
                "pgdog.toml:8: key `general.max_client_connections`: must be at least 1",
                "pgdog.toml:9: key `general.dns_ttl`: must not be negative, found -5",
            ]
        );
    }

    #[test]
    fn balancing_keys_take_pgdog_values() {
        for (value, expected) in [
            ("random", LoadBalancingStrategy::Random),
            ("round_robin", LoadBalancingStrategy::RoundRobin),
            (
                "least_active_connections",
                LoadBalancingStrategy::LeastActiveConnections,
            ),
            (
                "weighted_round_robin",
                LoadBalancingStrategy::WeightedRoundRobin,
            ),
        ] {
            let config = format!("[general]\nload_balancing_strategy = \"{value}\"\n");
            assert_eq!(
                ok(&config, "").config.general.load_balancing_strategy,
                expected
            );
            assert_eq!(expected.as_str(), value);
        }
        for (value, expected) in [
            ("include_primary", ReadWriteSplit::IncludePrimary),
            ("exclude_primary", ReadWriteSplit::ExcludePrimary),
            (
                "include_primary_if_replica_banned",
                ReadWriteSplit::IncludePrimaryIfReplicaBanned,
            ),
            ("prefer_primary", ReadWriteSplit::PreferPrimary),
        ] {
            let config = format!("[general]\nread_write_split = \"{value}\"\n");
            assert_eq!(ok(&config, "").config.general.read_write_split, expected);
            assert_eq!(expected.as_str(), value);
        }
        for (value, expected) in [
            ("conservative", ReadWriteStrategy::Conservative),
            ("aggressive", ReadWriteStrategy::Aggressive),
        ] {
            let config = format!("[general]\nread_write_strategy = \"{value}\"\n");
            assert_eq!(ok(&config, "").config.general.read_write_strategy, expected);
            assert_eq!(expected.as_str(), value);
        }
        // Implemented now: no "not implemented" warning.
        let config = "[general]\nban_timeout = 0\nlsn_check_delay = 0\nquery_cache_limit = 0\nhealthcheck_interval = 0\n";
        let loaded = ok(config, "");
        assert!(
            loaded.warnings.iter().all(|w| w.message != known::IGNORED),
            "{:?}",
            loaded.warnings
        );
        assert_eq!(loaded.config.general.ban_timeout_ms, 0);
        assert_eq!(loaded.config.general.lsn_check_delay_ms, Some(0));
    }

    #[test]
    fn lb_weight_is_read_per_server() {
        let config = "[[databases]]\nname = \"app\"\nhost = \"a\"\n\n[[databases]]\nname = \"app\"\nhost = \"b\"\nrole = \"replica\"\nlb_weight = 7\n";
        let loaded = ok(config, ONE_USER);
        assert!(loaded.warnings.iter().all(|w| w.message != known::IGNORED));
        let pools = loaded.config.pools();
        let weights: Vec<u8> = pools[0].servers.iter().map(|s| s.lb_weight).collect();
        assert_eq!(weights, [255, 7]);
        assert_eq!(
            errors(
                "[[databases]]\nname = \"a\"\nhost = \"h\"\nlb_weight = 256\n",
                ""
            ),
            ["pgdog.toml:4: key `databases[0].lb_weight`: must be between 0 and 255, found 256"]
        );
        assert_eq!(
            errors(
                "[[databases]]\nname = \"a\"\nhost = \"h\"\nlb_weight = -1\n",
                ""
            ),
            ["pgdog.toml:4: key `databases[0].lb_weight`: must not be negative, found -1"]
        );
    }

    #[test]
    fn balancing_keys_reject_bad_values() {
        let found = errors(
            "[general]\nload_balancing_strategy = \"roundrobin\"\nread_write_split = \"primary\"\nread_write_strategy = 1\nhealthcheck_interval = -1\nidle_healthcheck_interval = 0\nidle_healthcheck_delay = \"5s\"\nhealthcheck_timeout = 1.5\nban_timeout = -300\nban_replica_lag = true\nban_replica_lag_bytes = -1\nlsn_check_interval = 0\nlsn_check_timeout = \"x\"\nlsn_check_delay = -1\nquery_cache_limit = -5\n",
            "",
        );
        assert_eq!(
            found,
            [
                "pgdog.toml:2: key `general.load_balancing_strategy`: unknown value `roundrobin`; expected one of `random`, `round_robin`, `least_active_connections`, `weighted_round_robin`",
                "pgdog.toml:3: key `general.read_write_split`: unknown value `primary`; expected one of `include_primary`, `exclude_primary`, `include_primary_if_replica_banned`, `prefer_primary`",
                "pgdog.toml:4: key `general.read_write_strategy`: expected a string, found integer",
                "pgdog.toml:5: key `general.healthcheck_interval`: must not be negative, found -1",
                "pgdog.toml:6: key `general.idle_healthcheck_interval`: must be at least 1",
                "pgdog.toml:7: key `general.idle_healthcheck_delay`: expected an integer, found string",
                "pgdog.toml:8: key `general.healthcheck_timeout`: expected an integer, found float",
                "pgdog.toml:9: key `general.ban_timeout`: must not be negative, found -300",
                "pgdog.toml:10: key `general.ban_replica_lag`: expected an integer, found boolean",
                "pgdog.toml:11: key `general.ban_replica_lag_bytes`: must not be negative, found -1",
                "pgdog.toml:12: key `general.lsn_check_interval`: must be at least 1",
                "pgdog.toml:13: key `general.lsn_check_timeout`: expected an integer, found string",
                "pgdog.toml:14: key `general.lsn_check_delay`: must not be negative, found -1",
                "pgdog.toml:15: key `general.query_cache_limit`: must not be negative, found -5",
            ]
        );
    }

    #[test]
    fn required_keys() {
        assert_eq!(
            errors("\n[[databases]]\nport = 5432\n", ""),
            [
                "pgdog.toml:2: key `databases[0].name`: required",
                "pgdog.toml:2: key `databases[0].host`: required",
            ]
        );
        assert_eq!(
            errors("", "[[users]]\npassword = \"x\"\n"),
            ["users.toml:1: key `users[0].name`: required"]
        );
    }

    #[test]
    fn min_pool_size_above_pool_size_at_each_level() {
        assert_eq!(
            errors("[general]\ndefault_pool_size = 2\nmin_pool_size = 3\n", ""),
            ["pgdog.toml:3: key `general.min_pool_size`: 3 is larger than default_pool_size 2"]
        );
        let database =
            "[[databases]]\nname = \"app\"\nhost = \"h\"\npool_size = 2\nmin_pool_size = 5\n";
        assert_eq!(
            errors(database, ""),
            ["pgdog.toml:5: key `databases[0].min_pool_size`: min_pool_size 5 is larger than pool_size 2 (`databases[0].pool_size` at pgdog.toml:4)"]
        );
        let user =
            "[[users]]\nname = \"a\"\ndatabase = \"app\"\npassword = \"p\"\nmin_pool_size = 11\n";
        assert_eq!(
            errors(ONE_DB, user),
            ["users.toml:5: key `users[0].min_pool_size`: min_pool_size 11 is larger than pool_size 10 (default of `general.default_pool_size`)"]
        );
        // A user-level pool_size below a general min_pool_size points at the user.
        let user = "[[users]]\nname = \"a\"\ndatabase = \"app\"\npassword = \"p\"\npool_size = 1\n";
        let found = errors(&format!("[general]\nmin_pool_size = 2\n{ONE_DB}"), user);
        assert_eq!(
            found,
            ["users.toml:5: key `users[0].pool_size`: min_pool_size 2 is larger than pool_size 1 (`general.min_pool_size` at pgdog.toml:2)"]
        );
    }

    #[test]
    fn duplicate_user() {
        let users = format!(
            "{ONE_USER}\n[[users]]\nname = \"alice\"\npassword = \"other\"\ndatabase = \"app\"\n"
        );
        assert_eq!(
            errors(ONE_DB, &users),
            ["users.toml:7: key `users[1].name`: duplicate user `alice` for database `app` (first at users.toml:1)"]
        );
    }

    #[test]
    fn same_user_on_two_databases() {
        let databases = format!("{ONE_DB}[[databases]]\nname = \"other\"\nhost = \"h\"\n");
        let same = format!(
            "{ONE_USER}[[users]]\nname = \"alice\"\npassword = \"pw\"\ndatabase = \"other\"\n"
        );
        let loaded = ok(&databases, &same);
        assert_eq!(loaded.config.users.len(), 1);
        assert_eq!(loaded.config.users[0].databases, ["app", "other"]);
        assert_eq!(loaded.config.pools().len(), 2);

        let different = same.replace(
            "password = \"pw\"\ndatabase = \"other\"",
            "password = \"x\"\ndatabase = \"other\"",
        );
        let found = errors(&databases, &different);
        assert_eq!(found.len(), 1);
        assert!(found[0].starts_with("users.toml:6: key `users[1].name`: user `alice` is also defined at users.toml:1 with different settings"), "{found:?}");
    }

    #[test]
    fn user_naming_a_missing_database() {
        assert_eq!(
            errors(ONE_DB, "[[users]]\nname = \"a\"\npassword = \"p\"\ndatabase = \"nope\"\n"),
            ["users.toml:4: key `users[0].database`: database `nope` is not defined in [[databases]]"]
        );
        assert_eq!(
            errors(ONE_DB, "[[users]]\nname = \"a\"\npassword = \"p\"\ndatabases = [\"app\", \"nope\"]\n"),
            ["users.toml:4: key `users[0].databases`: database `nope` is not defined in [[databases]]"]
        );
        assert_eq!(
            errors(ONE_DB, "[[users]]\nname = \"a\"\npassword = \"p\"\n"),
            ["users.toml:1: key `users[0].database`: user `a` names no database; set `database`, `databases` or `all_databases = true`"]
        );
    }

    #[test]
    fn user_database_rules_follow_pgdog() {
        let databases = format!("{ONE_DB}[[databases]]\nname = \"other\"\nhost = \"h\"\n");
        let both = "[[users]]\nname = \"a\"\npassword = \"p\"\ndatabase = \"app\"\ndatabases = [\"other\"]\n";
        let loaded = ok(&databases, both);
        assert_eq!(loaded.config.users[0].databases, ["app"]);
        assert!(loaded
            .warnings
            .iter()
            .any(|w| w.key == "users[0].databases" && w.line == 5));

        let all = "[[users]]\nname = \"a\"\npassword = \"p\"\nall_databases = true\n";
        assert_eq!(
            ok(&databases, all).config.users[0].databases,
            ["app", "other"]
        );
    }

    #[test]
    fn two_primaries_for_one_shard() {
        let config = format!("{ONE_DB}\n[[databases]]\nname = \"app\"\nhost = \"10.0.0.2\"\n");
        assert_eq!(
            errors(&config, ONE_USER),
            ["pgdog.toml:5: key `databases[1].role`: second primary for database `app` shard 0 (first at pgdog.toml:1)"]
        );
        let replica = format!("{config}role = \"replica\"\n");
        ok(&replica, ONE_USER);
        let other_shard = format!("{config}shard = 1\n");
        ok(&other_shard, ONE_USER);
    }

    #[test]
    fn malformed_toml() {
        let found = errors("[general]\nport = 6432\nhost = \"unterminated\n", "");
        assert_eq!(found.len(), 1);
        assert!(
            found[0].starts_with("pgdog.toml:3: invalid TOML"),
            "{found:?}"
        );
        // Both files are checked even when the first is broken.
        let found = errors("[general\n", "[[users]\n");
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[1].starts_with("users.toml:1: invalid TOML"));
    }

    #[test]
    fn all_errors_at_once_in_file_and_line_order() {
        let config = "[general]\nport = 0\nworkers = -1\npooler_mode = \"fast\"\nbogus = true\n\n[[databases]]\nname = \"app\"\nhost = \"h\"\npool_size = 0\n\n[[databases]]\nname = \"app\"\nhost = \"h2\"\n";
        let users = "[[users]]\nname = \"a\"\ndatabase = \"missing\"\n\n[[users]]\nname = \"b\"\ndatabase = \"app\"\nmin_pool_size = \"x\"\n";
        let found = errors(config, users);
        let located: Vec<_> = found
            .iter()
            .map(|e| e.split(": ").next().unwrap().to_string())
            .collect();
        assert_eq!(
            located,
            [
                "pgdog.toml:2",
                "pgdog.toml:3",
                "pgdog.toml:4",
                "pgdog.toml:5",
                "pgdog.toml:10",
                "pgdog.toml:12",
                "users.toml:3",
                "users.toml:8",
            ],
            "{found:#?}"
        );
    }

    #[test]
    fn known_pgdog_keys_warn_with_their_line() {
        let config = "[general]\nrollback_timeout = 5\nopenmetrics_port = 9090\n\n[[databases]]\nname = \"app\"\nhost = \"h\"\nstatement_timeout = 100\n\n[tcp]\nkeepalive = true\n\n[[plugins]]\nname = \"p\"\n";
        let users = "[[users]]\nname = \"a\"\npassword = \"p\"\ndatabase = \"app\"\nserver_auth = \"password\"\n";
        let loaded = ok(config, users);
        let warned: Vec<_> = loaded
            .warnings
            .iter()
            .filter(|w| w.message == known::IGNORED)
            .map(|w| w.to_string())
            .collect();
        let suffix = "recognised PgDog key, not implemented by sleddog yet; ignored";
        assert_eq!(
            warned,
            [
                format!("pgdog.toml:2: key `general.rollback_timeout`: {suffix}"),
                format!("pgdog.toml:3: key `general.openmetrics_port`: {suffix}"),
                format!("pgdog.toml:8: key `databases[0].statement_timeout`: {suffix}"),
                format!("pgdog.toml:10: key `tcp`: {suffix}"),
                format!("pgdog.toml:13: key `plugins`: {suffix}"),
                format!("users.toml:5: key `users[0].server_auth`: {suffix}"),
            ]
        );
    }

    #[test]
    fn admin_from_users_toml_replaces_the_whole_section() {
        let config = "[admin]\nname = \"ops\"\nuser = \"root\"\npassword = \"a\"\n";
        let admin = ok(config, "").config.admin;
        assert_eq!(
            (
                admin.name.as_str(),
                admin.user.as_str(),
                admin.password.as_str()
            ),
            ("ops", "root", "a")
        );
        let admin = ok(config, "[admin]\npassword = \"b\"\n").config.admin;
        assert_eq!(
            (
                admin.name.as_str(),
                admin.user.as_str(),
                admin.password.as_str()
            ),
            ("admin", "admin", "b")
        );
    }

    #[test]
    fn database_urls_replace_databases_and_users() {
        let urls = vec![
            "postgres://bob:s%20cret@db1:5433/app".to_string(),
            "postgres://bob:s%20cret@db2/app?role=replica".to_string(),
        ];
        let loaded = parse(
            ONE_DB,
            Path::new("pgdog.toml"),
            ONE_USER,
            Path::new("users.toml"),
            &urls,
        )
        .unwrap();
        let config = &loaded.config;
        assert_eq!(config.databases.len(), 2);
        assert_eq!(config.users.len(), 1);
        assert_eq!(config.users[0].name, "bob");
        let pools = config.pools();
        assert_eq!(pools.len(), 1);
        assert_eq!(pools[0].servers[0].password.as_deref(), Some("s cret"));
        assert_eq!(pools[0].servers[1].role, Role::Replica);
        let replaced: Vec<_> = loaded
            .warnings
            .iter()
            .filter(|w| w.message.contains("--database_url replaces"))
            .map(|w| (w.file.display().to_string(), w.line))
            .collect();
        assert_eq!(
            replaced,
            [("pgdog.toml".to_string(), 1), ("users.toml".to_string(), 1)]
        );

        let bad = vec![
            "postgres://a@h/app".to_string(),
            "postgres://a@h/app?role=x".to_string(),
        ];
        let errors = parse("", Path::new("p"), "", Path::new("u"), &bad).unwrap_err();
        assert_eq!(
            errors.to_string(),
            "--database_url:2: key `role`: unknown value `x`; expected one of `primary`, `replica`, `auto`"
        );
    }

    #[test]
    fn missing_files_load_defaults_with_a_warning() {
        let dir = std::env::temp_dir().join(format!("sleddog-config-{}", std::process::id()));
        let loaded = load(&dir.join("pgdog.toml"), &dir.join("users.toml"), &[]).unwrap();
        assert!(loaded.config.databases.is_empty());
        assert_eq!(loaded.config.general.port, 6432);
        let missing: Vec<_> = loaded
            .warnings
            .iter()
            .filter(|w| w.message.starts_with("not found"))
            .collect();
        assert_eq!(missing.len(), 2);
    }

    #[test]
    fn a_pgdog_config_with_many_pgdog_keys_starts() {
        // Shaped like PgDog's own example configs: most of the keys are
        // PgDog features sleddog ignores for now.
        let config = r#"
[general]
host = "0.0.0.0"
port = 6432
workers = 2
default_pool_size = 10
min_pool_size = 1
pooler_mode = "transaction"
healthcheck_interval = 30_000
idle_healthcheck_interval = 30_000
idle_healthcheck_delay = 5_000
ban_timeout = 60_000
rollback_timeout = 5_000
load_balancing_strategy = "random"
read_write_split = "include_primary"
shutdown_timeout = 5_000
openmetrics_port = 9090
query_timeout = 1_000
checkout_timeout = 1_000
connect_timeout = 1_000
idle_timeout = 30_000
prepared_statements = "extended"
passthrough_auth = "disabled"
auth_type = "scram"
tls_verify = "prefer"
query_cache_limit = 500
two_phase_commit = false

[tcp]
keepalive = true
time = 1_000
interval = 1_000
retries = 3

[[databases]]
name = "pgdog"
host = "127.0.0.1"

[[databases]]
name = "pgdog"
host = "127.0.0.1"
role = "replica"
read_only = true

[[databases]]
name = "pgdog_sharded"
host = "127.0.0.1"
database_name = "shard_0"
shard = 0

[[databases]]
name = "pgdog_sharded"
host = "127.0.0.1"
database_name = "shard_1"
shard = 1

[[sharded_tables]]
database = "pgdog_sharded"
column = "customer_id"
data_type = "bigint"

[[omnisharded_tables]]
database = "pgdog_sharded"
tables = ["countries"]

[[mirroring]]
source_db = "pgdog"
destination_db = "pgdog_sharded"

[multi_tenant]
column = "tenant_id"

[admin]
password = "pgdog"
"#;
        let users = r#"
[[users]]
name = "pgdog"
password = "pgdog"
database = "pgdog"
statement_timeout = 10_000

[[users]]
name = "pgdog"
password = "pgdog"
database = "pgdog_sharded"
statement_timeout = 10_000
"#;
        let loaded = ok(config, users);
        let pools = loaded.config.pools();
        assert_eq!(pools.len(), 2);
        assert_eq!(pools[0].servers.len(), 2);
        assert_eq!(pools[1].servers.len(), 2);
        assert_eq!(loaded.config.general.query_timeout_ms, Some(1_000));
        assert!(loaded.warnings.len() > 10);
        let sharded = &pools[1].sharding;
        assert_eq!(sharded.shards, 2);
        assert_eq!(sharded.tables[0].column, "customer_id");
        assert_eq!(sharded.omnisharded, ["countries"]);
    }
}
