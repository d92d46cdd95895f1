//! Every ontology parser, and format detection, on arbitrary bytes (plain or gzip).
#![no_main]
use belink_core::ontology::{load_bytes, Format, LoadOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for format in [None, Some(Format::Obo), Some(Format::Ctd), Some(Format::Biosyn), Some(Format::Rrf), Some(Format::Tsv)] {
        let _ = load_bytes(data, &LoadOptions { format, ..LoadOptions::default() });
    }
});
