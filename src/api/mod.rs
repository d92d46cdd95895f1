//! The SQL surface: one module per group of functions, each checking arguments and building
//! rows around the core's pipeline (see src/pipeline.rs) or the catalog module.

mod adapt;
mod candidates;
mod detection;
mod embed;
mod link;
mod normalize;
mod ontology;
mod status;
mod text;
mod tune;

pub use adapt::adapted_root;
