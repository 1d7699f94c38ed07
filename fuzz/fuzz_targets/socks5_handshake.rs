//! The SOCKS5 handshake over arbitrary client bytes (first byte odd: with RFC 1929 login).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| netmix::fuzzing::socks5_handshake(data));
