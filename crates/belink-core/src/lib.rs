//! BeLink's core, free of PostgreSQL: what the extension, the model server and command-line
//! tools share. Everything here is tested with plain `cargo test`.

pub mod abbreviation;
pub mod corpus;
pub mod detect;
pub mod encoder_text;
pub mod fusion;
pub mod input;
pub mod linking;
pub mod normalize;
pub mod ontology;
pub mod prompt;
pub mod wire;
