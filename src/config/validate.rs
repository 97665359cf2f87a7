//! Cross-entry validation and assembly of the final `Config`.
//!
//! Owns every rule that needs more than one entry or both files: primaries
//! per (cluster, shard), users naming existing clusters, one entry per user
//! name, min_pool_size ≤ pool_size after PgDog's overrides, the `[admin]`
//! precedence (users.toml replaces pgdog.toml's whole section) and the
//! `--database_url` replacement; shard maps are shard_map.rs's. It must not read TOML; sections.rs did.

use std::collections::HashMap;
use std::path::Path;

use super::diagnostic::Diagnostics;
use super::model::{Admin, AuthType, Config, General, Role, User};
use super::sections::{KeyLines, ParsedAdmin, ParsedDatabase, ParsedUser, PgdogFile, UsersFile};
use super::shard_map;

/// Databases and users from `--database_url`, which replace both files'.
pub(crate) struct FromUrls {
    pub databases: Vec<ParsedDatabase>,
    pub users: Vec<ParsedUser>,
}

/// The two config files' names, for findings that are about a whole file.
pub(crate) struct Files<'a> {
    pub config: &'a Path,
    pub users: &'a Path,
}

pub(crate) fn assemble(
    diagnostics: &mut Diagnostics,
    files: &Files<'_>,
    pgdog: PgdogFile,
    users_file: UsersFile,
    from_urls: Option<FromUrls>,
) -> Config {
    check_general(
        diagnostics,
        files.config,
        &pgdog.general,
        &pgdog.general_lines,
    );
    let (databases, users) = match from_urls {
        Some(from_urls) => {
            note_replaced(diagnostics, &pgdog.databases, &users_file.users);
            (from_urls.databases, from_urls.users)
        }
        None => (pgdog.databases, users_file.users),
    };
    check_primaries(diagnostics, &databases);
    check_cluster_entries(diagnostics, &databases);
    let users = resolve_users(diagnostics, &databases, users);
    let users = merge_users(diagnostics, users);
    check_pool_sizes(
        diagnostics,
        files.config,
        &pgdog.general,
        &pgdog.general_lines,
        &databases,
        &users,
    );
    check_passwords(diagnostics, pgdog.general.auth_type, &users);
    let sharding = shard_map::build(diagnostics, &databases, pgdog.sharding);
    let admin = admin(diagnostics, files, pgdog.admin, users_file.admin);
    Config {
        general: pgdog.general,
        databases: databases.into_iter().map(|d| d.database).collect(),
        users: users.into_iter().map(|u| u.user).collect(),
        admin,
        sharding,
    }
}

fn check_general(diagnostics: &mut Diagnostics, file: &Path, general: &General, lines: &KeyLines) {
    if general.min_pool_size > general.default_pool_size {
        diagnostics.error(
            file,
            lines.line("min_pool_size"),
            "general.min_pool_size",
            format!(
                "{} is larger than default_pool_size {}",
                general.min_pool_size, general.default_pool_size
            ),
        );
    }
}

/// PgDog: URLs replace `[[databases]]` and users.toml's `[[users]]`.
fn note_replaced(
    diagnostics: &mut Diagnostics,
    databases: &[ParsedDatabase],
    users: &[ParsedUser],
) {
    if let Some(first) = databases.first() {
        diagnostics.warn(
            &first.file,
            first.lines.header,
            "databases",
            "ignored: --database_url replaces [[databases]] (as in PgDog)",
        );
    }
    if let Some(first) = users.first() {
        diagnostics.warn(
            &first.file,
            first.lines.header,
            "users",
            "ignored: --database_url replaces [[users]] (as in PgDog)",
        );
    }
}

/// `file:line`, as diagnostics name a place.
pub(super) fn where_(file: &Path, line: usize) -> String {
    format!("{}:{}", file.display(), line)
}

/// One primary per (cluster, shard); more would make writes ambiguous.
fn check_primaries(diagnostics: &mut Diagnostics, databases: &[ParsedDatabase]) {
    let mut primaries: HashMap<(&str, u16), &ParsedDatabase> = HashMap::new();
    for entry in databases {
        let database = &entry.database;
        if database.role != Role::Primary {
            continue;
        }
        let key = (database.name.as_str(), database.shard);
        match primaries.get(&key) {
            Some(first) => diagnostics.error(
                &entry.file,
                entry.lines.line("role"),
                &format!("{}.role", entry.prefix),
                format!(
                    "second primary for database `{}` shard {} (first at {})",
                    database.name,
                    database.shard,
                    where_(&first.file, first.lines.header)
                ),
            ),
            None => {
                primaries.insert(key, entry);
            }
        }
    }
}

/// PgDog's warnings (core.rs `check`): identical entries, and entries of
/// one cluster disagreeing on `pooler_mode` (the first one wins).
fn check_cluster_entries(diagnostics: &mut Diagnostics, databases: &[ParsedDatabase]) {
    for (index, entry) in databases.iter().enumerate() {
        let database = &entry.database;
        let earlier = &databases[..index];
        let same_server = |other: &&ParsedDatabase| {
            let o = &other.database;
            o.name == database.name
                && o.role == database.role
                && o.shard == database.shard
                && o.host == database.host
                && o.port == database.port
        };
        if database.role != Role::Primary {
            if let Some(first) = earlier.iter().find(same_server) {
                diagnostics.warn(
                    &entry.file,
                    entry.lines.header,
                    &entry.prefix,
                    format!("duplicate of {}", where_(&first.file, first.lines.header)),
                );
            }
        }
        if let Some(first) = earlier.iter().find(|o| o.database.name == database.name) {
            if first.database.pooler_mode != database.pooler_mode {
                diagnostics.warn(
                    &entry.file,
                    entry.lines.line("pooler_mode"),
                    &format!("{}.pooler_mode", entry.prefix),
                    format!(
                        "differs from the first `{}` entry ({}); the first entry's is used",
                        database.name,
                        where_(&first.file, first.lines.header)
                    ),
                );
            }
        }
    }
}

/// Expands `all_databases` and checks every named cluster exists.
fn resolve_users(
    diagnostics: &mut Diagnostics,
    databases: &[ParsedDatabase],
    users: Vec<ParsedUser>,
) -> Vec<ParsedUser> {
    let mut clusters: Vec<&str> = Vec::new();
    for entry in databases {
        if !clusters.contains(&entry.database.name.as_str()) {
            clusters.push(&entry.database.name);
        }
    }
    let mut resolved = Vec::with_capacity(users.len());
    for mut entry in users {
        if entry.all_databases {
            entry.user.databases = clusters.iter().map(|c| c.to_string()).collect();
            if clusters.is_empty() {
                diagnostics.warn(
                    &entry.file,
                    entry.lines.line("all_databases"),
                    &format!("{}.all_databases", entry.prefix),
                    "no [[databases]] are configured, so this user has no pool",
                );
            }
        } else if entry.user.databases.is_empty() {
            diagnostics.error(
                &entry.file,
                entry.lines.header,
                &format!("{}.database", entry.prefix),
                format!(
                    "user `{}` names no database; set `database`, `databases` or `all_databases = true`",
                    entry.user.name
                ),
            );
            continue;
        }
        let key = if entry.lines.has("database") {
            "database"
        } else {
            "databases"
        };
        let mut ok = true;
        for name in &entry.user.databases {
            if !clusters.contains(&name.as_str()) {
                ok = false;
                diagnostics.error(
                    &entry.file,
                    entry.lines.line(key),
                    &format!("{}.{key}", entry.prefix),
                    format!("database `{name}` is not defined in [[databases]]"),
                );
            }
        }
        if ok {
            resolved.push(entry);
        }
    }
    resolved
}

/// Everything about a user except the clusters it may use.
fn same_settings(a: &User, b: &User) -> bool {
    a.passwords == b.passwords
        && a.password_hash == b.password_hash
        && a.server_user == b.server_user
        && a.server_password == b.server_password
        && a.pool_size == b.pool_size
        && a.min_pool_size == b.min_pool_size
        && a.pooler_mode == b.pooler_mode
        && a.cross_shard_disabled == b.cross_shard_disabled
}

/// One `User` per name. PgDog keys users by (name, database), so the same
/// name may appear once per cluster; identical settings merge into one
/// sleddog user, anything else is an error until sleddog keys users the same way.
fn merge_users(diagnostics: &mut Diagnostics, users: Vec<ParsedUser>) -> Vec<ParsedUser> {
    let mut merged: Vec<ParsedUser> = Vec::with_capacity(users.len());
    for entry in users {
        let Some(first) = merged.iter_mut().find(|u| u.user.name == entry.user.name) else {
            merged.push(entry);
            continue;
        };
        let first_at = where_(&first.file, first.lines.header);
        let key = format!("{}.name", entry.prefix);
        let line = entry.lines.line("name");
        if let Some(shared) = entry
            .user
            .databases
            .iter()
            .find(|d| first.user.databases.contains(d))
        {
            diagnostics.error(
                &entry.file,
                line,
                &key,
                format!(
                    "duplicate user `{}` for database `{shared}` (first at {first_at})",
                    entry.user.name
                ),
            );
        } else if same_settings(&first.user, &entry.user) {
            first.user.databases.extend(entry.user.databases);
        } else {
            diagnostics.error(
                &entry.file,
                line,
                &key,
                format!(
                    "user `{}` is also defined at {first_at} with different settings; sleddog needs one entry per user name",
                    entry.user.name
                ),
            );
        }
    }
    merged
}

/// One side of a min/max comparison and where its value came from.
struct Sourced<'a> {
    value: usize,
    file: &'a Path,
    line: usize,
    key: String,
    /// 0 = [general], 1 = [[databases]], 2 = [[users]].
    level: u8,
}

fn pick<'a>(
    user: Option<(&'a ParsedUser, Option<usize>, &str)>,
    database: Option<(&'a ParsedDatabase, Option<usize>, &str)>,
    general: (&'a Path, &KeyLines, usize, &str),
) -> Sourced<'a> {
    let sourced = |value, file, lines: &KeyLines, prefix: &str, key: &str, level| Sourced {
        value,
        file,
        line: lines.line(key),
        key: format!("{prefix}.{key}"),
        level,
    };
    if let Some((entry, Some(value), key)) = user {
        return sourced(value, &entry.file, &entry.lines, &entry.prefix, key, 2);
    }
    if let Some((entry, Some(value), key)) = database {
        return sourced(value, &entry.file, &entry.lines, &entry.prefix, key, 1);
    }
    let (file, lines, value, key) = general;
    sourced(value, file, lines, "general", key, 0)
}

/// min_pool_size ≤ pool_size after PgDog's override order. Each conflict is
/// reported once, at the most specific level that took part in it.
fn check_pool_sizes(
    diagnostics: &mut Diagnostics,
    config_file: &Path,
    general: &General,
    general_lines: &KeyLines,
    databases: &[ParsedDatabase],
    users: &[ParsedUser],
) {
    let general_min = (
        config_file,
        general_lines,
        general.min_pool_size,
        "min_pool_size",
    );
    let general_max = (
        config_file,
        general_lines,
        general.default_pool_size,
        "default_pool_size",
    );
    for entry in databases {
        let db = &entry.database;
        let min = pick(
            None,
            Some((entry, db.min_pool_size, "min_pool_size")),
            general_min,
        );
        let max = pick(None, Some((entry, db.pool_size, "pool_size")), general_max);
        report_min_max(diagnostics, &min, &max, 1);
    }
    for entry in users {
        for cluster in &entry.user.databases {
            let Some(first) = databases.iter().find(|d| &d.database.name == cluster) else {
                continue;
            };
            let user = &entry.user;
            let min = pick(
                Some((entry, user.min_pool_size, "min_pool_size")),
                Some((first, first.database.min_pool_size, "min_pool_size")),
                general_min,
            );
            let max = pick(
                Some((entry, user.pool_size, "pool_size")),
                Some((first, first.database.pool_size, "pool_size")),
                general_max,
            );
            report_min_max(diagnostics, &min, &max, 2);
        }
    }
}

fn report_min_max(diagnostics: &mut Diagnostics, min: &Sourced<'_>, max: &Sourced<'_>, level: u8) {
    if min.value <= max.value || min.level.max(max.level) != level {
        return;
    }
    // Point at whichever side this level wrote; prefer min_pool_size.
    let (at, other) = if min.level == level {
        (min, max)
    } else {
        (max, min)
    };
    // Line 0: the other side is a [general] default nobody wrote down.
    let origin = match other.line {
        0 => format!("default of `{}`", other.key),
        line => format!("`{}` at {}", other.key, where_(other.file, line)),
    };
    diagnostics.error(
        at.file,
        at.line,
        &at.key,
        format!(
            "min_pool_size {} is larger than pool_size {} ({origin})",
            min.value, max.value
        ),
    );
}

/// PgDog's warnings (users.rs `check`) for users that cannot log in or
/// cannot open server connections on their own.
fn check_passwords(diagnostics: &mut Diagnostics, auth_type: AuthType, users: &[ParsedUser]) {
    for entry in users {
        let user = &entry.user;
        if auth_type != AuthType::Trust && user.passwords.is_empty() && user.password_hash.is_none()
        {
            diagnostics.warn(
                &entry.file,
                entry.lines.header,
                &format!("{}.password", entry.prefix),
                format!(
                    "user `{}` has no password and auth_type is not `trust`; it cannot log in",
                    user.name
                ),
            );
        }
        if user.passwords.is_empty()
            && user.password_hash.is_some()
            && user.server_password.is_none()
        {
            diagnostics.warn(
                &entry.file,
                entry.lines.line("password_hash"),
                &format!("{}.server_password", entry.prefix),
                format!(
                    "user `{}` uses `password_hash` without `server_password`; server logins need a database-level password or trust",
                    user.name
                ),
            );
        }
    }
}

/// PgDog (core.rs `load`): users.toml `[admin]` replaces pgdog.toml's as a
/// whole; unset keys default to `admin`/`admin`/random password.
fn admin(
    diagnostics: &mut Diagnostics,
    files: &Files<'_>,
    from_config: Option<ParsedAdmin>,
    from_users: Option<ParsedAdmin>,
) -> Admin {
    let (parsed, file) = match (from_users, from_config) {
        (Some(admin), _) => (admin, files.users),
        (None, Some(admin)) => (admin, files.config),
        (None, None) => (ParsedAdmin::default(), files.config),
    };
    let password = parsed.password.unwrap_or_else(|| {
        let password = random_password(diagnostics, file);
        diagnostics.warn(
            file,
            0,
            "admin.password",
            "not set; a random password was generated, so the admin database is locked until one is set",
        );
        password
    });
    Admin {
        name: parsed.name.unwrap_or_else(|| "admin".to_string()),
        user: parsed.user.unwrap_or_else(|| "admin".to_string()),
        password,
    }
}

/// PgDog's shape (`_pgdog_` + random), with 128 bits from the OS.
fn random_password(diagnostics: &mut Diagnostics, file: &Path) -> String {
    let mut bytes = [0u8; 16];
    if let Err(error) = getrandom::getrandom(&mut bytes) {
        diagnostics.error(
            file,
            0,
            "admin.password",
            format!("not set, and no OS randomness to generate one: {error}"),
        );
    }
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("_pgdog_{hex}")
}

#[cfg(test)]
mod tests {
    // Behaviour is tested end to end through `config::parse` in mod.rs,
    // where line numbers come from real TOML text.
    use super::*;

    #[test]
    fn random_password_shape() {
        let mut diagnostics = Diagnostics::default();
        let a = random_password(&mut diagnostics, Path::new("x"));
        let b = random_password(&mut diagnostics, Path::new("x"));
        assert!(a.starts_with("_pgdog_") && a.len() == 7 + 32);
        assert_ne!(a, b);
    }

    #[test]
    fn settings_comparison_ignores_databases() {
        let user = User {
            databases: vec!["x".into()],
            passwords: vec!["p".into()],
            ..User::new("a".into())
        };
        let mut other = User {
            databases: vec!["y".into()],
            ..user.clone()
        };
        assert!(same_settings(&user, &other));
        other.pool_size = Some(3);
        assert!(!same_settings(&user, &other));
    }
}
