//! The SOCKS4/4a request reader over arbitrary client bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| netmix::fuzzing::socks4_request(data));
