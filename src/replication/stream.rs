//! One UPDATE stream's traffic: the dump that starts it (the whole
//! directory in order, cut to the hosts a PARTIAL-UPDATE names) and each
//! flush of the changes queued since. Both run over the store and a
//! [`Sink`] the session provides, so they know nothing of sockets.
//!
//! Rules they keep (RFC 3656 section 4.10 and Cyrus's slaves):
//! - an UPDATE is never answered NO, BAD or BYE: a Cyrus slave takes any
//!   of those for an empty directory and deletes its whole list, so every
//!   failure here is an error that closes the connection;
//! - the dump may show writes not yet durable: it is followed by a wait
//!   for them before the caller sends `OK "streaming starts"`;
//! - a stream that overflows while its peer has stopped reading is closed
//!   at once (every write races [`Subscription::overflowed`]), not after
//!   `write_timeout`; its slave reconnects and reloads.

use std::collections::HashSet;
use std::future::Future;

use crate::protocol::{Entry, Response};
use crate::replication::{Overflow, Subscription};
use crate::store::key::server_of;
use crate::store::{Directory, StoreError};

/// Where a stream's lines go (the session's output buffer). Static
/// dispatch: nothing per line goes through a vtable.
pub trait Sink {
    /// How a send ends the stream; a store failure or an overflow does too.
    type Error: From<StoreError> + From<Overflow>;
    /// Queue one response (written out when enough is queued).
    fn send(&mut self, r: &Response) -> impl Future<Output = Result<(), Self::Error>> + Send;
    /// Write out everything queued.
    fn flush(&mut self) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

/// Does a stream following `hosts` (`None`: every host) want this entry?
/// The server part of its location, as the change log's filter sees it.
pub fn wanted(hosts: Option<&HashSet<Vec<u8>>>, entry: &Entry) -> bool {
    match hosts {
        None => true,
        Some(h) => h.contains(server_of(entry_location(entry))),
    }
}

fn entry_location(entry: &Entry) -> &[u8] {
    match entry {
        Entry::Mailbox { location, .. } | Entry::Reserve { location, .. } => location,
    }
}

/// UPDATE's dump: every effective entry the stream wants, in name order,
/// straight from the store, then the wait for what it showed to be
/// durable. `subscription` must be registered before the call, so that
/// no change made during the dump is missed; changes queue up meanwhile,
/// and a peer that stops reading is closed as soon as they overflow.
pub async fn dump<K: Sink>(
    store: &Directory,
    subscription: &Subscription,
    tag: &[u8],
    sink: &mut K,
) -> Result<(), K::Error> {
    let hosts = subscription.hosts();
    let mark = store.scan_mark();
    let send = async {
        for entry in store.list() {
            let entry = entry?;
            if wanted(hosts, &entry) {
                sink.send(&Response::Entry { tag: tag.to_vec(), entry }).await?;
            }
        }
        Ok::<(), K::Error>(())
    };
    tokio::select! {
        r = send => r?,
        overflow = subscription.overflowed() => return Err(overflow.into()),
    }
    store.scan_durable(mark).await?;
    Ok(())
}

/// Send every change queued for the stream, each name's current state
/// looked up (durable) at send time: `MAILBOX`/`RESERVE`, or `DELETE`
/// when it has no effective record any more; then flush. The writes race
/// the subscription's overflow.
pub async fn flush<K: Sink>(
    store: &Directory,
    subscription: &Subscription,
    tag: &[u8],
    sink: &mut K,
) -> Result<(), K::Error> {
    let names = subscription.take()?;
    let send = async {
        for name in names {
            let response = match store.effective_durable(&name).await? {
                Some(entry) => Response::Entry { tag: tag.to_vec(), entry },
                None => Response::Delete { tag: tag.to_vec(), name: name.to_vec() },
            };
            sink.send(&response).await?;
        }
        sink.flush().await
    };
    tokio::select! {
        r = send => r,
        overflow = subscription.overflowed() => Err(overflow.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dump_filter_keeps_the_named_servers_entries() {
        let mailbox = |location: &str| Entry::Mailbox { name: b"m".to_vec(), location: location.into(), acl: vec![] };
        let reserve = |location: &str| Entry::Reserve { name: b"m".to_vec(), location: location.into() };
        assert!(wanted(None, &mailbox("be9!p")));
        let hosts: HashSet<Vec<u8>> = [b"be1".to_vec()].into();
        assert!(wanted(Some(&hosts), &mailbox("be1!p")));
        assert!(wanted(Some(&hosts), &reserve("be1!")));
        assert!(!wanted(Some(&hosts), &mailbox("be2!p")));
        // The server is what precedes the first '!', never a prefix match.
        assert!(!wanted(Some(&hosts), &mailbox("be10!p")));
        assert!(!wanted(Some(&hosts), &mailbox("be1")));
    }
}
