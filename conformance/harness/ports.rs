//! Free loopback ports for parallel tests.
//!
//! Ports come from 20000-32767, below Linux's default ephemeral range
//! (32768-60999), so outgoing connections of other tests cannot grab a port
//! between our probe and the server binding it. A process-wide set keeps two
//! tests of this run from getting the same port.

use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

const FIRST: u16 = 20000;
const SPAN: u32 = 12768;

/// A loopback TCP port nobody listens on right now and that this process
/// has not handed out before.
pub fn free_port() -> u16 {
    let mut guard = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let used = guard.get_or_insert_with(HashSet::new);
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos()
        ^ (std::process::id() << 7);
    for i in 0..SPAN {
        let port = FIRST + ((seed.wrapping_add(i.wrapping_mul(7919))) % SPAN) as u16;
        if used.contains(&port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            used.insert(port);
            return port;
        }
    }
    panic!("no free loopback port in {FIRST}..{}", FIRST as u32 + SPAN);
}
