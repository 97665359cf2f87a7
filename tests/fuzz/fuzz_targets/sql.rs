//! Fuzz target `sql`: the SQL lexers on client text.
//!
//! The input is a simple Query string as a client could send it (any bytes:
//! the lexers take bytes, and NULs and invalid UTF-8 reach them). It goes
//! through the session-effects scan (`scan_statements`, `custom_guc_names`),
//! the LISTEN parser (`parse_listens`, `parse_listen`) and the startup
//! `options` switch parser, and, read as `name=value` lines, becomes GUC
//! state whose sync SQL the scanner must read back as the proxy meant it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sleddog::pubsub::{parse_listen, parse_listens, quote_ident, ListenCommand};
use sleddog::session::params::{startup_params, sync_sql, Params};
use sleddog::session::sql_scan::{custom_guc_names, scan_statements};

/// `NAMEDATALEN - 1`: Postgres keeps no longer identifier.
const MAX_IDENTIFIER_BYTES: usize = 63;

fuzz_target!(|input: &[u8]| {
    let effects = scan_statements(input);
    let semicolons = input.iter().filter(|b| **b == b';').count();
    assert!(effects.statements as usize <= semicolons + 1, "{effects:?}");

    let mut names = Vec::new();
    custom_guc_names(input, &mut names);
    let found = names.len();
    // No check against `effects.custom_gucs`: the list may name more than
    // the flag implies (a `SET LOCAL` target), which only widens a capture.
    check_guc_names(&names);
    // Names already in the list are not repeated.
    custom_guc_names(input, &mut names);
    assert_eq!(names.len(), found);

    check_listens(input, effects.listen, effects.statements);

    let text = String::from_utf8_lossy(input);
    let params = startup_params(&[("options".to_owned(), text.clone().into_owned())]);
    assert!(params.iter().all(|(name, _)| is_folded(name)));
    check_sync_sql(&text);
});

fn is_folded(name: &str) -> bool {
    !name.bytes().any(|b| b.is_ascii_uppercase())
}

fn check_guc_names(names: &[String]) {
    for (i, name) in names.iter().enumerate() {
        assert!(name.contains('.') && !name.contains('\0') && is_folded(name));
        assert!(!names[..i].contains(name), "{name} repeated");
    }
}

/// A LISTEN-only string: every command is well formed, the single-statement
/// form agrees, each channel re-quoted parses back to itself, and the
/// session-effects scan (a separate lexer) sees the same statements.
fn check_listens(input: &[u8], scan_listen: bool, scan_statements: u32) {
    let single = parse_listen(input);
    let Some(commands) = parse_listens(input) else {
        assert_eq!(single, None);
        return;
    };
    assert!(!commands.is_empty());
    assert_eq!(single.is_some(), commands.len() == 1);
    if let Some(single) = single {
        assert_eq!(single, commands[0]);
    }
    assert!(scan_listen, "LISTEN not seen by scan_statements");
    assert_eq!(
        scan_statements as usize,
        commands.len(),
        "the two lexers split {:?} differently",
        String::from_utf8_lossy(input)
    );
    for command in &commands {
        let (verb, channel) = match command {
            ListenCommand::Listen(channel) => ("LISTEN", channel),
            ListenCommand::Unlisten(channel) => ("UNLISTEN", channel),
            ListenCommand::UnlistenAll => continue,
        };
        assert!(!channel.is_empty() && channel.len() <= MAX_IDENTIFIER_BYTES);
        let again = format!("{verb} {}", quote_ident(channel));
        assert_eq!(parse_listen(again.as_bytes()).as_ref(), Some(command));
    }
}

/// Reads `text` as `name=value` lines into GUC state and checks that the SQL
/// syncing an empty connection to it is one statement that the scanner sees
/// setting exactly the state's custom (dotted) names: the literals the proxy
/// writes must lex back to what it meant, whatever the values hold.
fn check_sync_sql(text: &str) {
    let rows = text
        .lines()
        .filter_map(|line| line.split_once('='))
        .filter(|(name, _)| !name.is_empty());
    let to = Params::from_capture_rows(rows);
    let Some(sql) = sync_sql(&Params::default(), &to) else {
        assert!(to.is_empty());
        return;
    };
    let effects = scan_statements(sql.as_bytes());
    assert_eq!(effects.statements, 1, "{sql}");
    assert!(effects.gucs);
    let mut names = Vec::new();
    custom_guc_names(sql.as_bytes(), &mut names);
    names.sort();
    let mut expected: Vec<String> = to
        .iter()
        .map(|(name, _)| name.to_owned())
        .filter(|name| name.contains('.'))
        .collect();
    expected.sort();
    assert_eq!(names, expected, "{sql}");
}
