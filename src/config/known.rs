//! Keys PgDog knows that sleddog parses but does not implement yet.
//!
//! One table, so implementing a feature is: delete its row here, add a match
//! arm in `sections.rs`. A key in this table warns ("recognised PgDog key,
//! not implemented by sleddog yet; ignored"); a key in neither place is an
//! error, as in PgDog, whose config structs all use `deny_unknown_fields`.
//! A `[general]` key may have both: its value is parsed and checked (and in
//! the snapshot) ahead of the feature, and it keeps warning until its row goes.
//!
//! Source: pgdog-config/src/{general,database,users,core,otel,sharding}.rs
//! in github.com/pgdogdev/pgdog, and docs.pgdog.dev/configuration/. Whole
//! sections are listed as `Scope::Section`; keys inside them are not checked
//! because sleddog ignores the section as a whole.

/// Where a key lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    /// A top-level section of pgdog.toml, e.g. `[[sharded_tables]]`.
    Section,
    /// `[general]`.
    General,
    /// `[[databases]]` entries.
    Database,
    /// users.toml `[[users]]` entries.
    User,
    /// `[[sharded_tables]]` entries.
    ShardedTable,
    /// `[[sharded_mapping]]` entries (all three spellings).
    ShardedMapping,
    /// `[[omnisharded_tables]]` entries.
    Omnisharded,
    /// `[[sharded_schemas]]` entries.
    ShardedSchema,
}

/// Recognised PgDog keys that sleddog ignores for now.
pub(crate) const UNIMPLEMENTED: &[(Scope, &str)] = &[
    // pgdog.toml sections.
    (Scope::Section, "rewrite"),
    (Scope::Section, "tcp"),
    (Scope::Section, "multi_tenant"),
    (Scope::Section, "plugins"),
    (Scope::Section, "manual_queries"),
    (Scope::Section, "replica_lag"),
    (Scope::Section, "replication"),
    (Scope::Section, "mirroring"),
    (Scope::Section, "memory"),
    (Scope::Section, "otel"),
    (Scope::Section, "vault"),
    (Scope::Section, "query_stats"),
    // [general]
    (Scope::General, "healthcheck_port"),
    (Scope::General, "rollback_timeout"),
    (Scope::General, "tls_certificate"),
    (Scope::General, "tls_private_key"),
    (Scope::General, "tls_client_required"),
    (Scope::General, "tls_verify"),
    (Scope::General, "tls_server_ca_certificate"),
    (Scope::General, "shutdown_termination_timeout"),
    (Scope::General, "broadcast_address"),
    (Scope::General, "broadcast_port"),
    (Scope::General, "query_log"),
    (Scope::General, "openmetrics_port"),
    (Scope::General, "openmetrics_namespace"),
    (Scope::General, "query_parser_enabled"),
    (Scope::General, "query_parser"),
    (Scope::General, "query_parser_engine"),
    (Scope::General, "regex_parser_limit"),
    (Scope::General, "passthrough_auth"),
    (Scope::General, "connect_attempts"),
    (Scope::General, "connect_attempt_delay"),
    (Scope::General, "client_login_timeout"),
    (Scope::General, "dry_run"),
    (Scope::General, "mirror_queue"),
    (Scope::General, "mirror_exposure"),
    (Scope::General, "log_format"),
    (Scope::General, "log_level"),
    (Scope::General, "log_connections"),
    (Scope::General, "log_disconnections"),
    (Scope::General, "log_dedup_window"),
    (Scope::General, "log_dedup_threshold"),
    (Scope::General, "two_phase_commit"),
    (Scope::General, "two_phase_commit_auto"),
    (Scope::General, "two_phase_commit_wal_dir"),
    (Scope::General, "two_phase_commit_wal_segment_size"),
    (Scope::General, "two_phase_commit_wal_fsync_interval"),
    (Scope::General, "two_phase_commit_wal_checkpoint_interval"),
    (Scope::General, "expanded_explain"),
    (Scope::General, "stats_period"),
    (Scope::General, "unique_id_min"),
    (Scope::General, "unique_id_function"),
    (Scope::General, "system_catalogs"),
    (Scope::General, "resharding_copy_format"),
    (Scope::General, "resharding_parallel_copies"),
    (Scope::General, "resharding_copy_retry_max_attempts"),
    (Scope::General, "resharding_copy_retry_min_delay"),
    (Scope::General, "reload_schema_on_ddl"),
    (Scope::General, "load_schema"),
    (Scope::General, "cutover_traffic_stop_threshold"),
    (Scope::General, "cutover_replication_lag_threshold"),
    (Scope::General, "cutover_last_transaction_delay"),
    (Scope::General, "cutover_timeout"),
    (Scope::General, "cutover_timeout_action"),
    (Scope::General, "cutover_save_config"),
    (Scope::General, "server_lifetime_jitter"),
    // [[databases]]
    (Scope::Database, "statement_timeout"),
    (Scope::Database, "idle_timeout"),
    (Scope::Database, "read_only"),
    (Scope::Database, "server_lifetime"),
    (Scope::Database, "server_lifetime_jitter"),
    (Scope::Database, "resharding_only"),
    // users.toml [[users]]
    (Scope::User, "identity"),
    (Scope::User, "server_auth"),
    (Scope::User, "server_iam_region"),
    (Scope::User, "vault_path"),
    (Scope::User, "vault_refresh_percent"),
    (Scope::User, "statement_timeout"),
    (Scope::User, "lock_timeout"),
    (Scope::User, "replication_mode"),
    (Scope::User, "replication_sharding"),
    (Scope::User, "idle_timeout"),
    (Scope::User, "read_only"),
    (Scope::User, "schema_admin"),
    (Scope::User, "two_phase_commit"),
    (Scope::User, "two_phase_commit_auto"),
    (Scope::User, "server_lifetime"),
    (Scope::User, "server_lifetime_jitter"),
    // [[sharded_tables]]: the primary sharding anchor (used by PgDog's
    // resharding) and pgvector centroid sharding.
    (Scope::ShardedTable, "primary"),
    (Scope::ShardedTable, "centroids"),
    (Scope::ShardedTable, "centroids_path"),
    (Scope::ShardedTable, "centroid_probes"),
    // [[omnisharded_tables]]: per-entry sticky routing.
    (Scope::Omnisharded, "sticky"),
    // [[sharded_schemas]]: a schema present on every shard.
    (Scope::ShardedSchema, "all"),
];

/// The message every ignored key carries, so operators can grep for it.
pub(crate) const IGNORED: &str = "recognised PgDog key, not implemented by sleddog yet; ignored";

/// True when `key` is a PgDog key sleddog knows about but ignores.
pub(crate) fn is_unimplemented(scope: Scope, key: &str) -> bool {
    UNIMPLEMENTED
        .iter()
        .any(|&(known_scope, known_key)| known_scope == scope && known_key == key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_duplicate_rows() {
        for (index, row) in UNIMPLEMENTED.iter().enumerate() {
            assert!(
                !UNIMPLEMENTED[index + 1..].contains(row),
                "duplicate row {row:?}"
            );
        }
    }

    #[test]
    fn implemented_keys_are_not_listed() {
        for key in ["host", "port", "workers", "pooler_mode", "auth_type"] {
            assert!(!is_unimplemented(Scope::General, key), "{key}");
        }
        for key in ["name", "host", "pool_size", "role", "shard"] {
            assert!(!is_unimplemented(Scope::Database, key), "{key}");
        }
        for section in [
            "sharded_tables",
            "sharded_mapping",
            "sharded_mappings",
            "omnisharded_tables",
            "sharded_schemas",
        ] {
            assert!(!is_unimplemented(Scope::Section, section), "{section}");
        }
        assert!(!is_unimplemented(Scope::General, "cross_shard_disabled"));
        assert!(!is_unimplemented(Scope::General, "omnisharded_sticky"));
        assert!(!is_unimplemented(Scope::User, "cross_shard_disabled"));
        for key in ["database", "name", "column", "data_type", "hasher"] {
            assert!(!is_unimplemented(Scope::ShardedTable, key), "{key}");
        }
        assert!(is_unimplemented(Scope::ShardedTable, "centroids"));
        assert!(is_unimplemented(Scope::ShardedSchema, "all"));
        for key in [
            "connection_recovery",
            "client_connection_recovery",
            "pub_sub_channel_size",
            "client_idle_in_transaction_timeout",
            "prepared_statements",
            "prepared_statements_limit",
            "dns_ttl",
            "load_balancing_strategy",
            "read_write_strategy",
            "read_write_split",
            "healthcheck_interval",
            "idle_healthcheck_interval",
            "idle_healthcheck_delay",
            "healthcheck_timeout",
            "ban_timeout",
            "ban_replica_lag",
            "ban_replica_lag_bytes",
            "lsn_check_interval",
            "lsn_check_timeout",
            "lsn_check_delay",
            "query_cache_limit",
        ] {
            assert!(!is_unimplemented(Scope::General, key), "{key}");
        }
        assert!(!is_unimplemented(Scope::Database, "lb_weight"));
        // Still unimplemented, as examples of the other side.
        assert!(is_unimplemented(Scope::General, "healthcheck_port"));
        assert!(is_unimplemented(Scope::Database, "statement_timeout"));
    }
}
