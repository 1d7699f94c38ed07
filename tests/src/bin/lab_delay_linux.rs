//! `lab-delay QUEUE DELAY_MS` — the lab's stand-in for `tc netem delay`.
//!
//! The lab kernel has no netem, so link delay is made in user space: an iptables rule
//! (`-t raw -A PREROUTING -i <dev> -j NFQUEUE --queue-num QUEUE`) hands every packet that
//! enters through a link to this program, which holds it for `DELAY_MS` milliseconds and
//! then tells the kernel to accept it. Packets are released in arrival order (one FIFO per
//! queue; with a constant delay FIFO order is also release order).
//!
//! It speaks nfnetlink_queue directly over a `NETLINK_NETFILTER` socket, asks only for packet
//! metadata (`NFQNL_COPY_META`: the payload never crosses into user space), and sleeps in
//! `poll(2)` until either a new packet arrives or the oldest held packet is due — no busy loop.
//!
//! Protocol with the lab: after the queue is bound it prints `ready` on stdout, so the lab can
//! install the iptables rule only once somebody listens (an NFQUEUE rule without a listener
//! drops packets). It runs until killed, or until its parent process goes away.
#![forbid(unsafe_code)]

use std::collections::VecDeque;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, recv, send,
    setsockopt, socket, sockopt,
};
use nix::unistd::getppid;

// netlink / nfnetlink_queue constants (linux/netlink.h, linux/netfilter/nfnetlink_queue.h).
const NLMSG_HDRLEN: usize = 16;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLMSG_ERROR: u16 = 2;
const NFNL_SUBSYS_QUEUE: u16 = 3;
const NFQNL_MSG_PACKET: u16 = 0;
const NFQNL_MSG_VERDICT: u16 = 1;
const NFQNL_MSG_CONFIG: u16 = 2;
const NFQA_CFG_CMD: u16 = 1;
const NFQA_CFG_PARAMS: u16 = 2;
const NFQA_CFG_QUEUE_MAXLEN: u16 = 3;
const NFQNL_CFG_CMD_BIND: u8 = 1;
const NFQNL_COPY_META: u8 = 1;
const NFQA_PACKET_HDR: u16 = 1;
const NFQA_VERDICT_HDR: u16 = 2;
const NF_ACCEPT: u32 = 1;
const NLA_TYPE_MASK: u16 = 0x3fff;
/// How many packets the kernel may hold for us before it drops new ones.
const QUEUE_MAXLEN: u32 = 16384;
/// Longest sleep in poll(2), so that an orphaned helper notices and exits.
const IDLE_CHECK_MS: u16 = 500;

/// One netlink request under construction: header, nfgenmsg, then attributes.
struct Msg {
    buf: Vec<u8>,
}

impl Msg {
    fn new(kind: u16, flags: u16, seq: u32, queue: u16) -> Msg {
        let mut buf = Vec::with_capacity(64);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // length, patched in finish()
        buf.extend_from_slice(&((NFNL_SUBSYS_QUEUE << 8) | kind).to_ne_bytes());
        buf.extend_from_slice(&(NLM_F_REQUEST | flags).to_ne_bytes());
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: kernel
        // struct nfgenmsg { family = AF_UNSPEC, version = NFNETLINK_V0, res_id (be16) }
        buf.extend_from_slice(&[0, 0]);
        buf.extend_from_slice(&queue.to_be_bytes());
        Msg { buf }
    }

    fn attr(mut self, kind: u16, payload: &[u8]) -> Msg {
        let len = u16::try_from(4 + payload.len()).expect("attribute too long");
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(payload);
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
        self
    }

    fn finish(mut self) -> Vec<u8> {
        let len = u32::try_from(self.buf.len()).expect("message too long");
        self.buf[..4].copy_from_slice(&len.to_ne_bytes());
        self.buf
    }
}

struct NfQueue {
    fd: OwnedFd,
    queue: u16,
    seq: u32,
    buf: Vec<u8>,
}

impl NfQueue {
    fn open(queue: u16) -> Result<NfQueue> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkNetFilter,
        )
        .context("socket(AF_NETLINK, NETLINK_NETFILTER)")?;
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0)).context("bind netlink socket")?;
        // Bursts of a few thousand packets must not overflow the socket buffer.
        let _ = setsockopt(&fd, sockopt::RcvBufForce, &(8 << 20));
        let mut q = NfQueue {
            fd,
            queue,
            seq: 0,
            buf: vec![0; 1 << 16],
        };
        // struct nfqnl_msg_config_cmd { u8 command; u8 pad; be16 pf; }
        q.request(NFQA_CFG_CMD, &[NFQNL_CFG_CMD_BIND, 0, 0, 0])
            .with_context(|| format!("bind to NFQUEUE {queue} (is another lab-delay on it?)"))?;
        // struct nfqnl_msg_config_params { be32 copy_range; u8 copy_mode; } (packed)
        let mut params = 0u32.to_be_bytes().to_vec();
        params.push(NFQNL_COPY_META);
        q.request(NFQA_CFG_PARAMS, &params)
            .context("set copy mode")?;
        q.request(NFQA_CFG_QUEUE_MAXLEN, &QUEUE_MAXLEN.to_be_bytes())
            .context("set queue length")?;
        Ok(q)
    }

    /// Sends one config attribute with NLM_F_ACK and waits for the kernel's answer.
    fn request(&mut self, attr: u16, payload: &[u8]) -> Result<()> {
        self.seq += 1;
        let seq = self.seq;
        let msg = Msg::new(NFQNL_MSG_CONFIG, NLM_F_ACK, seq, self.queue)
            .attr(attr, payload)
            .finish();
        send(self.fd.as_raw_fd(), &msg, MsgFlags::empty()).context("send config")?;
        loop {
            let n = recv(self.fd.as_raw_fd(), &mut self.buf, MsgFlags::empty())
                .context("recv config ack")?;
            for (kind, _, body) in split_messages(&self.buf[..n]) {
                if kind == NLMSG_ERROR && body.len() >= 4 {
                    let errno = i32::from_ne_bytes(body[..4].try_into().expect("4 bytes"));
                    if errno == 0 {
                        return Ok(());
                    }
                    bail!("kernel refused: {}", Errno::from_raw(-errno));
                }
            }
        }
    }

    /// Reads every packet notification that is waiting, without blocking; returns their ids.
    fn drain(&mut self, out: &mut Vec<u32>) -> Result<()> {
        loop {
            let n = match recv(self.fd.as_raw_fd(), &mut self.buf, MsgFlags::MSG_DONTWAIT) {
                Ok(n) => n,
                Err(Errno::EAGAIN) => return Ok(()),
                // The kernel dropped notifications; those packets are gone, carry on.
                Err(Errno::ENOBUFS) | Err(Errno::EINTR) => continue,
                Err(e) => return Err(e).context("recv packet"),
            };
            for (kind, _, body) in split_messages(&self.buf[..n]) {
                if kind != (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET || body.len() < 4 {
                    continue;
                }
                // Skip struct nfgenmsg, then walk the attributes.
                for (attr, payload) in split_attrs(&body[4..]) {
                    if attr == NFQA_PACKET_HDR && payload.len() >= 4 {
                        out.push(u32::from_be_bytes(
                            payload[..4].try_into().expect("4 bytes"),
                        ));
                    }
                }
            }
        }
    }

    fn accept(&mut self, id: u32) -> Result<()> {
        // struct nfqnl_msg_verdict_hdr { be32 verdict; be32 id; }
        let mut hdr = NF_ACCEPT.to_be_bytes().to_vec();
        hdr.extend_from_slice(&id.to_be_bytes());
        let msg = Msg::new(NFQNL_MSG_VERDICT, 0, 0, self.queue)
            .attr(NFQA_VERDICT_HDR, &hdr)
            .finish();
        send(self.fd.as_raw_fd(), &msg, MsgFlags::empty()).context("send verdict")?;
        Ok(())
    }
}

/// Splits a datagram into netlink messages: (type, flags, body after the header).
fn split_messages(mut data: &[u8]) -> Vec<(u16, u16, &[u8])> {
    let mut out = Vec::new();
    while data.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes(data[..4].try_into().expect("4 bytes")) as usize;
        if len < NLMSG_HDRLEN || len > data.len() {
            break;
        }
        let kind = u16::from_ne_bytes([data[4], data[5]]);
        let flags = u16::from_ne_bytes([data[6], data[7]]);
        out.push((kind, flags, &data[NLMSG_HDRLEN..len]));
        data = &data[len.next_multiple_of(4).min(data.len())..];
    }
    out
}

/// Splits netlink attributes into (type, payload).
fn split_attrs(mut data: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while data.len() >= 4 {
        let len = u16::from_ne_bytes([data[0], data[1]]) as usize;
        if len < 4 || len > data.len() {
            break;
        }
        let kind = u16::from_ne_bytes([data[2], data[3]]) & NLA_TYPE_MASK;
        out.push((kind, &data[4..len]));
        data = &data[len.next_multiple_of(4).min(data.len())..];
    }
    out
}

fn run(queue: u16, delay: Duration) -> Result<()> {
    let mut nfq = NfQueue::open(queue)?;
    let mut stdout = std::io::stdout();
    writeln!(stdout, "ready")?;
    stdout.flush()?;

    let parent = getppid();
    let mut held: VecDeque<(Instant, u32)> = VecDeque::new();
    let mut fresh = Vec::new();
    loop {
        // Orphaned (the lab's process died without killing us): quit rather than linger.
        if getppid() != parent {
            return Ok(());
        }
        // Sleep until a packet arrives or the oldest held one is due (rounded up to whole ms,
        // so nothing leaves early).
        // While idle, wake up every IDLE_CHECK_MS to notice a dead parent.
        let ms = match held.front() {
            None => IDLE_CHECK_MS,
            Some((due, _)) => {
                let left = due.saturating_duration_since(Instant::now());
                left.as_micros().div_ceil(1000).min(IDLE_CHECK_MS.into()) as u16
            }
        };
        let timeout = PollTimeout::from(ms);
        let mut fds = [PollFd::new(nfq.fd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(e).context("poll"),
        }
        nfq.drain(&mut fresh)?;
        let now = Instant::now();
        held.extend(fresh.drain(..).map(|id| (now + delay, id)));
        while let Some(&(due, id)) = held.front() {
            if due > Instant::now() {
                break;
            }
            held.pop_front();
            nfq.accept(id)?;
        }
    }
}

pub fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, queue, delay_ms] = args.as_slice() else {
        bail!("usage: lab-delay QUEUE_NUM DELAY_MS");
    };
    let queue: u16 = queue.parse().context("QUEUE_NUM must be 0..=65535")?;
    let delay_ms: u64 = delay_ms
        .parse()
        .context("DELAY_MS must be a whole number")?;
    run(queue, Duration::from_millis(delay_ms))
}
