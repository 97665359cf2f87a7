//! `-d/--database_url` values → `[[databases]]` + `[[users]]` entries.
//!
//! Mirrors PgDog's `pgdog-config/src/url.rs`: the cluster name is the URL
//! path (default `postgres`), host defaults to 127.0.0.1, port to 5432, the
//! user to `$USER` (else `postgres`), the password to `postgres`; query
//! parameters set database keys (PgDog's, plus `lb_weight`, which PgDog's
//! URL form lacks); each URL also yields a user for that
//! cluster; exact duplicates collapse. Unlike PgDog, which silently drops an
//! unparsable parameter value or unknown parameter, sleddog reports it: a
//! typo must not silently start a differently configured proxy.
//! This file parses URLs only; cross-entry checks live in validate.rs.

use std::path::{Path, PathBuf};

use super::diagnostic::Diagnostics;
use super::known::{self, Scope};
use super::model::{Database, User, DEFAULT_SERVER_PORT};
use super::raw::{Kind, Node};
use super::read::{self, Ctx};
use super::sections::{
    lb_weight, KeyLines, ParsedDatabase, ParsedUser, POOLER_MODES, POOLER_MODES_UNSUPPORTED, ROLES,
};

/// The "file" URL diagnostics name; their line is the URL's 1-based position.
pub(crate) const URL_SOURCE: &str = "--database_url";

const DEFAULT_HOST: &str = "127.0.0.1";
const DEFAULT_DATABASE: &str = "postgres";
const DEFAULT_USER: &str = "postgres";
const DEFAULT_PASSWORD: &str = "postgres";

/// Databases and users defined by the URLs, duplicates removed.
pub(crate) fn read_urls(
    diagnostics: &mut Diagnostics,
    urls: &[String],
) -> (Vec<ParsedDatabase>, Vec<ParsedUser>) {
    let file = PathBuf::from(URL_SOURCE);
    let mut ctx = Ctx {
        file: &file,
        diagnostics,
    };
    let mut databases: Vec<ParsedDatabase> = Vec::new();
    let mut users: Vec<ParsedUser> = Vec::new();
    for (index, url) in urls.iter().enumerate() {
        let Some((database, user)) = read_url(&mut ctx, index, url) else {
            continue;
        };
        if !databases.iter().any(|d| d.database == database.database) {
            databases.push(database);
        }
        if !users.iter().any(|u| u.user == user.user) {
            users.push(user);
        }
    }
    (databases, users)
}

/// The pieces of `scheme://user:password@host:port/path?query`, still encoded.
#[derive(Debug, PartialEq)]
struct UrlParts<'a> {
    user: &'a str,
    password: Option<&'a str>,
    host: &'a str,
    port: Option<&'a str>,
    path: &'a str,
    query: &'a str,
}

fn split_url(url: &str) -> Result<UrlParts<'_>, String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or("not a URL; expected postgres://user:password@host:port/database")?;
    if scheme != "postgres" && scheme != "postgresql" {
        return Err(format!(
            "scheme `{scheme}` is not `postgres` or `postgresql`"
        ));
    }
    let rest = rest.split_once('#').map_or(rest, |(before, _)| before);
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (userinfo, hostport) = authority.rsplit_once('@').unwrap_or(("", authority));
    let (user, password) = match userinfo.split_once(':') {
        Some((user, password)) => (user, Some(password)),
        None => (userinfo, None),
    };
    let (host, port) = split_host_port(hostport)?;
    Ok(UrlParts {
        user,
        password,
        host,
        port,
        path,
        query,
    })
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`.
fn split_host_port(hostport: &str) -> Result<(&str, Option<&str>), String> {
    if let Some(bracketed) = hostport.strip_prefix('[') {
        let (host, after) = bracketed
            .split_once(']')
            .ok_or("unclosed `[` in IPv6 host")?;
        return match after {
            "" => Ok((host, None)),
            _ => match after.strip_prefix(':') {
                Some(port) => Ok((host, Some(port))),
                None => Err(format!("unexpected `{after}` after IPv6 host")),
            },
        };
    }
    Ok(match hostport.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (hostport, None),
    })
}

/// RFC 3986 percent-decoding; `plus_is_space` for query strings (form encoding).
fn decode(text: &str, plus_is_space: bool) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'%' => {
                let hex = bytes
                    .get(index + 1..index + 3)
                    .and_then(|pair| std::str::from_utf8(pair).ok())
                    .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                    .ok_or_else(|| format!("bad percent-encoding in `{text}`"))?;
                out.push(hex);
                index += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                index += 1;
            }
            byte => {
                out.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| format!("`{text}` does not decode to UTF-8"))
}

fn read_url(ctx: &mut Ctx<'_>, index: usize, url: &str) -> Option<(ParsedDatabase, ParsedUser)> {
    let line = index + 1;
    let parts = match split_url(url) {
        Ok(parts) => parts,
        Err(message) => {
            ctx.error(line, "database_url", message);
            return None;
        }
    };
    let mut ok = true;
    let mut decoded = |text: &str, key: &str, plus: bool| match decode(text, plus) {
        Ok(value) => Some(value),
        Err(message) => {
            ctx.error(line, key, message);
            ok = false;
            None
        }
    };
    let user_name = decoded(parts.user, "user", false).filter(|u| !u.is_empty());
    let password = parts.password.and_then(|p| decoded(p, "password", false));
    let host = decoded(parts.host, "host", false).filter(|h| !h.is_empty());
    let path = decoded(parts.path, "database", false).filter(|p| !p.is_empty());
    if !ok {
        return None;
    }
    let port = match parts.port {
        None | Some("") => DEFAULT_SERVER_PORT,
        Some(text) => url_port(ctx, line, text)?,
    };
    let name = path.unwrap_or_else(|| DEFAULT_DATABASE.to_string());
    let mut database = Database {
        port,
        ..Database::new(
            name.clone(),
            host.unwrap_or_else(|| DEFAULT_HOST.to_string()),
        )
    };
    if !read_params(ctx, line, parts.query, &mut database) {
        return None;
    }
    let user = User {
        databases: vec![name],
        passwords: vec![password.unwrap_or_else(|| DEFAULT_PASSWORD.to_string())],
        ..User::new(user_name.unwrap_or_else(default_user))
    };
    Some((parsed_database(database, line), parsed_user(user, line)))
}

/// PgDog: `$USER`, else `postgres`.
fn default_user() -> String {
    std::env::var("USER")
        .ok()
        .filter(|user| !user.is_empty())
        .unwrap_or_else(|| DEFAULT_USER.to_string())
}

fn url_port(ctx: &mut Ctx<'_>, line: usize, text: &str) -> Option<u16> {
    let node = integer_node(ctx, line, "port", text)?;
    read::port(ctx, "port", &node)
}

/// Query text as the TOML node it stands for, so URL values share the
/// TOML readers' checks and messages.
fn integer_node(ctx: &mut Ctx<'_>, line: usize, key: &str, text: &str) -> Option<Node> {
    match text.parse::<i64>() {
        Ok(value) => Some(Node {
            line,
            kind: Kind::Integer(value),
        }),
        Err(_) => {
            ctx.error(line, key, format!("expected an integer, found `{text}`"));
            None
        }
    }
}

fn string_node(line: usize, text: String) -> Node {
    Node {
        line,
        kind: Kind::String(text),
    }
}

/// Applies `?key=value&...`; false if any parameter was bad.
fn read_params(ctx: &mut Ctx<'_>, line: usize, query: &str, database: &mut Database) -> bool {
    let errors_before = ctx.diagnostics.errors.len();
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (raw_key, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
        let (Ok(key), Ok(value)) = (decode(raw_key, true), decode(raw_value, true)) else {
            ctx.error(line, raw_key, format!("bad percent-encoding in `{pair}`"));
            continue;
        };
        apply_param(ctx, line, &key, value, database);
    }
    ctx.diagnostics.errors.len() == errors_before
}

fn apply_param(ctx: &mut Ctx<'_>, line: usize, key: &str, value: String, database: &mut Database) {
    let integer = |ctx: &mut Ctx<'_>| integer_node(ctx, line, key, &value);
    match key {
        "database_name" => database.database_name = value,
        "user" => database.user = Some(value),
        "password" => database.password = Some(value),
        "role" => {
            let node = string_node(line, value.clone());
            if let Some(role) = read::choice(ctx, key, &node, ROLES, &[]) {
                database.role = role;
            }
        }
        "shard" => {
            if let Some(shard) = integer(ctx).and_then(|n| read::shard(ctx, key, &n)) {
                database.shard = shard;
            }
        }
        "pool_size" => {
            database.pool_size = integer(ctx).and_then(|n| read::pool_size(ctx, key, &n))
        }
        "min_pool_size" => {
            database.min_pool_size = integer(ctx).and_then(|n| read::count(ctx, key, &n))
        }
        // Not in PgDog's URL form (it drops unknown keys); taken so a server
        // of a URL-defined cluster can be weighted as in pgdog.toml.
        "lb_weight" => {
            if let Some(weight) = integer(ctx).and_then(|n| lb_weight(ctx, key, &n)) {
                database.lb_weight = weight;
            }
        }
        "pooler_mode" => {
            let node = string_node(line, value.clone());
            database.pooler_mode =
                read::choice(ctx, key, &node, POOLER_MODES, POOLER_MODES_UNSUPPORTED);
        }
        _ if known::is_unimplemented(Scope::Database, key) => ctx.warn(line, key, known::IGNORED),
        _ => ctx.error(line, key, "unknown URL parameter"),
    }
}

fn parsed_database(database: Database, line: usize) -> ParsedDatabase {
    ParsedDatabase {
        database,
        file: Path::new(URL_SOURCE).to_path_buf(),
        prefix: "database_url".to_string(),
        lines: KeyLines::new(line),
    }
}

fn parsed_user(user: User, line: usize) -> ParsedUser {
    ParsedUser {
        user,
        all_databases: false,
        file: Path::new(URL_SOURCE).to_path_buf(),
        prefix: "database_url".to_string(),
        lines: KeyLines::new(line),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::model::PoolerMode;
    use crate::config::model::Role;

    fn one(url: &str) -> (Vec<ParsedDatabase>, Vec<ParsedUser>, Diagnostics) {
        let mut diagnostics = Diagnostics::default();
        let (databases, users) = read_urls(&mut diagnostics, &[url.to_string()]);
        (databases, users, diagnostics)
    }

    #[test]
    fn full_url() {
        let (databases, users, d) = one(
            "postgres://al%40ice:p%3Ass@db.local:6543/app?role=replica&shard=1&pool_size=5&database_name=real&pooler_mode=session&min_pool_size=2",
        );
        assert!(d.errors.is_empty(), "{:?}", d.errors);
        let db = &databases[0].database;
        assert_eq!(db.name, "app");
        assert_eq!(db.database_name, "real");
        assert_eq!((db.host.as_str(), db.port), ("db.local", 6543));
        assert_eq!((db.role, db.shard), (Role::Replica, 1));
        assert_eq!((db.pool_size, db.min_pool_size), (Some(5), Some(2)));
        assert_eq!(db.pooler_mode, Some(PoolerMode::Session));
        let user = &users[0].user;
        assert_eq!(user.name, "al@ice");
        assert_eq!(user.passwords, ["p:ss"]);
        assert_eq!(user.databases, ["app"]);
    }

    #[test]
    fn defaults_follow_pgdog() {
        let (databases, users, d) = one("postgresql://bob@/");
        assert!(d.errors.is_empty(), "{:?}", d.errors);
        let db = &databases[0].database;
        assert_eq!(db.name, "postgres");
        assert_eq!((db.host.as_str(), db.port), ("127.0.0.1", 5432));
        assert_eq!(db.role, Role::Primary);
        assert_eq!(users[0].user.passwords, ["postgres"]);
    }

    #[test]
    fn ipv6_host() {
        let (databases, _, d) = one("postgres://u:p@[::1]:5433/x");
        assert!(d.errors.is_empty());
        assert_eq!(databases[0].database.host, "::1");
        assert_eq!(databases[0].database.port, 5433);
    }

    #[test]
    fn bad_urls_are_errors_with_their_position() {
        let urls = [
            "mysql://u@h/db",
            "postgres://u@h:99999/db",
            "postgres://u@h:abc/db",
            "postgres://u@h/db?shard=x",
            "postgres://u@h/db?role=leader",
            "postgres://u@h/db?colour=blue",
            "postgres://u%zz@h/db",
            "no-scheme",
            "postgres://u@h/db?pool_size=0",
        ];
        let mut diagnostics = Diagnostics::default();
        let urls: Vec<String> = urls.iter().map(|u| u.to_string()).collect();
        let (databases, _) = read_urls(&mut diagnostics, &urls);
        assert!(databases.is_empty());
        let lines: Vec<_> = diagnostics.errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, [1, 2, 3, 4, 5, 6, 7, 8, 9]);
        assert_eq!(
            diagnostics.errors[3].to_string(),
            "--database_url:4: key `shard`: expected an integer, found `x`"
        );
    }

    #[test]
    fn lb_weight_parameter_sets_the_weight() {
        let (databases, _, d) = one("postgres://u:p@h/db?role=replica&lb_weight=7");
        assert!(d.errors.is_empty(), "{:?}", d.errors);
        assert_eq!(databases[0].database.lb_weight, 7);
        let (databases, _, d) = one("postgres://u:p@h/db?lb_weight=0");
        assert!(d.errors.is_empty(), "{:?}", d.errors);
        assert_eq!(databases[0].database.lb_weight, 0);
        let (databases, _, _) = one("postgres://u:p@h/db");
        assert_eq!(databases[0].database.lb_weight, 255, "the default");
    }

    #[test]
    fn bad_lb_weight_is_an_error_like_the_toml_key() {
        let urls = [
            "postgres://u@h/db?lb_weight=256",
            "postgres://u@h/db?lb_weight=-1",
            "postgres://u@h/db?lb_weight=heavy",
            "postgres://u@h/db?lb_weight=",
        ];
        let mut diagnostics = Diagnostics::default();
        let urls: Vec<String> = urls.iter().map(|u| u.to_string()).collect();
        let (databases, _) = read_urls(&mut diagnostics, &urls);
        assert!(databases.is_empty());
        let messages: Vec<String> = diagnostics.errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(
            messages,
            [
                "--database_url:1: key `lb_weight`: must be between 0 and 255, found 256",
                "--database_url:2: key `lb_weight`: must not be negative, found -1",
                "--database_url:3: key `lb_weight`: expected an integer, found `heavy`",
                "--database_url:4: key `lb_weight`: expected an integer, found ``",
            ]
        );
    }

    #[test]
    fn known_parameters_warn() {
        let (databases, _, d) = one("postgres://u:p@h/db?statement_timeout=100");
        assert_eq!(databases.len(), 1);
        assert!(d.errors.is_empty());
        assert_eq!(d.warnings[0].key, "statement_timeout");
    }

    #[test]
    fn duplicates_collapse() {
        let mut diagnostics = Diagnostics::default();
        let url = "postgres://u:p@h/db".to_string();
        let (databases, users) = read_urls(&mut diagnostics, &[url.clone(), url]);
        assert_eq!((databases.len(), users.len()), (1, 1));
    }
}
