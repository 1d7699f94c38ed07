#![allow(unsafe_code)]
//! What a Linux MPTCP connection's subflows are carrying, read with `getsockopt(SOL_MPTCP, …)`.
//!
//! [`path_info`] answers, for one socket, whether it is plain TCP ([`PathInfo::NotMptcp`]),
//! an MPTCP socket that fell back to TCP ([`PathInfo::Fallback`]), or a live MPTCP
//! connection with its subflows ([`PathInfo::Multipath`]): for each subflow its local and
//! remote address and, from the subflow's own `struct tcp_info`, the smoothed RTT and the
//! bytes sent, acknowledged and received on that path. [`is_mptcp`] only asks whether the
//! socket was created with `IPPROTO_MPTCP` (`SO_PROTOCOL`).
//!
//! # What is read
//!
//! Options at level `SOL_MPTCP` (284), from `include/uapi/linux/mptcp.h`:
//!
//! - `MPTCP_FULL_INFO` (4, Linux 6.5+), tried first: one call, taken under the socket lock, so
//!   addresses and `tcp_info` of a subflow are one consistent snapshot. The caller passes
//!   `struct mptcp_full_info` (40 bytes of header, then `struct mptcp_info`) holding two user
//!   pointers: an array of `struct mptcp_subflow_info` (`__u32 id`, then at offset 8 a
//!   `struct mptcp_subflow_addrs`) and an array of `struct tcp_info`, with the element size
//!   wanted for each and the array capacity (`size_arrays_user`).
//! - On kernels without it (5.16 – 6.4), `MPTCP_SUBFLOW_ADDRS` (3) and `MPTCP_TCPINFO` (2):
//!   a `struct mptcp_subflow_data` header (16 bytes) followed by an array of
//!   `struct mptcp_subflow_addrs` / `struct tcp_info`. These are two calls, so the addresses
//!   are read before and after the `tcp_info` and the three readings are retried (up to 3
//!   times) until the subflow list did not change in between; they are paired by index (both
//!   walk the same subflow list).
//!
//! `struct mptcp_subflow_addrs` is two unions (local, then remote), each as wide as
//! `struct __kernel_sockaddr_storage` (128 bytes): 256 bytes, decoded by `sa_family` as
//! `sockaddr_in` or `sockaddr_in6`. Of `struct tcp_info` only a prefix is asked for, up to
//! and including `tcpi_bytes_sent` (208 bytes): `tcpi_rtt` at 68, `tcpi_bytes_acked` at 120,
//! `tcpi_bytes_received` at 128, `tcpi_bytes_sent` at 200 (checked at compile time against
//! libc's `struct tcp_info` on glibc targets).
//!
//! # Size negotiation
//!
//! Every array element size is negotiated: the caller says how many bytes it wants per
//! element (`size_user`, `size_tcpinfo_user`, `size_sfinfo_user`), the kernel answers with its
//! own size (`size_kernel`, …) and writes back the size it actually used, `min(user, kernel)`,
//! which is then the stride of the array. So a newer kernel with a longer struct copies only
//! the prefix asked for, and an older kernel with a shorter one copies what it has: anything
//! beyond the stride reads as zero (a field the kernel did not supply is 0; an address that
//! was not supplied is `0.0.0.0:0`; `bytes_sent` falls back to `bytes_acked` when the kernel's
//! `tcp_info` ends before `tcpi_bytes_sent`). The kernel also reports the real number of
//! subflows, which may exceed what fit: at most [`MAX_SUBFLOWS`] are read, into fixed buffers
//! (about 8 KiB on the stack, nothing allocated by a size the kernel supplies).
//!
//! Sizes seen on Linux 6.18: `struct tcp_info` 280 bytes, `struct mptcp_info` 96,
//! `struct mptcp_subflow_addrs` 256, `struct mptcp_subflow_info` 264.
//!
//! # Fallback
//!
//! Once an MPTCP socket has fallen back to plain TCP (e.g. the peer did not answer
//! `MP_CAPABLE`, or a middlebox stripped the option), the kernel forwards every `getsockopt`
//! to the one TCP subflow, and TCP does not know level `SOL_MPTCP`: the call fails with `EOPNOTSUPP` on IPv4 and `ENOPROTOOPT` on IPv6 — the same errors a socket
//! created as plain TCP gives. `SO_PROTOCOL` still says `IPPROTO_MPTCP` (262) on the fallen
//! back socket (and 6 on a plain one), which is what tells [`PathInfo::Fallback`] from
//! [`PathInfo::NotMptcp`]. A fallback that the kernel decides during the call shows as
//! `MPTCP_INFO_FLAG_FALLBACK` in the `mptcp_info` of `MPTCP_FULL_INFO`, also reported as
//! `Fallback`. `MPTCP_FULL_INFO` is unknown to kernels before 6.5, which also answer
//! `EOPNOTSUPP`; then the older options are tried, and if they work the kernel is remembered
//! as lacking `MPTCP_FULL_INFO` (fallback is permanent, so a socket that answers the older
//! options cannot have been in fallback a moment before).
//!
//! The accepted side of an MPTCP listener whose client spoke plain TCP is not a fallen-back
//! MPTCP socket: the kernel hands out the TCP subflow itself (`SO_PROTOCOL` 6), so that is
//! [`PathInfo::NotMptcp`]; [`PathInfo::Fallback`] is what the connecting side of such a
//! handshake (an MPTCP client meeting a plain TCP server) sees.
//!
//! An MPTCP socket that is not connected yet reports `Multipath` with no subflows; a
//! listening one reports its one listening subflow (remote address unspecified).

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};

use libc::{c_int, socklen_t};

/// At most this many subflows are read per call; a connection with more reports the first ones.
pub const MAX_SUBFLOWS: usize = 16;

/// One subflow (one TCP connection) of an MPTCP connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subflow {
    /// The subflow's local address.
    pub local: SocketAddr,
    /// The subflow's remote address.
    pub remote: SocketAddr,
    /// Bytes sent on this subflow, retransmissions included (`tcpi_bytes_sent`; on kernels
    /// whose `tcp_info` lacks it, `tcpi_bytes_acked`).
    pub bytes_sent: u64,
    /// Bytes the peer acknowledged on this subflow (`tcpi_bytes_acked`). The kernel counts
    /// the sequence space, so the SYN (and a FIN) add one: this can exceed `bytes_sent`.
    pub bytes_acked: u64,
    /// Bytes received on this subflow (`tcpi_bytes_received`).
    pub bytes_received: u64,
    /// Smoothed round-trip time of this subflow in microseconds (`tcpi_rtt`).
    pub rtt_us: u32,
}

/// What carries a socket's data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathInfo {
    /// Not an MPTCP socket (created as plain TCP, or some other protocol).
    NotMptcp,
    /// An MPTCP socket that fell back to plain TCP (the peer does not speak MPTCP).
    Fallback,
    /// An MPTCP connection and its subflows (at most [`MAX_SUBFLOWS`]; none before it connects).
    Multipath(Vec<Subflow>),
}

/// Reads the subflows of `fd` (any [`AsFd`], e.g. a tokio `TcpStream` or socket2 `Socket`).
///
/// Errors only when the kernel refuses for another reason than "not MPTCP here", e.g.
/// `ENOTSOCK` for something that is not a socket.
pub fn path_info(fd: &impl AsFd) -> io::Result<PathInfo> {
    let fd = fd.as_fd();
    if protocol(fd)? != libc::IPPROTO_MPTCP {
        return Ok(PathInfo::NotMptcp);
    }
    let full_missing = FULL_INFO_MISSING.load(Ordering::Relaxed);
    if !full_missing {
        match full_info(fd, SUBFLOW_INFO_LEN, TCP_INFO_LEN) {
            Err(e) if refused(&e) => {} // fallback, or a kernel before 6.5: ask the old way
            other => return other,
        }
    }
    match legacy_info(fd, SUBFLOW_ADDRS_LEN, TCP_INFO_LEN) {
        Ok(info) => {
            if !full_missing {
                FULL_INFO_MISSING.store(true, Ordering::Relaxed);
            }
            Ok(info)
        }
        Err(e) if refused(&e) => Ok(PathInfo::Fallback),
        Err(e) => Err(e),
    }
}

/// Whether the socket's protocol is `IPPROTO_MPTCP` (`SO_PROTOCOL`); false also when the
/// question cannot be asked (not a socket).
pub fn is_mptcp(fd: &impl AsFd) -> bool {
    protocol(fd.as_fd()).is_ok_and(|p| p == libc::IPPROTO_MPTCP)
}

/// Set once `MPTCP_FULL_INFO` was refused while the older options answered (kernel < 6.5).
static FULL_INFO_MISSING: AtomicBool = AtomicBool::new(false);

// Socket options (include/uapi/linux/mptcp.h, include/linux/socket.h).
const SOL_MPTCP: c_int = 284;
const MPTCP_TCPINFO: c_int = 2;
const MPTCP_SUBFLOW_ADDRS: c_int = 3;
const MPTCP_FULL_INFO: c_int = 4;

// struct mptcp_subflow_data: four __u32, aligned(8).
const SUBFLOW_DATA_LEN: usize = 16;
const SFD_SIZE_SUBFLOW_DATA: usize = 0;
const SFD_NUM_SUBFLOWS: usize = 4;
const SFD_SIZE_USER: usize = 12;

// struct mptcp_subflow_addrs: a local and a remote union, each one __kernel_sockaddr_storage.
const SOCKADDR_STORAGE_LEN: usize = 128;
const SUBFLOW_ADDRS_LEN: usize = 2 * SOCKADDR_STORAGE_LEN;

// struct mptcp_subflow_info: __u32 id, then (8-aligned) struct mptcp_subflow_addrs.
const SFINFO_ADDRS: usize = 8;
const SUBFLOW_INFO_LEN: usize = SFINFO_ADDRS + SUBFLOW_ADDRS_LEN;

// struct mptcp_full_info: six __u32, two __aligned_u64 user pointers, struct mptcp_info.
const FI_SIZE_TCPINFO_USER: usize = 4;
const FI_SIZE_SFINFO_USER: usize = 12;
const FI_NUM_SUBFLOWS: usize = 16;
const FI_SIZE_ARRAYS_USER: usize = 20;
const FI_SUBFLOW_INFO: usize = 24;
const FI_TCP_INFO: usize = 32;
const FI_MPTCP_INFO: usize = 40;

// struct mptcp_info: the original (5.x) 48 bytes are asked for; only mptcpi_flags is read.
const MPTCP_INFO_LEN: usize = 48;
const MPTCPI_FLAGS: usize = 8;
const MPTCP_INFO_FLAG_FALLBACK: u32 = 1;

// struct tcp_info (include/uapi/linux/tcp.h): the prefix up to and including tcpi_bytes_sent.
const TCPI_RTT: usize = 68;
const TCPI_BYTES_ACKED: usize = 120;
const TCPI_BYTES_RECEIVED: usize = 128;
const TCPI_BYTES_SENT: usize = 200;
const TCP_INFO_LEN: usize = TCPI_BYTES_SENT + 8;

// struct sockaddr_in / sockaddr_in6.
const SIN_PORT: usize = 2;
const SIN_ADDR: usize = 4;
const SIN6_FLOWINFO: usize = 4;
const SIN6_ADDR: usize = 8;
const SIN6_SCOPE_ID: usize = 24;

/// The layout above, checked against libc's definitions where it has them.
const _: () = {
    use std::mem::{offset_of, size_of};
    assert!(size_of::<libc::sockaddr_storage>() == SOCKADDR_STORAGE_LEN);
    assert!(offset_of!(libc::sockaddr_in, sin_port) == SIN_PORT);
    assert!(offset_of!(libc::sockaddr_in, sin_addr) == SIN_ADDR);
    assert!(offset_of!(libc::sockaddr_in6, sin6_port) == SIN_PORT);
    assert!(offset_of!(libc::sockaddr_in6, sin6_flowinfo) == SIN6_FLOWINFO);
    assert!(offset_of!(libc::sockaddr_in6, sin6_addr) == SIN6_ADDR);
    assert!(offset_of!(libc::sockaddr_in6, sin6_scope_id) == SIN6_SCOPE_ID);
    assert!(MAX_SUBFLOWS * SUBFLOW_ADDRS_LEN >= MAX_SUBFLOWS * TCP_INFO_LEN);
};
#[cfg(target_env = "gnu")]
const _: () = {
    use std::mem::offset_of;
    assert!(offset_of!(libc::tcp_info, tcpi_rtt) == TCPI_RTT);
    assert!(offset_of!(libc::tcp_info, tcpi_bytes_acked) == TCPI_BYTES_ACKED);
    assert!(offset_of!(libc::tcp_info, tcpi_bytes_received) == TCPI_BYTES_RECEIVED);
    assert!(offset_of!(libc::tcp_info, tcpi_bytes_sent) == TCPI_BYTES_SENT);
};

/// The per-subflow numbers taken from `struct tcp_info`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct TcpStats {
    rtt_us: u32,
    bytes_acked: u64,
    bytes_received: u64,
    bytes_sent: u64,
}

/// A subflow array as the kernel returned it: the real count and the first ones read.
#[derive(Debug, PartialEq, Eq)]
struct Listing<T> {
    total: u32,
    items: Vec<T>,
}

/// The only getsockopt options issued through [`getsockopt_bytes`]: their payloads are plain
/// data. (`MPTCP_FULL_INFO` carries pointers and has its own call, [`getsockopt_full_info`].)
#[derive(Debug, Clone, Copy)]
enum PlainOpt {
    Protocol,
    TcpInfo,
    SubflowAddrs,
}

impl PlainOpt {
    fn level_name(self) -> (c_int, c_int) {
        match self {
            PlainOpt::Protocol => (libc::SOL_SOCKET, libc::SO_PROTOCOL),
            PlainOpt::TcpInfo => (SOL_MPTCP, MPTCP_TCPINFO),
            PlainOpt::SubflowAddrs => (SOL_MPTCP, MPTCP_SUBFLOW_ADDRS),
        }
    }
}

/// `getsockopt` into `buf` (which also carries any input the option reads); returns the
/// length the kernel wrote back.
fn getsockopt_bytes(fd: BorrowedFd<'_>, opt: PlainOpt, buf: &mut [u8]) -> io::Result<usize> {
    let (level, name) = opt.level_name();
    let mut len = socklen_t::try_from(buf.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "getsockopt buffer too long"))?;
    // SAFETY: `buf` is a live, exclusively borrowed buffer of `len` bytes and `len` a live
    // socklen_t. For these options (plain data, no pointers inside: `PlainOpt` cannot name
    // MPTCP_FULL_INFO) the kernel reads and writes at most `len` bytes of `buf` and stores the
    // length it wrote in `len`; any byte pattern is a valid `u8`. `fd` is borrowed, so open.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            buf.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((len as usize).min(buf.len()))
}

/// `SO_PROTOCOL`.
fn protocol(fd: BorrowedFd<'_>) -> io::Result<c_int> {
    let mut buf = [0u8; size_of::<c_int>()];
    let len = getsockopt_bytes(fd, PlainOpt::Protocol, &mut buf)?;
    if len != buf.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "short SO_PROTOCOL answer",
        ));
    }
    Ok(c_int::from_ne_bytes(buf))
}

/// The errors meaning "this socket does not answer SOL_MPTCP" (TCP over IPv4 / IPv6), which
/// a kernel without the option name also gives.
fn refused(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::ENOPROTOOPT))
}

/// The buffers of one `MPTCP_FULL_INFO` call: the header (with `struct mptcp_info` after it)
/// and the two arrays its pointers name.
struct FullInfoBufs {
    head: [u8; FI_MPTCP_INFO + MPTCP_INFO_LEN],
    sfinfo: [u8; MAX_SUBFLOWS * SUBFLOW_INFO_LEN],
    tcpinfo: [u8; MAX_SUBFLOWS * TCP_INFO_LEN],
}

/// `MPTCP_FULL_INFO` asking `sfinfo_user` / `tcpinfo_user` bytes per element (each capped at
/// the element size the buffers hold); returns the header length the kernel wrote back.
fn getsockopt_full_info(
    fd: BorrowedFd<'_>,
    bufs: &mut FullInfoBufs,
    sfinfo_user: usize,
    tcpinfo_user: usize,
) -> io::Result<usize> {
    let FullInfoBufs {
        head,
        sfinfo,
        tcpinfo,
    } = bufs;
    head.fill(0);
    sfinfo.fill(0);
    tcpinfo.fill(0);
    put_u32(
        head,
        FI_SIZE_TCPINFO_USER,
        tcpinfo_user.min(TCP_INFO_LEN) as u32,
    );
    put_u32(
        head,
        FI_SIZE_SFINFO_USER,
        sfinfo_user.min(SUBFLOW_INFO_LEN) as u32,
    );
    put_u32(head, FI_SIZE_ARRAYS_USER, MAX_SUBFLOWS as u32);
    put_u64(
        head,
        FI_SUBFLOW_INFO,
        sfinfo.as_mut_ptr().expose_provenance() as u64,
    );
    put_u64(
        head,
        FI_TCP_INFO,
        tcpinfo.as_mut_ptr().expose_provenance() as u64,
    );
    let mut len = head.len() as socklen_t;
    // SAFETY: `head` is a live, exclusively borrowed buffer of `len` bytes and `len` a live
    // socklen_t; the kernel writes at most `len` bytes of it and the written length to `len`.
    // The two pointers in `head` come from the exclusively borrowed `sfinfo` and `tcpinfo`,
    // which are not touched again until the call returns. The kernel writes at most
    // `size_arrays_user` (MAX_SUBFLOWS) elements to each array, each of
    // min(size_*_user, kernel size) bytes, and size_*_user was capped above at the element
    // sizes the arrays are MAX_SUBFLOWS wide of, so it stays inside them. Any byte pattern is
    // a valid `u8`. `fd` is borrowed, so open.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            SOL_MPTCP,
            MPTCP_FULL_INFO,
            head.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((len as usize).min(head.len()))
}

/// One `MPTCP_FULL_INFO` snapshot (errors: see [`refused`]).
fn full_info(fd: BorrowedFd<'_>, sfinfo_user: usize, tcpinfo_user: usize) -> io::Result<PathInfo> {
    let mut bufs = FullInfoBufs {
        head: [0; FI_MPTCP_INFO + MPTCP_INFO_LEN],
        sfinfo: [0; MAX_SUBFLOWS * SUBFLOW_INFO_LEN],
        tcpinfo: [0; MAX_SUBFLOWS * TCP_INFO_LEN],
    };
    let len = getsockopt_full_info(fd, &mut bufs, sfinfo_user, tcpinfo_user)?;
    Ok(parse_full_info(
        &bufs.head[..len],
        &bufs.sfinfo,
        &bufs.tcpinfo,
    ))
}

/// Decodes an `MPTCP_FULL_INFO` answer: `head` as long as the kernel wrote it, the arrays
/// as passed (zeroed where the kernel wrote nothing).
fn parse_full_info(head: &[u8], sfinfo: &[u8], tcpinfo: &[u8]) -> PathInfo {
    if u32_at(head, FI_MPTCP_INFO + MPTCPI_FLAGS) & MPTCP_INFO_FLAG_FALLBACK != 0 {
        return PathInfo::Fallback;
    }
    let count = (u32_at(head, FI_NUM_SUBFLOWS) as usize).min(MAX_SUBFLOWS);
    let sf_stride = u32_at(head, FI_SIZE_SFINFO_USER) as usize;
    let tcp_stride = u32_at(head, FI_SIZE_TCPINFO_USER) as usize;
    let subflows = (0..count)
        .map(|i| {
            let sf: [u8; SUBFLOW_INFO_LEN] = element(sfinfo, sf_stride, i);
            let (local, remote) = parse_addrs(&sf[SFINFO_ADDRS..]);
            let tcp = parse_tcp_info(&element(tcpinfo, tcp_stride, i), tcp_stride);
            subflow(local, remote, tcp)
        })
        .collect();
    PathInfo::Multipath(subflows)
}

/// `MPTCP_SUBFLOW_ADDRS` then `MPTCP_TCPINFO`, repeated until the subflows did not change
/// in between (errors: see [`refused`]).
fn legacy_info(fd: BorrowedFd<'_>, addrs_user: usize, tcpinfo_user: usize) -> io::Result<PathInfo> {
    const ATTEMPTS: usize = 3;
    let mut subflows = Vec::new();
    for _ in 0..ATTEMPTS {
        let before = subflow_array(
            fd,
            PlainOpt::SubflowAddrs,
            addrs_user,
            |e: &[u8; SUBFLOW_ADDRS_LEN], _| parse_addrs(e),
        )?;
        let stats = subflow_array(
            fd,
            PlainOpt::TcpInfo,
            tcpinfo_user,
            |e: &[u8; TCP_INFO_LEN], stride| parse_tcp_info(e, stride),
        )?;
        let after = subflow_array(
            fd,
            PlainOpt::SubflowAddrs,
            addrs_user,
            |e: &[u8; SUBFLOW_ADDRS_LEN], _| parse_addrs(e),
        )?;
        subflows = after
            .items
            .iter()
            .enumerate()
            .map(|(i, &(local, remote))| {
                subflow(
                    local,
                    remote,
                    stats.items.get(i).copied().unwrap_or_default(),
                )
            })
            .collect();
        if before == after && stats.total == after.total {
            break;
        }
    }
    Ok(PathInfo::Multipath(subflows))
}

/// One `MPTCP_TCPINFO` / `MPTCP_SUBFLOW_ADDRS` call asking `size_user` bytes per element
/// (capped at `N`), each element decoded by `parse` (zero-padded to `N`; with the stride).
fn subflow_array<T, const N: usize>(
    fd: BorrowedFd<'_>,
    opt: PlainOpt,
    size_user: usize,
    parse: impl Fn(&[u8; N], usize) -> T,
) -> io::Result<Listing<T>> {
    let size_user = size_user.min(N);
    let mut buf = [0u8; SUBFLOW_DATA_LEN + MAX_SUBFLOWS * SUBFLOW_ADDRS_LEN];
    // Room for exactly MAX_SUBFLOWS elements, so the kernel copies no more than that.
    let buf = &mut buf[..SUBFLOW_DATA_LEN + MAX_SUBFLOWS * size_user];
    put_u32(buf, SFD_SIZE_SUBFLOW_DATA, SUBFLOW_DATA_LEN as u32);
    put_u32(buf, SFD_SIZE_USER, size_user as u32);
    let len = getsockopt_bytes(fd, opt, buf)?;
    Ok(parse_subflow_data(&buf[..len], parse))
}

/// Decodes a `struct mptcp_subflow_data` answer (`buf` as long as the kernel wrote it).
fn parse_subflow_data<T, const N: usize>(
    buf: &[u8],
    parse: impl Fn(&[u8; N], usize) -> T,
) -> Listing<T> {
    let total = u32_at(buf, SFD_NUM_SUBFLOWS);
    let stride = u32_at(buf, SFD_SIZE_USER) as usize;
    let data = buf.get(SUBFLOW_DATA_LEN..).unwrap_or_default();
    let items = (0..(total as usize).min(MAX_SUBFLOWS))
        .map(|i| parse(&element(data, stride, i), stride))
        .collect();
    Listing { total, items }
}

fn subflow(local: SocketAddr, remote: SocketAddr, tcp: TcpStats) -> Subflow {
    Subflow {
        local,
        remote,
        bytes_sent: tcp.bytes_sent,
        bytes_acked: tcp.bytes_acked,
        bytes_received: tcp.bytes_received,
        rtt_us: tcp.rtt_us,
    }
}

/// Element `i` of an array with `stride`-byte elements: its first `N` bytes, zero-filled
/// where the element is shorter or `data` ends.
fn element<const N: usize>(data: &[u8], stride: usize, i: usize) -> [u8; N] {
    let mut out = [0u8; N];
    let start = stride.saturating_mul(i);
    let end = start.saturating_add(stride.min(N)).min(data.len());
    if start < end {
        out[..end - start].copy_from_slice(&data[start..end]);
    }
    out
}

/// A `struct tcp_info` prefix of which the kernel supplied `stride` bytes (the rest zero).
fn parse_tcp_info(b: &[u8; TCP_INFO_LEN], stride: usize) -> TcpStats {
    let bytes_acked = u64_at(b, TCPI_BYTES_ACKED);
    TcpStats {
        rtt_us: u32_at(b, TCPI_RTT),
        bytes_acked,
        bytes_received: u64_at(b, TCPI_BYTES_RECEIVED),
        bytes_sent: if stride >= TCPI_BYTES_SENT + 8 {
            u64_at(b, TCPI_BYTES_SENT)
        } else {
            bytes_acked
        },
    }
}

/// A `struct mptcp_subflow_addrs`: (local, remote).
fn parse_addrs(b: &[u8]) -> (SocketAddr, SocketAddr) {
    let local = b.get(..SOCKADDR_STORAGE_LEN).unwrap_or_default();
    let remote = b.get(SOCKADDR_STORAGE_LEN..).unwrap_or_default();
    (parse_sockaddr(local), parse_sockaddr(remote))
}

/// A `sockaddr_in` / `sockaddr_in6` by its family; anything else (or a missing one) is
/// `0.0.0.0:0`.
fn parse_sockaddr(b: &[u8]) -> SocketAddr {
    let bytes = |at: usize, n: usize| b.get(at..at + n);
    let family = bytes(0, 2).map_or(0, |f| u16::from_ne_bytes([f[0], f[1]]));
    let port = bytes(SIN_PORT, 2).map_or(0, |p| u16::from_be_bytes([p[0], p[1]]));
    match c_int::from(family) {
        libc::AF_INET => {
            if let Some(a) = bytes(SIN_ADDR, 4) {
                return SocketAddr::V4(SocketAddrV4::new(
                    Ipv4Addr::new(a[0], a[1], a[2], a[3]),
                    port,
                ));
            }
        }
        libc::AF_INET6 => {
            if let Some(a) = bytes(SIN6_ADDR, 16) {
                let mut ip = [0u8; 16];
                ip.copy_from_slice(a);
                return SocketAddr::V6(SocketAddrV6::new(
                    Ipv6Addr::from(ip),
                    port,
                    u32_at(b, SIN6_FLOWINFO),
                    u32_at(b, SIN6_SCOPE_ID),
                ));
            }
        }
        _ => {}
    }
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0))
}

/// Host-order `u32` at `at`, 0 if `b` is too short.
fn u32_at(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .map_or(0, |v| u32::from_ne_bytes([v[0], v[1], v[2], v[3]]))
}

/// Host-order `u64` at `at`, 0 if `b` is too short.
fn u64_at(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8).map_or(0, |v| {
        u64::from_ne_bytes([v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]])
    })
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_ne_bytes());
}

fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_ne_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::collections::BTreeSet;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::process::Command;
    use std::thread;
    use std::time::{Duration, Instant};

    use socket2::{Domain, Protocol, SockAddr, Socket, Type};

    const NEEDS_ROOT: &str = "needs root (CAP_NET_ADMIN) to create a network namespace";
    const MIB: usize = 1 << 20;

    /// Runs `f` on a thread of its own in a fresh network namespace with `lo` up.
    fn in_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        thread::spawn(move || {
            if let Err(e) = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET) {
                panic!("{NEEDS_ROOT}: unshare(CLONE_NEWNET) failed: {e}");
            }
            // A child process starts in the namespace of the thread that forks it.
            let ours = std::fs::read_link("/proc/thread-self/ns/net").expect("own netns");
            let child = Command::new("readlink")
                .arg("/proc/self/ns/net")
                .output()
                .expect("run readlink");
            assert_eq!(
                String::from_utf8_lossy(&child.stdout).trim(),
                ours.to_string_lossy(),
                "a child process should inherit the thread's network namespace"
            );
            ip(&["link", "set", "lo", "up"]);
            f()
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }

    /// Runs `ip ARGS` (in the caller's namespace), panicking with its stderr on failure.
    fn ip(args: &[&str]) {
        let out = Command::new("ip")
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run `ip` (iproute2): {e}"));
        assert!(
            out.status.success(),
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn socket(addr: SocketAddr, mptcp: bool) -> Socket {
        let proto = if mptcp {
            Protocol::MPTCP
        } else {
            Protocol::TCP
        };
        Socket::new(Domain::for_address(addr), Type::STREAM, Some(proto)).expect("socket")
    }

    fn listen(ip: &str, mptcp: bool) -> TcpListener {
        let addr = SocketAddr::new(ip.parse().unwrap(), 0);
        let s = socket(addr, mptcp);
        s.bind(&SockAddr::from(addr))
            .unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        s.listen(8).expect("listen");
        s.into()
    }

    /// Connects to `listener` and accepts: (client, server).
    fn pair(listener: &TcpListener, mptcp: bool) -> (TcpStream, TcpStream) {
        let addr = listener.local_addr().unwrap();
        let client = socket(addr, mptcp);
        client.connect(&SockAddr::from(addr)).expect("connect");
        let (server, _) = listener.accept().expect("accept");
        (client.into(), server)
    }

    /// Client sends `n` bytes, the server reads them all and answers one byte.
    fn exchange(client: &mut TcpStream, server: &TcpStream, n: usize) {
        let mut server = server.try_clone().unwrap();
        let reader = thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            let mut got = 0;
            while got < n {
                let k = server.read(&mut buf).expect("server read");
                assert!(k > 0, "early EOF after {got} bytes");
                got += k;
            }
            server.write_all(b"k").expect("server write");
        });
        client.write_all(&vec![0x5a; n]).expect("client write");
        let mut ack = [0u8; 1];
        client.read_exact(&mut ack).expect("client read");
        reader.join().unwrap();
    }

    /// Polls `f` every 10 ms for up to 2 s.
    fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            if let Some(v) = f() {
                return v;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            thread::sleep(Duration::from_millis(10));
        }
    }

    fn subflows(info: PathInfo) -> Vec<Subflow> {
        match info {
            PathInfo::Multipath(v) => v,
            other => panic!("expected Multipath, got {other:?}"),
        }
    }

    fn addrs(v: &[Subflow]) -> Vec<(SocketAddr, SocketAddr)> {
        v.iter().map(|s| (s.local, s.remote)).collect()
    }

    #[test]
    fn multipath_one_subflow_carries_the_bytes() {
        in_netns(|| {
            for host in ["127.0.0.1", "::1"] {
                let listener = listen(host, true);
                let (mut client, server) = pair(&listener, true);
                assert!(is_mptcp(&client) && is_mptcp(&server) && is_mptcp(&listener));
                exchange(&mut client, &server, MIB);

                let sf = wait_for("the client's 1 MiB to be acked", || {
                    let v = subflows(path_info(&client).unwrap());
                    assert_eq!(v.len(), 1, "{host}: {v:?}");
                    (v[0].bytes_acked >= MIB as u64).then(|| v[0].clone())
                });
                assert_eq!(sf.local, client.local_addr().unwrap(), "{host}");
                assert_eq!(sf.remote, client.peer_addr().unwrap(), "{host}");
                // tcpi_bytes_acked also counts the SYN (snd_una moves past the ISN), so it
                // can exceed tcpi_bytes_sent by one.
                assert!(sf.bytes_sent >= MIB as u64, "{host}: {sf:?}");
                assert!(sf.rtt_us > 0, "{host}: {sf:?}");

                let srv = subflows(path_info(&server).unwrap());
                assert_eq!(srv.len(), 1, "{host}: {srv:?}");
                assert_eq!(srv[0].local, server.local_addr().unwrap());
                assert_eq!(srv[0].remote, server.peer_addr().unwrap());
                assert!(srv[0].bytes_received >= MIB as u64, "{host}: {srv:?}");
                assert!(srv[0].rtt_us > 0, "{host}: {srv:?}");

                // Both ways of asking agree (this kernel has MPTCP_FULL_INFO).
                let fd = client.as_fd();
                let full = subflows(full_info(fd, SUBFLOW_INFO_LEN, TCP_INFO_LEN).unwrap());
                let legacy = subflows(legacy_info(fd, SUBFLOW_ADDRS_LEN, TCP_INFO_LEN).unwrap());
                assert_eq!(addrs(&full), addrs(&legacy), "{host}");
                assert!(legacy[0].bytes_acked >= MIB as u64 && legacy[0].rtt_us > 0);

                // The listener reports its one listening subflow, remote unspecified.
                let l = subflows(path_info(&listener).unwrap());
                assert_eq!(l.len(), 1, "{host}: {l:?}");
                assert_eq!(l[0].local, listener.local_addr().unwrap());
                assert_eq!(l[0].remote.port(), 0);
            }
        });
    }

    #[test]
    fn mptcp_to_plain_tcp_is_fallback() {
        in_netns(|| {
            for host in ["127.0.0.1", "::1"] {
                // MPTCP client, plain TCP server.
                let listener = listen(host, false);
                let (mut client, server) = pair(&listener, true);
                exchange(&mut client, &server, 64 * 1024);
                assert!(is_mptcp(&client), "{host}");
                assert_eq!(path_info(&client).unwrap(), PathInfo::Fallback, "{host}");
                assert!(!is_mptcp(&server), "{host}");
                assert_eq!(path_info(&server).unwrap(), PathInfo::NotMptcp, "{host}");
                // What the kernel says: SOL_MPTCP is forwarded to TCP, which refuses it.
                let e = full_info(client.as_fd(), SUBFLOW_INFO_LEN, TCP_INFO_LEN).unwrap_err();
                let expected = if host == "::1" {
                    libc::ENOPROTOOPT
                } else {
                    libc::EOPNOTSUPP
                };
                assert_eq!(e.raw_os_error(), Some(expected), "{host}: {e}");
                let e = legacy_info(client.as_fd(), SUBFLOW_ADDRS_LEN, TCP_INFO_LEN);
                assert_eq!(e.unwrap_err().raw_os_error(), Some(expected), "{host}");

                // Plain TCP client, MPTCP listener: the kernel hands out the plain TCP
                // subflow itself as the accepted socket, so it is not MPTCP at all.
                let listener = listen(host, true);
                let (mut client, server) = pair(&listener, false);
                exchange(&mut client, &server, 64 * 1024);
                assert!(!is_mptcp(&server), "{host}");
                assert_eq!(path_info(&server).unwrap(), PathInfo::NotMptcp, "{host}");
                assert_eq!(path_info(&client).unwrap(), PathInfo::NotMptcp, "{host}");
            }
        });
    }

    #[test]
    fn plain_tcp_is_not_mptcp() {
        in_netns(|| {
            let listener = listen("127.0.0.1", false);
            let (mut client, server) = pair(&listener, false);
            exchange(&mut client, &server, 4096);
            for s in [&client, &server] {
                assert!(!is_mptcp(s));
                assert_eq!(path_info(s).unwrap(), PathInfo::NotMptcp);
            }
            assert!(!is_mptcp(&listener));
            assert_eq!(path_info(&listener).unwrap(), PathInfo::NotMptcp);

            // Not connected yet: plain TCP is still NotMptcp, MPTCP has no subflows.
            let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
            assert_eq!(path_info(&socket(addr, false)).unwrap(), PathInfo::NotMptcp);
            assert_eq!(
                path_info(&socket(addr, true)).unwrap(),
                PathInfo::Multipath(vec![])
            );
        });
    }

    #[test]
    fn not_a_socket_is_an_error() {
        let file = std::fs::File::open("/proc/self/stat").unwrap();
        assert!(!is_mptcp(&file));
        let e = path_info(&file).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOTSOCK), "{e}");
    }

    #[test]
    fn second_endpoint_opens_a_second_subflow() {
        in_netns(|| {
            ip(&[
                "mptcp",
                "limits",
                "set",
                "subflow",
                "2",
                "add_addr_accepted",
                "2",
            ]);
            ip(&[
                "mptcp",
                "endpoint",
                "add",
                "127.0.0.2",
                "dev",
                "lo",
                "subflow",
            ]);
            let listener = listen("127.0.0.1", true);
            let server_addr = listener.local_addr().unwrap();
            let (mut client, server) = pair(&listener, true);
            exchange(&mut client, &server, 4096);

            let v = wait_for("a second subflow", || {
                let v = subflows(path_info(&client).unwrap());
                (v.len() == 2).then_some(v)
            });
            let locals: BTreeSet<_> = v.iter().map(|s| s.local.ip()).collect();
            let want: BTreeSet<_> = ["127.0.0.1", "127.0.0.2"]
                .iter()
                .map(|a| a.parse().unwrap())
                .collect();
            assert_eq!(locals, want, "{v:?}");
            assert!(v.iter().all(|s| s.remote == server_addr), "{v:?}");

            // The older options see the same two subflows, in the same order.
            let legacy =
                subflows(legacy_info(client.as_fd(), SUBFLOW_ADDRS_LEN, TCP_INFO_LEN).unwrap());
            assert_eq!(addrs(&legacy), addrs(&v));

            // Everything sent is acked over the two paths together.
            exchange(&mut client, &server, MIB);
            wait_for("1 MiB acked over both subflows", || {
                let v = subflows(path_info(&client).unwrap());
                let acked: u64 = v.iter().map(|s| s.bytes_acked).sum();
                (v.len() == 2 && acked >= MIB as u64).then_some(())
            });
            let srv = subflows(path_info(&server).unwrap());
            assert_eq!(srv.len(), 2, "{srv:?}");
        });
    }

    #[test]
    fn kernel_honours_shorter_element_sizes() {
        in_netns(|| {
            let listener = listen("127.0.0.1", true);
            let (mut client, server) = pair(&listener, true);
            exchange(&mut client, &server, 64 * 1024);
            let fd = client.as_fd();
            let local = client.local_addr().unwrap();
            let unspecified: SocketAddr = "0.0.0.0:0".parse().unwrap();

            // Only the subflow id and a sockaddr_in local address; tcp_info up to tcpi_rtt.
            let short_sf = SFINFO_ADDRS + size_of::<libc::sockaddr_in>();
            let v = subflows(full_info(fd, short_sf, TCPI_RTT + 4).unwrap());
            assert_eq!(v.len(), 1);
            assert_eq!((v[0].local, v[0].remote), (local, unspecified));
            assert!(v[0].rtt_us > 0);
            assert_eq!(
                (v[0].bytes_acked, v[0].bytes_sent, v[0].bytes_received),
                (0, 0, 0)
            );

            // Same through the older options.
            let v =
                subflows(legacy_info(fd, size_of::<libc::sockaddr_in>(), TCPI_RTT + 4).unwrap());
            assert_eq!(v.len(), 1);
            assert_eq!((v[0].local, v[0].remote), (local, unspecified));
            assert!(v[0].rtt_us > 0 && v[0].bytes_acked == 0);

            // tcp_info ending before tcpi_bytes_sent: bytes_sent is bytes_acked.
            let v = subflows(full_info(fd, SUBFLOW_INFO_LEN, TCPI_BYTES_SENT).unwrap());
            assert!(v[0].bytes_acked >= 64 * 1024, "{v:?}");
            assert_eq!(v[0].bytes_sent, v[0].bytes_acked);

            // No elements at all: the subflow is still counted, everything zero.
            let v = subflows(full_info(fd, 0, 0).unwrap());
            assert_eq!(
                v,
                vec![subflow(unspecified, unspecified, TcpStats::default())]
            );
            let v = subflows(legacy_info(fd, 0, 0).unwrap());
            assert_eq!(
                v,
                vec![subflow(unspecified, unspecified, TcpStats::default())]
            );
        });
    }

    /// A `struct mptcp_full_info` header with these counts and strides.
    fn full_head(num: u32, sf_stride: u32, tcp_stride: u32, flags: u32) -> Vec<u8> {
        let mut h = vec![0u8; FI_MPTCP_INFO + MPTCP_INFO_LEN];
        put_u32(&mut h, FI_NUM_SUBFLOWS, num);
        put_u32(&mut h, FI_SIZE_SFINFO_USER, sf_stride);
        put_u32(&mut h, FI_SIZE_TCPINFO_USER, tcp_stride);
        put_u32(&mut h, FI_MPTCP_INFO + MPTCPI_FLAGS, flags);
        h
    }

    #[test]
    fn odd_sizes_never_panic() {
        let sf = vec![0xffu8; MAX_SUBFLOWS * SUBFLOW_INFO_LEN];
        let tcp = vec![0x01u8; MAX_SUBFLOWS * TCP_INFO_LEN];
        // Header cut short: nothing known.
        for len in [0, 3, FI_NUM_SUBFLOWS + 2] {
            let h = full_head(5, 264, 280, 0);
            assert_eq!(
                parse_full_info(&h[..len], &sf, &tcp),
                PathInfo::Multipath(vec![])
            );
        }
        // Far more subflows than fit, strides of 0, odd and far too large.
        for (sf_stride, tcp_stride) in [(0, 0), (3, 7), (264, 208), (100_000, u32::MAX)] {
            let h = full_head(1000, sf_stride, tcp_stride, 0);
            let v = subflows(parse_full_info(&h, &sf, &tcp));
            assert_eq!(v.len(), MAX_SUBFLOWS);
        }
        // A fallback the kernel noticed during the call.
        let h = full_head(1, 264, 208, MPTCP_INFO_FLAG_FALLBACK);
        assert_eq!(parse_full_info(&h, &sf, &tcp), PathInfo::Fallback);

        // struct mptcp_subflow_data answers: short, huge counts, odd strides.
        let addr = |e: &[u8; SUBFLOW_ADDRS_LEN], _: usize| parse_addrs(e);
        for buf in [vec![], vec![0u8; 5], {
            let mut b = vec![0u8; 40];
            put_u32(&mut b, SFD_NUM_SUBFLOWS, u32::MAX);
            put_u32(&mut b, SFD_SIZE_USER, 7);
            b
        }] {
            let l = parse_subflow_data(&buf, addr);
            assert!(l.items.len() <= MAX_SUBFLOWS);
        }
    }

    #[test]
    fn decodes_tcp_info_and_addresses() {
        let mut t = [0u8; TCP_INFO_LEN];
        put_u32(&mut t, TCPI_RTT, 1234);
        put_u64(&mut t, TCPI_BYTES_ACKED, 10);
        put_u64(&mut t, TCPI_BYTES_RECEIVED, 20);
        put_u64(&mut t, TCPI_BYTES_SENT, 30);
        let full = parse_tcp_info(&t, 280);
        assert_eq!(
            full,
            TcpStats {
                rtt_us: 1234,
                bytes_acked: 10,
                bytes_received: 20,
                bytes_sent: 30
            }
        );
        // Cut after tcpi_bytes_acked (element() zero-fills the rest).
        let short: [u8; TCP_INFO_LEN] = element(&t, TCPI_BYTES_ACKED + 8, 0);
        let s = parse_tcp_info(&short, TCPI_BYTES_ACKED + 8);
        assert_eq!(
            (s.rtt_us, s.bytes_acked, s.bytes_received, s.bytes_sent),
            (1234, 10, 0, 10)
        );

        let mut a = [0u8; SUBFLOW_ADDRS_LEN];
        a[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        a[SIN_PORT..SIN_PORT + 2].copy_from_slice(&4242u16.to_be_bytes());
        a[SIN_ADDR..SIN_ADDR + 4].copy_from_slice(&[10, 1, 2, 3]);
        let r = &mut a[SOCKADDR_STORAGE_LEN..];
        r[..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
        r[SIN_PORT..SIN_PORT + 2].copy_from_slice(&443u16.to_be_bytes());
        r[SIN6_ADDR..SIN6_ADDR + 16]
            .copy_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        r[SIN6_SCOPE_ID..SIN6_SCOPE_ID + 4].copy_from_slice(&7u32.to_ne_bytes());
        let (l, r) = parse_addrs(&a);
        assert_eq!(l, "10.1.2.3:4242".parse::<SocketAddr>().unwrap());
        assert_eq!(
            r,
            SocketAddr::V6(SocketAddrV6::new("2001:db8::1".parse().unwrap(), 443, 0, 7))
        );
        // Unknown family, or cut short: unspecified.
        assert_eq!(
            parse_sockaddr(&[0u8; 128]),
            "0.0.0.0:0".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            parse_addrs(&a[..6]).0,
            "0.0.0.0:0".parse::<SocketAddr>().unwrap()
        );
    }
}
