//! The SQL surface: one module per group of functions, all thin glue over the core crate and
//! the catalog module.

pub mod candidates;
mod embed;
mod link;
pub mod normalize;
mod ontology;
mod text;
