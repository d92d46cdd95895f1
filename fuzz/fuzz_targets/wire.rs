//! The model server's message decoding, as both sides read it, on arbitrary bytes.
#![no_main]
use belink_core::wire::{read_frame, Message};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = Message::decode(data);
    let mut reader = data;
    while read_frame(&mut reader).is_ok() {}
});
