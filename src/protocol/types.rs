//! Typed MUPDATE messages (RFC 3656), as Cyrus 3.6 speaks them.
//!
//! Nothing here does I/O. Strings are raw bytes: Cyrus never says what
//! encoding a mailbox name or ACL has, and a master must hand back exactly
//! the bytes it was given.

/// A command verb after Cyrus's case folding (`mupdate.c: docmd` turns the
/// word into `Xxxx` and switches on the first letter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    /// `DELETE`: removes the login's records of a mailbox (an admin's: the
    /// effective record and its replica group's); a write.
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
    /// One of this project's admin extensions (`src/session/cmd/admin/`).
    Admin(AdminVerb),
    /// A word that is no command. `needs_login` mirrors Cyrus's switch: an
    /// unknown word whose first letter is that of a command that needs a
    /// login (A, D, F, L, N, R, U) gets "Please login first" before login,
    /// any other gets "Unrecognized command".
    Unknown {
        /// The word starts with a letter of a login-only command.
        needs_login: bool,
    },
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
    Authenticate {
        /// The SASL mechanism name, as sent (matched case-insensitively by
        /// the session).
        mechanism: Vec<u8>,
        /// The initial response, base64-decoded; `None` when absent (the
        /// server then sends an empty challenge).
        initial_response: Option<Vec<u8>>,
    },
    /// `ACTIVATE name location acl`.
    Activate {
        /// The mailbox name, in Cyrus's internal form (`domain!user.x`).
        name: Vec<u8>,
        /// `server!partition`; the server is what precedes the first `!`.
        location: Vec<u8>,
        /// The ACL as Cyrus writes it: `identifier TAB rights TAB` pairs.
        acl: Vec<u8>,
    },
    /// `RESERVE name location`.
    Reserve {
        /// The mailbox name, in Cyrus's internal form.
        name: Vec<u8>,
        /// `server!partition` of the backend reserving it.
        location: Vec<u8>,
    },
    /// `DEACTIVATE name location`.
    Deactivate {
        /// The mailbox name, in Cyrus's internal form.
        name: Vec<u8>,
        /// `server!partition` of the backend whose record becomes a
        /// reservation.
        location: Vec<u8>,
    },
    /// `DELETE name`.
    Delete {
        /// The mailbox name, in Cyrus's internal form.
        name: Vec<u8>,
    },
    /// `FIND name`.
    Find {
        /// The mailbox name, in Cyrus's internal form.
        name: Vec<u8>,
    },
    /// `LIST [prefix]`.
    List {
        /// A location prefix (`server!partition` or the start of one): only
        /// entries whose location starts with it; `None`: all.
        prefix: Option<Vec<u8>>,
    },
    /// `UPDATE [host ...]` (PARTIAL-UPDATE when hosts are given).
    Update {
        /// The servers whose mailboxes the stream carries; empty: every
        /// server. Never holds an empty name, nor more than Cyrus's 30
        /// (`MAX_UPDATE_HOSTS` in [`crate::protocol::parse`]).
        hosts: Vec<Vec<u8>>,
    },
    /// `NOOP`.
    Noop,
    /// `LOGOUT`.
    Logout,
    /// `STARTTLS` (answered "Unrecognized command": no TLS yet).
    Starttls,
    /// `COMPRESS algorithm` (answered "Unrecognized command": no
    /// compression yet).
    Compress {
        /// The algorithm asked for (`DEFLATE` in Cyrus), as sent.
        algorithm: Vec<u8>,
    },
    /// An admin extension with its string arguments (checked by the session).
    Admin {
        /// Which extension.
        verb: AdminVerb,
        /// Its arguments, in order, any number: the session checks how many
        /// the verb takes.
        args: Vec<Vec<u8>>,
    },
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
    NullCommand {
        /// The tag, echoed in the BAD.
        tag: Vec<u8>,
    },
    /// A tag and a verb; `args` holds the parsed command or why not.
    Command {
        /// The tag, echoed in every response to this command.
        tag: Vec<u8>,
        /// The verb, known even when the arguments are not (the session's
        /// login check comes before the argument check).
        verb: Verb,
        /// The parsed command, or why the arguments were rejected.
        args: Result<Command, ArgError>,
    },
}

/// Where a MAILBOX/RESERVE line's data comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// `MAILBOX name location acl`
    Mailbox {
        /// The mailbox name, in Cyrus's internal form.
        name: Vec<u8>,
        /// `server!partition` of the record shown.
        location: Vec<u8>,
        /// That record's ACL, as Cyrus writes it.
        acl: Vec<u8>,
    },
    /// `RESERVE name location`
    Reserve {
        /// The mailbox name, in Cyrus's internal form.
        name: Vec<u8>,
        /// `server!partition` of the reserving backend.
        location: Vec<u8>,
    },
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
    Capability {
        /// The capability word (`AUTH`, `PARTIAL-UPDATE`, ...).
        name: Vec<u8>,
        /// Its parameters, sent as they are; empty: none (no trailing space).
        params: Vec<u8>,
    },
    /// `* OK MUPDATE "server" "impl" "version" "(master)"`
    Greeting {
        /// This server's name (`server_name` in the configuration).
        server_name: Vec<u8>,
        /// The implementation's name.
        implementation: Vec<u8>,
        /// The implementation's version.
        version: Vec<u8>,
    },
    /// `<tag> OK|NO|BAD "text"` (tag `*` only for `* BAD "Need command"`)
    Tagged {
        /// The command's tag.
        tag: Vec<u8>,
        /// How it completed.
        status: Status,
        /// The human-readable text, sent as a string (Cyrus's wording).
        text: Vec<u8>,
    },
    /// `* BYE "text"`
    Bye {
        /// Why the server closes the connection.
        text: Vec<u8>,
    },
    /// `<tag> MAILBOX ...` / `<tag> RESERVE ...`
    Entry {
        /// The tag of the FIND, LIST or UPDATE this answers.
        tag: Vec<u8>,
        /// The mailbox or reservation.
        entry: Entry,
    },
    /// `<tag> DELETE name` (UPDATE streams only)
    Delete {
        /// The UPDATE command's tag.
        tag: Vec<u8>,
        /// The mailbox that no longer has an entry.
        name: Vec<u8>,
    },
    /// `+ go ahead` for a synchronising literal
    GoAhead,
    /// `+ "base64"`: a SASL challenge
    Challenge {
        /// The challenge's raw bytes (base64-encoded on the wire; empty for
        /// PLAIN's first challenge).
        data: Vec<u8>,
    },
    /// `<tag> <WORD> strings...`: an admin extension data line
    Data {
        /// The admin command's tag.
        tag: Vec<u8>,
        /// What the line describes (`RECORD`, `GROUP`, `EXPORT`, ...).
        keyword: &'static str,
        /// Its fields, each sent as a string.
        fields: Vec<Vec<u8>>,
    },
}
