//! The Linux in-kernel MPTCP path manager, spoken to over generic netlink (family "mptcp_pm").
//!
//! The path manager holds the *endpoints*: local addresses the kernel may use for extra
//! subflows (`subflow`), announce to the peer (`signal`), keep as backup (`backup`) or mesh
//! with every peer address (`fullmesh`), plus two *limits*: how many extra subflows a
//! connection may open and how many addresses announced by the peer it accepts. This is what
//! `ip mptcp endpoint …` / `ip mptcp limits …` change; [`PathManager`] does the same from Rust.
//!
//! The endpoints and limits are per network namespace: a [`PathManager`] touches only the
//! namespace of the thread that called [`PathManager::open`] (its netlink socket stays bound
//! to that namespace even if the thread moves later). Changing them needs `CAP_NET_ADMIN`
//! there; reading them does not.
//!
//! # Framing
//!
//! Every request is one netlink message sent to the kernel (port id 0):
//!
//! ```text
//! nlmsghdr (16 bytes: len u32, type u16 = family id, flags u16, seq u32, pid u32)
//! genlmsghdr (4 bytes: cmd u8, version u8, reserved u16)
//! attributes: nlattr (len u16, type u16) + payload, each padded to 4 bytes
//! ```
//!
//! All integers are in host byte order except `MPTCP_PM_ADDR_ATTR_ADDR4` (network order, as
//! in `struct in_addr`); the port is host order (the kernel converts with `htons`/`ntohs`).
//! An endpoint travels as one nested attribute (`MPTCP_PM_ATTR_ADDR`, type with
//! `NLA_F_NESTED`) holding family, id, address, port, flags and interface index.
//!
//! The family id is dynamic: it is resolved first by name with `CTRL_CMD_GETFAMILY` on the
//! generic netlink controller. Requests carry `NLM_F_ACK`, so each ends with an
//! `NLMSG_ERROR` whose code is 0 (done) or a negative errno; a listing is a dump
//! (`NLM_F_DUMP`) whose multi-part answer ends with `NLMSG_DONE`. Answers are matched on the
//! sequence number (anything else is skipped) and received with a 2 s timeout, so a missing
//! answer becomes an error instead of a hang. No `unsafe`: messages are plain byte vectors.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, connect, recv,
    send, setsockopt, sockopt,
};
use nix::sys::time::TimeVal;

/// The kernel may announce this address to the peer (`ADD_ADDR`).
pub const FLAG_SIGNAL: u32 = 1;
/// The kernel may open extra subflows from this address.
pub const FLAG_SUBFLOW: u32 = 2;
/// Subflows over this address are backups (used only when the others fail).
pub const FLAG_BACKUP: u32 = 4;
/// A subflow from this address to every address the peer announced.
pub const FLAG_FULLMESH: u32 = 8;

// Netlink framing (include/uapi/linux/netlink.h).
const NLMSG_HDRLEN: usize = 16;
const NLA_HDRLEN: usize = 4;
const NLA_F_NESTED: u16 = 0x8000;
/// Strips `NLA_F_NESTED` and `NLA_F_NET_BYTEORDER` from an attribute's type.
const NLA_TYPE_MASK: u16 = 0x3fff;
const NLMSG_NOOP: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_OVERRUN: u16 = 4;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;

// Generic netlink (include/uapi/linux/genetlink.h).
const GENL_HDRLEN: usize = 4;
const GENL_ID_CTRL: u16 = 0x10;
const CTRL_VERSION: u8 = 2;
const CTRL_CMD_GETFAMILY: u8 = 3;
const CTRL_ATTR_FAMILY_ID: u16 = 1;
const CTRL_ATTR_FAMILY_NAME: u16 = 2;

// The MPTCP path manager (include/uapi/linux/mptcp_pm.h).
const MPTCP_PM_NAME: &str = "mptcp_pm";
const MPTCP_PM_VER: u8 = 1;
const CMD_ADD_ADDR: u8 = 1;
const CMD_DEL_ADDR: u8 = 2;
const CMD_GET_ADDR: u8 = 3;
const CMD_FLUSH_ADDRS: u8 = 4;
const CMD_SET_LIMITS: u8 = 5;
const CMD_GET_LIMITS: u8 = 6;
const ATTR_ADDR: u16 = 1;
const ATTR_RCV_ADD_ADDRS: u16 = 2;
const ATTR_SUBFLOWS: u16 = 3;
const ADDR_ATTR_FAMILY: u16 = 1;
const ADDR_ATTR_ID: u16 = 2;
const ADDR_ATTR_ADDR4: u16 = 3;
const ADDR_ATTR_ADDR6: u16 = 4;
const ADDR_ATTR_PORT: u16 = 5;
const ADDR_ATTR_FLAGS: u16 = 6;
const ADDR_ATTR_IF_IDX: u16 = 7;

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const IPPROTO_MPTCP: i32 = 262;
const RECV_TIMEOUT_SECS: i64 = 2;
/// Larger than any single datagram a netlink dump sends (32 KiB at most).
const RECV_BUF_LEN: usize = 64 * 1024;

/// One path-manager endpoint, as the kernel lists it (`ip mptcp endpoint show`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The kernel's id for the endpoint (1–255; 0 is the initial subflow's address).
    pub id: u8,
    pub addr: IpAddr,
    /// Only `signal` endpoints may have a port.
    pub port: Option<u16>,
    /// `FLAG_*` bits (the kernel may report others, e.g. 16 = implicit).
    pub flags: u32,
    /// The interface subflows from this address are bound to, if any.
    pub ifindex: Option<u32>,
}

/// The path manager's per-connection limits (`ip mptcp limits`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Extra subflows a connection may have (the kernel allows at most 8).
    pub subflows: u32,
    /// Addresses announced by the peer that a connection accepts (at most 8).
    pub add_addr_accepted: u32,
}

/// Why a path-manager request failed; every message is meant for the user to read.
#[derive(Debug, thiserror::Error)]
pub enum PmError {
    /// This kernel (or namespace) cannot do it at all, e.g. it has no MPTCP.
    #[error("{0}")]
    Unsupported(String),
    /// The netlink socket failed (creating, sending, receiving, no answer in time); the text
    /// names the step.
    #[error("{0}")]
    Io(io::Error),
    /// The kernel refused the request: `op` is the method's name, `message` what was tried.
    #[error("{message}: {} (errno {errno})", errno_text(.errno))]
    Kernel {
        op: &'static str,
        errno: i32,
        message: String,
    },
    /// The request cannot be expressed (e.g. an interface index beyond the kernel's range).
    #[error("{0}")]
    Invalid(String),
    /// The kernel's answer could not be read (should not happen with a sane kernel).
    #[error("unreadable answer from the kernel's MPTCP path manager: {0}")]
    Malformed(String),
}

fn errno_text(errno: &i32) -> &'static str {
    Errno::from_raw(*errno).desc()
}

/// Adds a likely cause to a kernel error with this errno (the kernel's own text needs
/// `NETLINK_EXT_ACK`, which nix cannot set without `unsafe`).
fn hint(e: PmError, errno: Errno, cause: &str) -> PmError {
    match e {
        PmError::Kernel {
            op,
            errno: n,
            message,
        } if n == errno as i32 => PmError::Kernel {
            op,
            errno: n,
            message: format!("{message} ({cause})"),
        },
        other => other,
    }
}

fn io_error(context: &str, errno: Errno) -> PmError {
    let kind = io::Error::from(errno).kind();
    let text = format!("{context}: {} (errno {})", errno.desc(), errno as i32);
    PmError::Io(io::Error::new(kind, text))
}

/// A request being built: netlink header, generic netlink header, attributes.
struct Request {
    buf: Vec<u8>,
}

impl Request {
    fn new(msg_type: u16, flags: u16, seq: u32, cmd: u8, version: u8) -> Request {
        let mut buf = Vec::with_capacity(64);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // length, set by `finish`
        buf.extend_from_slice(&msg_type.to_ne_bytes());
        buf.extend_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it in
        buf.extend_from_slice(&[cmd, version, 0, 0]);
        Request { buf }
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    /// Appends one attribute; its length excludes the padding that follows it.
    fn attr(&mut self, ty: u16, payload: &[u8]) -> &mut Request {
        let len = u16::try_from(NLA_HDRLEN + payload.len()).expect("attribute over 64 KiB");
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(payload);
        self.pad();
        self
    }

    /// Opens a nested attribute; returns where it starts, for [`Request::end_nested`].
    fn begin_nested(&mut self, ty: u16) -> usize {
        let start = self.buf.len();
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf
            .extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
        start
    }

    fn end_nested(&mut self, start: usize) {
        let len = u16::try_from(self.buf.len() - start).expect("attribute over 64 KiB");
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    }

    fn finish(mut self) -> Vec<u8> {
        let len = u32::try_from(self.buf.len()).expect("message over 4 GiB");
        self.buf[..4].copy_from_slice(&len.to_ne_bytes());
        self.buf
    }
}

/// Appends the nested `MPTCP_PM_ATTR_ADDR` of an endpoint request (absent parts left out).
fn encode_addr(
    req: &mut Request,
    id: Option<u8>,
    addr: Option<IpAddr>,
    port: Option<u16>,
    flags: Option<u32>,
    ifindex: Option<i32>,
) {
    let start = req.begin_nested(ATTR_ADDR);
    match addr {
        Some(IpAddr::V4(a)) => {
            req.attr(ADDR_ATTR_FAMILY, &AF_INET.to_ne_bytes());
            req.attr(ADDR_ATTR_ADDR4, &a.octets()); // octets = network order
        }
        Some(IpAddr::V6(a)) => {
            req.attr(ADDR_ATTR_FAMILY, &AF_INET6.to_ne_bytes());
            req.attr(ADDR_ATTR_ADDR6, &a.octets());
        }
        None => {}
    }
    if let Some(id) = id {
        req.attr(ADDR_ATTR_ID, &[id]);
    }
    if let Some(port) = port {
        req.attr(ADDR_ATTR_PORT, &port.to_ne_bytes()); // host order
    }
    if let Some(flags) = flags {
        req.attr(ADDR_ATTR_FLAGS, &flags.to_ne_bytes());
    }
    if let Some(ifindex) = ifindex {
        req.attr(ADDR_ATTR_IF_IDX, &ifindex.to_ne_bytes());
    }
    req.end_nested(start);
}

/// One received netlink message.
struct Message<'a> {
    ty: u16,
    seq: u32,
    payload: &'a [u8],
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Splits one datagram into its netlink messages (each aligned to 4 bytes).
fn parse_messages(buf: &[u8]) -> Result<Vec<Message<'_>>, String> {
    let mut out = Vec::new();
    let mut rest = buf;
    while !rest.is_empty() {
        let len = u32_at(rest, 0).ok_or("a truncated netlink header")? as usize;
        if len < NLMSG_HDRLEN || len > rest.len() {
            return Err(format!(
                "a netlink message of {len} bytes in {} bytes",
                rest.len()
            ));
        }
        out.push(Message {
            ty: u16_at(rest, 4).unwrap_or_default(),
            seq: u32_at(rest, 8).unwrap_or_default(),
            payload: &rest[NLMSG_HDRLEN..len],
        });
        rest = rest.get(len.next_multiple_of(4)..).unwrap_or_default();
    }
    Ok(out)
}

/// Splits attributes into (type without flags, payload).
fn parse_attrs(buf: &[u8]) -> Result<Vec<(u16, &[u8])>, String> {
    let mut out = Vec::new();
    let mut rest = buf;
    while rest.len() >= NLA_HDRLEN {
        let len = usize::from(u16_at(rest, 0).unwrap_or_default());
        let ty = u16_at(rest, 2).unwrap_or_default() & NLA_TYPE_MASK;
        if len < NLA_HDRLEN || len > rest.len() {
            return Err(format!(
                "attribute {ty} of {len} bytes in {} bytes",
                rest.len()
            ));
        }
        out.push((ty, &rest[NLA_HDRLEN..len]));
        rest = rest.get(len.next_multiple_of(4)..).unwrap_or_default();
    }
    Ok(out)
}

/// What one received message means for the request with sequence number `seq`.
#[derive(Debug, PartialEq, Eq)]
enum Answer<'a> {
    /// A reply: its attributes (after the generic netlink header).
    Data(&'a [u8]),
    /// The final ack or the end of a dump.
    Finished,
    /// The kernel refused: a positive errno.
    Failed(i32),
    /// Not ours, or nothing to act on.
    Skip,
}

fn classify<'a>(msg: &Message<'a>, seq: u32, family: u16) -> Result<Answer<'a>, String> {
    if msg.seq != seq {
        return Ok(Answer::Skip);
    }
    let code = || u32_at(msg.payload, 0).map(|c| c as i32);
    match msg.ty {
        NLMSG_ERROR => match code().ok_or("an error message without its code")? {
            0 => Ok(Answer::Finished),
            e => Ok(Answer::Failed(e.saturating_neg())),
        },
        // Older kernels send DONE without a code.
        NLMSG_DONE => match code().unwrap_or(0) {
            e if e < 0 => Ok(Answer::Failed(e.saturating_neg())),
            _ => Ok(Answer::Finished),
        },
        NLMSG_OVERRUN => Err("the kernel reported a netlink overrun".to_string()),
        NLMSG_NOOP => Ok(Answer::Skip),
        ty if ty == family => msg
            .payload
            .get(GENL_HDRLEN..)
            .map(Answer::Data)
            .ok_or_else(|| "a reply without its generic netlink header".to_string()),
        _ => Ok(Answer::Skip),
    }
}

/// Reads one endpoint from the payload of a nested `MPTCP_PM_ATTR_ADDR`.
fn decode_endpoint(nested: &[u8]) -> Result<Endpoint, String> {
    let (mut id, mut family, mut v4, mut v6) = (None, None, None, None);
    let (mut port, mut flags, mut ifindex) = (None, 0, None);
    for (ty, p) in parse_attrs(nested)? {
        let bad = || format!("endpoint attribute {ty} of {} bytes", p.len());
        match ty {
            ADDR_ATTR_FAMILY => family = Some(u16_at(p, 0).ok_or_else(bad)?),
            ADDR_ATTR_ID => id = Some(*p.first().ok_or_else(bad)?),
            ADDR_ATTR_ADDR4 => {
                v4 = Some(Ipv4Addr::from(<[u8; 4]>::try_from(p).map_err(|_| bad())?));
            }
            ADDR_ATTR_ADDR6 => {
                v6 = Some(Ipv6Addr::from(<[u8; 16]>::try_from(p).map_err(|_| bad())?));
            }
            ADDR_ATTR_PORT => port = Some(u16_at(p, 0).ok_or_else(bad)?).filter(|&p| p != 0),
            ADDR_ATTR_FLAGS => flags = u32_at(p, 0).ok_or_else(bad)?,
            ADDR_ATTR_IF_IDX => {
                // An s32 on the wire; 0 (or nonsense below it) means "no interface".
                ifindex = Some(u32_at(p, 0).ok_or_else(bad)? as i32)
                    .filter(|&i| i > 0)
                    .map(|i| i as u32);
            }
            _ => {}
        }
    }
    let addr = match family {
        Some(AF_INET) => IpAddr::V4(v4.ok_or("an IPv4 endpoint without its address")?),
        Some(AF_INET6) => IpAddr::V6(v6.ok_or("an IPv6 endpoint without its address")?),
        Some(f) => return Err(format!("an endpoint of unknown address family {f}")),
        None => return Err("an endpoint without its address family".to_string()),
    };
    let id = id.ok_or("an endpoint without its id")?;
    Ok(Endpoint {
        id,
        addr,
        port,
        flags,
        ifindex,
    })
}

/// Reads the two limits from a `GET_LIMITS` reply's attributes.
fn decode_limits(attrs: &[u8]) -> Result<Limits, String> {
    let (mut subflows, mut accepted) = (None, None);
    for (ty, p) in parse_attrs(attrs)? {
        match ty {
            ATTR_SUBFLOWS => subflows = u32_at(p, 0),
            ATTR_RCV_ADD_ADDRS => accepted = u32_at(p, 0),
            _ => {}
        }
    }
    match (subflows, accepted) {
        (Some(subflows), Some(add_addr_accepted)) => Ok(Limits {
            subflows,
            add_addr_accepted,
        }),
        _ => Err("a limits reply without both limits".to_string()),
    }
}

/// A netlink socket connected to the kernel, with its sequence counter.
struct Socket {
    fd: OwnedFd,
    seq: u32,
}

impl Socket {
    fn open() -> Result<Socket, PmError> {
        let fd = nix::sys::socket::socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkGeneric,
        )
        .map_err(|e| io_error("opening a generic netlink socket", e))?;
        let kernel = NetlinkAddr::new(0, 0);
        bind(fd.as_raw_fd(), &kernel).map_err(|e| io_error("binding the netlink socket", e))?;
        connect(fd.as_raw_fd(), &kernel)
            .map_err(|e| io_error("connecting the netlink socket", e))?;
        let timeout = TimeVal::new(RECV_TIMEOUT_SECS, 0);
        setsockopt(&fd, sockopt::ReceiveTimeout, &timeout)
            .map_err(|e| io_error("setting the netlink receive timeout", e))?;
        Ok(Socket { fd, seq: 0 })
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Sends `req` (numbered `seq`) and collects the attributes of every reply of type
    /// `family` until the ack or the end of the dump. `op`/`what` name the request in errors.
    fn exchange(
        &mut self,
        req: Request,
        seq: u32,
        family: u16,
        op: &'static str,
        what: &str,
    ) -> Result<Vec<Vec<u8>>, PmError> {
        let msg = req.finish();
        send(self.fd.as_raw_fd(), &msg, MsgFlags::empty())
            .map_err(|e| io_error(&format!("{what}: sending the request"), e))?;
        let mut buf = vec![0u8; RECV_BUF_LEN];
        let mut replies = Vec::new();
        loop {
            let n = match recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::MSG_TRUNC) {
                Ok(n) => n,
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => {
                    let text =
                        format!("{what}: no answer from the kernel in {RECV_TIMEOUT_SECS} s");
                    return Err(PmError::Io(io::Error::new(io::ErrorKind::TimedOut, text)));
                }
                Err(e) => return Err(io_error(&format!("{what}: receiving the answer"), e)),
            };
            if n > buf.len() {
                return Err(PmError::Malformed(format!(
                    "{what}: a {n}-byte answer was cut"
                )));
            }
            let messages = parse_messages(&buf[..n]).map_err(PmError::Malformed)?;
            for m in &messages {
                match classify(m, seq, family).map_err(PmError::Malformed)? {
                    Answer::Data(attrs) => replies.push(attrs.to_vec()),
                    Answer::Finished => return Ok(replies),
                    Answer::Failed(errno) => {
                        return Err(PmError::Kernel {
                            op,
                            errno,
                            message: what.to_string(),
                        });
                    }
                    Answer::Skip => {}
                }
            }
        }
    }
}

/// A client of the kernel's MPTCP path manager in one network namespace.
pub struct PathManager {
    sock: Socket,
    family: u16,
}

impl PathManager {
    /// Opens a netlink socket in the calling thread's current network namespace and resolves
    /// the "mptcp_pm" family; [`PmError::Unsupported`] if the kernel has no such family.
    pub fn open() -> Result<PathManager, PmError> {
        let mut sock = Socket::open()?;
        let seq = sock.next_seq();
        let mut req = Request::new(
            GENL_ID_CTRL,
            NLM_F_REQUEST | NLM_F_ACK,
            seq,
            CTRL_CMD_GETFAMILY,
            CTRL_VERSION,
        );
        req.attr(
            CTRL_ATTR_FAMILY_NAME,
            format!("{MPTCP_PM_NAME}\0").as_bytes(),
        );
        let what = "looking up the MPTCP path manager's generic netlink family";
        let replies = match sock.exchange(req, seq, GENL_ID_CTRL, "open", what) {
            Err(PmError::Kernel { errno, .. }) if errno == Errno::ENOENT as i32 => {
                return Err(PmError::Unsupported(format!(
                    "the kernel has no MPTCP path manager (generic netlink family \
                     \"{MPTCP_PM_NAME}\" not found: kernel built without CONFIG_MPTCP?)"
                )));
            }
            other => other?,
        };
        for reply in &replies {
            for (ty, p) in parse_attrs(reply).map_err(PmError::Malformed)? {
                if ty == CTRL_ATTR_FAMILY_ID
                    && let Some(family) = u16_at(p, 0)
                {
                    return Ok(PathManager { sock, family });
                }
            }
        }
        Err(PmError::Malformed(format!(
            "{what}: the answer has no family id"
        )))
    }

    /// Sends one path-manager command; `dump` lists instead of acting on one object.
    fn command(
        &mut self,
        cmd: u8,
        dump: bool,
        op: &'static str,
        what: &str,
        attrs: impl FnOnce(&mut Request),
    ) -> Result<Vec<Vec<u8>>, PmError> {
        let seq = self.sock.next_seq();
        let flags = NLM_F_REQUEST | NLM_F_ACK | if dump { NLM_F_DUMP } else { 0 };
        let mut req = Request::new(self.family, flags, seq, cmd, MPTCP_PM_VER);
        attrs(&mut req);
        self.sock.exchange(req, seq, self.family, op, what)
    }

    /// Every endpoint, in the kernel's order (by id).
    pub fn endpoints(&mut self) -> Result<Vec<Endpoint>, PmError> {
        let replies = self.command(
            CMD_GET_ADDR,
            true,
            "endpoints",
            "listing MPTCP endpoints",
            |_| {},
        )?;
        let mut out = Vec::with_capacity(replies.len());
        for reply in &replies {
            for (ty, p) in parse_attrs(reply).map_err(PmError::Malformed)? {
                if ty == ATTR_ADDR {
                    out.push(decode_endpoint(p).map_err(PmError::Malformed)?);
                }
            }
        }
        Ok(out)
    }

    /// Adds an endpoint (no port) and returns the id the kernel gave it.
    pub fn add_endpoint(
        &mut self,
        addr: IpAddr,
        ifindex: Option<u32>,
        flags: u32,
    ) -> Result<u8, PmError> {
        self.add_endpoint_with_port(addr, None, ifindex, flags)
    }

    /// [`PathManager::add_endpoint`] with an optional port (the kernel wants `FLAG_SIGNAL`
    /// then). The ack carries no id, so the new endpoint is found again by listing.
    fn add_endpoint_with_port(
        &mut self,
        addr: IpAddr,
        port: Option<u16>,
        ifindex: Option<u32>,
        flags: u32,
    ) -> Result<u8, PmError> {
        let mut what = format!("adding MPTCP endpoint {addr}");
        if let Some(port) = port {
            what += &format!(" port {port}");
        }
        if let Some(ifindex) = ifindex {
            what += &format!(" on ifindex {ifindex}");
        }
        let ifindex = match ifindex.map(i32::try_from).transpose() {
            Ok(i) => i,
            Err(_) => return Err(PmError::Invalid(format!("{what}: ifindex out of range"))),
        };
        self.command(CMD_ADD_ADDR, false, "add_endpoint", &what, |r| {
            encode_addr(r, None, Some(addr), port, Some(flags), ifindex)
        })?;
        let all = self.endpoints()?;
        all.iter()
            .find(|e| e.addr == addr && e.port == port)
            .or_else(|| all.iter().find(|e| e.addr == addr))
            .map(|e| e.id)
            .ok_or_else(|| PmError::Malformed(format!("{what}: accepted but not listed after")))
    }

    /// Removes the endpoint with this id (the id alone is enough for the kernel).
    pub fn remove_endpoint(&mut self, id: u8) -> Result<(), PmError> {
        let what = format!("removing MPTCP endpoint id {id}");
        self.command(CMD_DEL_ADDR, false, "remove_endpoint", &what, |r| {
            encode_addr(r, Some(id), None, None, None, None)
        })
        .map_err(|e| hint(e, Errno::EINVAL, "is there an endpoint with this id?"))?;
        Ok(())
    }

    /// Removes every endpoint.
    pub fn flush_endpoints(&mut self) -> Result<(), PmError> {
        let what = "removing all MPTCP endpoints";
        self.command(CMD_FLUSH_ADDRS, false, "flush_endpoints", what, |_| {})?;
        Ok(())
    }

    /// The current limits.
    pub fn limits(&mut self) -> Result<Limits, PmError> {
        let what = "reading the MPTCP limits";
        let replies = self.command(CMD_GET_LIMITS, false, "limits", what, |_| {})?;
        let reply = replies
            .first()
            .ok_or_else(|| PmError::Malformed(format!("{what}: no reply")))?;
        decode_limits(reply).map_err(|e| PmError::Malformed(format!("{what}: {e}")))
    }

    /// Sets both limits (each at most 8; the kernel refuses more with "Invalid argument").
    pub fn set_limits(&mut self, limits: Limits) -> Result<(), PmError> {
        let what = format!(
            "setting the MPTCP limits to {} subflows, {} accepted addresses",
            limits.subflows, limits.add_addr_accepted
        );
        self.command(CMD_SET_LIMITS, false, "set_limits", &what, |r| {
            r.attr(ATTR_RCV_ADD_ADDRS, &limits.add_addr_accepted.to_ne_bytes());
            r.attr(ATTR_SUBFLOWS, &limits.subflows.to_ne_bytes());
        })
        .map_err(|e| hint(e, Errno::EINVAL, "each limit is at most 8"))?;
        Ok(())
    }
}

/// Whether this kernel can do MPTCP (in the calling thread's network namespace): an
/// `IPPROTO_MPTCP` socket can be created and the "mptcp_pm" family exists. The error is the
/// reason, in words.
pub fn kernel_support() -> Result<(), String> {
    let protocol = socket2::Protocol::from(IPPROTO_MPTCP);
    if let Err(e) =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, Some(protocol))
    {
        let sysctl = std::fs::read_to_string("/proc/sys/net/mptcp/enabled").unwrap_or_default();
        if sysctl.trim() == "0" {
            return Err(
                "net.mptcp.enabled is 0 (enable it with: sysctl -w net.mptcp.enabled=1)"
                    .to_string(),
            );
        }
        let errno = e
            .raw_os_error()
            .map(Errno::from_raw)
            .map_or_else(|| e.to_string(), |n| n.desc().to_string());
        return Err(format!("the kernel has no MPTCP (socket: {errno})"));
    }
    PathManager::open().map(drop).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One netlink message of `ty`/`seq` around `payload`, as the kernel would send it.
    fn message(ty: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let mut m = ((NLMSG_HDRLEN + payload.len()) as u32)
            .to_ne_bytes()
            .to_vec();
        m.extend_from_slice(&ty.to_ne_bytes());
        m.extend_from_slice(&[0, 0]);
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&[0, 0, 0, 0]);
        m.extend_from_slice(payload);
        m
    }

    fn ep(id: u8, addr: IpAddr, port: Option<u16>, flags: u32, ifindex: Option<u32>) -> Endpoint {
        Endpoint {
            id,
            addr,
            port,
            flags,
            ifindex,
        }
    }

    /// The attributes of a finished request (after both headers).
    fn attrs_of(req: Request) -> Vec<u8> {
        req.finish()[NLMSG_HDRLEN + GENL_HDRLEN..].to_vec()
    }

    #[test]
    fn headers_and_attribute_padding() {
        let mut req = Request::new(0x20, NLM_F_REQUEST | NLM_F_ACK, 7, CMD_ADD_ADDR, 1);
        req.attr(ADDR_ATTR_ID, &[9])
            .attr(ADDR_ATTR_FLAGS, &5u32.to_ne_bytes());
        let msg = req.finish();
        assert_eq!(msg.len(), 16 + 4 + 8 + 8);
        assert_eq!(u32_at(&msg, 0), Some(msg.len() as u32));
        assert_eq!(u16_at(&msg, 4), Some(0x20));
        assert_eq!(u16_at(&msg, 6), Some(NLM_F_REQUEST | NLM_F_ACK));
        assert_eq!(u32_at(&msg, 8), Some(7));
        assert_eq!(msg[16..20], [CMD_ADD_ADDR, 1, 0, 0]);
        // The u8 attribute: length 5 (padding not counted), then 3 bytes of padding.
        assert_eq!(msg[20..28], [5, 0, ADDR_ATTR_ID as u8, 0, 9, 0, 0, 0]);
        let attrs = parse_attrs(&msg[20..]).unwrap();
        let flags = 5u32.to_ne_bytes();
        assert_eq!(
            attrs,
            [(ADDR_ATTR_ID, &[9u8][..]), (ADDR_ATTR_FLAGS, &flags[..])]
        );
    }

    #[test]
    fn nested_endpoint_round_trips() {
        let addr: IpAddr = "198.18.10.2".parse().unwrap();
        let mut req = Request::new(0x20, NLM_F_REQUEST, 1, CMD_ADD_ADDR, 1);
        encode_addr(
            &mut req,
            Some(3),
            Some(addr),
            Some(0x1234),
            Some(5),
            Some(7),
        );
        let attrs = attrs_of(req);
        // NLA_F_NESTED is set on the wire and masked by parsing; the length covers the inner
        // attributes with their padding.
        assert_eq!(u16_at(&attrs, 2), Some(ATTR_ADDR | NLA_F_NESTED));
        assert_eq!(u16_at(&attrs, 0).map(usize::from), Some(attrs.len()));
        let outer = parse_attrs(&attrs).unwrap();
        assert_eq!((outer.len(), outer[0].0), (1, ATTR_ADDR));
        let inner = parse_attrs(outer[0].1).unwrap();
        assert!(inner.contains(&(ADDR_ATTR_ADDR4, &[198, 18, 10, 2][..]))); // network order
        let want = ep(3, addr, Some(0x1234), 5, Some(7));
        assert_eq!(decode_endpoint(outer[0].1), Ok(want));

        let addr: IpAddr = "2001:db8::7".parse().unwrap();
        let mut req = Request::new(0x20, 0, 1, CMD_ADD_ADDR, 1);
        encode_addr(&mut req, Some(1), Some(addr), None, None, Some(0));
        let attrs = attrs_of(req);
        let want = ep(1, addr, None, 0, None);
        assert_eq!(decode_endpoint(parse_attrs(&attrs).unwrap()[0].1), Ok(want));
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        assert!(parse_attrs(&[8, 0, 1, 0, 0]).is_err()); // claims 8 bytes, has 5
        assert!(parse_attrs(&[2, 0, 1, 0]).is_err()); // shorter than its header
        assert!(parse_messages(&[1, 2, 3]).is_err());
        assert!(parse_messages(&message(NLMSG_DONE, 1, &[])[..15]).is_err());
        let mut req = Request::new(0, 0, 0, 0, 0);
        req.attr(ADDR_ATTR_FAMILY, &AF_INET.to_ne_bytes());
        assert!(
            decode_endpoint(&attrs_of(req))
                .unwrap_err()
                .contains("without its address")
        );
        let mut req = Request::new(0, 0, 0, 0, 0);
        req.attr(ATTR_SUBFLOWS, &2u32.to_ne_bytes());
        assert!(decode_limits(&attrs_of(req)).is_err());
    }

    #[test]
    fn acks_dumps_and_foreign_messages() {
        let family = 0x1c;
        // A stale reply (seq 3), then an error ack (-EEXIST) carrying the request's header.
        let mut payload = (-17i32).to_ne_bytes().to_vec();
        payload.extend_from_slice(&message(family, 4, &[])[..16]);
        let mut datagram = message(family, 3, &[CMD_GET_ADDR, 1, 0, 0]);
        datagram.extend(message(NLMSG_ERROR, 4, &payload));
        let msgs = parse_messages(&datagram).unwrap();
        assert_eq!(msgs.len(), 2);
        assert_eq!(classify(&msgs[0], 4, family), Ok(Answer::Skip));
        assert_eq!(classify(&msgs[1], 4, family), Ok(Answer::Failed(17)));

        let code = |c: i32| c.to_ne_bytes();
        let cases = [
            (message(NLMSG_ERROR, 9, &code(0)), Answer::Finished),
            (message(NLMSG_DONE, 9, &code(0)), Answer::Finished),
            (message(NLMSG_DONE, 9, &code(-1)), Answer::Failed(1)),
            (message(NLMSG_NOOP, 9, &[]), Answer::Skip),
            (message(family, 9, &[1, 1, 0, 0, 7]), Answer::Data(&[7])),
        ];
        for (m, want) in cases {
            assert_eq!(
                classify(&parse_messages(&m).unwrap()[0], 9, family),
                Ok(want)
            );
        }
    }

    #[test]
    fn errors_read_as_words() {
        let message = "adding MPTCP endpoint 198.18.10.2 on ifindex 5".to_string();
        let op = "add_endpoint";
        let e = PmError::Kernel {
            op,
            errno: 17,
            message,
        };
        let want = "adding MPTCP endpoint 198.18.10.2 on ifindex 5: File exists (errno 17)";
        assert_eq!(e.to_string(), want);
        let e = hint(e, Errno::EEXIST, "already there");
        assert!(
            e.to_string()
                .contains("ifindex 5 (already there): File exists"),
            "{e}"
        );
    }

    fn ok<T>(r: Result<T, PmError>) -> T {
        r.unwrap_or_else(|e| panic!("{e}"))
    }

    /// Asserts a kernel refusal and prints its message.
    fn refused<T: std::fmt::Debug>(what: &str, r: Result<T, PmError>) {
        match r {
            Err(e @ PmError::Kernel { .. }) => eprintln!("{what}: {e}"),
            other => panic!("{what}: expected a kernel error, got {other:?}"),
        }
    }

    /// `ip mptcp endpoint show` (a child process inherits the network namespace of the
    /// thread that spawns it), or None without iproute2.
    fn ip_endpoint_show() -> Option<String> {
        let mut ip = std::process::Command::new("ip");
        let out = ip.args(["mptcp", "endpoint", "show"]).output().ok()?;
        assert!(
            out.status.success(),
            "ip: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Some(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The real kernel, in a private network namespace: the host's endpoints are untouched.
    #[test]
    fn path_manager_in_a_private_namespace() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "needs root (CAP_NET_ADMIN) to create a private network namespace and change its \
             MPTCP endpoints: run this test as root"
        );
        let worker = std::thread::spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                .unwrap_or_else(|e| panic!("unshare(CLONE_NEWNET): {}", e.desc()));
            if let Err(reason) = kernel_support() {
                panic!("MPTCP unavailable: {reason}");
            }
            let mut pm = ok(PathManager::open());
            assert_eq!(ok(pm.endpoints()), [], "a fresh namespace has no endpoints");

            let v4: IpAddr = "198.18.200.1".parse().unwrap();
            let v6: IpAddr = "2001:db8:200::1".parse().unwrap();
            let sig: IpAddr = "198.18.200.2".parse().unwrap();
            let id4 = ok(pm.add_endpoint(v4, Some(1), FLAG_SUBFLOW));
            let id6 = ok(pm.add_endpoint(v6, Some(1), FLAG_SIGNAL | FLAG_BACKUP));
            let idp = ok(pm.add_endpoint_with_port(sig, Some(4242), None, FLAG_SIGNAL));
            let want = [
                ep(id4, v4, None, FLAG_SUBFLOW, Some(1)),
                ep(id6, v6, None, FLAG_SIGNAL | FLAG_BACKUP, Some(1)),
                ep(idp, sig, Some(4242), FLAG_SIGNAL, None),
            ];
            let mut got = ok(pm.endpoints());
            got.sort_by_key(|e| e.id);
            assert_eq!(got, want);
            eprintln!("ids assigned: {id4}, {id6}, {idp}");

            // iproute2 reads the same namespace; this also checks the port's byte order.
            match ip_endpoint_show() {
                Some(shown) => {
                    eprintln!("ip mptcp endpoint show:\n{shown}");
                    for line in [
                        format!("198.18.200.1 id {id4} subflow dev lo"),
                        format!("2001:db8:200::1 id {id6} signal backup dev lo"),
                        format!("198.18.200.2 port 4242 id {idp} signal"),
                    ] {
                        assert!(shown.contains(&line), "{line:?} not in:\n{shown}");
                    }
                }
                None => eprintln!("no `ip` tool: cross-check with iproute2 skipped"),
            }

            refused(
                "adding it twice",
                pm.add_endpoint(v4, Some(1), FLAG_SUBFLOW),
            );
            ok(pm.remove_endpoint(id4));
            let left: Vec<u8> = ok(pm.endpoints()).iter().map(|e| e.id).collect();
            assert_eq!(left, [id6, idp], "after removing id {id4}");
            refused("removing it twice", pm.remove_endpoint(id4));
            let again = ok(pm.add_endpoint(v4, Some(1), FLAG_SUBFLOW));
            eprintln!("re-added {v4} after removing id {id4}: id {again}");

            eprintln!("default limits: {:?}", ok(pm.limits()));
            let limits = Limits {
                subflows: 4,
                add_addr_accepted: 4,
            };
            ok(pm.set_limits(limits));
            assert_eq!(ok(pm.limits()), limits);
            let too_many = Limits {
                subflows: 9,
                ..limits
            };
            refused("9 subflows", pm.set_limits(too_many));
            assert_eq!(ok(pm.limits()), limits, "a refused change changes nothing");

            ok(pm.flush_endpoints());
            assert_eq!(ok(pm.endpoints()), []);
        });
        if let Err(panic) = worker.join() {
            std::panic::resume_unwind(panic);
        }
    }
}
