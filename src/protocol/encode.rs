//! Encoders: responses (server side) and commands (tools and tests).

use base64::{engine::general_purpose::STANDARD, Engine as _};

use super::types::*;

/// Longest string sent quoted; longer ones go as literals. Cyrus's own
/// limit for quoted strings (`maxquoted`) is 128 KiB; a literal costs
/// nothing to any client version.
pub const MAX_QUOTED: usize = 1024;

/// Append a string in the form every Cyrus client version reads: a quoted
/// string when short and free of CR, LF and NUL; else a `{n}` literal.
///
/// Never `{n+}`: Cyrus 3.4.8, 3.6.5 and 3.8.3 clients cannot parse it
/// (Cyrus issue #4932), and newer ones cap its size; every version reads
/// `{n}` without answering. (A NUL cannot reach a Cyrus client at all: its
/// `getxstring` refuses a literal holding one.)
pub fn string(s: &[u8], out: &mut Vec<u8>) {
    if s.len() <= MAX_QUOTED && !s.iter().any(|&b| matches!(b, b'\r' | b'\n' | 0)) {
        out.reserve(s.len() + 2);
        out.push(b'"');
        // Copy runs between the bytes that need a backslash (most names
        // have none: one copy), not byte by byte: LIST and UPDATE dumps of
        // millions of names spend their time here.
        let mut rest = s;
        while let Some(i) = rest.iter().position(|&b| b == b'"' || b == b'\\') {
            out.extend_from_slice(&rest[..i]);
            out.push(b'\\');
            out.push(rest[i]);
            rest = &rest[i + 1..];
        }
        out.extend_from_slice(rest);
        out.push(b'"');
    } else {
        literal(s, false, out);
    }
}

/// Append `{n}\r\n` (or `{n+}\r\n`) and the bytes.
fn literal(s: &[u8], plus: bool, out: &mut Vec<u8>) {
    out.push(b'{');
    out.extend_from_slice(s.len().to_string().as_bytes());
    if plus {
        out.push(b'+');
    }
    out.extend_from_slice(b"}\r\n");
    out.extend_from_slice(s);
}

fn status_word(status: Status) -> &'static [u8] {
    match status {
        Status::Ok => b"OK",
        Status::No => b"NO",
        Status::Bad => b"BAD",
    }
}

/// Append `tag SP word`.
fn start(tag: &[u8], word: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(tag);
    out.push(b' ');
    out.extend_from_slice(word);
}

/// Append ` string` for each string.
fn strings<'a>(strings: impl IntoIterator<Item = &'a [u8]>, out: &mut Vec<u8>) {
    for s in strings {
        out.push(b' ');
        string(s, out);
    }
}

/// Append one response, with its CRLF.
pub fn response(r: &Response, out: &mut Vec<u8>) {
    match r {
        Response::Capability { name, params } => {
            start(b"*", name, out);
            if !params.is_empty() {
                out.push(b' ');
                out.extend_from_slice(params);
            }
        }
        Response::Greeting { server_name, implementation, version } => {
            start(b"*", b"OK MUPDATE", out);
            strings([&server_name[..], implementation, version, b"(master)"], out);
        }
        Response::Tagged { tag, status, text } => {
            start(tag, status_word(*status), out);
            strings([&text[..]], out);
        }
        Response::Bye { text } => {
            start(b"*", b"BYE", out);
            strings([&text[..]], out);
        }
        Response::Entry { tag, entry: Entry::Mailbox { name, location, acl } } => {
            start(tag, b"MAILBOX", out);
            strings([&name[..], location, acl], out);
        }
        Response::Entry { tag, entry: Entry::Reserve { name, location } } => {
            start(tag, b"RESERVE", out);
            strings([&name[..], location], out);
        }
        Response::Delete { tag, name } => {
            start(tag, b"DELETE", out);
            strings([&name[..]], out);
        }
        Response::GoAhead => {
            out.extend_from_slice(b"+ go ahead");
        }
        Response::Challenge { data } => {
            // Base64 has no byte that needs quoting; quoted whatever its
            // length, as Cyrus sends challenges.
            out.extend_from_slice(b"+ \"");
            out.extend_from_slice(STANDARD.encode(data).as_bytes());
            out.push(b'"');
        }
        Response::Data { tag, keyword, fields } => {
            start(tag, keyword.as_bytes(), out);
            strings(fields.iter().map(Vec::as_slice), out);
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// Append a client command (tools and tests) with `{n+}` literals as Cyrus
/// clients send them when `literal_plus`, quoted strings otherwise.
///
/// An AUTHENTICATE initial response is raw bytes here and goes out as
/// base64 (`"="` when empty); its mechanism is quoted, as in Cyrus's
/// `A01 AUTHENTICATE "PLAIN" {32+}`.
pub fn command(tag: &[u8], cmd: &Command, literal_plus: bool, out: &mut Vec<u8>) {
    let arg = |s: &[u8], out: &mut Vec<u8>| {
        out.push(b' ');
        if literal_plus {
            literal(s, true, out);
        } else {
            string(s, out);
        }
    };
    start(tag, cmd.verb().name().as_bytes(), out);
    match cmd {
        Command::Authenticate { mechanism, initial_response } => {
            out.push(b' ');
            string(mechanism, out);
            match initial_response {
                None => {}
                Some(r) if r.is_empty() => out.extend_from_slice(b" \"=\""),
                Some(r) => arg(STANDARD.encode(r).as_bytes(), out),
            }
        }
        Command::Activate { name, location, acl } => {
            for s in [name, location, acl] {
                arg(s, out);
            }
        }
        Command::Reserve { name, location } | Command::Deactivate { name, location } => {
            for s in [name, location] {
                arg(s, out);
            }
        }
        Command::Delete { name } | Command::Find { name } => arg(name, out),
        Command::List { prefix } => {
            if let Some(prefix) = prefix {
                arg(prefix, out);
            }
        }
        Command::Update { hosts: args } | Command::Admin { args, .. } => {
            for a in args {
                arg(a, out);
            }
        }
        Command::Noop | Command::Logout | Command::Starttls => {}
        Command::Compress { algorithm } => arg(algorithm, out),
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        string(bytes, &mut out);
        out
    }

    #[test]
    fn strings_quoted_or_synchronising_literal() {
        assert_eq!(s(b""), b"\"\"");
        assert_eq!(s(b"user.alice"), b"\"user.alice\"");
        assert_eq!(s(b"a\"b\\c\td"), b"\"a\\\"b\\\\c\td\"");
        assert_eq!(s(b"a\r\nb"), b"{4}\r\na\r\nb");
        assert_eq!(s(b"a\nb"), b"{3}\r\na\nb");
        assert_eq!(s(b"a\0b"), b"{3}\r\na\0b");
        let long = vec![b'x'; MAX_QUOTED];
        assert_eq!(s(&long).len(), MAX_QUOTED + 2);
        let longer = vec![b'x'; MAX_QUOTED + 1];
        assert!(s(&longer).starts_with(b"{1025}\r\nxxx"));
    }

    fn r(resp: Response) -> Vec<u8> {
        let mut out = Vec::new();
        response(&resp, &mut out);
        out
    }

    #[test]
    fn responses_known_answers() {
        let v = |s: &str| s.as_bytes().to_vec();
        assert_eq!(
            r(Response::Capability { name: v("AUTH"), params: v("\"PLAIN\"") }),
            b"* AUTH \"PLAIN\"\r\n"
        );
        assert_eq!(
            r(Response::Capability { name: v("PARTIAL-UPDATE"), params: vec![] }),
            b"* PARTIAL-UPDATE\r\n"
        );
        assert_eq!(
            r(Response::Greeting {
                server_name: v("mupdate.example"),
                implementation: v("mupdated"),
                version: v("0.1.0")
            }),
            b"* OK MUPDATE \"mupdate.example\" \"mupdated\" \"0.1.0\" \"(master)\"\r\n"
        );
        assert_eq!(
            r(Response::Tagged { tag: v("A01"), status: Status::Ok, text: v("done") }),
            b"A01 OK \"done\"\r\n"
        );
        assert_eq!(
            r(Response::Tagged { tag: v("*"), status: Status::Bad, text: v("Need command") }),
            b"* BAD \"Need command\"\r\n"
        );
        assert_eq!(
            r(Response::Tagged { tag: v("B"), status: Status::No, text: v("x") }),
            b"B NO \"x\"\r\n"
        );
        assert_eq!(r(Response::Bye { text: v("Server Unable") }), b"* BYE \"Server Unable\"\r\n");
        assert_eq!(
            r(Response::Entry {
                tag: v("U01"),
                entry: Entry::Mailbox {
                    name: v("user.alice"),
                    location: v("be1!default"),
                    acl: v("alice\tlrswipkxtecdan\t")
                }
            }),
            b"U01 MAILBOX \"user.alice\" \"be1!default\" \"alice\tlrswipkxtecdan\t\"\r\n"
        );
        assert_eq!(
            r(Response::Entry {
                tag: v("F1"),
                entry: Entry::Reserve { name: v("user.bob"), location: v("be1!") }
            }),
            b"F1 RESERVE \"user.bob\" \"be1!\"\r\n"
        );
        assert_eq!(
            r(Response::Delete { tag: v("U01"), name: v("a\nb") }),
            b"U01 DELETE {3}\r\na\nb\r\n"
        );
        assert_eq!(r(Response::GoAhead), b"+ go ahead\r\n");
        assert_eq!(r(Response::Challenge { data: vec![] }), b"+ \"\"\r\n");
        assert_eq!(r(Response::Challenge { data: v("abc") }), b"+ \"YWJj\"\r\n");
        assert_eq!(
            r(Response::Data { tag: v("X1"), keyword: "RECORD", fields: vec![v("a"), v("")] }),
            b"X1 RECORD \"a\" \"\"\r\n"
        );
        assert_eq!(
            r(Response::Data { tag: v("X1"), keyword: "GROUP", fields: vec![] }),
            b"X1 GROUP\r\n"
        );
    }

    fn c(cmd: Command, plus: bool) -> Vec<u8> {
        let mut out = Vec::new();
        command(b"X1", &cmd, plus, &mut out);
        out
    }

    #[test]
    fn commands_known_answers() {
        let v = |s: &str| s.as_bytes().to_vec();
        let activate = Command::Activate {
            name: v("user.alice"),
            location: v("127.0.0.1:14101!default"),
            acl: v("alice\tlrswipkxtecdan\t"),
        };
        assert_eq!(
            c(activate.clone(), true),
            b"X1 ACTIVATE {10+}\r\nuser.alice {23+}\r\n127.0.0.1:14101!default {21+}\r\nalice\tlrswipkxtecdan\t\r\n"
        );
        assert_eq!(
            c(activate, false),
            b"X1 ACTIVATE \"user.alice\" \"127.0.0.1:14101!default\" \"alice\tlrswipkxtecdan\t\"\r\n"
        );
        let auth = Command::Authenticate {
            mechanism: v("PLAIN"),
            initial_response: Some(v("mupdater\0mupdater\0secret")),
        };
        assert_eq!(
            c(auth.clone(), true),
            b"X1 AUTHENTICATE \"PLAIN\" {32+}\r\nbXVwZGF0ZXIAbXVwZGF0ZXIAc2VjcmV0\r\n"
        );
        assert_eq!(
            c(auth, false),
            b"X1 AUTHENTICATE \"PLAIN\" \"bXVwZGF0ZXIAbXVwZGF0ZXIAc2VjcmV0\"\r\n"
        );
        let empty = Command::Authenticate { mechanism: v("PLAIN"), initial_response: Some(vec![]) };
        assert_eq!(c(empty.clone(), true), b"X1 AUTHENTICATE \"PLAIN\" \"=\"\r\n");
        assert_eq!(c(empty, false), b"X1 AUTHENTICATE \"PLAIN\" \"=\"\r\n");
        let bare = Command::Authenticate { mechanism: v("SCRAM-SHA-256"), initial_response: None };
        assert_eq!(c(bare, true), b"X1 AUTHENTICATE \"SCRAM-SHA-256\"\r\n");
        assert_eq!(c(Command::List { prefix: None }, true), b"X1 LIST\r\n");
        assert_eq!(c(Command::List { prefix: Some(v("be1!")) }, false), b"X1 LIST \"be1!\"\r\n");
        assert_eq!(c(Command::Update { hosts: vec![] }, true), b"X1 UPDATE\r\n");
        assert_eq!(
            c(Command::Update { hosts: vec![v("a"), v("b")] }, false),
            b"X1 UPDATE \"a\" \"b\"\r\n"
        );
        assert_eq!(c(Command::Noop, true), b"X1 NOOP\r\n");
        assert_eq!(c(Command::Logout, true), b"X1 LOGOUT\r\n");
        assert_eq!(c(Command::Starttls, true), b"X1 STARTTLS\r\n");
        assert_eq!(
            c(Command::Compress { algorithm: v("DEFLATE") }, false),
            b"X1 COMPRESS \"DEFLATE\"\r\n"
        );
        assert_eq!(c(Command::Delete { name: v("a") }, true), b"X1 DELETE {1+}\r\na\r\n");
        assert_eq!(c(Command::Find { name: v("") }, true), b"X1 FIND {0+}\r\n\r\n");
        assert_eq!(
            c(Command::Reserve { name: v("a"), location: v("b") }, false),
            b"X1 RESERVE \"a\" \"b\"\r\n"
        );
        assert_eq!(
            c(Command::Deactivate { name: v("a"), location: v("b") }, false),
            b"X1 DEACTIVATE \"a\" \"b\"\r\n"
        );
        assert_eq!(
            c(Command::Admin { verb: AdminVerb::Resolve, args: vec![v("a"), v("b")] }, false),
            b"X1 XRESOLVE \"a\" \"b\"\r\n"
        );
        assert_eq!(
            c(Command::Admin { verb: AdminVerb::Conflicts, args: vec![] }, false),
            b"X1 XCONFLICTS\r\n"
        );
    }
}
