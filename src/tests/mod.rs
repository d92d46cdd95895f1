//! `#[pg_test]`s: the SQL surface through a real PostgreSQL (run by `make test`).
//! Each test runs in its own transaction, rolled back at the end.

mod candidates;
mod link;
mod normalize;
mod ontology;
mod security;

use pgrx::prelude::*;

/// The fixtures, compiled in: the server process may not be able to read the checkout.
pub const HPO: &str = include_str!("../../tests/fixtures/hp_excerpt.obo");
pub const CTD: &str = include_str!("../../tests/fixtures/CTD_diseases_excerpt.tsv");
pub const MEDIC: &str = include_str!("../../tests/fixtures/medic_excerpt.txt");
pub const MRCONSO: &str = include_str!("../../tests/fixtures/MRCONSO.RRF");
pub const MRSTY: &str = include_str!("../../tests/fixtures/MRSTY.RRF");
pub const USER_TSV: &str = include_str!("../../tests/fixtures/user_dictionary.tsv");
pub const USER_TSV_GZ: &[u8] = include_bytes!("../../tests/fixtures/user_dictionary.tsv.gz");

/// Writes `content` to a fresh directory the server can read and returns the file's path.
pub fn server_file(name: &str, content: &[u8]) -> String {
    let dir = std::env::temp_dir().join(format!("belink-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("creating a temporary directory");
    let path = dir.join(name);
    std::fs::write(&path, content).expect("writing a temporary file");
    path.to_string_lossy().into_owned()
}

/// Runs `sql` in a subtransaction and returns `SQLSTATE: message` of the error it raised,
/// or None when it succeeded.
pub fn error_of(sql: &str) -> Option<String> {
    Spi::run(
        "CREATE OR REPLACE FUNCTION pg_temp.belink_error_of(statement text) RETURNS text
         LANGUAGE plpgsql AS $$
         BEGIN
             EXECUTE statement;
             RETURN NULL;
         EXCEPTION WHEN others THEN
             RETURN SQLSTATE || ': ' || SQLERRM;
         END $$",
    )
    .unwrap();
    Spi::get_one_with_args::<String>("SELECT pg_temp.belink_error_of($1)", &[sql.into()]).unwrap()
}

/// Asserts that `sql` fails with `sqlstate` and a message containing `fragment`.
#[track_caller]
pub fn assert_error(sql: &str, sqlstate: &str, fragment: &str) {
    let error = error_of(sql).unwrap_or_else(|| panic!("expected an error from: {sql}"));
    assert!(
        error.starts_with(sqlstate) && error.contains(fragment),
        "from {sql}\nexpected {sqlstate} containing {fragment:?}\ngot {error}"
    );
}

pub fn count(sql: &str) -> i64 {
    Spi::get_one::<i64>(sql).unwrap().unwrap_or(0)
}

/// SQL string literal for `text`.
pub fn literal(text: &str) -> String {
    pgrx::spi::quote_literal(text)
}
