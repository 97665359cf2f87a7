//! Typed readers: one located TOML value → one Rust value, or a recorded error.
//!
//! Owns the wording of type and range errors ("expected an integer, found
//! string"). Every reader records its own error and returns `None`, so the
//! caller keeps going and the operator sees every problem in one run.
//! Readers must not know which section they serve; sections.rs decides that.

use std::path::Path;

use super::diagnostic::Diagnostics;
use super::known::{self, Scope};
use super::raw::{Entry, Kind, Node};

/// The file being read plus the collector its findings go to.
pub(crate) struct Ctx<'a> {
    pub file: &'a Path,
    pub diagnostics: &'a mut Diagnostics,
}

impl Ctx<'_> {
    pub fn error(&mut self, line: usize, key: &str, message: impl Into<String>) {
        self.diagnostics.error(self.file, line, key, message);
    }

    pub fn warn(&mut self, line: usize, key: &str, message: impl Into<String>) {
        self.diagnostics.warn(self.file, line, key, message);
    }

    /// A key no match arm took: a known PgDog key warns, anything else fails.
    pub fn unhandled(&mut self, scope: Scope, path: &str, entry: &Entry) {
        if known::is_unimplemented(scope, &entry.key) {
            self.warn(entry.line, path, known::IGNORED);
        } else {
            self.error(entry.line, path, "unknown key (not a PgDog setting)");
        }
    }
}

/// `section.key`, or `section[index].key` inside arrays of tables.
pub(crate) fn path(prefix: &str, key: &str) -> String {
    format!("{prefix}.{key}")
}

fn wrong_type(ctx: &mut Ctx<'_>, key: &str, node: &Node, expected: &str) {
    let found = node.kind.type_name();
    ctx.error(
        node.line,
        key,
        format!("expected {expected}, found {found}"),
    );
}

pub(crate) fn string(ctx: &mut Ctx<'_>, key: &str, node: &Node) -> Option<String> {
    match &node.kind {
        Kind::String(value) => Some(value.clone()),
        _ => {
            wrong_type(ctx, key, node, "a string");
            None
        }
    }
}

/// A string that names something (host, user, database): empty is an error.
pub(crate) fn name(ctx: &mut Ctx<'_>, key: &str, node: &Node) -> Option<String> {
    let value = string(ctx, key, node)?;
    if value.is_empty() {
        ctx.error(node.line, key, "must not be empty");
        return None;
    }
    Some(value)
}

pub(crate) fn boolean(ctx: &mut Ctx<'_>, key: &str, node: &Node) -> Option<bool> {
    match node.kind {
        Kind::Boolean(value) => Some(value),
        _ => {
            wrong_type(ctx, key, node, "a boolean");
            None
        }
    }
}

/// A non-negative integer. PgDog's docs: "5s" or 53.5 fail to load.
pub(crate) fn unsigned(ctx: &mut Ctx<'_>, key: &str, node: &Node) -> Option<u64> {
    match node.kind {
        Kind::Integer(value) => match u64::try_from(value) {
            Ok(value) => Some(value),
            Err(_) => {
                ctx.error(
                    node.line,
                    key,
                    format!("must not be negative, found {value}"),
                );
                None
            }
        },
        _ => {
            wrong_type(ctx, key, node, "an integer");
            None
        }
    }
}

/// Milliseconds, PgDog's unit for every timeout.
pub(crate) fn millis(ctx: &mut Ctx<'_>, key: &str, node: &Node) -> Option<u64> {
    unsigned(ctx, key, node)
}

pub(crate) fn count(ctx: &mut Ctx<'_>, key: &str, node: &Node) -> Option<usize> {
    let value = unsigned(ctx, key, node)?;
    match usize::try_from(value) {
        Ok(value) => Some(value),
        Err(_) => {
            ctx.error(node.line, key, format!("{value} is too large"));
            None
        }
    }
}

/// A pool size: at least one connection, or the pool could never serve.
pub(crate) fn pool_size(ctx: &mut Ctx<'_>, key: &str, node: &Node) -> Option<usize> {
    at_least_one(ctx, key, node)
}

/// A count where 0 would make sleddog useless (a pool or a limit of nothing).
pub(crate) fn at_least_one(ctx: &mut Ctx<'_>, key: &str, node: &Node) -> Option<usize> {
    let value = count(ctx, key, node)?;
    if value == 0 {
        ctx.error(node.line, key, "must be at least 1");
        return None;
    }
    Some(value)
}

pub(crate) fn port(ctx: &mut Ctx<'_>, key: &str, node: &Node) -> Option<u16> {
    let value = unsigned(ctx, key, node)?;
    match u16::try_from(value) {
        Ok(port) if port > 0 => Some(port),
        _ => {
            ctx.error(
                node.line,
                key,
                format!("must be between 1 and 65535, found {value}"),
            );
            None
        }
    }
}

pub(crate) fn shard(ctx: &mut Ctx<'_>, key: &str, node: &Node) -> Option<u16> {
    let value = unsigned(ctx, key, node)?;
    match u16::try_from(value) {
        Ok(shard) => Some(shard),
        Err(_) => {
            ctx.error(
                node.line,
                key,
                format!("must be at most {}, found {value}", u16::MAX),
            );
            None
        }
    }
}

pub(crate) fn string_list(ctx: &mut Ctx<'_>, key: &str, node: &Node) -> Option<Vec<String>> {
    let Kind::Array(elements) = &node.kind else {
        wrong_type(ctx, key, node, "an array of strings");
        return None;
    };
    let mut values = Vec::with_capacity(elements.len());
    let mut ok = true;
    for element in elements {
        match string(ctx, key, element) {
            Some(value) => values.push(value),
            None => ok = false,
        }
    }
    ok.then_some(values)
}

/// A closed set of lowercase strings, spelled exactly as PgDog's serde
/// (`rename_all = "snake_case"`) spells them. `unsupported` lists values PgDog
/// accepts that sleddog refuses, with the reason.
pub(crate) fn choice<T: Copy>(
    ctx: &mut Ctx<'_>,
    key: &str,
    node: &Node,
    allowed: &[(&str, T)],
    unsupported: &[(&str, &str)],
) -> Option<T> {
    let text = string(ctx, key, node)?;
    if let Some((_, value)) = allowed.iter().find(|(name, _)| *name == text) {
        return Some(*value);
    }
    let expected = allowed
        .iter()
        .map(|(name, _)| format!("`{name}`"))
        .collect::<Vec<_>>()
        .join(", ");
    let message = match unsupported.iter().find(|(name, _)| *name == text) {
        Some((_, reason)) => format!("`{text}` {reason}; expected one of {expected}"),
        None => format!("unknown value `{text}`; expected one of {expected}"),
    };
    ctx.error(node.line, key, message);
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn node(kind: Kind) -> Node {
        Node { line: 7, kind }
    }

    fn with_ctx<T>(f: impl FnOnce(&mut Ctx<'_>) -> T) -> (T, Diagnostics) {
        let file = PathBuf::from("pgdog.toml");
        let mut diagnostics = Diagnostics::default();
        let value = f(&mut Ctx {
            file: &file,
            diagnostics: &mut diagnostics,
        });
        (value, diagnostics)
    }

    #[test]
    fn port_range() {
        let (value, d) = with_ctx(|ctx| port(ctx, "general.port", &node(Kind::Integer(0))));
        assert_eq!(value, None);
        assert_eq!(
            d.errors[0].to_string(),
            "pgdog.toml:7: key `general.port`: must be between 1 and 65535, found 0"
        );
        let (value, d) = with_ctx(|ctx| port(ctx, "p", &node(Kind::Integer(70000))));
        assert_eq!((value, d.errors.len()), (None, 1));
        let (value, d) = with_ctx(|ctx| port(ctx, "p", &node(Kind::Integer(5432))));
        assert_eq!((value, d.errors.len()), (Some(5432), 0));
    }

    #[test]
    fn wrong_type_names_both_types() {
        let (_, d) = with_ctx(|ctx| millis(ctx, "t", &node(Kind::String("5s".into()))));
        assert_eq!(d.errors[0].message, "expected an integer, found string");
        let (_, d) = with_ctx(|ctx| millis(ctx, "t", &node(Kind::Float(53.5))));
        assert_eq!(d.errors[0].message, "expected an integer, found float");
        let (_, d) = with_ctx(|ctx| millis(ctx, "t", &node(Kind::Integer(-1))));
        assert_eq!(d.errors[0].message, "must not be negative, found -1");
    }

    #[test]
    fn choice_explains_unsupported_values() {
        let allowed = [("a", 1), ("b", 2)];
        let unsupported = [("c", "is not supported")];
        let (value, d) = with_ctx(|ctx| {
            choice(
                ctx,
                "k",
                &node(Kind::String("b".into())),
                &allowed,
                &unsupported,
            )
        });
        assert_eq!((value, d.errors.len()), (Some(2), 0));
        let (_, d) = with_ctx(|ctx| {
            choice(
                ctx,
                "k",
                &node(Kind::String("c".into())),
                &allowed,
                &unsupported,
            )
        });
        assert_eq!(
            d.errors[0].message,
            "`c` is not supported; expected one of `a`, `b`"
        );
        let (_, d) = with_ctx(|ctx| {
            choice(
                ctx,
                "k",
                &node(Kind::String("A".into())),
                &allowed,
                &unsupported,
            )
        });
        assert_eq!(
            d.errors[0].message,
            "unknown value `A`; expected one of `a`, `b`"
        );
    }

    #[test]
    fn string_list_reports_each_bad_element() {
        let list = node(Kind::Array(vec![
            node(Kind::String("a".into())),
            node(Kind::Integer(1)),
            node(Kind::Boolean(true)),
        ]));
        let (value, d) = with_ctx(|ctx| string_list(ctx, "k", &list));
        assert_eq!((value, d.errors.len()), (None, 2));
    }
}
