#![no_main]
#[allow(dead_code)]
mod harness {
    use ws_native::protocol as proto;
    include!("../harness.rs");
}
libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::inflate(data));
