//! Reading a GGUF file's header and rebuilding its tokenizer, on arbitrary bytes: what the
//! model server does with a user's re-ranker file.
#![no_main]
use candle_core::quantized::gguf_file::Content;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(content) = belink_models::llm::read_gguf_header(&mut std::io::Cursor::new(data), data.len() as u64) {
        let _ = belink_models::llm::gguf_tokenizer::from_gguf(&content);
        let _: &Content = &content;
    }
});
