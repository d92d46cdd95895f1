//! The PubTator and GSC+ corpus parsers on arbitrary bytes.
#![no_main]
use belink_eval::corpus::{parse_corpus, CorpusFormat};
use belink_core::input::Lines;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for format in [CorpusFormat::PubTator, CorpusFormat::GscPlus] {
        let mut lines = Lines::new(Box::new(std::io::Cursor::new(data.to_vec())));
        let _ = parse_corpus(format, &mut lines);
    }
});
