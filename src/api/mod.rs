//! The SQL surface: one module per group of functions, all thin glue over the core crate and
//! the catalog module.

mod candidates;
mod ontology;
mod text;
