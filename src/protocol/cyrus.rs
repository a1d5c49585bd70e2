//! Every text a Cyrus MUPDATE client can see from us, with the place in
//! Cyrus 3.6.1's `imap/mupdate.c` it mirrors. Cyrus clients only look at
//! OK/NO/BAD, but operators read these in logs and transcripts.

/// `cmd_set` success.
pub const DONE: &str = "done";
/// `cmd_find` completion.
pub const SEARCH_COMPLETED: &str = "Search completed";
/// `docmd` LIST completion.
pub const LIST_COMPLETE: &str = "list complete";
/// `docmd` NOOP completion.
pub const NOOP_DONE: &str = "Noop done";
/// `docmd` LOGOUT.
pub const BYE_BYE: &str = "bye-bye";
/// `cmd_startupdate` after the dump.
pub const STREAMING_STARTS: &str = "streaming starts";
/// `cmd_authenticate` success.
pub const AUTHENTICATED: &str = "Authenticated";
/// `cmd_set` EXISTS.
pub const MAILBOX_EXISTS: &str = "mailbox already exists";
/// `cmd_set` NOTACTIVE.
pub const NOT_ACTIVE: &str = "mailbox not currently active";
/// `cmd_set` DOESNTEXIST.
pub const DOESNT_EXIST: &str = "mailbox doesn't exist";
/// Not Cyrus's (Cyrus has no identities): this project's answer to a
/// backend login asserting a fact about a server it is not bound to.
pub const NOT_SERVED: &str = "location not served by this login";
/// `docmd` nologin.
pub const PLEASE_LOGIN: &str = "Please login first";
/// `docmd` badcmd.
pub const UNRECOGNIZED: &str = "Unrecognized command";
/// `docmd` missingargs.
pub const MISSING_ARGS: &str = "Missing arguments";
/// `docmd` extraargs.
pub const EXTRA_ARGS: &str = "Extra arguments";
/// `docmd` badargs.
pub const BADLY_FORMED: &str = "Badly formed arguments";
/// `docmd` notwhenstreaming.
pub const NOT_WHEN_STREAMING: &str = "not legal when streaming";
/// `docmd` masteronly (a write on a read-only session).
pub const READ_ONLY: &str = "read-only session";
/// `docmd` a line without a tag.
pub const NEED_COMMAND: &str = "Need command";
/// `docmd` a tag without a command.
pub const NULL_COMMAND: &str = "Null command";
/// `docmd` a second AUTHENTICATE.
pub const ALREADY_AUTHENTICATED: &str = "already authenticated";
/// `service_main_fd` over `mupdate_connections_max`.
pub const SERVER_UNABLE: &str = "Server Unable";
/// Answer to a synchronising literal (`imapparse.c: getxstring`).
pub const GO_AHEAD: &str = "go ahead";
/// `cmd_starttls` before the handshake (Cyrus sends it unquoted).
pub const BEGIN_TLS: &str = "Begin TLS negotiation now";
/// `docmd` STARTTLS after a login (Cyrus sends it unquoted).
pub const STARTTLS_AFTER_AUTH: &str = "Can't Starttls after authentication";
/// `docmd` STARTTLS on a connection in TLS already (Cyrus sends it unquoted).
pub const STARTTLS_TWICE: &str = "Already did a successful Starttls";
/// `cmd_authenticate` when the client answers a challenge with `*` (Cyrus
/// sends `Client canceled authentication` unquoted, capitalised).
pub const CLIENT_CANCELED: &str = "client canceled authentication";
