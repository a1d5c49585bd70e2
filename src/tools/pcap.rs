//! Packet captures (tcpdump's pcap and pcapng files) turned into
//! transcripts, so `mupdatectl replay` can play a session captured on the
//! wire as it plays one recorded by our proxy.
//!
//! Reading is hand-written and bounded by the file: the container (pcap
//! either byte order, micro- or nanosecond stamps; pcapng sections with
//! any number of interfaces), the link layer (null/loopback, Ethernet with
//! VLAN tags, raw IP, Linux cooked SLL and SLL2), IPv4 or IPv6 (extension
//! headers walked; fragments skipped), then TCP. Each connection is
//! reassembled in both directions by sequence number: duplicates and
//! retransmitted bytes are dropped, segments that arrive early wait for the
//! gap to fill, and a connection whose SYN was not captured starts at the
//! first sequence number seen. The server side is the one using the
//! MUPDATE port, or else the one that sent the `* OK MUPDATE` greeting;
//! other TCP connections in the file are left out.
//!
//! Bytes come out in the order they became readable, across directions
//! and connections, so a replay sends each client chunk after the server
//! bytes that preceded it on the wire.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::IpAddr;

use crate::tools::transcript::{escape, Step};

/// The standard MUPDATE port.
pub const MUPDATE_PORT: u16 = 3905;

/// A file that cannot be read as a capture.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PcapError {
    /// The file starts with neither pcap's magic (either byte order, micro-
    /// or nanosecond) nor a pcapng section header.
    #[error("not a pcap or pcapng file")]
    NotACapture,
    /// The file ends inside the named structure (a header, a block).
    #[error("truncated {0}")]
    Truncated(&'static str),
    /// The named structure's fields contradict themselves or the file
    /// (a length past the end, an unknown interface id, ...).
    #[error("malformed {0}")]
    Malformed(&'static str),
}

/// Whether `data` starts like a pcap or pcapng file.
pub fn is_capture(data: &[u8]) -> bool {
    matches!(data.get(..4), Some(m) if m == [0x0a, 0x0d, 0x0d, 0x0a] || pcap_magic(m).is_some())
}

/// Which side sent bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The peer that is not on the MUPDATE port (or did not send the greeting).
    Client,
    /// The MUPDATE server: on the port, or the sender of `* OK MUPDATE`.
    Server,
}

/// What happened on a connection, in capture order.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Bytes that became readable, in sequence order.
    Data {
        /// Index into [`Capture::connections`].
        conn: usize,
        /// Who sent them.
        side: Side,
        /// The bytes, contiguous with what this side sent before.
        bytes: Vec<u8>,
    },
    /// A side finished sending (FIN after all its bytes, or RST).
    Closed {
        /// Index into [`Capture::connections`].
        conn: usize,
        /// The side that finished.
        side: Side,
    },
}

/// One reassembled TCP connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    /// "c1", "c2", ... in order of first packet.
    pub name: String,
    /// The client's address and TCP port.
    pub client: (IpAddr, u16),
    /// The server's address and TCP port.
    pub server: (IpAddr, u16),
    /// Bytes never seen (holes in the sequence space that never filled).
    pub missing_bytes: u64,
}

/// A capture file read into connections and timed events.
#[derive(Debug, Clone, Default)]
pub struct Capture {
    /// The MUPDATE connections kept, in order of their first packet (their
    /// index is [`Event`]'s `conn`).
    pub connections: Vec<Connection>,
    /// (seconds since the first packet, event).
    pub events: Vec<(f64, Event)>,
    /// TCP connections left out: neither the port nor a MUPDATE greeting.
    pub skipped_connections: usize,
    /// Frames that were not TCP over IP on a link type we read, or fragments.
    pub skipped_frames: usize,
}

impl Capture {
    /// The transcript steps to replay: connection names `c1`, `c2`, ...;
    /// a side closing becomes `Close` (client) or `Eof` (server), whichever
    /// happened first; the other close is implied.
    pub fn steps(&self) -> Vec<Step> {
        let mut steps: Vec<Step> = Vec::new();
        let mut ended = vec![false; self.connections.len()];
        for (_, ev) in &self.events {
            match ev {
                Event::Data { conn, side, bytes } => {
                    let name = &self.connections[*conn].name;
                    match (steps.last_mut(), side) {
                        (Some(Step::Send { conn: c, bytes: b }), Side::Client)
                        | (Some(Step::Expect { conn: c, bytes: b }), Side::Server)
                            if c == name =>
                        {
                            b.extend_from_slice(bytes)
                        }
                        (_, Side::Client) => steps.push(Step::Send { conn: name.clone(), bytes: bytes.clone() }),
                        (_, Side::Server) => steps.push(Step::Expect { conn: name.clone(), bytes: bytes.clone() }),
                    }
                }
                Event::Closed { conn, side } => {
                    if std::mem::replace(&mut ended[*conn], true) {
                        continue;
                    }
                    let conn = self.connections[*conn].name.clone();
                    steps.push(match side {
                        Side::Client => Step::Close { conn },
                        Side::Server => Step::Eof { conn },
                    });
                }
            }
        }
        steps
    }

    /// The capture in the transcript file format (src/tools/transcript.rs): a
    /// header naming each connection's endpoints, then one line per chunk,
    /// split after each `\n`, stamped with seconds since the first packet.
    pub fn to_transcript(&self) -> String {
        let mut s = String::from("# mupdate-pcap v1\n");
        for c in &self.connections {
            let _ = writeln!(
                s,
                "# conn {} client={} server={}{}",
                c.name,
                endpoint(c.client),
                endpoint(c.server),
                if c.missing_bytes > 0 { format!(" missing_bytes={}", c.missing_bytes) } else { String::new() }
            );
        }
        let mut ended = vec![false; self.connections.len()];
        for (t, ev) in &self.events {
            match ev {
                Event::Data { conn, side, bytes } => {
                    let dir = if *side == Side::Client { "C" } else { "S" };
                    for piece in bytes.split_inclusive(|&b| b == b'\n') {
                        let _ = writeln!(s, "{t:.6} @{} {dir}: {}", self.connections[*conn].name, escape(piece));
                    }
                }
                Event::Closed { conn, side } => {
                    let first = !std::mem::replace(&mut ended[*conn], true);
                    let who = if *side == Side::Client { "client" } else { "server" };
                    let name = &self.connections[*conn].name;
                    let _ = writeln!(s, "# {t:.6} @{name} {who} closed");
                    if first {
                        let d = if *side == Side::Client { "close" } else { "eof" };
                        let _ = writeln!(s, "!{d} @{name}");
                    }
                }
            }
        }
        s
    }
}

fn endpoint((ip, port): (IpAddr, u16)) -> String {
    match ip {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

// ---------------------------------------------------------------- containers

/// One captured frame.
struct Frame<'a> {
    /// Nanoseconds since the epoch (or whatever the file counts from).
    nanos: i128,
    link_type: u32,
    data: &'a [u8],
}

#[derive(Clone, Copy)]
enum Order {
    Little,
    Big,
}

impl Order {
    fn u16(self, b: &[u8]) -> u16 {
        let a = [b[0], b[1]];
        match self {
            Order::Little => u16::from_le_bytes(a),
            Order::Big => u16::from_be_bytes(a),
        }
    }
    fn u32(self, b: &[u8]) -> u32 {
        let a = [b[0], b[1], b[2], b[3]];
        match self {
            Order::Little => u32::from_le_bytes(a),
            Order::Big => u32::from_be_bytes(a),
        }
    }
}

/// (byte order, nanosecond stamps) of a pcap magic number.
fn pcap_magic(m: &[u8]) -> Option<(Order, bool)> {
    match m {
        [0xd4, 0xc3, 0xb2, 0xa1] => Some((Order::Little, false)),
        [0xa1, 0xb2, 0xc3, 0xd4] => Some((Order::Big, false)),
        [0x4d, 0x3c, 0xb2, 0xa1] => Some((Order::Little, true)),
        [0xa1, 0xb2, 0x3c, 0x4d] => Some((Order::Big, true)),
        _ => None,
    }
}

fn read_frames(data: &[u8]) -> Result<Vec<Frame<'_>>, PcapError> {
    let magic = data.get(..4).ok_or(PcapError::NotACapture)?;
    if magic == [0x0a, 0x0d, 0x0d, 0x0a] {
        read_pcapng(data)
    } else if let Some((order, nanos)) = pcap_magic(magic) {
        read_pcap(data, order, nanos)
    } else {
        Err(PcapError::NotACapture)
    }
}

fn read_pcap(data: &[u8], order: Order, nano: bool) -> Result<Vec<Frame<'_>>, PcapError> {
    let header = data.get(..24).ok_or(PcapError::Truncated("pcap header"))?;
    // The upper bits may carry FCS information; the link type is the low 28.
    let link_type = order.u32(&header[20..24]) & 0x0fff_ffff;
    let mut frames = Vec::new();
    let mut at = 24;
    // A file cut short by a killed tcpdump keeps its whole records.
    while let Some(rec) = data.get(at..at + 16) {
        let secs = order.u32(&rec[0..4]) as i128;
        let frac = order.u32(&rec[4..8]) as i128;
        let caplen = order.u32(&rec[8..12]) as usize;
        let Some(body) = data.get(at + 16..(at + 16).saturating_add(caplen)) else { break };
        let nanos = secs * 1_000_000_000 + if nano { frac } else { frac * 1000 };
        frames.push(Frame { nanos, link_type, data: body });
        at += 16 + caplen;
    }
    Ok(frames)
}

struct Interface {
    link_type: u32,
    /// Timestamp units per second, and an offset in seconds.
    units_per_sec: i128,
    offset_secs: i128,
}

fn read_pcapng(data: &[u8]) -> Result<Vec<Frame<'_>>, PcapError> {
    let mut frames = Vec::new();
    let mut order = Order::Little;
    let mut interfaces: Vec<Interface> = Vec::new();
    let mut last_nanos = 0i128;
    let mut at = 0usize;
    while at + 12 <= data.len() {
        let block_type_raw = &data[at..at + 4];
        if block_type_raw == [0x0a, 0x0d, 0x0d, 0x0a] {
            // A section starts: its byte-order magic decides how to read it.
            let bom = data.get(at + 8..at + 12).ok_or(PcapError::Truncated("section header"))?;
            order = match bom {
                [0x4d, 0x3c, 0x2b, 0x1a] => Order::Little,
                [0x1a, 0x2b, 0x3c, 0x4d] => Order::Big,
                _ => return Err(PcapError::Malformed("section byte-order magic")),
            };
            interfaces.clear();
        }
        let block_type = order.u32(block_type_raw);
        let len = order.u32(&data[at + 4..at + 8]) as usize;
        if len < 12 || !len.is_multiple_of(4) {
            return Err(PcapError::Malformed("block length"));
        }
        let Some(block) = data.get(at..at + len) else { break };
        let body = &block[8..len - 4];
        match block_type {
            // Interface Description Block.
            1 => {
                if body.len() < 8 {
                    return Err(PcapError::Malformed("interface description"));
                }
                let mut iface =
                    Interface { link_type: order.u16(&body[0..2]) as u32, units_per_sec: 1_000_000, offset_secs: 0 };
                for (code, value) in options(&body[8..], order) {
                    match (code, value) {
                        (9, [r, ..]) => {
                            let exp = (r & 0x7f) as u32;
                            let base: i128 = if r & 0x80 != 0 { 2 } else { 10 };
                            iface.units_per_sec = base.checked_pow(exp).filter(|u| *u > 0).unwrap_or(1_000_000);
                        }
                        (14, v) if v.len() >= 8 => {
                            let v8 = [v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]];
                            iface.offset_secs = match order {
                                Order::Little => i64::from_le_bytes(v8),
                                Order::Big => i64::from_be_bytes(v8),
                            } as i128;
                        }
                        _ => {}
                    }
                }
                interfaces.push(iface);
            }
            // Enhanced Packet Block; 2 is the obsolete Packet Block, laid out alike
            // but with a 16-bit interface id and drop count.
            6 | 2 => {
                if body.len() < 20 {
                    return Err(PcapError::Malformed("packet block"));
                }
                let iface_id = if block_type == 6 { order.u32(&body[0..4]) } else { order.u16(&body[0..2]) as u32 };
                let ts = ((order.u32(&body[4..8]) as u64) << 32 | order.u32(&body[8..12]) as u64) as i128;
                let caplen = order.u32(&body[12..16]) as usize;
                let packet = body.get(20..20 + caplen).ok_or(PcapError::Malformed("packet length"))?;
                let iface = interfaces.get(iface_id as usize).ok_or(PcapError::Malformed("interface id"))?;
                let nanos = iface.offset_secs * 1_000_000_000 + ts * 1_000_000_000 / iface.units_per_sec;
                last_nanos = nanos;
                frames.push(Frame { nanos, link_type: iface.link_type, data: packet });
            }
            // Simple Packet Block: interface 0, no timestamp (keep the last one).
            3 => {
                if body.len() < 4 {
                    return Err(PcapError::Malformed("simple packet block"));
                }
                let orig = order.u32(&body[0..4]) as usize;
                let packet = &body[4..4 + orig.min(body.len() - 4)];
                let iface = interfaces.first().ok_or(PcapError::Malformed("simple packet before any interface"))?;
                frames.push(Frame { nanos: last_nanos, link_type: iface.link_type, data: packet });
            }
            // Section headers were handled above; anything else is not ours.
            _ => {}
        }
        at += len;
    }
    Ok(frames)
}

/// pcapng options: (code, value) until opt_endofopt or the end.
fn options(mut b: &[u8], order: Order) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while b.len() >= 4 {
        let code = order.u16(&b[0..2]);
        let len = order.u16(&b[2..4]) as usize;
        if code == 0 {
            break;
        }
        let Some(value) = b.get(4..4 + len) else { break };
        out.push((code, value));
        let padded = 4 + len.div_ceil(4) * 4;
        b = b.get(padded..).unwrap_or(&[]);
    }
    out
}

// ---------------------------------------------------------------- packets

/// A TCP segment.
struct Segment<'a> {
    src: (IpAddr, u16),
    dst: (IpAddr, u16),
    seq: u32,
    syn: bool,
    fin: bool,
    rst: bool,
    payload: &'a [u8],
}

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;

fn by_ethertype(t: u16, rest: &[u8]) -> Option<&[u8]> {
    matches!(t, ETHERTYPE_IPV4 | ETHERTYPE_IPV6).then_some(rest)
}

/// The IP packet inside a link-layer frame.
fn ip_of(link_type: u32, f: &[u8]) -> Option<&[u8]> {
    match link_type {
        // Null/loopback (0) and OpenBSD loop (108): a 4-byte address family in
        // the capturing host's byte order; the IP version nibble says the same.
        0 | 108 => f.get(4..),
        // Ethernet, with any number of 802.1Q / 802.1ad tags.
        1 => {
            let mut at = 12;
            loop {
                let t = u16::from_be_bytes([*f.get(at)?, *f.get(at + 1)?]);
                if t == 0x8100 || t == 0x88a8 {
                    at += 4;
                    continue;
                }
                return by_ethertype(t, f.get(at + 2..)?);
            }
        }
        // Raw IP (101, and 12/14 on some systems), raw IPv4 (228), raw IPv6 (229).
        101 | 12 | 14 | 228 | 229 => Some(f),
        // Linux cooked: protocol at 14; SLL2: protocol first.
        113 => by_ethertype(u16::from_be_bytes([*f.get(14)?, *f.get(15)?]), f.get(16..)?),
        276 => by_ethertype(u16::from_be_bytes([*f.first()?, *f.get(1)?]), f.get(20..)?),
        _ => None,
    }
}

/// The TCP segment in an IP packet; None for anything else, and for
/// fragments and extension headers we cannot walk.
fn segment_of(ip: &[u8]) -> Option<Segment<'_>> {
    let (src, dst, tcp) = match ip.first()? >> 4 {
        4 => {
            let ihl = (ip[0] & 0x0f) as usize * 4;
            let total = u16::from_be_bytes([*ip.get(2)?, *ip.get(3)?]) as usize;
            let frag = u16::from_be_bytes([*ip.get(6)?, *ip.get(7)?]);
            if frag & 0x3fff != 0 || *ip.get(9)? != 6 || ihl < 20 {
                return None;
            }
            // A zero total length is what segmentation offload leaves: use the frame.
            let end = if total == 0 { ip.len() } else { total.min(ip.len()) };
            let src: [u8; 4] = ip.get(12..16)?.try_into().ok()?;
            let dst: [u8; 4] = ip.get(16..20)?.try_into().ok()?;
            (IpAddr::from(src), IpAddr::from(dst), ip.get(ihl..end)?)
        }
        6 => {
            let plen = u16::from_be_bytes([*ip.get(4)?, *ip.get(5)?]) as usize;
            let end = if plen == 0 { ip.len() } else { (40 + plen).min(ip.len()) };
            let src: [u8; 16] = ip.get(8..24)?.try_into().ok()?;
            let dst: [u8; 16] = ip.get(24..40)?.try_into().ok()?;
            let mut next = *ip.get(6)?;
            let mut at = 40;
            loop {
                match next {
                    6 => break,
                    // Hop-by-hop, routing, destination options: length in 8-byte units.
                    0 | 43 | 60 => {
                        next = *ip.get(at)?;
                        at += (*ip.get(at + 1)? as usize + 1) * 8;
                    }
                    // Authentication header: length in 4-byte units, minus 2.
                    51 => {
                        next = *ip.get(at)?;
                        at += (*ip.get(at + 1)? as usize + 2) * 4;
                    }
                    // Fragments (44), ESP (50), no next header (59), anything else.
                    _ => return None,
                }
            }
            (IpAddr::from(src), IpAddr::from(dst), ip.get(at..end)?)
        }
        _ => return None,
    };
    let off = (*tcp.get(12)? >> 4) as usize * 4;
    let flags = *tcp.get(13)?;
    if off < 20 {
        return None;
    }
    Some(Segment {
        src: (src, u16::from_be_bytes([tcp[0], tcp[1]])),
        dst: (dst, u16::from_be_bytes([tcp[2], tcp[3]])),
        seq: u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]),
        syn: flags & 0x02 != 0,
        fin: flags & 0x01 != 0,
        rst: flags & 0x04 != 0,
        payload: tcp.get(off..)?,
    })
}

// ---------------------------------------------------------------- reassembly

/// One direction of a connection.
#[derive(Default)]
struct Stream {
    /// Sequence number of byte offset 0.
    isn: Option<u32>,
    /// Offset of the next byte to deliver.
    next: u64,
    /// Segments that arrived before the bytes in front of them.
    pending: BTreeMap<u64, Vec<u8>>,
    /// Offset of the FIN, once seen.
    fin_at: Option<u64>,
    closed: bool,
    /// Everything delivered so far (for greeting detection), first bytes only.
    head: Vec<u8>,
    missing: u64,
}

impl Stream {
    /// Offset of `seq`: its signed distance from the next expected byte,
    /// which holds across sequence wrap-around for any sane window.
    fn offset(&self, seq: u32) -> i64 {
        let expected = self.isn.unwrap_or(seq).wrapping_add(self.next as u32);
        self.next as i64 + seq.wrapping_sub(expected) as i32 as i64
    }

    /// Take a segment; return the bytes that became readable.
    fn take(&mut self, seg: &Segment<'_>) -> Vec<u8> {
        if self.isn.is_none() {
            self.isn = Some(if seg.syn { seg.seq.wrapping_add(1) } else { seg.seq });
        }
        let data_seq = if seg.syn { seg.seq.wrapping_add(1) } else { seg.seq };
        let start = self.offset(data_seq);
        let end = start + seg.payload.len() as i64;
        if seg.fin && end >= 0 {
            self.fin_at.get_or_insert(end as u64);
        }
        if end > self.next as i64 {
            // Drop what was already delivered (retransmission, overlap).
            let at = start.max(self.next as i64);
            let bytes = &seg.payload[(at - start) as usize..];
            // Keep the longest copy seen for an offset (a retransmission may carry more).
            let slot = self.pending.entry(at as u64).or_default();
            if bytes.len() > slot.len() {
                *slot = bytes.to_vec();
            }
        }
        self.deliver()
    }

    fn deliver(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some((&at, _)) = self.pending.first_key_value() {
            if at > self.next {
                break;
            }
            let Some((at, bytes)) = self.pending.pop_first() else { break };
            let skip = (self.next - at) as usize;
            if skip < bytes.len() {
                out.extend_from_slice(&bytes[skip..]);
                self.next = at + bytes.len() as u64;
            }
        }
        if self.head.len() < 4096 {
            let n = (4096 - self.head.len()).min(out.len());
            self.head.extend_from_slice(&out[..n]);
        }
        out
    }

    /// At the end of the capture: deliver what waits behind holes.
    fn flush(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some((&at, _)) = self.pending.first_key_value() {
            if at > self.next {
                self.missing += at - self.next;
                self.next = at;
            }
            out.extend(self.deliver());
        }
        out
    }

    /// Whether every byte up to the FIN has been delivered.
    fn finished(&self) -> bool {
        !self.closed && self.fin_at.is_some_and(|f| f <= self.next)
    }
}

/// Connection key: the two endpoints, lower first.
type Key = ((IpAddr, u16), (IpAddr, u16));

struct Conn {
    /// Endpoint that is `a` in `streams[0]` (the sender of `streams[0]`).
    a: (IpAddr, u16),
    b: (IpAddr, u16),
    streams: [Stream; 2],
    /// Whether `a` sent a SYN without ACK (it is then the client).
    a_opened: Option<bool>,
    /// Events with the stream index (0: a sends, 1: b sends).
    events: Vec<(usize, f64, usize, Option<Vec<u8>>)>,
}

/// Read a capture. `port` names the server side of each connection; when no
/// side uses it, a connection whose one side greets with `* OK MUPDATE` is
/// still taken, with that side as the server.
pub fn read(data: &[u8], port: u16) -> Result<Capture, PcapError> {
    let mut frames = read_frames(data)?;
    // Interfaces in one pcapng file are written in their own orders.
    frames.sort_by_key(|f| f.nanos);
    let t0 = frames.first().map(|f| f.nanos).unwrap_or(0);
    let mut capture = Capture::default();
    let mut conns: Vec<Conn> = Vec::new();
    let mut live: HashMap<Key, usize> = HashMap::new();
    // Global sequence number of each event, to merge the connections back.
    let mut order = 0usize;
    for f in &frames {
        let Some(seg) = ip_of(f.link_type, f.data).and_then(segment_of) else {
            capture.skipped_frames += 1;
            continue;
        };
        let t = (f.nanos - t0) as f64 / 1e9;
        let key = if seg.src <= seg.dst { (seg.src, seg.dst) } else { (seg.dst, seg.src) };
        // A fresh SYN on a finished connection's ports starts a new one.
        let reuse = live.get(&key).is_some_and(|&i| {
            let c = &conns[i];
            seg.syn && c.streams.iter().all(|s| s.closed)
        });
        let idx = match live.get(&key) {
            Some(&i) if !reuse => i,
            _ => {
                conns.push(Conn {
                    a: seg.src,
                    b: seg.dst,
                    streams: [Stream::default(), Stream::default()],
                    a_opened: None,
                    events: Vec::new(),
                });
                live.insert(key, conns.len() - 1);
                conns.len() - 1
            }
        };
        let c = &mut conns[idx];
        let dir = if seg.src == c.a { 0 } else { 1 };
        if seg.syn && c.a_opened.is_none() {
            // SYN alone comes from the client; SYN+ACK from the server. We
            // only know the flag pair through the direction that sent first.
            c.a_opened = Some(dir == 0);
        }
        let s = &mut c.streams[dir];
        if s.closed {
            continue;
        }
        if seg.rst {
            s.closed = true;
            c.events.push((order, t, dir, None));
            order += 1;
            continue;
        }
        let bytes = s.take(&seg);
        if !bytes.is_empty() {
            c.events.push((order, t, dir, Some(bytes)));
            order += 1;
        }
        if s.finished() {
            s.closed = true;
            c.events.push((order, t, dir, None));
            order += 1;
        }
    }
    // Flush holes at the end, then decide sides and keep MUPDATE connections.
    let t_end = frames.last().map(|f| (f.nanos - t0) as f64 / 1e9).unwrap_or(0.0);
    let mut kept: Vec<(usize, Conn)> = Vec::new();
    for mut c in conns {
        for dir in 0..2 {
            let rest = c.streams[dir].flush();
            if !rest.is_empty() {
                c.events.push((order, t_end, dir, Some(rest)));
                order += 1;
            }
        }
        let greets = |s: &Stream| s.head.windows(13).any(|w| w.eq_ignore_ascii_case(b"* OK MUPDATE "));
        let server_dir = if c.b.1 == port && c.a.1 != port {
            Some(1)
        } else if c.a.1 == port && c.b.1 != port {
            Some(0)
        } else if greets(&c.streams[1]) && !greets(&c.streams[0]) {
            Some(1)
        } else if greets(&c.streams[0]) && !greets(&c.streams[1]) {
            Some(0)
        } else if c.a.1 == port {
            // Both sides on the port: the one that did not open.
            Some(if c.a_opened == Some(true) { 1 } else { 0 })
        } else {
            None
        };
        let Some(server_dir) = server_dir else {
            capture.skipped_connections += 1;
            continue;
        };
        kept.push((server_dir, c));
    }
    // Name connections in order of their first packet (conns are already so).
    let mut merged: Vec<(usize, f64, Event)> = Vec::new();
    for (n, (server_dir, c)) in kept.into_iter().enumerate() {
        let side = |dir: usize| if dir == server_dir { Side::Server } else { Side::Client };
        let (client, server) = if server_dir == 1 { (c.a, c.b) } else { (c.b, c.a) };
        capture.connections.push(Connection {
            name: format!("c{}", n + 1),
            client,
            server,
            missing_bytes: c.streams[0].missing + c.streams[1].missing,
        });
        for (o, t, dir, bytes) in c.events {
            let ev = match bytes {
                Some(bytes) => Event::Data { conn: n, side: side(dir), bytes },
                None => Event::Closed { conn: n, side: side(dir) },
            };
            merged.push((o, t, ev));
        }
    }
    merged.sort_by_key(|(o, _, _)| *o);
    capture.events = merged.into_iter().map(|(_, t, e)| (t, e)).collect();
    Ok(capture)
}

#[cfg(test)]
mod tests {
    use super::*;

    // ---- builders for capture files in tests

    const SYN: u8 = 0x02;
    const ACK: u8 = 0x10;
    const PSH: u8 = 0x08;
    const FIN: u8 = 0x01;

    fn tcp(sport: u16, dport: u16, seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
        let mut t = Vec::new();
        t.extend_from_slice(&sport.to_be_bytes());
        t.extend_from_slice(&dport.to_be_bytes());
        t.extend_from_slice(&seq.to_be_bytes());
        t.extend_from_slice(&0u32.to_be_bytes()); // ack number: not read
        t.push(5 << 4);
        t.push(flags);
        t.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]); // window, checksum, urgent
        t.extend_from_slice(payload);
        t
    }

    fn ipv4(src: [u8; 4], dst: [u8; 4], tcp: &[u8]) -> Vec<u8> {
        let mut p = vec![0x45, 0];
        p.extend_from_slice(&((20 + tcp.len()) as u16).to_be_bytes());
        p.extend_from_slice(&[0, 0, 0x40, 0, 64, 6, 0, 0]);
        p.extend_from_slice(&src);
        p.extend_from_slice(&dst);
        p.extend_from_slice(tcp);
        p
    }

    /// IPv6 with a destination-options header in front of TCP.
    fn ipv6(src: [u8; 16], dst: [u8; 16], tcp: &[u8]) -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0];
        p.extend_from_slice(&((8 + tcp.len()) as u16).to_be_bytes());
        p.extend_from_slice(&[60, 64]);
        p.extend_from_slice(&src);
        p.extend_from_slice(&dst);
        p.extend_from_slice(&[6, 0, 1, 4, 0, 0, 0, 0]); // next = TCP, 8 bytes, PadN
        p.extend_from_slice(tcp);
        p
    }

    fn ethernet(ip: &[u8]) -> Vec<u8> {
        let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
        let t = if ip[0] >> 4 == 6 { ETHERTYPE_IPV6 } else { ETHERTYPE_IPV4 };
        f.extend_from_slice(&t.to_be_bytes());
        f.extend_from_slice(ip);
        f
    }

    fn sll(ip: &[u8]) -> Vec<u8> {
        let mut f = vec![0, 0, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0];
        f.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        f.extend_from_slice(ip);
        f
    }

    fn sll2(ip: &[u8]) -> Vec<u8> {
        let mut f = ETHERTYPE_IPV6.to_be_bytes().to_vec();
        f.extend_from_slice(&[0, 0, 0, 0, 0, 1, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0]);
        f.extend_from_slice(ip);
        f
    }

    fn null(ip: &[u8]) -> Vec<u8> {
        let mut f = 2u32.to_le_bytes().to_vec();
        f.extend_from_slice(ip);
        f
    }

    /// A pcap file; `frames` are (microseconds, frame).
    fn pcap(link: u32, big: bool, nano: bool, frames: &[(u64, Vec<u8>)]) -> Vec<u8> {
        let w32 = |v: u32| if big { v.to_be_bytes() } else { v.to_le_bytes() };
        let w16 = |v: u16| if big { v.to_be_bytes() } else { v.to_le_bytes() };
        let mut f = Vec::new();
        f.extend_from_slice(&w32(if nano { 0xa1b2_3c4d } else { 0xa1b2_c3d4 }));
        f.extend_from_slice(&w16(2));
        f.extend_from_slice(&w16(4));
        f.extend_from_slice(&w32(0));
        f.extend_from_slice(&w32(0));
        f.extend_from_slice(&w32(65535));
        f.extend_from_slice(&w32(link));
        for (us, frame) in frames {
            f.extend_from_slice(&w32((us / 1_000_000) as u32 + 1_700_000_000));
            let frac = us % 1_000_000;
            f.extend_from_slice(&w32(if nano { frac * 1000 } else { frac } as u32));
            f.extend_from_slice(&w32(frame.len() as u32));
            f.extend_from_slice(&w32(frame.len() as u32));
            f.extend_from_slice(frame);
        }
        f
    }

    fn ng_block(big: bool, kind: u32, body: &[u8]) -> Vec<u8> {
        let w32 = |v: u32| if big { v.to_be_bytes() } else { v.to_le_bytes() };
        let mut body = body.to_vec();
        while !body.len().is_multiple_of(4) {
            body.push(0);
        }
        let len = body.len() as u32 + 12;
        let mut b = w32(kind).to_vec();
        b.extend_from_slice(&w32(len));
        b.extend_from_slice(&body);
        b.extend_from_slice(&w32(len));
        b
    }

    /// A pcapng file: interfaces are (link type, tsresol option), frames are
    /// (interface, timestamp in that interface's units, frame); an unknown
    /// block and a Simple Packet Block may be added.
    fn pcapng(big: bool, ifaces: &[(u16, Option<u8>)], frames: &[(u32, u64, Vec<u8>)], simple: Option<Vec<u8>>) -> Vec<u8> {
        let w32 = |v: u32| if big { v.to_be_bytes() } else { v.to_le_bytes() };
        let w16 = |v: u16| if big { v.to_be_bytes() } else { v.to_le_bytes() };
        let mut shb = w32(0x1a2b_3c4d).to_vec();
        shb.extend_from_slice(&w16(1));
        shb.extend_from_slice(&w16(0));
        shb.extend_from_slice(&u64::MAX.to_le_bytes());
        let mut f = ng_block(big, 0x0a0d_0d0a, &shb);
        for (link, resol) in ifaces {
            let mut idb = w16(*link).to_vec();
            idb.extend_from_slice(&w16(0));
            idb.extend_from_slice(&w32(65535));
            if let Some(r) = resol {
                idb.extend_from_slice(&w16(9));
                idb.extend_from_slice(&w16(1));
                idb.extend_from_slice(&[*r, 0, 0, 0]);
                idb.extend_from_slice(&[0, 0, 0, 0]);
            }
            f.extend(ng_block(big, 1, &idb));
        }
        f.extend(ng_block(big, 0x0bad_cafe, b"some vendor block"));
        for (iface, ts, frame) in frames {
            let mut epb = w32(*iface).to_vec();
            epb.extend_from_slice(&w32((ts >> 32) as u32));
            epb.extend_from_slice(&w32(*ts as u32));
            epb.extend_from_slice(&w32(frame.len() as u32));
            epb.extend_from_slice(&w32(frame.len() as u32));
            epb.extend_from_slice(frame);
            f.extend(ng_block(big, 6, &epb));
        }
        if let Some(frame) = simple {
            let mut spb = w32(frame.len() as u32).to_vec();
            spb.extend_from_slice(&frame);
            f.extend(ng_block(big, 3, &spb));
        }
        f
    }

    const CLI: [u8; 4] = [10, 0, 0, 2];
    const SRV: [u8; 4] = [10, 0, 0, 1];
    const GREETING: &[u8] = b"* AUTH \"PLAIN\"\r\n* OK MUPDATE \"m\" \"Cyrus IMAP\" \"3.6\" \"(master)\"\r\n";

    /// A whole session on IPv4: (microseconds, frame) with `wrap` for the link layer.
    fn session(cport: u16, sport: u16, t0: u64, wrap: fn(&[u8]) -> Vec<u8>) -> Vec<(u64, Vec<u8>)> {
        let c = |seq, flags, p: &[u8]| wrap(&ipv4(CLI, SRV, &tcp(cport, sport, seq, flags, p)));
        let s = |seq, flags, p: &[u8]| wrap(&ipv4(SRV, CLI, &tcp(sport, cport, seq, flags, p)));
        vec![
            (t0, c(1000, SYN, b"")),
            (t0 + 1, s(5000, SYN | ACK, b"")),
            (t0 + 2, c(1001, ACK, b"")),
            (t0 + 3, s(5001, PSH | ACK, GREETING)),
            (t0 + 4, c(1001, PSH | ACK, b"L1 LOGOUT\r\n")),
            (t0 + 5, s(5001 + GREETING.len() as u32, PSH | ACK, b"L1 OK \"bye-bye\"\r\n")),
            (t0 + 6, c(1012, FIN | ACK, b"")),
            (t0 + 7, s(5001 + GREETING.len() as u32 + 17, FIN | ACK, b"")),
        ]
    }

    fn expected_session(conn: &str) -> Vec<Step> {
        vec![
            Step::Expect { conn: conn.into(), bytes: GREETING.to_vec() },
            Step::Send { conn: conn.into(), bytes: b"L1 LOGOUT\r\n".to_vec() },
            Step::Expect { conn: conn.into(), bytes: b"L1 OK \"bye-bye\"\r\n".to_vec() },
            Step::Close { conn: conn.into() },
        ]
    }

    #[test]
    fn one_session_in_every_pcap_flavour() {
        for (big, nano) in [(false, false), (true, false), (false, true), (true, true)] {
            let file = pcap(1, big, nano, &session(40000, 3905, 0, ethernet));
            assert!(is_capture(&file));
            let cap = read(&file, MUPDATE_PORT).unwrap();
            assert_eq!(cap.steps(), expected_session("c1"), "big={big} nano={nano}");
            assert_eq!(cap.connections[0].client, (IpAddr::from(CLI), 40000));
            assert_eq!(cap.connections[0].server, (IpAddr::from(SRV), 3905));
        }
        for (link, wrap) in [(113, sll as fn(&[u8]) -> Vec<u8>), (0, null), (101, |ip: &[u8]| ip.to_vec()), (228, |ip: &[u8]| ip.to_vec())] {
            let cap = read(&pcap(link, false, false, &session(40000, 3905, 0, wrap)), MUPDATE_PORT).unwrap();
            assert_eq!(cap.steps(), expected_session("c1"), "link type {link}");
        }
        assert_eq!(read(b"hello world", MUPDATE_PORT).unwrap_err(), PcapError::NotACapture);
        assert!(!is_capture(b"# mupdate-record v1\n"));
    }

    #[test]
    fn two_connections_interleave_by_time_and_are_named_in_order() {
        // c2 starts later; its greeting comes before c1 closes.
        let mut frames = session(40000, 3905, 0, ethernet);
        let other = session(40002, 3905, 2, ethernet);
        frames.extend(other);
        frames.sort_by_key(|(t, _)| *t);
        let cap = read(&pcap(1, false, false, &frames), MUPDATE_PORT).unwrap();
        assert_eq!(cap.connections.len(), 2);
        let s = cap.steps();
        assert_eq!(s[0], Step::Expect { conn: "c1".into(), bytes: GREETING.to_vec() });
        assert_eq!(s[1], Step::Send { conn: "c1".into(), bytes: b"L1 LOGOUT\r\n".to_vec() });
        assert_eq!(s[2], Step::Expect { conn: "c1".into(), bytes: b"L1 OK \"bye-bye\"\r\n".to_vec() });
        assert_eq!(s[3], Step::Expect { conn: "c2".into(), bytes: GREETING.to_vec() });
        let per_conn = |name: &str| -> Vec<Step> {
            s.iter().filter(|st| format!("{st}").starts_with(&format!("@{name} ")) || **st == Step::Close { conn: name.into() }).cloned().collect()
        };
        assert_eq!(per_conn("c1"), expected_session("c1"));
        assert_eq!(per_conn("c2"), expected_session("c2"));
        assert_eq!(s.len(), 8);
    }

    #[test]
    fn out_of_order_retransmitted_and_overlapping_segments() {
        let c = |seq, p: &[u8]| ethernet(&ipv4(CLI, SRV, &tcp(40000, 3905, seq, PSH | ACK, p)));
        let s = |seq, p: &[u8]| ethernet(&ipv4(SRV, CLI, &tcp(3905, 40000, seq, PSH | ACK, p)));
        // No SYN captured: each side starts at its first sequence number.
        let frames = vec![
            (0, s(7000, GREETING)),
            (1, c(100, b"A1 FIND ")), // bytes 0..8
            (2, c(114, b"x\r\n")),    // bytes 14..17 arrive early
            (3, c(100, b"A1 FIND ")), // duplicate
            (4, c(106, b"D {1+}")),   // overlaps: "D " again, then "{1+}" (bytes 8..12)
            (5, c(112, b"\r\nx")),    // 12..15: fills the hole, overlaps the early one
            (6, s(7000, GREETING)),   // retransmitted greeting
            (7, s(7000 + GREETING.len() as u32, b"A1 OK \"Search completed\"\r\n")),
        ];
        let cap = read(&pcap(1, false, false, &frames), MUPDATE_PORT).unwrap();
        assert_eq!(
            cap.steps(),
            vec![
                Step::Expect { conn: "c1".into(), bytes: GREETING.to_vec() },
                Step::Send { conn: "c1".into(), bytes: b"A1 FIND {1+}\r\nx\r\n".to_vec() },
                Step::Expect { conn: "c1".into(), bytes: b"A1 OK \"Search completed\"\r\n".to_vec() },
            ]
        );
        assert_eq!(cap.connections[0].missing_bytes, 0);
    }

    #[test]
    fn a_hole_that_never_fills_is_counted_and_skipped() {
        let c = |seq, p: &[u8]| ethernet(&ipv4(CLI, SRV, &tcp(40000, 3905, seq, PSH | ACK, p)));
        let frames = vec![(0, c(100, b"N1 NOOP\r\n")), (1, c(120, b"N3 NOOP\r\n"))];
        let cap = read(&pcap(1, false, false, &frames), MUPDATE_PORT).unwrap();
        assert_eq!(cap.steps(), vec![Step::Send { conn: "c1".into(), bytes: b"N1 NOOP\r\nN3 NOOP\r\n".to_vec() }]);
        assert_eq!(cap.connections[0].missing_bytes, 11);
    }

    #[test]
    fn ipv6_over_sll2_in_pcapng_with_two_interfaces() {
        let a: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
        let b: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        // Interface 0: SLL2 in microseconds; interface 1: Ethernet in nanoseconds.
        let frames = vec![
            (0, 10u64, sll2(&ipv6(a, b, &tcp(50000, 3905, 1, SYN, b"")))),
            (1, 11_000u64, ethernet(&ipv6(b, a, &tcp(3905, 50000, 9, SYN | ACK, b"")))),
            (1, 13_000u64, ethernet(&ipv6(b, a, &tcp(3905, 50000, 10, PSH | ACK, GREETING)))),
            // Written out of time order: it belongs before the greeting.
            (0, 12u64, sll2(&ipv6(a, b, &tcp(50000, 3905, 2, ACK, b"")))),
            (0, 14u64, sll2(&ipv6(a, b, &tcp(50000, 3905, 2, PSH | ACK, b"N1 NOOP\r\n")))),
        ];
        for big in [false, true] {
            let file = pcapng(big, &[(276, None), (1, Some(9))], &frames, None);
            assert!(is_capture(&file));
            let cap = read(&file, MUPDATE_PORT).unwrap();
            assert_eq!(
                cap.steps(),
                vec![
                    Step::Expect { conn: "c1".into(), bytes: GREETING.to_vec() },
                    Step::Send { conn: "c1".into(), bytes: b"N1 NOOP\r\n".to_vec() },
                ],
                "big={big}"
            );
            assert_eq!(cap.connections[0].server.1, 3905);
            assert!(endpoint(cap.connections[0].client).starts_with("[fd00::2]"));
            assert!((cap.events[0].0 - 0.000003).abs() < 1e-9, "{:?}", cap.events[0].0);
        }
    }

    #[test]
    fn simple_packet_blocks_and_greeting_detection_without_the_port() {
        // The server listens on 4000: found by its greeting; the other TCP
        // connection (no greeting, no port) is left out.
        let frames = vec![
            (0, 1u64, ethernet(&ipv4(SRV, CLI, &tcp(4000, 40000, 10, PSH | ACK, GREETING)))),
            (0, 2u64, ethernet(&ipv4(CLI, SRV, &tcp(41000, 80, 10, PSH | ACK, b"GET / HTTP/1.0\r\n\r\n")))),
        ];
        let simple = ethernet(&ipv4(CLI, SRV, &tcp(40000, 4000, 77, PSH | ACK, b"L LOGOUT\r\n")));
        let cap = read(&pcapng(false, &[(1, None)], &frames, Some(simple)), MUPDATE_PORT).unwrap();
        assert_eq!(cap.skipped_connections, 1);
        assert_eq!(cap.connections[0].server, (IpAddr::from(SRV), 4000));
        assert_eq!(
            cap.steps(),
            vec![
                Step::Expect { conn: "c1".into(), bytes: GREETING.to_vec() },
                Step::Send { conn: "c1".into(), bytes: b"L LOGOUT\r\n".to_vec() },
            ]
        );
        // With the port given, the HTTP connection would be a session too.
        let cap = read(&pcapng(false, &[(1, None)], &frames, None), 80).unwrap();
        assert_eq!(cap.connections.len(), 2);
    }

    #[test]
    fn server_close_becomes_eof_and_text_round_trips() {
        let mut frames = session(40000, 3905, 0, ethernet);
        // The server closes first this time.
        frames.swap(6, 7);
        frames[6].0 = 6;
        frames[7].0 = 7;
        let cap = read(&pcap(1, false, false, &frames), MUPDATE_PORT).unwrap();
        let steps = cap.steps();
        assert_eq!(steps.last(), Some(&Step::Eof { conn: "c1".into() }));
        let text = cap.to_transcript();
        assert!(text.starts_with("# mupdate-pcap v1\n# conn c1 client=10.0.0.2:40000 server=10.0.0.1:3905\n"), "{text}");
        assert!(text.contains("0.000003 @c1 S: * AUTH \"PLAIN\"\\r\\n\n0.000003 @c1 S: * OK MUPDATE"), "{text}");
        assert_eq!(crate::tools::transcript::parse(&text).unwrap(), steps);
    }

    #[test]
    fn truncated_files_keep_whole_records_and_junk_is_skipped() {
        let mut file = pcap(1, false, false, &session(40000, 3905, 0, ethernet));
        file.truncate(file.len() - 30);
        let cap = read(&file, MUPDATE_PORT).unwrap();
        assert_eq!(cap.steps()[..3], expected_session("c1")[..3]);
        let junk = vec![(0, vec![0u8; 10]), (1, ethernet(&[0x45, 0, 0, 20])), (2, b"\x08\x06arp".to_vec())];
        let cap = read(&pcap(1, false, false, &junk), MUPDATE_PORT).unwrap();
        assert_eq!(cap.skipped_frames, 3);
        assert!(cap.steps().is_empty());
    }
}
