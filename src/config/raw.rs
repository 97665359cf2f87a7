//! The raw layer: TOML text → a tree of values that remember their line.
//!
//! Owns the only use of `toml_edit` in sleddog. `toml`'s serde path loses
//! spans on dotted keys and implicit tables, so we walk `toml_edit`'s parsed
//! document instead and keep a 1-based line for every key, value and table
//! header. This layer knows nothing about PgDog keys; it must not validate
//! anything beyond TOML syntax (that is `validate.rs`'s job).

use std::ops::Range;

use toml_edit::{ImDocument, InlineTable, Item, Table, TableLike, Value};

/// A TOML syntax error, already mapped to a line.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SyntaxError {
    pub line: usize,
    pub message: String,
}

/// One TOML value and where it starts.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    pub line: usize,
    pub kind: Kind,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Kind {
    String(String),
    Integer(i64),
    Float(f64),
    Boolean(bool),
    Datetime(String),
    Array(Vec<Node>),
    Table(RawTable),
}

impl Kind {
    /// The TOML type name, for "expected X, found Y" messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Kind::String(_) => "string",
            Kind::Integer(_) => "integer",
            Kind::Float(_) => "float",
            Kind::Boolean(_) => "boolean",
            Kind::Datetime(_) => "datetime",
            Kind::Array(_) => "array",
            Kind::Table(_) => "table",
        }
    }
}

/// A table (`[x]`, `[[x]]` element, inline table or dotted-key table).
/// `line` is its header line, or the line of its first key if it has no header.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct RawTable {
    pub line: usize,
    pub entries: Vec<Entry>,
}

/// `key = value`; `line` is the key's line, which is what errors point at.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    pub key: String,
    pub line: usize,
    pub value: Node,
}

/// Parses `text` into a located tree. Only TOML syntax can fail here.
pub(crate) fn parse(text: &str) -> Result<RawTable, SyntaxError> {
    let lines = LineIndex::new(text);
    let document = ImDocument::parse(text).map_err(|error| SyntaxError {
        line: error.span().map_or(1, |span| lines.line(span.start)),
        message: error.message().trim().to_string(),
    })?;
    Ok(convert_table(document.as_table(), &lines, 1))
}

/// Byte offset → 1-based line.
struct LineIndex {
    /// Byte offset at which each line starts.
    starts: Vec<usize>,
}

impl LineIndex {
    fn new(text: &str) -> Self {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(at, _)| at + 1));
        LineIndex { starts }
    }

    fn line(&self, offset: usize) -> usize {
        match self.starts.binary_search(&offset) {
            Ok(index) => index + 1,
            Err(index) => index,
        }
    }

    fn line_of(&self, span: Option<Range<usize>>, fallback: usize) -> usize {
        span.map_or(fallback, |span| self.line(span.start))
    }
}

fn convert_table(table: &Table, lines: &LineIndex, fallback: usize) -> RawTable {
    let line = lines.line_of(table.span(), fallback);
    let entries = convert_entries(table, lines, line);
    RawTable {
        line: first_line(line, table.span().is_some(), &entries),
        entries,
    }
}

/// The entries of a table or inline table, each with its key's line.
fn convert_entries(table: &dyn TableLike, lines: &LineIndex, line: usize) -> Vec<Entry> {
    let mut entries = Vec::new();
    for (name, _) in table.iter() {
        let Some((key, item)) = table.get_key_value(name) else {
            continue;
        };
        let key_line = lines.line_of(key.span(), line);
        if let Some(value) = convert_item(item, lines, key_line) {
            entries.push(Entry {
                key: name.to_string(),
                line: key_line,
                value,
            });
        }
    }
    entries
}

fn convert_inline_table(table: &InlineTable, lines: &LineIndex, fallback: usize) -> RawTable {
    let line = lines.line_of(table.span(), fallback);
    let entries = convert_entries(table, lines, line);
    RawTable { line, entries }
}

/// Tables created implicitly (`a.b = 1`, `[x.y]` without `[x]`) have no span;
/// point at their first key instead so errors still land on a real line.
fn first_line(line: usize, has_span: bool, entries: &[Entry]) -> usize {
    if has_span {
        line
    } else {
        entries.iter().map(|entry| entry.line).min().unwrap_or(line)
    }
}

fn convert_item(item: &Item, lines: &LineIndex, fallback: usize) -> Option<Node> {
    match item {
        Item::None => None,
        Item::Value(value) => Some(convert_value(value, lines, fallback)),
        Item::Table(table) => {
            let table = convert_table(table, lines, fallback);
            Some(Node {
                line: table.line,
                kind: Kind::Table(table),
            })
        }
        Item::ArrayOfTables(array) => {
            let line = lines.line_of(array.span(), fallback);
            let elements = array
                .iter()
                .map(|table| {
                    let table = convert_table(table, lines, line);
                    Node {
                        line: table.line,
                        kind: Kind::Table(table),
                    }
                })
                .collect::<Vec<_>>();
            let line = elements.first().map_or(line, |first| first.line);
            Some(Node {
                line,
                kind: Kind::Array(elements),
            })
        }
    }
}

fn convert_value(value: &Value, lines: &LineIndex, fallback: usize) -> Node {
    let line = lines.line_of(value.span(), fallback);
    let kind = match value {
        Value::String(s) => Kind::String(s.value().clone()),
        Value::Integer(i) => Kind::Integer(*i.value()),
        Value::Float(f) => Kind::Float(*f.value()),
        Value::Boolean(b) => Kind::Boolean(*b.value()),
        Value::Datetime(d) => Kind::Datetime(d.value().to_string()),
        Value::Array(array) => Kind::Array(
            array
                .iter()
                .map(|element| convert_value(element, lines, line))
                .collect(),
        ),
        Value::InlineTable(table) => Kind::Table(convert_inline_table(table, lines, line)),
    };
    Node { line, kind }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry<'a>(table: &'a RawTable, key: &str) -> &'a Entry {
        table.entries.iter().find(|e| e.key == key).unwrap()
    }

    fn table(node: &Node) -> &RawTable {
        match &node.kind {
            Kind::Table(t) => t,
            other => panic!("not a table: {other:?}"),
        }
    }

    #[test]
    fn every_key_has_its_line() {
        let text = "\n[general]\nport = 6432\na.b = 1\n\n[[databases]]\nname = \"x\"\n\n[[databases]]\nname = \"y\"\ninline = { k = 1 }\n";
        let root = parse(text).unwrap();
        let general = table(&entry(&root, "general").value);
        assert_eq!(general.line, 2);
        assert_eq!(entry(general, "port").line, 3);
        assert_eq!(entry(general, "a").line, 4);
        let dotted = table(&entry(general, "a").value);
        assert_eq!(entry(dotted, "b").line, 4);

        let Kind::Array(databases) = &entry(&root, "databases").value.kind else {
            panic!("databases is not an array");
        };
        assert_eq!(databases[0].line, 6);
        assert_eq!(databases[1].line, 9);
        let second = table(&databases[1]);
        assert_eq!(entry(second, "name").line, 10);
        assert_eq!(entry(table(&entry(second, "inline").value), "k").line, 11);
    }

    #[test]
    fn syntax_error_has_line() {
        let error = parse("[general]\nport = \n").unwrap_err();
        assert_eq!(error.line, 2);
        let error = parse("a = 1\na = 2\n").unwrap_err();
        assert_eq!(error.line, 2, "{error:?}");
    }

    #[test]
    fn values_keep_their_types() {
        let root =
            parse("s = \"x\"\ni = 5_000\nf = 1.5\nb = true\nd = 1979-05-27\na = [1, 2]\n").unwrap();
        let kinds: Vec<_> = root
            .entries
            .iter()
            .map(|e| e.value.kind.type_name())
            .collect();
        assert_eq!(
            kinds,
            ["string", "integer", "float", "boolean", "datetime", "array"]
        );
        assert_eq!(entry(&root, "i").value.kind, Kind::Integer(5000));
    }
}
