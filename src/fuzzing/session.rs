//! Whole sessions under fuzzing: command sequences from several logins
//! (admin, two backends of one replica group, an unrelated backend, a
//! reader) against a fresh directory (on the in-memory engine), while an UPDATE stream follows and
//! hostile connections send raw bytes in between. Every connection is an
//! in-memory stream (`tokio::io::duplex`) served by a session of its own:
//! no TCP, no ports.
//!
//! What must hold for any input:
//! - every command gets its tagged answer (no hang, no lost answer), and a
//!   raw connection never takes the server down;
//! - roles hold: a reader's write is `BAD "read-only session"`, a backend's
//!   write about another server's location is refused;
//! - after a NOOP barrier the UPDATE stream's view of the directory equals
//!   LIST, entry for entry, and FIND of every name agrees with LIST.

use std::collections::BTreeMap;
use std::time::Duration;

use std::sync::Arc;

use tokio::io::DuplexStream;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::app::App;
use crate::config::Config;
use crate::protocol::{AdminVerb, Command, Entry, Response, Status};
use crate::session::{Peer, Session};
use crate::tools::client;

/// A client over an in-memory connection.
type Client = client::Client<DuplexStream>;

/// Room in each direction of an in-memory connection.
const PIPE: usize = 64 * 1024;

/// The directory's shared state and the sessions serving connections.
struct Server {
    app: Arc<App>,
    stop: watch::Receiver<bool>,
    sessions: JoinSet<()>,
}

impl Server {
    /// A new connection, its session started; the client has read the greeting.
    async fn connect(&mut self) -> Client {
        let (server_end, client_end) = tokio::io::duplex(PIPE);
        let session = Session::new(server_end, self.app.clone(), Peer::None, self.stop.clone());
        self.sessions.spawn(async move {
            let _ = session.run().await;
        });
        client::Client::over(client_end, ANSWER).await.expect("connect").0
    }
}

/// How long any one answer may take before the session counts as hung.
const ANSWER: Duration = Duration::from_secs(10);

const NAMES: &[&[u8]] = &[
    b"user.a",
    b"user.a.b",
    b"user.b",
    b"shared x",
    b"user.c^d",
    b"u",
    b"user.a.c",
];
const LOCATIONS: &[&[u8]] = &[
    b"be1!p1", b"be1!p2", b"be1b!p1", b"be2!p1", b"be2!p2", b"nobang",
];
const ACLS: &[&[u8]] = &[
    b"",
    b"anyone\tlrs\t",
    b"a\tlrswipkxtecda\tb\tlr\t",
    b"-anyone\tr\ta\tl\ta\tlr\t",
];
const SERVERS: &[&[u8]] = &[b"be1", b"be1b", b"be2", b"nosuch", b""];

/// Logins, in the order the input selects them: (user, password, servers
/// it may speak for; `None`: any, `Some(empty)`: read-only).
/// A login of the fuzzed sessions.
type Login = (&'static str, &'static str, Option<&'static [&'static [u8]]>);

const LOGINS: &[Login] = &[
    ("mupdater", "secret", None),
    ("be1", "be1pw", Some(&[b"be1"])),
    ("be1b", "be1bpw", Some(&[b"be1b"])),
    ("be2", "be2pw", Some(&[b"be2"])),
    ("fe", "fepw", Some(&[])),
];

const CONFIG: &str = r#"
listen = ["127.0.0.1:0"]
failed_login_pause = 0
login_timeout = 10

[[users]]
name = "mupdater"
password = "secret"
role = "admin"

[[users]]
name = "be1"
password = "be1pw"
role = "backend"
servers = ["be1"]

[[users]]
name = "be1b"
password = "be1bpw"
role = "backend"
servers = ["be1b"]

[[users]]
name = "be2"
password = "be2pw"
role = "backend"
servers = ["be2"]

[[users]]
name = "fe"
password = "fepw"
role = "reader"

[[replica_groups]]
name = "g1"
servers = ["be1", "be1b"]
"#;

/// The input, read a byte at a time; zeros once it is used up.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    fn pick<'t, T>(&mut self, table: &'t [T]) -> &'t T {
        &table[self.byte() as usize % table.len()]
    }
    fn take(&mut self, n: usize) -> &[u8] {
        let (a, b) = self.0.split_at(n.min(self.0.len()));
        self.0 = b;
        a
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Run one case: `data` drives the commands (see the module doc).
pub fn session(data: &[u8]) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(data));
}

async fn run(data: &[u8]) {
    // The directory on the in-memory engine: the whole session, no disk.
    let config = Config::parse(CONFIG).expect("fuzz config");
    let app = App::in_memory(config).expect("store opens");
    let (stop_tx, stop) = watch::channel(false);
    let server = &mut Server { app: Arc::new(app), stop, sessions: JoinSet::new() };

    let mut stream = login(server, 4).await;
    let mut view = BTreeMap::new();
    let tag = stream
        .send(&Command::Update { hosts: vec![] })
        .await
        .expect("UPDATE sent");
    read_stream(&mut stream, &tag, &mut view).await;

    let mut sessions: Vec<Option<Client>> = (0..LOGINS.len()).map(|_| None).collect();
    let mut input = Input(data);
    let mut current = 0usize;
    while !input.is_empty() {
        let op = input.byte();
        if op % 16 == 7 {
            current = input.byte() as usize % LOGINS.len();
            continue;
        }
        if op % 16 == 8 {
            hostile(server, &mut input).await;
            continue;
        }
        if op % 16 == 9 {
            check(server, &mut stream, &tag, &mut view).await;
            continue;
        }
        let cmd = command(op, &mut input);
        let client = match &mut sessions[current] {
            Some(c) => c,
            slot => slot.insert(login(server, current).await),
        };
        let (status, text) = answer(client, &cmd).await;
        check_role(current, &cmd, status, &text);
    }
    check(server, &mut stream, &tag, &mut view).await;

    drop(sessions);
    drop(stream);
    let _ = stop_tx.send(true);
    while server.sessions.join_next().await.is_some() {}
}

async fn login(server: &mut Server, who: usize) -> Client {
    let (user, password, _) = LOGINS[who];
    let mut c = server.connect().await;
    c.authenticate(user, password)
        .await
        .unwrap_or_else(|e| panic!("login {user}: {e}"));
    c
}

/// The next structured command.
fn command(op: u8, input: &mut Input) -> Command {
    let n = |i: &mut Input| i.pick(NAMES).to_vec();
    let l = |i: &mut Input| i.pick(LOCATIONS).to_vec();
    match op % 16 {
        0 | 10 => Command::Activate {
            name: n(input),
            location: l(input),
            acl: input.pick(ACLS).to_vec(),
        },
        1 | 11 => Command::Reserve {
            name: n(input),
            location: l(input),
        },
        2 => Command::Deactivate {
            name: n(input),
            location: l(input),
        },
        3 | 12 => Command::Delete { name: n(input) },
        4 => Command::Find { name: n(input) },
        5 => match input.byte() % 3 {
            0 => Command::List { prefix: None },
            1 => Command::List {
                prefix: Some(input.pick(SERVERS).to_vec()),
            },
            _ => Command::List {
                prefix: Some(l(input)),
            },
        },
        6 => match input.byte() % 5 {
            0 => Command::Admin {
                verb: AdminVerb::Resolve,
                args: vec![n(input), input.pick(SERVERS).to_vec()],
            },
            1 => Command::Admin {
                verb: AdminVerb::DeleteRecord,
                args: vec![n(input), l(input)],
            },
            2 => Command::Admin {
                verb: AdminVerb::Primary,
                args: vec![b"g1".to_vec(), input.pick(SERVERS).to_vec()],
            },
            3 => Command::Admin {
                verb: AdminVerb::Records,
                args: vec![n(input)],
            },
            _ => Command::Admin {
                verb: AdminVerb::Rights,
                args: vec![input.pick(&[&b"a"[..], b"b", b"anyone"]).to_vec()],
            },
        },
        _ => Command::Noop,
    }
}

/// Send a command and read to its tagged answer.
async fn answer(client: &mut Client, cmd: &Command) -> (Status, String) {
    let tag = client
        .send(cmd)
        .await
        .unwrap_or_else(|e| panic!("sending {cmd:?}: {e}"));
    loop {
        match client.read_response().await {
            Ok(Response::Tagged {
                tag: t,
                status,
                text,
            }) if t == tag => return (status, String::from_utf8_lossy(&text).into_owned()),
            Ok(Response::Tagged { tag: t, .. }) => {
                panic!("answer for tag {t:?} while waiting for {tag:?}")
            }
            Ok(Response::Bye { text }) => {
                panic!("{cmd:?} got BYE {:?}", String::from_utf8_lossy(&text))
            }
            Ok(_) => {}
            Err(e) => panic!("{cmd:?}: no answer: {e}"),
        }
    }
}

fn is_write(cmd: &Command) -> bool {
    matches!(
        cmd,
        Command::Activate { .. }
            | Command::Reserve { .. }
            | Command::Deactivate { .. }
            | Command::Delete { .. }
    )
}

fn location(cmd: &Command) -> Option<&[u8]> {
    match cmd {
        Command::Activate { location, .. }
        | Command::Reserve { location, .. }
        | Command::Deactivate { location, .. } => Some(location),
        _ => None,
    }
}

fn check_role(who: usize, cmd: &Command, status: Status, text: &str) {
    let (user, _, servers) = LOGINS[who];
    let admin_cmd = matches!(cmd, Command::Admin { .. });
    match servers {
        Some([]) if is_write(cmd) => {
            assert_eq!(
                (status, text),
                (Status::Bad, crate::protocol::cyrus::READ_ONLY),
                "{user}: {cmd:?}"
            )
        }
        Some(_) if admin_cmd => assert_eq!(status, Status::Bad, "{user} may not use {cmd:?}"),
        Some(own) => {
            if let Some(loc) = location(cmd) {
                let server = crate::store::key::server_of(loc);
                if !own.contains(&server) {
                    assert_eq!(
                        status,
                        Status::No,
                        "{user} asserted a fact about {loc:?}: {text}"
                    );
                }
            }
        }
        None => {}
    }
    assert!(
        !text.contains("internal error"),
        "{user}: {cmd:?} answered {status:?} {text:?}"
    );
}

/// A connection that sends raw bytes (after a login or not) and goes away.
async fn hostile(server: &mut Server, input: &mut Input<'_>) {
    let flags = input.byte();
    let len = input.byte() as usize % 96;
    let bytes = input.take(len).to_vec();
    let mut c = if flags & 1 == 1 {
        login(server, (flags as usize >> 1) % LOGINS.len()).await
    } else {
        server.connect().await
    };
    let _ = c.send_raw(&bytes).await;
    let _ = tokio::time::timeout(Duration::from_millis(20), c.read_message()).await;
}

/// Apply the stream's lines up to the answer of the command tagged `tag`.
async fn read_stream(stream: &mut Client, tag: &[u8], view: &mut BTreeMap<Vec<u8>, Entry>) {
    loop {
        match stream
            .read_response()
            .await
            .unwrap_or_else(|e| panic!("stream: {e}"))
        {
            Response::Entry { entry, .. } => {
                view.insert(entry.name().to_vec(), entry);
            }
            Response::Delete { name, .. } => {
                view.remove(&name);
            }
            Response::Tagged {
                tag: t,
                status,
                text,
            } if t == tag => {
                assert_eq!(
                    status,
                    Status::Ok,
                    "stream: {:?}",
                    String::from_utf8_lossy(&text)
                );
                return;
            }
            other => panic!("stream sent {other:?}"),
        }
    }
}

/// NOOP barrier on the stream, then its view must equal LIST, and FIND
/// of each name must agree with LIST.
async fn check(
    server: &mut Server,
    stream: &mut Client,
    _update_tag: &[u8],
    view: &mut BTreeMap<Vec<u8>, Entry>,
) {
    let noop = stream.send(&Command::Noop).await.expect("NOOP sent");
    read_stream(stream, &noop, view).await;
    let mut admin = login(server, 0).await;
    let listed: BTreeMap<Vec<u8>, Entry> = admin
        .list(None)
        .await
        .expect("LIST")
        .into_iter()
        .map(|e| (e.name().to_vec(), e))
        .collect();
    assert_eq!(*view, listed, "the UPDATE stream diverged from LIST");
    for name in NAMES {
        let found = admin.find(name).await.expect("FIND");
        assert_eq!(
            found.as_ref(),
            listed.get(*name),
            "FIND {:?} disagrees with LIST",
            String::from_utf8_lossy(name)
        );
    }
    admin.logout().await;
}
