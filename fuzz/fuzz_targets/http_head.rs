//! The HTTP proxy's first-head parser over arbitrary client bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| netmix::fuzzing::http_head(data));
