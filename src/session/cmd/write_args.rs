//! The checks a write's arguments pass before the store is touched (not a
//! command: ACTIVATE, RESERVE, DEACTIVATE and DELETE share them). Every
//! one bounds the work and the bytes one command costs.

use tracing::warn;

/// A write whose mailbox name is over `max_mailbox_name` (Cyrus has no
/// text: its buffers are MAX_MAILBOX_BUFFER bytes).
const NAME_TOO_LONG: &str = "mailbox name too long";
/// A location over `max_location`.
const LOCATION_TOO_LONG: &str = "location too long";
/// An ACL identifier over `max_acl_identifier`.
const ACL_IDENTIFIER_TOO_LONG: &str = "ACL identifier too long";
/// An ACL of more than `max_acl_entries` entries.
const TOO_MANY_ACL_ENTRIES: &str = "too many ACL entries";

/// The limits a write's arguments are checked against.
pub(super) struct ArgLimits {
    name: usize,
    location: usize,
    identifier: usize,
    entries: usize,
}

impl ArgLimits {
    pub(super) fn of(c: &crate::config::Config) -> ArgLimits {
        ArgLimits {
            name: c.max_mailbox_name,
            location: c.max_location,
            identifier: c.max_acl_identifier,
            entries: c.max_acl_entries,
        }
    }

    /// The `NO` text for the first argument over its limit, logged once.
    pub(super) fn check(&self, name: &[u8], location: Option<&[u8]>, acl: Option<&[u8]>) -> Result<(), &'static str> {
        let refuse = |text: &'static str, limit: usize, got: usize| {
            warn!(limit, got, mailbox_prefix = %String::from_utf8_lossy(&name[..name.len().min(64)]), "refused: {text}");
            Err(text)
        };
        if name.len() > self.name {
            return refuse(NAME_TOO_LONG, self.name, name.len());
        }
        if let Some(l) = location.filter(|l| l.len() > self.location) {
            return refuse(LOCATION_TOO_LONG, self.location, l.len());
        }
        if let Some(acl) = acl {
            // Counted as the store parses it (`id TAB rights TAB`, empty
            // identifiers skipped), without allocating.
            let (mut entries, mut fields) = (0usize, acl.split(|&b| b == b'\t'));
            while let (Some(id), Some(_)) = (fields.next(), fields.next()) {
                if id.len() > self.identifier {
                    return refuse(ACL_IDENTIFIER_TOO_LONG, self.identifier, id.len());
                }
                if !id.is_empty() {
                    entries += 1;
                    if entries > self.entries {
                        return refuse(TOO_MANY_ACL_ENTRIES, self.entries, entries);
                    }
                }
            }
        }
        Ok(())
    }
}

/// The `NO` text for a write's arguments, if one is refused: a NUL byte
/// first (no Cyrus string holds one), then the size limits.
pub(super) fn refused(
    config: &crate::config::Config,
    name: &[u8],
    location: &[u8],
    acl: Option<&[u8]>,
) -> Option<&'static str> {
    if name.contains(&0) || location.contains(&0) || acl.is_some_and(|a| a.contains(&0)) {
        return Some(super::NUL_IN_ARGUMENT);
    }
    ArgLimits::of(config).check(name, Some(location), acl).err()
}
