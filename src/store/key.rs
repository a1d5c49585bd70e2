//! Keys: the Cyrus 3.6 `mailboxes.db` order and the store's key spaces.
//!
//! Cyrus 3.6 iterates `mailboxes.db` in byte order of `'N' + dbname`
//! (`imap/mboxlist.c: mboxlist_dbname_to_key`), where the dbname is built
//! from the internal name by `mbname_from_intname` (`lib/mboxname.c`) and
//! `mbname_dbname` (`imap/mboxlist.c`). [`order_key`] computes the same
//! bytes, so a byte-ordered scan of our keys is Cyrus's LIST order.
//!
//! The dbname is not injective (`shared..x` and `shared.x` share one, as do
//! `user.x` and `DELETED.user.x.0`), so a storage key is
//! `order_key 0x00 suffix`, where `suffix` is empty when the name is what
//! [`name_from_order_key`] rebuilds from the order key (the common case,
//! which keeps keys short) and the whole name otherwise. A name holds no NUL
//! (the session refuses NUL bytes), and neither does an order key, so the
//! first 0x00 splits a key unambiguously, and the key still sorts by order
//! key first (a shorter order key is followed by 0x00, below every byte).

/// Key space of mailbox values: `n order_key 0x00 suffix`.
pub(crate) const NAMES: u8 = b'n';
/// Key space of the index by server: `s server 0x00 order_key 0x00 suffix`.
pub(crate) const SERVERS: u8 = b's';
/// Key space of names with an unresolved conflict: `x order_key 0x00 suffix`.
pub(crate) const CONFLICTS: u8 = b'x';
/// Key space of replica-group state: `g group-name`.
pub(crate) const GROUPS: u8 = b'g';
/// Key space of the rights index: `r identifier 0x00 handle` -> the rights
/// the effective ACL gives that identifier on the mailbox of that
/// [`rights_handle`]: the [`mailbox_part`] itself when it is at most
/// [`INLINE_PART`] bytes (nearly every real name: the keys stay in LIST
/// order, as written by a name-ordered load, and need no lookup), else
/// the part's first [`HANDLE_PREFIX`] bytes, `0xFF` and a 16-byte digest of
/// the whole part, with one [`HANDLES`] key that maps it back. So an ACL of
/// n entries costs n keys of at most `identifier + 67` bytes, whatever the
/// name's length. (Layout 1 held every whole part; layout 2 a digest for
/// every part, whose random order cost a fifth of the load rate and
/// doubled the disk at 100k mailboxes.)
pub(crate) const RIGHTS: u8 = b'r';
/// Key space mapping a long part's handle back to its mailbox: `h handle`
/// -> [`mailbox_part`], present while the name's effective ACL has entries.
pub(crate) const HANDLES: u8 = b'h';
/// Key space of the store's own metadata: `m what` -> value.
pub(crate) const META: u8 = b'm';
/// Version of the rights index layout, under [`rights_layout_key`]; a
/// database with another one (or none: layout 1) has its rights index
/// rebuilt once at open.
pub(crate) const RIGHTS_LAYOUT: &[u8] = b"3";
/// Longest mailbox part a rights key holds as it is.
pub(crate) const INLINE_PART: usize = 64;
/// Bytes of a long part kept at the front of its handle (so that handles
/// sort near their names).
pub(crate) const HANDLE_PREFIX: usize = 48;
/// Length of a long part's handle: prefix, `0xFF`, digest. Longer than any
/// inline handle, so the length tells the two apart.
pub(crate) const LONG_HANDLE: usize = HANDLE_PREFIX + 1 + 16;

/// Cyrus's `DB_DOMAINSEP_CHAR`.
const DOMAIN_SEP: u8 = 0x1D;
/// Cyrus's `DB_HIERSEP_CHAR`.
const HIER_SEP: u8 = 0x1F;
/// Cyrus's default `deletedprefix`.
const DELETED_PREFIX: &[u8] = b"DELETED";

/// The server of a location: the bytes before the first `!`, or `""` for a
/// location without `!` (Cyrus `mupdate_config: replicated`).
pub(crate) fn server_of(location: &[u8]) -> &[u8] {
    match location.iter().position(|&b| b == b'!') {
        Some(i) => &location[..i],
        None => b"",
    }
}

/// Cyrus 3.6's dbname of an internal mailbox name (without the `'N'`).
///
/// Mirrors, with the default `deletedprefix` and no `defaultdomain`:
/// - `mbname_from_intname`: a domain is what precedes the first `!`; an
///   empty domain counts as none (`strcmpsafe` against the unset
///   `defaultdomain`); the rest is split on `.` with `strtok` semantics, so
///   empty components vanish (`strarray_splitm`); `^` becomes `.` inside a
///   component; with more than 2 components and a first one equal to
///   `DELETED`, that one is dropped and the last is popped and parsed by
///   `strtoul(.., 16)` (so an invalid hex tail parses as its valid prefix,
///   possibly 0); then with more than 1 component and a first one equal to
///   `user`, the second is the localpart.
/// - `mbname_dbname`: `[domain 0x1D]`, then `DELETED` only when the parsed
///   value is non-zero, `user 0x1F localpart`, the boxes, and the value as
///   `%X` of `(unsigned)` (low 32 bits), each joined by 0x1F. A `DELETED`
///   name whose tail parses to 0 therefore loses both its prefix and its
///   tail, exactly as in Cyrus (where it would collide with the live name;
///   here the key suffix keeps them apart).
pub(crate) fn order_key(name: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len() + 8);
    let (domain, rest) = match name.iter().position(|&b| b == b'!') {
        Some(i) => (Some(&name[..i]).filter(|d| !d.is_empty()), &name[i + 1..]),
        None => (None, name),
    };
    let mut boxes: Vec<&[u8]> = rest.split(|&b| b == b'.').filter(|c| !c.is_empty()).collect();
    let mut deleted: u64 = 0;
    if boxes.len() > 2 && boxes[0] == DELETED_PREFIX {
        boxes.remove(0);
        let tail = boxes.pop().unwrap_or_default();
        deleted = strtoul16(tail);
    }
    let mut localpart = None;
    if boxes.len() > 1 && boxes[0] == b"user" {
        localpart = Some(boxes[1]);
        boxes.drain(..2);
    }

    if let Some(d) = domain {
        out.extend_from_slice(d);
        out.push(DOMAIN_SEP);
    }
    let mut sep = false;
    if deleted != 0 {
        out.extend_from_slice(DELETED_PREFIX);
        sep = true;
    }
    if let Some(l) = localpart {
        if sep {
            out.push(HIER_SEP);
        }
        out.extend_from_slice(b"user");
        out.push(HIER_SEP);
        push_component(&mut out, l);
        sep = true;
    }
    for b in boxes {
        if sep {
            out.push(HIER_SEP);
        }
        push_component(&mut out, b);
        sep = true;
    }
    if deleted != 0 {
        if sep {
            out.push(HIER_SEP);
        }
        // `buf_printf("%X", (unsigned) is_deleted)`: the low 32 bits.
        out.extend_from_slice(format!("{:X}", deleted as u32).as_bytes());
    }
    out
}

/// A component as Cyrus stores it: `^` in the internal name is a `.`.
fn push_component(out: &mut Vec<u8>, c: &[u8]) {
    out.extend(c.iter().map(|&b| if b == b'^' { b'.' } else { b }));
}

/// C `strtoul(s, NULL, 16)` on glibc: leading white space, an optional sign,
/// an optional `0x`, then hex digits up to the first other byte; overflow
/// saturates; a `-` negates (modulo 2^64). Cyrus stores the result in a
/// `time_t`, so only "zero or not" and the low 32 bits matter here.
fn strtoul16(s: &[u8]) -> u64 {
    let mut i = 0;
    while i < s.len() && matches!(s[i], b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r') {
        i += 1;
    }
    let mut negative = false;
    if i < s.len() && (s[i] == b'+' || s[i] == b'-') {
        negative = s[i] == b'-';
        i += 1;
    }
    // A `0x` that no hex digit follows parses as 0 either way.
    if s[i..].starts_with(b"0x") || s[i..].starts_with(b"0X") {
        i += 2;
    }
    let mut v: u64 = 0;
    let mut overflow = false;
    while let Some(d) = s.get(i).and_then(|&b| (b as char).to_digit(16)) {
        match v.checked_mul(16).and_then(|v| v.checked_add(u64::from(d))) {
            Some(n) => v = n,
            None => overflow = true,
        }
        i += 1;
    }
    if overflow {
        u64::MAX
    } else if negative {
        v.wrapping_neg()
    } else {
        v
    }
}

/// The name an order key stands for in the common case: the inverse of
/// [`order_key`] for names with no empty component, no `!`-less domain
/// tricks and an uppercase-hex `DELETED` tail.
pub(crate) fn name_from_order_key(ok: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(ok.len());
    let rest = match ok.iter().position(|&b| b == DOMAIN_SEP) {
        Some(i) => {
            out.extend_from_slice(&ok[..i]);
            out.push(b'!');
            &ok[i + 1..]
        }
        None => ok,
    };
    for (n, c) in rest.split(|&b| b == HIER_SEP).enumerate() {
        if n > 0 {
            out.push(b'.');
        }
        out.extend(c.iter().map(|&b| if b == b'.' { b'^' } else { b }));
    }
    out
}

/// `order_key 0x00 suffix`: the part shared by every key space that is
/// ordered by mailbox.
pub(crate) fn mailbox_part(name: &[u8]) -> Vec<u8> {
    debug_assert!(!name.contains(&0), "mailbox names never hold NUL");
    let mut k = order_key(name);
    let plain = name_from_order_key(&k) == name;
    k.push(0);
    if !plain {
        k.extend_from_slice(name);
    }
    k
}

/// The mailbox name a [`mailbox_part`] stands for.
pub(crate) fn name_of_part(part: &[u8]) -> Option<Vec<u8>> {
    let i = part.iter().position(|&b| b == 0)?;
    let suffix = &part[i + 1..];
    Some(if suffix.is_empty() { name_from_order_key(&part[..i]) } else { suffix.to_vec() })
}

/// Key of a name's value in [`NAMES`].
pub(crate) fn name_key(part: &[u8]) -> Vec<u8> {
    prefixed(NAMES, part)
}

/// Key of a name in [`CONFLICTS`].
pub(crate) fn conflict_key(part: &[u8]) -> Vec<u8> {
    prefixed(CONFLICTS, part)
}

/// Key of one record in the index by server.
pub(crate) fn server_key(server: &[u8], part: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + server.len() + part.len());
    k.push(SERVERS);
    k.extend_from_slice(server);
    k.push(0);
    k.extend_from_slice(part);
    k
}

/// The rights index's handle of a mailbox part (see [`RIGHTS`]). A
/// collision of two long parts (same first 48 bytes and same BLAKE2b-128
/// digest) would make them share one handle; nothing else depends on it.
pub(crate) fn rights_handle(part: &[u8]) -> Vec<u8> {
    if part.len() <= INLINE_PART {
        return part.to_vec();
    }
    use blake2::digest::consts::U16;
    use blake2::{Blake2b, Digest};
    let mut h = Vec::with_capacity(LONG_HANDLE);
    h.extend_from_slice(&part[..HANDLE_PREFIX]);
    h.push(0xFF);
    h.extend_from_slice(&Blake2b::<U16>::digest(part));
    h
}

/// Does this handle stand for a long part (one with a [`handle_key`])?
pub(crate) fn is_long_handle(handle: &[u8]) -> bool {
    handle.len() > INLINE_PART
}

/// Key of one ACL entry in the rights index (identifiers hold no NUL).
pub(crate) fn rights_key(identifier: &[u8], handle: &[u8]) -> Vec<u8> {
    let mut k = rights_range_start(identifier);
    k.extend_from_slice(handle);
    k
}

/// First key of an identifier's range in the rights index.
pub(crate) fn rights_range_start(identifier: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + identifier.len() + LONG_HANDLE);
    k.push(RIGHTS);
    k.extend_from_slice(identifier);
    k.push(0);
    k
}

/// Key of a long handle's mailbox part.
pub(crate) fn handle_key(handle: &[u8]) -> Vec<u8> {
    prefixed(HANDLES, handle)
}

/// Key of the rights index layout version.
pub(crate) fn rights_layout_key() -> Vec<u8> {
    prefixed(META, b"rights-layout")
}

/// First key of a server's index range (`s server 0x00`).
pub(crate) fn server_range_start(server: &[u8]) -> Vec<u8> {
    server_key(server, b"")
}

/// Key of a group's persisted state.
pub(crate) fn group_key(group: &str) -> Vec<u8> {
    prefixed(GROUPS, group.as_bytes())
}

fn prefixed(space: u8, rest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + rest.len());
    k.push(space);
    k.extend_from_slice(rest);
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted(names: &[&str]) -> Vec<String> {
        let mut v: Vec<&str> = names.to_vec();
        v.sort_by_key(|n| mailbox_part(n.as_bytes()));
        v.into_iter().map(String::from).collect()
    }

    #[test]
    fn observed_cyrus_3_6_order() {
        let want = ["shared.O", "shared.o", "shared.o.b", "shared.o.b.c", "shared.o a", "shared.o-a", "shared.oA", "shared.o_c"];
        let mut shuffled = want.to_vec();
        shuffled.reverse();
        shuffled.swap(1, 5);
        assert_eq!(sorted(&shuffled), want);
    }

    #[test]
    fn dbname_examples() {
        assert_eq!(order_key(b"user.fred.Sent"), b"user\x1Ffred\x1FSent");
        assert_eq!(order_key(b"shared.o^b"), b"shared\x1Fo.b");
        assert_eq!(order_key(b"example.com!user.a"), b"example.com\x1Duser\x1Fa");
        assert_eq!(order_key(b"DELETED.user.x.y.6B0C8724"), b"DELETED\x1Fuser\x1Fx\x1Fy\x1F6B0C8724");
        // lower-case hex prints back in upper case
        assert_eq!(order_key(b"DELETED.user.x.6b0c"), b"DELETED\x1Fuser\x1Fx\x1F6B0C");
        // exactly 2 components: not a deleted name
        assert_eq!(order_key(b"DELETED.x"), b"DELETED\x1Fx");
        // a tail that strtoul parses as 0 drops both prefix and tail
        assert_eq!(order_key(b"DELETED.user.x.zz"), b"user\x1Fx");
        // a partly valid tail keeps its valid prefix; 0x is accepted
        assert_eq!(order_key(b"DELETED.shared.a.12g"), b"DELETED\x1Fshared\x1Fa\x1F12");
        assert_eq!(order_key(b"DELETED.shared.a.0x1f"), b"DELETED\x1Fshared\x1Fa\x1F1F");
        // only the low 32 bits are printed
        assert_eq!(order_key(b"DELETED.shared.a.100000001"), b"DELETED\x1Fshared\x1Fa\x1F1");
        // strtok: empty components vanish
        assert_eq!(order_key(b"shared..x."), b"shared\x1Fx");
        // an empty domain is no domain
        assert_eq!(order_key(b"!user.a"), b"user\x1Fa");
        assert_eq!(order_key(b"user"), b"user");
        assert_eq!(order_key(b""), b"");
    }

    #[test]
    fn domains_sort_in_their_own_block() {
        let got = sorted(&["example.com!user.a", "user.b", "shared.x", "a.org!user.z", "example.com!shared"]);
        // "a.org" 0x1D... < "example.com" 0x1D... < "shared" < "user"
        assert_eq!(got, ["a.org!user.z", "example.com!shared", "example.com!user.a", "shared.x", "user.b"]);
        // the domain block of "user.x.com" comes before "user" names: 'u','s','e','r','.' vs 0x1F
        let got = sorted(&["user.x", "user.x.com!user.a"]);
        assert_eq!(got, ["user.x", "user.x.com!user.a"]);
    }

    #[test]
    fn deleted_names_sort_together() {
        let got = sorted(&["user.x.y", "DELETED.user.x.y.6B0C8724", "DELETED.user.x.6B0C0000", "user.x", "DELETED.user.x.y.6B0C8725", "Archive"]);
        assert_eq!(got, ["Archive", "DELETED.user.x.6B0C0000", "DELETED.user.x.y.6B0C8724", "DELETED.user.x.y.6B0C8725", "user.x", "user.x.y"]);
    }

    #[test]
    fn keys_are_injective_and_round_trip() {
        let names: &[&[u8]] = &[
            b"user.x", b"DELETED.user.x.0", b"DELETED.user.x.zz", b"shared..x", b"shared.x", b"shared.x.", b"shared^x",
            b"!user.a", b"user.a", b"a\x1Fb", b"a.b", b"a\x1Db", b"a!b", b"", b".", b"DELETED.user.x.6b0c", b"x.org!a",
        ];
        let mut parts: Vec<Vec<u8>> = names.iter().map(|n| mailbox_part(n)).collect();
        for (n, p) in names.iter().zip(&parts) {
            assert_eq!(name_of_part(p).as_deref(), Some(*n));
        }
        parts.sort();
        parts.dedup();
        assert_eq!(parts.len(), names.len());
        // plain names carry no suffix
        assert_eq!(mailbox_part(b"user.fred.Sent"), b"user\x1Ffred\x1FSent\x00");
        assert_eq!(mailbox_part(b"DELETED.user.x.y.6B0C8724").last(), Some(&0));
    }

    #[test]
    fn server_of_location() {
        assert_eq!(server_of(b"be1!default"), b"be1");
        assert_eq!(server_of(b"be1!"), b"be1");
        assert_eq!(server_of(b"default"), b"");
        assert_eq!(server_of(b"a!b!c"), b"a");
    }
}
