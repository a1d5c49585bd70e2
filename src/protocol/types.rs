//! Typed MUPDATE messages (RFC 3656), as Cyrus 3.6 speaks them.
//!
//! Nothing here does I/O. Strings are raw bytes: Cyrus never says what
//! encoding a mailbox name or ACL has, and a master must hand back exactly
//! the bytes it was given.

/// A command verb after Cyrus's case folding (`mupdate.c: docmd` turns the
/// word into `Xxxx` and switches on the first letter).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verb {
    /// `AUTHENTICATE`: a SASL login (PLAIN only); refused once logged in.
    Authenticate,
    /// `ACTIVATE`: a backend says it holds a mailbox (a write).
    Activate,
    /// `COMPRESS`: parsed, then answered as by a Cyrus built without it
    /// ("Unrecognized command").
    Compress,
    /// `DEACTIVATE`: a backend turns its mailbox into a reservation (a write).
    Deactivate,
    /// `DELETE`: a backend removes its record of a mailbox (a write).
    Delete,
    /// `FIND`: one mailbox's effective entry.
    Find,
    /// `LIST`: every effective entry, or those under a server prefix.
    List,
    /// `LOGOUT`: answered OK, then the connection closes.
    Logout,
    /// `NOOP`: a no-op that also flushes a streaming UPDATE's pending changes.
    Noop,
    /// `RESERVE`: a backend reserves a name before creating it (a write).
    Reserve,
    /// `STARTTLS`: parsed, then answered as by a Cyrus built without TLS
    /// ("Unrecognized command").
    Starttls,
    /// `UPDATE`: dump the directory, then stream its changes.
    Update,
    /// One of this project's admin extensions (see `protocol::admin`).
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
    /// `ACTIVATE name location acl`.
    Activate { name: Vec<u8>, location: Vec<u8>, acl: Vec<u8> },
    /// `RESERVE name location`.
    Reserve { name: Vec<u8>, location: Vec<u8> },
    /// `DEACTIVATE name location`.
    Deactivate { name: Vec<u8>, location: Vec<u8> },
    /// `DELETE name`.
    Delete { name: Vec<u8> },
    /// `FIND name`.
    Find { name: Vec<u8> },
    /// `LIST [prefix]`.
    List { prefix: Option<Vec<u8>> },
    /// `UPDATE [host ...]` (PARTIAL-UPDATE when hosts are given).
    Update { hosts: Vec<Vec<u8>> },
    /// `NOOP`.
    Noop,
    /// `LOGOUT`.
    Logout,
    /// `STARTTLS` (answered "Unrecognized command": no TLS yet).
    Starttls,
    /// `COMPRESS algorithm` (answered "Unrecognized command": no
    /// compression yet).
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
    /// `OK`: the command completed.
    Ok,
    /// `NO`: understood but refused (a failed login, a write the model
    /// refuses, a storage failure).
    No,
    /// `BAD`: not understood or not allowed here (syntax, unknown verb,
    /// missing login, wrong role, not while streaming).
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
