//! `SET [LOCAL] search_path | pgdog.shard | pgdog.sharding_key` and their
//! `RESET`: planned from the tree as token positions, read from the text of
//! each request (a shaped cache key hides the string constants), and the
//! session's `search_path` read for schema sharding.
//!
//! It must not decide routes; the relay keeps these settings per session
//! (`SET LOCAL`: per transaction) and passes them to `resolve`.

use std::borrow::Cow;

use pg_query::protobuf::{VariableSetKind, VariableSetStmt};
use pg_query::NodeEnum;
use shards::{ShardId, ShardingSchema};

use super::super::lex::token_at;
use super::key::constant;

/// A routing setting a `SET` statement changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardSetting {
    /// `search_path`, as the setting's text (`"$user", public` after RESET).
    SearchPath(String),
    /// `pgdog.shard`; None after RESET / SET ... TO DEFAULT.
    Shard(Option<ShardId>),
    /// `pgdog.sharding_key`; None after RESET / SET ... TO DEFAULT.
    ShardingKey(Option<String>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Name {
    SearchPath,
    Shard,
    ShardingKey,
}

/// A planned `SET`: which setting, and where its values are in the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SettingPlan {
    pub local: bool,
    name: Name,
    /// Token positions of the values; empty for RESET / DEFAULT.
    values: Vec<u32>,
}

/// PostgreSQL's default `search_path` ("ddl-schemas-path").
pub(super) const SEARCH_PATH_DEFAULT: &str = "\"$user\", public";

pub(super) fn plan_setting(node: &NodeEnum) -> Option<SettingPlan> {
    let NodeEnum::VariableSetStmt(set) = node else {
        return None;
    };
    let name = if set.name.eq_ignore_ascii_case("search_path") {
        Name::SearchPath
    } else if set.name.eq_ignore_ascii_case("pgdog.shard") {
        Name::Shard
    } else if set.name.eq_ignore_ascii_case("pgdog.sharding_key") {
        Name::ShardingKey
    } else {
        return None;
    };
    let values = match VariableSetKind::try_from(set.kind) {
        Ok(VariableSetKind::VarSetValue) => locations(set)?,
        Ok(VariableSetKind::VarSetDefault | VariableSetKind::VarReset) => Vec::new(),
        _ => return None,
    };
    Some(SettingPlan {
        local: set.is_local,
        name,
        values,
    })
}

fn locations(set: &VariableSetStmt) -> Option<Vec<u32>> {
    set.args
        .iter()
        .map(|arg| match &arg.node {
            Some(NodeEnum::AConst(constant)) => u32::try_from(constant.location).ok(),
            _ => None,
        })
        .collect()
}

impl SettingPlan {
    /// The setting with its values read from `sql`; None when a value is not
    /// one this setting takes (the server then sees the SET as written).
    pub(super) fn read(&self, sql: &str) -> Option<ShardSetting> {
        let mut values = self.values.iter().map(|&at| value(sql, at));
        match self.name {
            Name::SearchPath if self.values.is_empty() => {
                Some(ShardSetting::SearchPath(SEARCH_PATH_DEFAULT.to_string()))
            }
            Name::SearchPath => {
                let mut text = String::new();
                for value in values {
                    if !text.is_empty() {
                        text.push_str(", ");
                    }
                    push_identifier(&mut text, &value?);
                }
                Some(ShardSetting::SearchPath(text))
            }
            Name::Shard => match values.next() {
                None => Some(ShardSetting::Shard(None)),
                Some(value) => {
                    let shard = value?.trim().parse::<u16>().ok()?;
                    Some(ShardSetting::Shard(Some(ShardId(shard))))
                }
            },
            Name::ShardingKey => match values.next() {
                None => Some(ShardSetting::ShardingKey(None)),
                Some(value) => Some(ShardSetting::ShardingKey(Some(value?))),
            },
        }
    }
}

/// One SET value: a constant, a quoted identifier, or a word (lower-cased,
/// as the parser does).
fn value(sql: &str, at: u32) -> Option<String> {
    let (start, end) = token_at(sql, usize::try_from(at).ok()?)?;
    let token = sql.get(start..end)?;
    if let Some(quoted) = token.strip_prefix('"') {
        return Some(quoted.strip_suffix('"')?.replace("\"\"", "\""));
    }
    if token.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') && !token.contains('\'') {
        return Some(token.to_ascii_lowercase());
    }
    let bytes = constant(sql, start, end)?;
    String::from_utf8(bytes.as_slice().to_vec()).ok()
}

/// Appends `name` as the server shows it in a setting: quoted unless it is
/// a plain lower-case identifier.
fn push_identifier(out: &mut String, name: &str) {
    let plain = name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if plain {
        out.push_str(name);
    } else {
        out.push('"');
        out.push_str(&name.replace('"', "\"\""));
        out.push('"');
    }
}

/// The shard of the first schema of `search_path` that is sharded
/// ("ddl-schemas-path": comma-separated, quoted identifiers keep their case,
/// others are lower-cased). `$user` is skipped: the session user is not
/// known here.
pub(super) fn search_path_shard(schema: &ShardingSchema, search_path: &str) -> Option<ShardId> {
    search_path
        .split(',')
        .filter_map(|item| schema_name(item.trim()))
        .filter(|name| name != "$user")
        .find_map(|name| schema.schema_shard(&name))
}

fn schema_name(item: &str) -> Option<Cow<'_, str>> {
    if let Some(quoted) = item.strip_prefix('"') {
        let inner = quoted.strip_suffix('"')?;
        return Some(if inner.contains("\"\"") {
            Cow::Owned(inner.replace("\"\"", "\""))
        } else {
            Cow::Borrowed(inner)
        });
    }
    if item.is_empty() {
        return None;
    }
    Some(if item.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(item.to_ascii_lowercase())
    } else {
        Cow::Borrowed(item)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setting(sql: &str) -> Option<(bool, ShardSetting)> {
        let parsed = pg_query::parse(sql, pg_query::ParserOptions::DEFAULT).unwrap();
        let node = parsed.protobuf.stmts[0].stmt.as_ref()?.node.as_ref()?;
        let plan = plan_setting(node)?;
        Some((plan.local, plan.read(sql)?))
    }

    #[test]
    fn settings() {
        use ShardSetting::*;
        let path = |text: &str| SearchPath(text.to_string());
        assert_eq!(
            setting("SET search_path TO a, \"B c\", '$user', public"),
            Some((false, path("a, \"B c\", \"$user\", public")))
        );
        assert_eq!(
            setting("SET LOCAL search_path = Tenant_1"),
            Some((true, path("tenant_1")))
        );
        assert_eq!(
            setting("RESET search_path"),
            Some((false, path(SEARCH_PATH_DEFAULT)))
        );
        assert_eq!(
            setting("SET pgdog.shard TO 3"),
            Some((false, Shard(Some(ShardId(3)))))
        );
        assert_eq!(
            setting("SET LOCAL pgdog.shard = '2'"),
            Some((true, Shard(Some(ShardId(2)))))
        );
        assert_eq!(
            setting("SET pgdog.shard TO DEFAULT"),
            Some((false, Shard(None)))
        );
        assert_eq!(setting("SET pgdog.shard TO 'x'"), None);
        assert_eq!(
            setting("SET pgdog.sharding_key TO 'us-east'"),
            Some((false, ShardingKey(Some("us-east".into()))))
        );
        assert_eq!(
            setting("SET pgdog.sharding_key = -12"),
            Some((false, ShardingKey(Some("-12".into()))))
        );
        assert_eq!(
            setting("RESET pgdog.sharding_key"),
            Some((false, ShardingKey(None)))
        );
        assert_eq!(setting("SET work_mem = '4MB'"), None);
    }

    #[test]
    fn search_path_items() {
        let names: Vec<_> = "\"$user\", Public, \"My\"\"S\", x"
            .split(',')
            .filter_map(|item| schema_name(item.trim()))
            .collect();
        assert_eq!(names, ["$user", "public", "My\"S", "x"]);
    }
}
