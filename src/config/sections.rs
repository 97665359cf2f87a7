//! Sections: each PgDog table → sleddog's typed value, one entry at a time.
//!
//! Owns which keys each section accepts (one `match` per section; anything
//! else goes to `known.rs`) and PgDog's per-entry defaults. Checks that need
//! more than one entry (duplicates, references between files, min > max
//! across levels) belong to validate.rs, not here.

use std::path::PathBuf;

use super::known::{self, Scope};
use super::model::{
    default_workers, AuthType, ConnectionRecovery, Database, General, LoadBalancingStrategy,
    PoolerMode, PreparedStatements, ReadWriteSplit, ReadWriteStrategy, Role, User,
};
use super::raw::{Entry, Kind, Node, RawTable};
use super::read::{self, path, Ctx};
use super::sharding::{self, ShardingSections};

/// Lines of the keys an entry set, so cross-entry checks can point at them.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct KeyLines {
    /// Line of the table header (or of the URL for `--database_url`).
    pub header: usize,
    keys: Vec<(String, usize)>,
}

impl KeyLines {
    pub fn new(header: usize) -> Self {
        KeyLines {
            header,
            keys: Vec::new(),
        }
    }

    pub fn set(&mut self, key: &str, line: usize) {
        self.keys.push((key.to_string(), line));
    }

    /// The key's line, or the header's when the key was not written.
    pub fn line(&self, key: &str) -> usize {
        self.keys
            .iter()
            .find(|(name, _)| name == key)
            .map_or(self.header, |(_, line)| *line)
    }

    pub fn has(&self, key: &str) -> bool {
        self.keys.iter().any(|(name, _)| name == key)
    }
}

/// A `[[databases]]` entry plus where it came from.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ParsedDatabase {
    pub database: Database,
    pub file: PathBuf,
    /// Key prefix for messages, e.g. `databases[2]`.
    pub prefix: String,
    pub lines: KeyLines,
}

/// A `[[users]]` entry plus where it came from.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ParsedUser {
    /// `databases` holds the resolved list except for `all_databases`,
    /// which validate.rs expands once every cluster is known.
    pub user: User,
    pub all_databases: bool,
    pub file: PathBuf,
    pub prefix: String,
    pub lines: KeyLines,
}

/// `[admin]` as written; unset keys take PgDog's defaults later.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ParsedAdmin {
    pub name: Option<String>,
    pub user: Option<String>,
    pub password: Option<String>,
}

/// Everything pgdog.toml says that sleddog uses.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct PgdogFile {
    pub general: General,
    pub general_lines: KeyLines,
    pub databases: Vec<ParsedDatabase>,
    pub admin: Option<ParsedAdmin>,
    pub sharding: ShardingSections,
}

/// Everything users.toml says that sleddog uses.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct UsersFile {
    pub users: Vec<ParsedUser>,
    pub admin: Option<ParsedAdmin>,
}

pub(crate) fn read_pgdog_file(ctx: &mut Ctx<'_>, root: &RawTable) -> PgdogFile {
    let mut file = PgdogFile::default();
    for entry in &root.entries {
        match entry.key.as_str() {
            "general" => {
                if let Some(table) = expect_table(ctx, "general", &entry.value) {
                    (file.general, file.general_lines) = read_general(ctx, table);
                }
            }
            "databases" => file.databases = read_databases(ctx, &entry.value),
            "admin" => file.admin = read_admin(ctx, &entry.value),
            "sharded_tables" => {
                sharding::read_sharded_tables(ctx, &entry.value, &mut file.sharding)
            }
            // Both spellings appear in PgDog's docs and configs.
            "sharded_mapping" | "sharded_mappings" => {
                sharding::read_mappings(ctx, &entry.key, &entry.value, &mut file.sharding)
            }
            "omnisharded_tables" => {
                sharding::read_omnisharded(ctx, &entry.value, &mut file.sharding)
            }
            "sharded_schemas" => {
                sharding::read_sharded_schemas(ctx, &entry.value, &mut file.sharding)
            }
            _ => ctx.unhandled(Scope::Section, &entry.key, entry),
        }
    }
    file
}

pub(crate) fn read_users_file(ctx: &mut Ctx<'_>, root: &RawTable) -> UsersFile {
    let mut file = UsersFile::default();
    for entry in &root.entries {
        match entry.key.as_str() {
            "users" => file.users = read_users(ctx, &entry.value),
            "admin" => file.admin = read_admin(ctx, &entry.value),
            _ => ctx.error(entry.line, &entry.key, "unknown key (not a PgDog setting)"),
        }
    }
    file
}

fn expect_table<'n>(ctx: &mut Ctx<'_>, key: &str, node: &'n Node) -> Option<&'n RawTable> {
    match &node.kind {
        Kind::Table(table) => Some(table),
        other => {
            let found = other.type_name();
            ctx.error(node.line, key, format!("expected a table, found {found}"));
            None
        }
    }
}

/// `[[x]]` (or `x = [{...}]`): the tables, each with its index.
pub(crate) fn table_array<'n>(
    ctx: &mut Ctx<'_>,
    key: &str,
    node: &'n Node,
) -> Vec<(usize, &'n RawTable)> {
    let Kind::Array(elements) = &node.kind else {
        let found = node.kind.type_name();
        ctx.error(
            node.line,
            key,
            format!("expected an array of tables ([[{key}]]), found {found}"),
        );
        return Vec::new();
    };
    elements
        .iter()
        .enumerate()
        .filter_map(|(index, element)| {
            expect_table(ctx, &format!("{key}[{index}]"), element).map(|table| (index, table))
        })
        .collect()
}

fn read_general(ctx: &mut Ctx<'_>, table: &RawTable) -> (General, KeyLines) {
    let mut general = General::default();
    let mut lines = KeyLines::new(table.line);
    for entry in &table.entries {
        general_entry(ctx, &mut general, &mut lines, entry);
    }
    (general, lines)
}

pub(crate) const POOLER_MODES: &[(&str, PoolerMode)] = &[
    ("transaction", PoolerMode::Transaction),
    ("session", PoolerMode::Session),
];
pub(crate) const POOLER_MODES_UNSUPPORTED: &[(&str, &str)] = &[(
    "statement",
    "is accepted by PgDog's parser but not supported by sleddog",
)];

pub(crate) const ROLES: &[(&str, Role)] = &[
    ("primary", Role::Primary),
    ("replica", Role::Replica),
    ("auto", Role::Auto),
];

const AUTH_TYPES: &[(&str, AuthType)] = &[
    ("scram", AuthType::Scram),
    ("md5", AuthType::Md5),
    ("plain", AuthType::Plain),
    ("trust", AuthType::Trust),
];
const AUTH_TYPES_UNSUPPORTED: &[(&str, &str)] = &[(
    "external_token",
    "(RDS IAM / Azure identity) is not supported by sleddog yet",
)];

const PREPARED_STATEMENTS: &[(&str, PreparedStatements)] = &[
    ("disabled", PreparedStatements::Disabled),
    ("extended", PreparedStatements::Extended),
    ("extended_anonymous", PreparedStatements::ExtendedAnonymous),
    ("full", PreparedStatements::Full),
];

/// PgDog parses both recovery keys into one enum, so both accept all three
/// (its docs list only `recover` and `drop` for `client_connection_recovery`).
const CONNECTION_RECOVERY: &[(&str, ConnectionRecovery)] = &[
    ("recover", ConnectionRecovery::Recover),
    ("rollback_only", ConnectionRecovery::RollbackOnly),
    ("drop", ConnectionRecovery::Drop),
];

pub(crate) const LOAD_BALANCING_STRATEGIES: &[(&str, LoadBalancingStrategy)] = &[
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
];

const READ_WRITE_STRATEGIES: &[(&str, ReadWriteStrategy)] = &[
    ("conservative", ReadWriteStrategy::Conservative),
    ("aggressive", ReadWriteStrategy::Aggressive),
];

const READ_WRITE_SPLITS: &[(&str, ReadWriteSplit)] = &[
    ("include_primary", ReadWriteSplit::IncludePrimary),
    ("exclude_primary", ReadWriteSplit::ExcludePrimary),
    (
        "include_primary_if_replica_banned",
        ReadWriteSplit::IncludePrimaryIfReplicaBanned,
    ),
    ("prefer_primary", ReadWriteSplit::PreferPrimary),
];

fn general_entry(ctx: &mut Ctx<'_>, general: &mut General, lines: &mut KeyLines, entry: &Entry) {
    if general_value(ctx, general, lines, entry)
        && known::is_unimplemented(Scope::General, &entry.key)
    {
        // Parsed and checked now, so a bad value fails today; sleddog does
        // not act on it until its row leaves known.rs.
        ctx.warn(entry.line, &path("general", &entry.key), known::IGNORED);
    }
}

/// Reads one `[general]` key into `general`; false when no arm took it.
fn general_value(
    ctx: &mut Ctx<'_>,
    general: &mut General,
    lines: &mut KeyLines,
    entry: &Entry,
) -> bool {
    let key = path("general", &entry.key);
    let node = &entry.value;
    match entry.key.as_str() {
        "host" => set(&mut general.host, read::name(ctx, &key, node)),
        "port" => set(&mut general.port, read::port(ctx, &key, node)),
        "workers" => set(&mut general.workers, workers(ctx, &key, node)),
        // `max_pool_size` is PgDog's serde alias (general.rs).
        "default_pool_size" | "max_pool_size" => {
            if lines.has("default_pool_size") {
                ctx.error(
                    entry.line,
                    &key,
                    "set twice (`max_pool_size` is an alias of `default_pool_size`)",
                );
            }
            lines.set("default_pool_size", entry.line);
            set(
                &mut general.default_pool_size,
                read::pool_size(ctx, &key, node),
            );
        }
        "min_pool_size" => {
            lines.set("min_pool_size", entry.line);
            set(&mut general.min_pool_size, read::count(ctx, &key, node));
        }
        "pooler_mode" => set(
            &mut general.pooler_mode,
            read::choice(ctx, &key, node, POOLER_MODES, POOLER_MODES_UNSUPPORTED),
        ),
        "connect_timeout" => set(
            &mut general.connect_timeout_ms,
            read::millis(ctx, &key, node),
        ),
        "checkout_timeout" => set(
            &mut general.checkout_timeout_ms,
            read::millis(ctx, &key, node),
        ),
        "idle_timeout" => set(&mut general.idle_timeout_ms, read::millis(ctx, &key, node)),
        "server_lifetime" => set(
            &mut general.server_lifetime_ms,
            read::millis(ctx, &key, node),
        ),
        "query_timeout" => general.query_timeout_ms = read::millis(ctx, &key, node),
        "client_idle_timeout" => general.client_idle_timeout_ms = read::millis(ctx, &key, node),
        "shutdown_timeout" => set(
            &mut general.shutdown_timeout_ms,
            read::millis(ctx, &key, node),
        ),
        "auth_type" => set(
            &mut general.auth_type,
            read::choice(ctx, &key, node, AUTH_TYPES, AUTH_TYPES_UNSUPPORTED),
        ),
        "max_client_connections" => set(
            &mut general.max_client_connections,
            read::at_least_one(ctx, &key, node),
        ),
        "dns_ttl" => general.dns_ttl_ms = read::millis(ctx, &key, node),
        "prepared_statements" => set(
            &mut general.prepared_statements,
            read::choice(ctx, &key, node, PREPARED_STATEMENTS, &[]),
        ),
        "prepared_statements_limit" => {
            general.prepared_statements_limit = read::count(ctx, &key, node)
        }
        "client_idle_in_transaction_timeout" => {
            general.client_idle_in_transaction_timeout_ms = read::millis(ctx, &key, node)
        }
        "connection_recovery" => set(
            &mut general.connection_recovery,
            read::choice(ctx, &key, node, CONNECTION_RECOVERY, &[]),
        ),
        "client_connection_recovery" => set(
            &mut general.client_connection_recovery,
            read::choice(ctx, &key, node, CONNECTION_RECOVERY, &[]),
        ),
        "pub_sub_channel_size" => set(
            &mut general.pub_sub_channel_size,
            read::count(ctx, &key, node),
        ),
        "cross_shard_disabled" => set(
            &mut general.cross_shard_disabled,
            read::boolean(ctx, &key, node),
        ),
        "omnisharded_sticky" => set(
            &mut general.omnisharded_sticky,
            read::boolean(ctx, &key, node),
        ),
        _ => return balance_value(ctx, general, entry),
    }
    true
}

/// The load-balancing and health keys of `[general]`; false when none matched.
fn balance_value(ctx: &mut Ctx<'_>, general: &mut General, entry: &Entry) -> bool {
    let key = path("general", &entry.key);
    let node = &entry.value;
    match entry.key.as_str() {
        "load_balancing_strategy" => set(
            &mut general.load_balancing_strategy,
            read::choice(ctx, &key, node, LOAD_BALANCING_STRATEGIES, &[]),
        ),
        "read_write_strategy" => set(
            &mut general.read_write_strategy,
            read::choice(ctx, &key, node, READ_WRITE_STRATEGIES, &[]),
        ),
        "read_write_split" => set(
            &mut general.read_write_split,
            read::choice(ctx, &key, node, READ_WRITE_SPLITS, &[]),
        ),
        "healthcheck_interval" => set(
            &mut general.healthcheck_interval_ms,
            read::millis(ctx, &key, node),
        ),
        "idle_healthcheck_interval" => set(
            &mut general.idle_healthcheck_interval_ms,
            period_millis(ctx, &key, node),
        ),
        "idle_healthcheck_delay" => set(
            &mut general.idle_healthcheck_delay_ms,
            read::millis(ctx, &key, node),
        ),
        "healthcheck_timeout" => set(
            &mut general.healthcheck_timeout_ms,
            read::millis(ctx, &key, node),
        ),
        "ban_timeout" => set(&mut general.ban_timeout_ms, read::millis(ctx, &key, node)),
        "ban_replica_lag" => general.ban_replica_lag_ms = read::millis(ctx, &key, node),
        "ban_replica_lag_bytes" => general.ban_replica_lag_bytes = read::unsigned(ctx, &key, node),
        "lsn_check_interval" => set(
            &mut general.lsn_check_interval_ms,
            period_millis(ctx, &key, node),
        ),
        "lsn_check_timeout" => set(
            &mut general.lsn_check_timeout_ms,
            read::millis(ctx, &key, node),
        ),
        "lsn_check_delay" => general.lsn_check_delay_ms = read::millis(ctx, &key, node),
        "query_cache_limit" => set(&mut general.query_cache_limit, read::count(ctx, &key, node)),
        _ => {
            ctx.unhandled(Scope::General, &key, entry);
            return false;
        }
    }
    true
}

/// The period of a repeating probe: 0 would make it spin (PgDog's Tokio
/// `interval` panics on a zero period), so it must be at least 1 ms.
fn period_millis(ctx: &mut Ctx<'_>, key: &str, node: &Node) -> Option<u64> {
    let value = read::millis(ctx, key, node)?;
    if value == 0 {
        ctx.error(node.line, key, "must be at least 1");
        return None;
    }
    Some(value)
}

/// `lb_weight`: PgDog reads it as a `u8`. Shared with `-d` URLs' `?lb_weight=`.
pub(crate) fn lb_weight(ctx: &mut Ctx<'_>, key: &str, node: &Node) -> Option<u8> {
    let value = read::unsigned(ctx, key, node)?;
    match u8::try_from(value) {
        Ok(weight) => Some(weight),
        Err(_) => {
            ctx.error(
                node.line,
                key,
                format!("must be between 0 and 255, found {value}"),
            );
            None
        }
    }
}

/// Keep the default when the value was bad; the error is already recorded.
fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *slot = value;
    }
}

/// PgDog's `workers = 0` means "one current-thread runtime"; the nearest
/// sleddog equivalent is one core, so accept it rather than break the config.
fn workers(ctx: &mut Ctx<'_>, key: &str, node: &Node) -> Option<usize> {
    let workers = read::count(ctx, key, node)?;
    if workers == 0 {
        ctx.warn(
            node.line,
            key,
            format!("0 means PgDog's single-threaded runtime; sleddog runs 1 core (default would be {})", default_workers()),
        );
        return Some(1);
    }
    Some(workers)
}

fn read_databases(ctx: &mut Ctx<'_>, node: &Node) -> Vec<ParsedDatabase> {
    table_array(ctx, "databases", node)
        .into_iter()
        .filter_map(|(index, table)| read_database(ctx, &format!("databases[{index}]"), table))
        .collect()
}

fn read_database(ctx: &mut Ctx<'_>, prefix: &str, table: &RawTable) -> Option<ParsedDatabase> {
    let mut lines = KeyLines::new(table.line);
    let mut name = None;
    let mut host = None;
    let mut database_name = None;
    let mut database = Database::new(String::new(), String::new());
    for entry in &table.entries {
        let key = path(prefix, &entry.key);
        let node = &entry.value;
        match entry.key.as_str() {
            "name" => name = read::name(ctx, &key, node),
            "host" => host = read::name(ctx, &key, node),
            "port" => set(&mut database.port, read::port(ctx, &key, node)),
            "database_name" => database_name = read::name(ctx, &key, node),
            "user" => database.user = read::name(ctx, &key, node),
            "password" => database.password = read::string(ctx, &key, node),
            "role" => set(
                &mut database.role,
                read::choice(ctx, &key, node, ROLES, &[]),
            ),
            "shard" => set(&mut database.shard, read::shard(ctx, &key, node)),
            "pool_size" => database.pool_size = read::pool_size(ctx, &key, node),
            "min_pool_size" => database.min_pool_size = read::count(ctx, &key, node),
            "pooler_mode" => {
                database.pooler_mode =
                    read::choice(ctx, &key, node, POOLER_MODES, POOLER_MODES_UNSUPPORTED)
            }
            "lb_weight" => set(&mut database.lb_weight, lb_weight(ctx, &key, node)),
            _ => {
                ctx.unhandled(Scope::Database, &key, entry);
                continue;
            }
        }
        lines.set(&entry.key, entry.line);
    }
    let required = [("name", &name), ("host", &host)];
    for (key, value) in required {
        if value.is_none() && !lines.has(key) {
            ctx.error(table.line, &path(prefix, key), "required");
        }
    }
    database.name = name?;
    database.host = host?;
    database.database_name = database_name.unwrap_or_else(|| database.name.clone());
    Some(ParsedDatabase {
        database,
        file: ctx.file.to_path_buf(),
        prefix: prefix.to_string(),
        lines,
    })
}

fn read_users(ctx: &mut Ctx<'_>, node: &Node) -> Vec<ParsedUser> {
    table_array(ctx, "users", node)
        .into_iter()
        .filter_map(|(index, table)| read_user(ctx, &format!("users[{index}]"), table))
        .collect()
}

/// What one `[[users]]` table wrote, before PgDog's database rules apply.
#[derive(Default)]
struct UserKeys {
    name: Option<String>,
    database: Option<String>,
    databases: Option<Vec<String>>,
    all_databases: bool,
    password: Option<String>,
    passwords: Vec<String>,
}

fn read_user(ctx: &mut Ctx<'_>, prefix: &str, table: &RawTable) -> Option<ParsedUser> {
    let mut lines = KeyLines::new(table.line);
    let mut keys = UserKeys::default();
    let mut user = User::new(String::new());
    for entry in &table.entries {
        let key = path(prefix, &entry.key);
        let node = &entry.value;
        match entry.key.as_str() {
            "name" => keys.name = read::name(ctx, &key, node),
            "database" => keys.database = read::name(ctx, &key, node),
            "databases" => keys.databases = read::string_list(ctx, &key, node),
            "all_databases" => keys.all_databases = read::boolean(ctx, &key, node).unwrap_or(false),
            "password" => keys.password = read::string(ctx, &key, node),
            "passwords" => keys.passwords = read::string_list(ctx, &key, node).unwrap_or_default(),
            "password_hash" => user.password_hash = read::name(ctx, &key, node),
            "server_user" => user.server_user = read::name(ctx, &key, node),
            "server_password" => user.server_password = read::string(ctx, &key, node),
            "pool_size" => user.pool_size = read::pool_size(ctx, &key, node),
            "min_pool_size" => user.min_pool_size = read::count(ctx, &key, node),
            "cross_shard_disabled" => user.cross_shard_disabled = read::boolean(ctx, &key, node),
            "pooler_mode" => {
                user.pooler_mode =
                    read::choice(ctx, &key, node, POOLER_MODES, POOLER_MODES_UNSUPPORTED)
            }
            _ => {
                ctx.unhandled(Scope::User, &key, entry);
                continue;
            }
        }
        lines.set(&entry.key, entry.line);
    }
    if keys.name.is_none() && !lines.has("name") {
        ctx.error(table.line, &path(prefix, "name"), "required");
    }
    user.name = keys.name.take()?;
    user.databases = user_databases(ctx, prefix, &lines, &keys);
    // PgDog's order (users.rs `passwords()`): the list first, then `password`.
    user.passwords = keys.passwords;
    user.passwords
        .extend(keys.password.filter(|p| !p.is_empty()));
    Some(ParsedUser {
        user,
        all_databases: keys.all_databases,
        file: ctx.file.to_path_buf(),
        prefix: prefix.to_string(),
        lines,
    })
}

/// PgDog (users.rs `check`): `database` wins over `databases` (with a
/// warning); `all_databases` wins over both (with a warning).
fn user_databases(
    ctx: &mut Ctx<'_>,
    prefix: &str,
    lines: &KeyLines,
    keys: &UserKeys,
) -> Vec<String> {
    let listed = keys.databases.clone().unwrap_or_default();
    if keys.all_databases {
        if keys.database.is_some() || !listed.is_empty() {
            ctx.warn(
                lines.line("all_databases"),
                &path(prefix, "all_databases"),
                "set together with `database`/`databases`; all databases are used (as PgDog does)",
            );
        }
        return Vec::new();
    }
    if let Some(database) = &keys.database {
        if !listed.is_empty() {
            ctx.warn(
                lines.line("databases"),
                &path(prefix, "databases"),
                format!("ignored because `database = \"{database}\"` is set (as PgDog does)"),
            );
        }
        return vec![database.clone()];
    }
    listed
}

fn read_admin(ctx: &mut Ctx<'_>, node: &Node) -> Option<ParsedAdmin> {
    let table = expect_table(ctx, "admin", node)?;
    let mut admin = ParsedAdmin::default();
    for entry in &table.entries {
        let key = path("admin", &entry.key);
        let node = &entry.value;
        match entry.key.as_str() {
            "name" => admin.name = read::name(ctx, &key, node),
            "user" => admin.user = read::name(ctx, &key, node),
            "password" => admin.password = read::name(ctx, &key, node),
            _ => ctx.error(entry.line, &key, "unknown key (not a PgDog setting)"),
        }
    }
    Some(admin)
}
