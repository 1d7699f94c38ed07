//! The SOCKS5 UDP request header (RFC 1928 §7) over arbitrary datagrams.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| netmix::fuzzing::socks5_udp_header(data));
