//! BeLink's core, free of PostgreSQL: what the extension, the model server and command-line
//! tools share. Everything here is tested with plain `cargo test`.
//!
//! The data path, stage by stage: [`mentions`] (dictionary detection, abbreviations),
//! [`retrieval`] (query, fuse, cache), [`decision`] (decide, choose, prompt) and [`link`]
//! (entities), run by a [`pipeline::Pipeline`] over the two [`ports`]: the name store (SQL) and
//! the models (the model server).

pub mod catalog;
pub mod decision;
pub mod error;
pub mod fold;
pub mod ids;
pub mod input;
pub mod interrupts;
pub mod link;
pub mod mentions;
pub mod ontology;
pub mod pipeline;
pub mod ports;
pub mod random;
pub mod retrieval;
pub mod settings;
pub mod wire;

#[cfg(test)]
mod fakes;
