use super::*;
use crate::protocol::encode;
use crate::protocol::framer::{Decoded, Framer, Limits};
use proptest::prelude::*;

fn v(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

fn ok(tag: &str, verb: Verb, cmd: Command) -> Line {
    Line::Command { tag: v(tag), verb, args: Ok(cmd) }
}

fn err(tag: &str, verb: Verb, e: ArgError) -> Line {
    Line::Command { tag: v(tag), verb, args: Err(e) }
}

fn hosts(n: usize) -> String {
    (0..n).map(|i| format!(" \"h{i}\"")).collect()
}

#[test]
fn docmd_table() {
    use ArgError::*;
    use Verb::*;
    let plain = b"mupdater\0mupdater\0secret".to_vec();
    let activate =
        |n: &str, l: &str, a: &str| Command::Activate { name: v(n), location: v(l), acl: v(a) };
    let cases: Vec<(Vec<u8>, Line)> = vec![
        // Tag and command word.
        (v("\r\n"), Line::NeedCommand),
        (v("\n"), Line::NeedCommand),
        (v("A01\r\n"), Line::NeedCommand),
        (v("A01"), Line::NeedCommand),
        (v("A01\tNOOP\r\n"), Line::NeedCommand),
        (v("A01(x) NOOP\r\n"), Line::NeedCommand),
        (v("\"A01\" NOOP\r\n"), Line::NeedCommand),
        // An empty tag is a tag for Cyrus.
        (v(" NOOP\r\n"), ok("", Noop, Command::Noop)),
        (v("A01 \r\n"), Line::NullCommand { tag: v("A01") }),
        (v("A01  NOOP\r\n"), Line::NullCommand { tag: v("A01") }),
        (v("A01 \"NOOP\"\r\n"), Line::NullCommand { tag: v("A01") }),
        (v("* NOOP\r\n"), ok("*", Noop, Command::Noop)),
        (b"A\0B NOOP\r\n".to_vec(), ok("A", Noop, Command::Noop)),
        (b"A NOOP\0x\r\n".to_vec(), ok("A", Noop, Command::Noop)),
        (b"A \0NOOP\r\n".to_vec(), Line::NullCommand { tag: v("A") }),
        // NOOP, LOGOUT, STARTTLS.
        (v("A01 NOOP\r\n"), ok("A01", Noop, Command::Noop)),
        (v("A01 noop\n"), ok("A01", Noop, Command::Noop)),
        (v("A01 nOoP\r\n"), ok("A01", Noop, Command::Noop)),
        (v("A01 NOOP \r\n"), err("A01", Noop, Extra)),
        (v("A01 NOOP \"x\"\r\n"), err("A01", Noop, Extra)),
        (v("A01 NOOP\r\r\n"), err("A01", Noop, Extra)),
        (v("A01 NOOP"), err("A01", Noop, Extra)),
        (v("Q01 LOGOUT\r\n"), ok("Q01", Logout, Command::Logout)),
        (v("S01 STARTTLS\r\n"), ok("S01", Starttls, Command::Starttls)),
        (v("S01 STARTTLS x\r\n"), err("S01", Starttls, Extra)),
        // AUTHENTICATE.
        (
            v("A01 AUTHENTICATE \"PLAIN\" {32+}\r\nbXVwZGF0ZXIAbXVwZGF0ZXIAc2VjcmV0\r\n"),
            ok("A01", Authenticate, Command::Authenticate { mechanism: v("PLAIN"), initial_response: Some(plain.clone()) }),
        ),
        (
            v("A01 authenticate {5}\r\nPLAIN \"bXVwZGF0ZXIAbXVwZGF0ZXIAc2VjcmV0\"\n"),
            ok("A01", Authenticate, Command::Authenticate { mechanism: v("PLAIN"), initial_response: Some(plain) }),
        ),
        (
            v("A01 AUTHENTICATE \"SCRAM-SHA-256\"\r\n"),
            ok("A01", Authenticate, Command::Authenticate { mechanism: v("SCRAM-SHA-256"), initial_response: None }),
        ),
        (
            v("A01 AUTHENTICATE \"PLAIN\" \"=\"\r\n"),
            ok("A01", Authenticate, Command::Authenticate { mechanism: v("PLAIN"), initial_response: Some(vec![]) }),
        ),
        (
            v("A01 AUTHENTICATE \"PLAIN\" {1+}\r\n=\r\n"),
            ok("A01", Authenticate, Command::Authenticate { mechanism: v("PLAIN"), initial_response: Some(vec![]) }),
        ),
        (
            v("A01 AUTHENTICATE \"PLAIN\" \"\"\r\n"),
            ok("A01", Authenticate, Command::Authenticate { mechanism: v("PLAIN"), initial_response: Some(vec![]) }),
        ),
        (v("A01 AUTHENTICATE\r\n"), err("A01", Authenticate, Missing)),
        (v("A01 AUTHENTICATE PLAIN\r\n"), err("A01", Authenticate, Extra)),
        (v("A01 AUTHENTICATE \"PLAIN\" x\r\n"), err("A01", Authenticate, Extra)),
        (v("A01 AUTHENTICATE \"PLAIN\" \"a\" \"b\"\r\n"), err("A01", Authenticate, Extra)),
        (v("A01 AUTHENTICATE \"PLAIN\" \"!!\"\r\n"), err("A01", Authenticate, NotBase64)),
        // ACTIVATE, as Cyrus backends send it.
        (
            v("X1 ACTIVATE {10+}\r\nuser.alice {23+}\r\n127.0.0.1:14101!default {21+}\r\nalice\tlrswipkxtecdan\t\r\n"),
            ok("X1", Activate, activate("user.alice", "127.0.0.1:14101!default", "alice\tlrswipkxtecdan\t")),
        ),
        (
            v("X1 ACTIVATE {10+}\r\nuser.alice {4+}\r\nbe1! {0+}\r\n\r\n"),
            ok("X1", Activate, activate("user.alice", "be1!", "")),
        ),
        (
            v("X1 Activate \"a\" {1}\r\nb {1}\nc\n"),
            ok("X1", Activate, activate("a", "b", "c")),
        ),
        (v("X1 ACTIVATE\r\n"), err("X1", Activate, Missing)),
        (v("X1 ACTIVATE foo \"b\" \"c\"\r\n"), err("X1", Activate, Missing)),
        (v("X1 ACTIVATE \"a\"\r\n"), err("X1", Activate, Missing)),
        (v("X1 ACTIVATE \"a\" \"b\"\r\n"), err("X1", Activate, Missing)),
        (v("X1 ACTIVATE \"a\"  \"b\" \"c\"\r\n"), err("X1", Activate, Missing)),
        (v("X1 ACTIVATE \"a\" \"b\" c\r\n"), err("X1", Activate, Extra)),
        (v("X1 ACTIVATE \"a\" \"b\" \"c\" \"d\"\r\n"), err("X1", Activate, Extra)),
        (v("X1 ACTIVATE \"a\" \"b\" \"c\" \r\n"), err("X1", Activate, Extra)),
        // RESERVE, DEACTIVATE.
        (
            v("R1 RESERVE \"user.bob\" \"be1!\"\r\n"),
            ok("R1", Reserve, Command::Reserve { name: v("user.bob"), location: v("be1!") }),
        ),
        (v("R1 RESERVE \"user.bob\"\r\n"), err("R1", Reserve, Missing)),
        (v("R1 RESERVE \"a\" \"b\" \"c\"\r\n"), err("R1", Reserve, Extra)),
        (
            v("D1 deactivate \"user.bob\" \"be2!p\"\n"),
            ok("D1", Deactivate, Command::Deactivate { name: v("user.bob"), location: v("be2!p") }),
        ),
        (v("D1 DEACTIVATE\r\n"), err("D1", Deactivate, Missing)),
        (v("D1 DEACTIVATE \"a\" b\r\n"), err("D1", Deactivate, Extra)),
        // DELETE, FIND.
        (v("D1 DELETE \"user.bob\"\r\n"), ok("D1", Delete, Command::Delete { name: v("user.bob") })),
        (v("D1 DELETE\r\n"), err("D1", Delete, Missing)),
        (v("D1 DELETE \"a\" \"b\"\r\n"), err("D1", Delete, Extra)),
        (v("F1 find \"user.bob\"\r\n"), ok("F1", Find, Command::Find { name: v("user.bob") })),
        (v("F1 FIND \"user.bob\"\n"), ok("F1", Find, Command::Find { name: v("user.bob") })),
        (v("F1 FIND {1}\nx\n"), ok("F1", Find, Command::Find { name: v("x") })),
        (v("F1 FIND {4+}\r\n\r\n\"\\\r\n"), ok("F1", Find, Command::Find { name: v("\r\n\"\\") })),
        (v("F1 FIND {3}\r\n{3}\r\n"), ok("F1", Find, Command::Find { name: v("{3}") })),
        (v("F1 FIND \"a\\\"b\\\\c\"\r\n"), ok("F1", Find, Command::Find { name: v("a\"b\\c") })),
        (v("F1 FIND \"a\\qb\"\r\n"), ok("F1", Find, Command::Find { name: v("aqb") })),
        (v("F1 FIND \"a\\\rb\"\r\n"), ok("F1", Find, Command::Find { name: v("a\rb") })),
        (v("F1 FIND \"\"\r\n"), ok("F1", Find, Command::Find { name: v("") })),
        (v("F1 FIND foo\r\n"), err("F1", Find, Extra)),
        (v("F1 FIND\r\n"), err("F1", Find, Missing)),
        (v("F1 FIND \r\n"), err("F1", Find, Extra)),
        (v("F1 FIND \"a\" \"b\"\r\n"), err("F1", Find, Extra)),
        (v("F1 FIND \"abc\r\n"), err("F1", Find, Extra)),
        (v("F1 FIND \"abc\\"), err("F1", Find, Extra)),
        (v("F1 FIND {}\r\n"), err("F1", Find, Extra)),
        (v("F1 FIND {3x}\r\nabc\r\n"), err("F1", Find, Extra)),
        (v("F1 FIND {10+}\r\nab\r\n"), err("F1", Find, Extra)),
        (v("F1 FIND {99999999999999999999999}\r\nab\r\n"), err("F1", Find, Extra)),
        (b"F1 FIND \"a\0b\"\r\n".to_vec(), err("F1", Find, Extra)),
        (b"F1 FIND {3+}\r\na\0b\r\n".to_vec(), err("F1", Find, Extra)),
        // LIST.
        (v("L1 LIST\r\n"), ok("L1", List, Command::List { prefix: None })),
        (v("L1 LIST \"be1!\"\r\n"), ok("L1", List, Command::List { prefix: Some(v("be1!")) })),
        (v("L1 list \"\"\n"), ok("L1", List, Command::List { prefix: Some(vec![]) })),
        (v("L1 LIST be1\r\n"), err("L1", List, Extra)),
        (v("L1 LIST \"a\" \"b\"\r\n"), err("L1", List, Extra)),
        (v("L1 LIST(\r\n"), err("L1", List, Extra)),
        // UPDATE.
        (v("U01 UPDATE\r\n"), ok("U01", Update, Command::Update { hosts: vec![] })),
        (v("U01 update \"a\" {1+}\r\nb\r\n"), ok("U01", Update, Command::Update { hosts: vec![v("a"), v("b")] })),
        (v("U01 UPDATE foo\r\n"), err("U01", Update, BadlyFormed)),
        (v("U01 UPDATE \"\"\r\n"), err("U01", Update, BadlyFormed)),
        (v("U01 UPDATE \"a\" \"\"\r\n"), err("U01", Update, BadlyFormed)),
        (v("U01 UPDATE \r\n"), err("U01", Update, BadlyFormed)),
        (v("U01 UPDATE \"abc\r\n"), err("U01", Update, Extra)),
        (v("U01 UPDATE \"a\"x\r\n"), err("U01", Update, Extra)),
        (
            format!("U01 UPDATE{}\r\n", hosts(30)).into_bytes(),
            ok("U01", Update, Command::Update { hosts: (0..30).map(|i| format!("h{i}").into_bytes()).collect() }),
        ),
        (format!("U01 UPDATE{}\r\n", hosts(31)).into_bytes(), err("U01", Update, Extra)),
        (format!("U01 UPDATE{} \"\"\r\n", hosts(30)).into_bytes(), err("U01", Update, BadlyFormed)),
        // COMPRESS.
        (v("C1 COMPRESS \"DEFLATE\"\r\n"), ok("C1", Compress, Command::Compress { algorithm: v("DEFLATE") })),
        (v("C1 COMPRESS\r\n"), err("C1", Compress, Missing)),
        (v("C1 COMPRESS DEFLATE\r\n"), err("C1", Compress, Extra)),
        // Admin extensions.
        (
            v("X1 XRECORDS \"user.a\"\r\n"),
            ok("X1", Admin(AdminVerb::Records), Command::Admin { verb: AdminVerb::Records, args: vec![v("user.a")] }),
        ),
        (
            v("X1 xconflicts\n"),
            ok("X1", Admin(AdminVerb::Conflicts), Command::Admin { verb: AdminVerb::Conflicts, args: vec![] }),
        ),
        (
            v("X1 XRESOLVE \"a\" {2+}\r\nb!\r\n"),
            ok("X1", Admin(AdminVerb::Resolve), Command::Admin { verb: AdminVerb::Resolve, args: vec![v("a"), v("b!")] }),
        ),
        (v("X1 XGROUPS\r\n"), ok("X1", Admin(AdminVerb::Groups), Command::Admin { verb: AdminVerb::Groups, args: vec![] })),
        (
            v("X1 XPRIMARY \"g\" \"s\"\r\n"),
            ok("X1", Admin(AdminVerb::Primary), Command::Admin { verb: AdminVerb::Primary, args: vec![v("g"), v("s")] }),
        ),
        (
            v("X1 XDELETE \"n\" \"l\"\r\n"),
            ok("X1", Admin(AdminVerb::DeleteRecord), Command::Admin { verb: AdminVerb::DeleteRecord, args: vec![v("n"), v("l")] }),
        ),
        (
            v("X1 XRIGHTS \"alice\"\r\n"),
            ok("X1", Admin(AdminVerb::Rights), Command::Admin { verb: AdminVerb::Rights, args: vec![v("alice")] }),
        ),
        (v("X1 XRESOLVE \"a\" b\r\n"), err("X1", Admin(AdminVerb::Resolve), Extra)),
        (v("X1 XRIGHTS \r\n"), err("X1", Admin(AdminVerb::Rights), Extra)),
        // Unknown words: Cyrus's switch checks the login first for
        // A, D, F, L, N, R, U.
        (v("A01 FOO\r\n"), err("A01", Unknown { needs_login: true }, Extra)),
        (v("A01 abc \"x\"\r\n"), err("A01", Unknown { needs_login: true }, Extra)),
        (v("A01 ACTIVATEX\r\n"), err("A01", Unknown { needs_login: true }, Extra)),
        (v("A01 delet\r\n"), err("A01", Unknown { needs_login: true }, Extra)),
        (v("A01 LSUB\r\n"), err("A01", Unknown { needs_login: true }, Extra)),
        (v("A01 n\r\n"), err("A01", Unknown { needs_login: true }, Extra)),
        (v("A01 RENAME\r\n"), err("A01", Unknown { needs_login: true }, Extra)),
        (v("A01 Uid\r\n"), err("A01", Unknown { needs_login: true }, Extra)),
        (v("A01 CAPABILITY\r\n"), err("A01", Unknown { needs_login: false }, Extra)),
        (v("A01 SELECT\r\n"), err("A01", Unknown { needs_login: false }, Extra)),
        (v("A01 BAR\r\n"), err("A01", Unknown { needs_login: false }, Extra)),
        (v("A01 XFOO\r\n"), err("A01", Unknown { needs_login: false }, Extra)),
        (v("A01 1\r\n"), err("A01", Unknown { needs_login: false }, Extra)),
        (b"A01 \xc4\r\n".to_vec(), err("A01", Unknown { needs_login: false }, Extra)),
    ];
    for (input, expected) in cases {
        assert_eq!(parse_line(&input), expected, "{:?}", String::from_utf8_lossy(&input));
    }
}

#[test]
fn auth_answer_table() {
    let cases: Vec<(&[u8], AuthAnswer)> = vec![
        (b"\r\n", AuthAnswer::Data(vec![])),
        (b"\n", AuthAnswer::Data(vec![])),
        (b"*\r\n", AuthAnswer::Cancel),
        (b"*\n", AuthAnswer::Cancel),
        (b"\"*\"\r\n", AuthAnswer::Cancel),
        (b"YWJj\r\n", AuthAnswer::Data(v("abc"))),
        (b"YWI=\n", AuthAnswer::Data(v("ab"))),
        (b"\"YWJj\"\r\n", AuthAnswer::Data(v("abc"))),
        (b"{4+}\r\nYWJj\r\n", AuthAnswer::Data(v("abc"))),
        (b"{4}\r\nYWJj\r\n", AuthAnswer::Data(v("abc"))),
        (b"\"\"\r\n", AuthAnswer::Data(vec![])),
        (b"!!\r\n", AuthAnswer::Invalid),
        (b"YWJ\r\n", AuthAnswer::Invalid),
        (b"YWJj YWJj\r\n", AuthAnswer::Invalid),
        (b" YWJj\r\n", AuthAnswer::Invalid),
        (b"YWJj", AuthAnswer::Invalid),
        (b"\"YWJj\r\n", AuthAnswer::Invalid),
        (b"* \r\n", AuthAnswer::Invalid),
        (b"{4+}\r\nYW\0j\r\n", AuthAnswer::Invalid),
    ];
    for (input, expected) in cases {
        assert_eq!(parse_auth_answer(input), expected, "{:?}", String::from_utf8_lossy(input));
    }
}

#[test]
fn response_table() {
    let tagged =
        |t: &str, status, text: &str| Response::Tagged { tag: v(t), status, text: v(text) };
    let cases: Vec<(&[u8], Response)> = vec![
        (b"* AUTH \"PLAIN\"\r\n", Response::Capability { name: v("AUTH"), params: v("\"PLAIN\"") }),
        (
            b"* AUTH \"PLAIN\" \"SCRAM-SHA-256\"\n",
            Response::Capability { name: v("AUTH"), params: v("\"PLAIN\" \"SCRAM-SHA-256\"") },
        ),
        (b"* PARTIAL-UPDATE\r\n", Response::Capability { name: v("PARTIAL-UPDATE"), params: vec![] }),
        (b"* STARTTLS\n", Response::Capability { name: v("STARTTLS"), params: vec![] }),
        (b"* COMPRESS \"DEFLATE\"\r\n", Response::Capability { name: v("COMPRESS"), params: v("\"DEFLATE\"") }),
        (
            b"* OK MUPDATE \"mupdate.example\" \"Cyrus IMAP\" \"3.6.1\" \"(master)\"\r\n",
            Response::Greeting { server_name: v("mupdate.example"), implementation: v("Cyrus IMAP"), version: v("3.6.1") },
        ),
        (
            b"* ok mupdate \"s\" {1+}\r\ni \"v\" \"mupdate://m\"\n",
            Response::Greeting { server_name: v("s"), implementation: v("i"), version: v("v") },
        ),
        (b"A01 OK \"Authenticated\"\r\n", tagged("A01", Status::Ok, "Authenticated")),
        (b"A01 no \"x\"\r\n", tagged("A01", Status::No, "x")),
        (b"* BAD \"Need command\"\r\n", tagged("*", Status::Bad, "Need command")),
        (b"* OK \"MUPDATE\"\r\n", tagged("*", Status::Ok, "MUPDATE")),
        (b"S01 OK Begin TLS negotiation now\r\n", tagged("S01", Status::Ok, "Begin TLS negotiation now")),
        (b"A01 NO Client canceled authentication\n", tagged("A01", Status::No, "Client canceled authentication")),
        (b"A01 BAD {4+}\r\na\r\nb\r\n", tagged("A01", Status::Bad, "a\r\nb")),
        (b"* BYE \"Server Unable\"\r\n", Response::Bye { text: v("Server Unable") }),
        (
            b"U01 MAILBOX {10+}\r\nuser.alice {11+}\r\nbe1!default {21+}\r\nalice\tlrswipkxtecdan\t\r\n",
            Response::Entry {
                tag: v("U01"),
                entry: Entry::Mailbox { name: v("user.alice"), location: v("be1!default"), acl: v("alice\tlrswipkxtecdan\t") },
            },
        ),
        (
            b"F1 RESERVE \"user.bob\" \"be1!\"\r\n",
            Response::Entry { tag: v("F1"), entry: Entry::Reserve { name: v("user.bob"), location: v("be1!") } },
        ),
        (b"U01 DELETE {8}\r\nuser.bob\r\n", Response::Delete { tag: v("U01"), name: v("user.bob") }),
        (b"+ go ahead\r\n", Response::GoAhead),
        (b"+ \"YWJj\"\r\n", Response::Challenge { data: v("abc") }),
        (b"+ YWJj\r\n", Response::Challenge { data: v("abc") }),
        (b"+ \"\"\r\n", Response::Challenge { data: vec![] }),
        (b"X1 RECORD \"a\" \"b\"\r\n", Response::Data { tag: v("X1"), keyword: "RECORD", fields: vec![v("a"), v("b")] }),
        (b"X1 conflict \"a\"\n", Response::Data { tag: v("X1"), keyword: "CONFLICT", fields: vec![v("a")] }),
        (b"X1 GROUP\r\n", Response::Data { tag: v("X1"), keyword: "GROUP", fields: vec![] }),
        (b"X1 PRIMARY {1}\r\ng \"s\"\r\n", Response::Data { tag: v("X1"), keyword: "PRIMARY", fields: vec![v("g"), v("s")] }),
        (b"X1 RIGHTS \"u\"\r\n", Response::Data { tag: v("X1"), keyword: "RIGHTS", fields: vec![v("u")] }),
    ];
    for (input, expected) in cases {
        assert_eq!(parse_response(input), Ok(expected), "{:?}", String::from_utf8_lossy(input));
    }
    let errors: Vec<&[u8]> = vec![
        b"",
        b"\r\n",
        b"X1\r\n",
        b"X1 \r\n",
        b"* \r\n",
        b"X1 FOO \"a\"\r\n",
        b"X1 MAILBOX \"a\" \"b\"\r\n",
        b"X1 MAILBOX \"a\" \"b\" \"c\" \"d\"\r\n",
        b"X1 RESERVE \"a\" b\r\n",
        b"X1 DELETE a\r\n",
        b"X1 RECORD a\r\n",
        b"X1 OK\r\n",
        b"* OK MUPDATE \"a\" \"b\" \"c\"\r\n",
        b"+ !!\r\n",
        b"+ \"YWJj\" x\r\n",
    ];
    for input in errors {
        assert!(parse_response(input).is_err(), "{:?}", String::from_utf8_lossy(input));
    }
}

/// Frame `bytes` (ignoring go-aheads) and check it is exactly one message.
fn framed(bytes: &[u8]) -> &[u8] {
    let mut framer = Framer::new(Limits::default());
    for _ in 0..=bytes.len() {
        match framer.decode(bytes) {
            Ok(Decoded::Message(n)) => {
                assert_eq!(
                    n,
                    bytes.len(),
                    "{:?} is more than one message",
                    String::from_utf8_lossy(bytes)
                );
                return bytes;
            }
            Ok(Decoded::NeedMore { go_ahead: true }) => continue,
            other => panic!("{:?} does not frame: {other:?}", String::from_utf8_lossy(bytes)),
        }
    }
    panic!("endless go-aheads");
}

fn response_round_trip(resp: &Response) {
    let mut out = Vec::new();
    encode::response(resp, &mut out);
    assert_eq!(
        parse_response(framed(&out)).as_ref(),
        Ok(resp),
        "{:?}",
        String::from_utf8_lossy(&out)
    );
}

fn command_round_trip(cmd: &Command) {
    for plus in [true, false] {
        let mut out = Vec::new();
        encode::command(b"T1", cmd, plus, &mut out);
        match parse_line(framed(&out)) {
            Line::Command { tag, args, .. } => {
                assert_eq!(tag, b"T1");
                assert_eq!(args.as_ref(), Ok(cmd), "{:?}", String::from_utf8_lossy(&out));
            }
            other => panic!("{:?} parsed as {other:?}", String::from_utf8_lossy(&out)),
        }
    }
}

#[test]
fn known_answer_round_trips() {
    let awkward = [
        v(""),
        v("user.alice"),
        v("alice\tlrswipkxtecdan\tanyone\tlrs\t"),
        v("say \"hi\" \\o/"),
        v("two\r\nlines"),
        v("bare\nlf"),
        v("ends with {3}"),
        v("{3}\r\n"),
        v("\\"),
        v("\""),
        vec![b'x'; 1024],
        vec![b'y'; 1025],
        b"\xff\xfe latin-1 \xe9".to_vec(),
    ];
    for s in &awkward {
        let tag = v("U01");
        response_round_trip(&Response::Tagged {
            tag: tag.clone(),
            status: Status::No,
            text: s.clone(),
        });
        response_round_trip(&Response::Bye { text: s.clone() });
        response_round_trip(&Response::Entry {
            tag: tag.clone(),
            entry: Entry::Mailbox { name: s.clone(), location: s.clone(), acl: s.clone() },
        });
        response_round_trip(&Response::Entry {
            tag: tag.clone(),
            entry: Entry::Reserve { name: s.clone(), location: s.clone() },
        });
        response_round_trip(&Response::Delete { tag: tag.clone(), name: s.clone() });
        response_round_trip(&Response::Greeting {
            server_name: s.clone(),
            implementation: s.clone(),
            version: s.clone(),
        });
        response_round_trip(&Response::Challenge { data: s.clone() });
        response_round_trip(&Response::Data {
            tag: tag.clone(),
            keyword: "RECORD",
            fields: vec![s.clone(), s.clone()],
        });
        command_round_trip(&Command::Activate {
            name: s.clone(),
            location: s.clone(),
            acl: s.clone(),
        });
        command_round_trip(&Command::Find { name: s.clone() });
        command_round_trip(&Command::List { prefix: Some(s.clone()) });
        command_round_trip(&Command::Authenticate {
            mechanism: s.clone(),
            initial_response: Some(s.clone()),
        });
    }
    response_round_trip(&Response::Capability {
        name: v("AUTH"),
        params: v("\"PLAIN\" \"SCRAM-SHA-256\""),
    });
    response_round_trip(&Response::Capability { name: v("PARTIAL-UPDATE"), params: vec![] });
    response_round_trip(&Response::GoAhead);
    response_round_trip(&Response::Tagged {
        tag: v("*"),
        status: Status::Bad,
        text: v("Need command"),
    });
    command_round_trip(&Command::Authenticate {
        mechanism: v("PLAIN"),
        initial_response: Some(b"\0alice\0pw".to_vec()),
    });
    command_round_trip(&Command::Authenticate {
        mechanism: v("PLAIN"),
        initial_response: Some(vec![]),
    });
    command_round_trip(&Command::Authenticate { mechanism: v("PLAIN"), initial_response: None });
    command_round_trip(&Command::Update { hosts: vec![] });
    command_round_trip(&Command::Update {
        hosts: (0..30).map(|i| format!("be{i}").into_bytes()).collect(),
    });
    command_round_trip(&Command::List { prefix: None });
}

#[test]
fn never_panics_on_prefixes_of_awkward_input() {
    let inputs: [&[u8]; 4] = [
        b"X1 ACTIVATE {10+}\r\nuser.alice {23+}\r\n127.0.0.1:14101!default {21+}\r\nalice\tlrswipkxtecdan\t\r\n",
        b"A01 AUTHENTICATE \"PLAIN\" {32+}\r\nbXVwZGF0ZXIAbXVwZGF0ZXIAc2VjcmV0\r\n",
        b"U01 UPDATE \"a\\\" {99999999999999999999999+}\r\n\"\r\n",
        b"* OK MUPDATE \"a\" {3}\r\nb\0c \"v\" \"(master)\"\r\n",
    ];
    for input in inputs {
        for k in 0..=input.len() {
            let _ = parse_line(&input[..k]);
            let _ = parse_response(&input[..k]);
            let _ = parse_auth_answer(&input[..k]);
        }
    }
}

/// Bytes that stress quoting and framing, no NUL (no Cyrus peer can carry one).
fn wire_bytes() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        3 => prop::sample::select(b"\"\\\r\n\t {}+*()=!.".to_vec()),
        5 => 1u8..=255u8,
    ];
    prop_oneof![
        8 => prop::collection::vec(byte, 0..24),
        1 => (1020usize..1030).prop_map(|n| vec![b'z'; n]),
    ]
}

fn nonempty_wire_bytes() -> impl Strategy<Value = Vec<u8>> {
    wire_bytes().prop_filter("UPDATE hosts are not empty", |s| !s.is_empty())
}

fn admin_verb() -> impl Strategy<Value = AdminVerb> {
    prop::sample::select(vec![
        AdminVerb::Records,
        AdminVerb::Conflicts,
        AdminVerb::Resolve,
        AdminVerb::Groups,
        AdminVerb::Primary,
        AdminVerb::DeleteRecord,
        AdminVerb::Rights,
    ])
}

fn any_command() -> impl Strategy<Value = Command> {
    prop_oneof![
        (wire_bytes(), prop::option::of(prop::collection::vec(any::<u8>(), 0..40))).prop_map(
            |(mechanism, initial_response)| Command::Authenticate { mechanism, initial_response }
        ),
        (wire_bytes(), wire_bytes(), wire_bytes())
            .prop_map(|(name, location, acl)| { Command::Activate { name, location, acl } }),
        (wire_bytes(), wire_bytes())
            .prop_map(|(name, location)| Command::Reserve { name, location }),
        (wire_bytes(), wire_bytes())
            .prop_map(|(name, location)| Command::Deactivate { name, location }),
        wire_bytes().prop_map(|name| Command::Delete { name }),
        wire_bytes().prop_map(|name| Command::Find { name }),
        prop::option::of(wire_bytes()).prop_map(|prefix| Command::List { prefix }),
        prop::collection::vec(nonempty_wire_bytes(), 0..=30)
            .prop_map(|hosts| Command::Update { hosts }),
        Just(Command::Noop),
        Just(Command::Logout),
        Just(Command::Starttls),
        wire_bytes().prop_map(|algorithm| Command::Compress { algorithm }),
        (admin_verb(), prop::collection::vec(wire_bytes(), 0..4))
            .prop_map(|(verb, args)| Command::Admin { verb, args }),
    ]
}

fn tag() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop::sample::select(b"ABCXUaz019.".to_vec()), 1..8)
}

fn any_response() -> impl Strategy<Value = Response> {
    let status = prop::sample::select(vec![Status::Ok, Status::No, Status::Bad]);
    prop_oneof![
        (
            prop::sample::select(vec!["AUTH", "STARTTLS", "PARTIAL-UPDATE", "COMPRESS", "XADMIN"]),
            prop::collection::vec(prop::sample::select(b"\"ABC -=".to_vec()), 0..20)
        )
            .prop_map(|(name, params)| Response::Capability {
                name: name.as_bytes().to_vec(),
                params: params.into_iter().skip_while(|&b| b == b' ').collect()
            }),
        (wire_bytes(), wire_bytes(), wire_bytes()).prop_map(
            |(server_name, implementation, version)| Response::Greeting {
                server_name,
                implementation,
                version
            }
        ),
        (prop_oneof![tag(), Just(b"*".to_vec())], status, wire_bytes())
            .prop_map(|(tag, status, text)| Response::Tagged { tag, status, text }),
        wire_bytes().prop_map(|text| Response::Bye { text }),
        (tag(), wire_bytes(), wire_bytes(), wire_bytes()).prop_map(|(tag, name, location, acl)| {
            Response::Entry { tag, entry: Entry::Mailbox { name, location, acl } }
        }),
        (tag(), wire_bytes(), wire_bytes()).prop_map(|(tag, name, location)| Response::Entry {
            tag,
            entry: Entry::Reserve { name, location }
        }),
        (tag(), wire_bytes()).prop_map(|(tag, name)| Response::Delete { tag, name }),
        Just(Response::GoAhead),
        prop::collection::vec(any::<u8>(), 0..64).prop_map(|data| Response::Challenge { data }),
        (
            tag(),
            prop::sample::select(vec!["RECORD", "CONFLICT", "GROUP", "PRIMARY", "RIGHTS"]),
            prop::collection::vec(wire_bytes(), 0..4)
        )
            .prop_map(|(tag, keyword, fields)| Response::Data { tag, keyword, fields }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn commands_round_trip(cmd in any_command()) {
        command_round_trip(&cmd);
    }

    #[test]
    fn responses_round_trip(resp in any_response()) {
        response_round_trip(&resp);
    }

    #[test]
    fn parsers_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = parse_line(&bytes);
        let _ = parse_response(&bytes);
        let _ = parse_auth_answer(&bytes);
    }
}
