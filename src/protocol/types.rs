//! Typed MUPDATE messages (RFC 3656), as Cyrus 3.6 speaks them.
//!
//! Nothing here does I/O. Strings are raw bytes: Cyrus never says what
//! encoding a mailbox name or ACL has, and a master must hand back exactly
//! the bytes it was given.

/// A command verb after Cyrus's case folding (`mupdate.c: docmd` turns the
/// word into `Xxxx` and switches on the first letter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Authenticate,
    Activate,
    Compress,
    Deactivate,
    Delete,
    Find,
    List,
    Logout,
    Noop,
    Reserve,
    Starttls,
    Update,
    /// One of this project's admin extensions (`src/session/cmd/admin/`).
    Admin(AdminVerb),
    /// A word that is no command. `needs_login` mirrors Cyrus's switch: an
    /// unknown word whose first letter is that of a command that needs a
    /// login (A, D, F, L, N, R, U) gets "Please login first" before login,
    /// any other gets "Unrecognized command".
    Unknown { needs_login: bool },
}

/// Admin extension verbs (facts model control surface). Only admin logins
/// may use them; they are advertised by one extra capability line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminVerb {
    /// `XRECORDS name`: every record of a mailbox.
    Records,
    /// `XCONFLICTS`: every recorded conflict.
    Conflicts,
    /// `XRESOLVE name server`: make that server's record win.
    Resolve,
    /// `XGROUPS`: replica groups and their primaries.
    Groups,
    /// `XPRIMARY group [server]`: show or set a group's primary.
    Primary,
    /// `XDELETE name location`: delete one record.
    DeleteRecord,
    /// `XRIGHTS user`: mailboxes on which an identifier has rights.
    Rights,
    /// `XEXPORT`: a point-in-time copy of the whole directory, as
    /// `EXPORT json-line` data lines (`mupdatectl backup`).
    Export,
}

/// A fully parsed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `AUTHENTICATE mech [initial-response]`; `"="` is an empty response.
    Authenticate { mechanism: Vec<u8>, initial_response: Option<Vec<u8>> },
    Activate { name: Vec<u8>, location: Vec<u8>, acl: Vec<u8> },
    Reserve { name: Vec<u8>, location: Vec<u8> },
    Deactivate { name: Vec<u8>, location: Vec<u8> },
    Delete { name: Vec<u8> },
    Find { name: Vec<u8> },
    List { prefix: Option<Vec<u8>> },
    /// `UPDATE [host ...]` (PARTIAL-UPDATE when hosts are given).
    Update { hosts: Vec<Vec<u8>> },
    Noop,
    Logout,
    Starttls,
    Compress { algorithm: Vec<u8> },
    /// An admin extension with its string arguments (checked by the session).
    Admin { verb: AdminVerb, args: Vec<Vec<u8>> },
}

/// Why a command line was rejected, in Cyrus's words (`docmd` labels).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgError {
    /// `Missing arguments`
    Missing,
    /// `Extra arguments` (also: a line that does not end where it should)
    Extra,
    /// `Badly formed arguments` (an empty UPDATE host)
    BadlyFormed,
    /// AUTHENTICATE's initial response is neither `=` nor base64. Not a BAD
    /// in Cyrus: `saslserver` fails to decode it and `cmd_authenticate`
    /// answers `NO` with the SASL error, like any failed authentication.
    NotBase64,
}

/// One command line as the session sees it. The session decides the answer
/// in Cyrus's check order: tag, verb, login, arguments, streaming, role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// No tag followed by a space: `* BAD "Need command"`.
    NeedCommand,
    /// A tag and an empty command word: `<tag> BAD "Null command"`.
    NullCommand { tag: Vec<u8> },
    /// A tag and a verb; `args` holds the parsed command or why not.
    Command { tag: Vec<u8>, verb: Verb, args: Result<Command, ArgError> },
}

/// Where a MAILBOX/RESERVE line's data comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// `MAILBOX name location acl`
    Mailbox { name: Vec<u8>, location: Vec<u8>, acl: Vec<u8> },
    /// `RESERVE name location`
    Reserve { name: Vec<u8>, location: Vec<u8> },
}

impl Entry {
    /// The mailbox name the entry is about.
    pub fn name(&self) -> &[u8] {
        match self {
            Entry::Mailbox { name, .. } | Entry::Reserve { name, .. } => name,
        }
    }
}

/// Status of a tagged completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    No,
    Bad,
}

/// Every response a server sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// A capability line of the greeting: `* NAME [params]`, the params
    /// already in wire form (for example `"PLAIN"`).
    Capability { name: Vec<u8>, params: Vec<u8> },
    /// `* OK MUPDATE "server" "impl" "version" "(master)"`
    Greeting { server_name: Vec<u8>, implementation: Vec<u8>, version: Vec<u8> },
    /// `<tag> OK|NO|BAD "text"` (tag `*` only for `* BAD "Need command"`)
    Tagged { tag: Vec<u8>, status: Status, text: Vec<u8> },
    /// `* BYE "text"`
    Bye { text: Vec<u8> },
    /// `<tag> MAILBOX ...` / `<tag> RESERVE ...`
    Entry { tag: Vec<u8>, entry: Entry },
    /// `<tag> DELETE name` (UPDATE streams only)
    Delete { tag: Vec<u8>, name: Vec<u8> },
    /// `+ go ahead` for a synchronising literal
    GoAhead,
    /// `+ "base64"`: a SASL challenge
    Challenge { data: Vec<u8> },
    /// `<tag> <WORD> strings...`: an admin extension data line
    Data { tag: Vec<u8>, keyword: &'static str, fields: Vec<Vec<u8>> },
}
