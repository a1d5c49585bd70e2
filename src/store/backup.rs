//! Online backup (`XEXPORT`, `mupdatectl backup`): a point-in-time copy of
//! the whole directory, taken while writers keep writing.
//!
//! "Consistent" here means: the copy is the directory exactly as it was at
//! one moment, the start of the backup: every write applied before it is
//! in the copy, none applied after it is. How, without stopping writers:
//! - At the start every stripe lock (and the primary lock) is taken once,
//!   briefly, and the backup is registered: from then on, a writer that
//!   changes a name the backup has not copied yet first saves the name's
//!   old value for the backup (under the name's stripe lock, once per name).
//! - The backup then walks the names in key order. It copies each one under
//!   its stripe lock: the saved old value if there is one, else the current
//!   value (unchanged since the start); a name created after the start
//!   (saved as "absent") is skipped. Names deleted after the start, which
//!   the walk no longer meets, are copied from their saved values at the end.
//!
//! Memory: one saved value per name changed during the backup (about 100
//! bytes each), freed as the walk passes it. One backup at a time.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use super::export;
use super::key;
use super::verify;
use super::engine::{Bytes, Scan};
use super::{Directory, StoreError};

/// A running backup, as writers see it.
pub(crate) struct Backup {
    inner: Mutex<State>,
}

struct State {
    /// The last name key the walk has copied.
    copied_upto: Vec<u8>,
    /// Old values of names changed since the start and not yet copied
    /// (`None`: the name did not exist at the start).
    saved: BTreeMap<Vec<u8>, Option<Bytes>>,
}

impl Backup {
    /// Called by a writer under the name's stripe lock, before its batch.
    pub(crate) fn before_write(&self, nkey: &[u8], old: Option<Bytes>) {
        let mut st = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if nkey > st.copied_upto.as_slice() && !st.saved.contains_key(nkey) {
            st.saved.insert(nkey.to_vec(), old);
        }
    }
}

/// The lines of a backup, in export format ([`export`]), as an iterator;
/// the backup ends (writers stop saving) when it is dropped.
pub struct BackupScan {
    store: Directory,
    backup: Arc<Backup>,
    head: std::vec::IntoIter<String>,
    names: Option<Scan>,
    tail: Option<std::vec::IntoIter<(Vec<u8>, Bytes)>>,
}

impl Directory {
    /// Start a point-in-time backup. `Invalid` when one is running.
    pub fn backup(&self) -> Result<BackupScan, StoreError> {
        let backup = Arc::new(Backup {
            inner: Mutex::new(State {
                copied_upto: Vec::new(),
                saved: BTreeMap::new(),
            }),
        });
        let head = {
            let _primary = self.inner.primary.lock().unwrap_or_else(|e| e.into_inner());
            let _all: Vec<_> = (0..super::STRIPES).map(|i| self.lock_stripe(i)).collect();
            let mut slot = self.inner.backup.write().unwrap_or_else(|e| e.into_inner());
            if slot.is_some() {
                return Err(StoreError::Invalid("a backup is already running".into()));
            }
            // Group states change only under the primary lock: read them now.
            let mut head = vec![export::header()];
            for kv in self.inner.engine.scan_prefix(&[key::GROUPS]) {
                let (k, v) = kv.map_err(|e| self.inner.seen(e.into()))?;
                head.push(
                    export::group_line(&k, &v)
                        .map_err(|e| self.inner.seen(StoreError::Corrupt(e)))?,
                );
            }
            *slot = Some(backup.clone());
            head
        };
        let names = self.inner.engine.scan_prefix(&[key::NAMES]);
        Ok(BackupScan {
            store: self.clone(),
            backup,
            head: head.into_iter(),
            names: Some(names),
            tail: None,
        })
    }
}

impl BackupScan {
    /// Copy one name under its stripe lock.
    fn copy(&self, nkey: &[u8]) -> Result<Option<Bytes>, StoreError> {
        let _g = self.store.lock_stripe(verify::stripe_of(&nkey[1..]));
        let mut st = self.backup.inner.lock().unwrap_or_else(|e| e.into_inner());
        st.copied_upto = nkey.to_vec();
        match st.saved.remove(nkey) {
            Some(old) => Ok(old),
            None => self.store.inner.engine.get(nkey).map_err(|e| self.store.inner.seen(e.into())),
        }
    }

    fn line(&self, k: &[u8], v: &[u8]) -> Result<String, StoreError> {
        export::mailbox_line(k, v).map_err(|e| self.store.inner.seen(StoreError::Corrupt(e)))
    }
}

impl Iterator for BackupScan {
    type Item = Result<String, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(l) = self.head.next() {
            return Some(Ok(l));
        }
        while let Some(names) = self.names.as_mut() {
            match names.next() {
                Some(Ok((k, _))) => match self.copy(&k) {
                    Ok(Some(v)) => return Some(self.line(&k, &v)),
                    Ok(None) => continue,
                    Err(e) => return Some(Err(e)),
                },
                Some(Err(e)) => return Some(Err(self.store.inner.seen(e.into()))),
                None => {
                    self.names = None;
                    // Names deleted since the start that the walk did not
                    // meet: their saved values.
                    let mut st = self.backup.inner.lock().unwrap_or_else(|e| e.into_inner());
                    st.copied_upto = vec![u8::MAX; 2];
                    let rest: Vec<_> = std::mem::take(&mut st.saved)
                        .into_iter()
                        .filter_map(|(k, v)| v.map(|v| (k, v)))
                        .collect();
                    self.tail = Some(rest.into_iter());
                }
            }
        }
        let (k, v) = self.tail.as_mut()?.next()?;
        Some(self.line(&k, &v))
    }
}

impl Drop for BackupScan {
    fn drop(&mut self) {
        let mut slot = self
            .store
            .inner
            .backup
            .write()
            .unwrap_or_else(|e| e.into_inner());
        if slot.as_ref().is_some_and(|b| Arc::ptr_eq(b, &self.backup)) {
            *slot = None;
        }
    }
}
