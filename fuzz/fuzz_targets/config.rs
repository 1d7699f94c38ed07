//! The config parser over arbitrary text.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| netmix::fuzzing::config(data));
