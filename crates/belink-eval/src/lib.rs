//! What the evaluation harness shares with the fuzz targets: reading annotated corpora.

pub mod corpus;
