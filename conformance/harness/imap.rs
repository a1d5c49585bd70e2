//! A small blocking IMAP client: just the mailbox-management commands the
//! murder scenarios need, every argument sent as a quoted string.

use std::io::{self, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use super::wire::{quoted, read_logical_line, tokenize};

/// Read/write timeout for IMAP commands. Frontend commands wait for the
/// backend and for the slave's NOOP round trip to the master.
const IO_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Imap {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    next_tag: u32,
    pub greeting: String,
}

/// The answer to one command.
#[derive(Debug, Clone)]
pub struct ImapReply {
    /// The command as sent (for messages).
    pub command: String,
    /// Untagged lines, literals inlined as `{n}\r\n<bytes>`.
    pub untagged: Vec<Vec<u8>>,
    /// OK, NO or BAD.
    pub status: String,
    /// The rest of the tagged line.
    pub text: String,
}

impl ImapReply {
    pub fn is_ok(&self) -> bool {
        self.status == "OK"
    }

    /// Panics unless the command completed with OK.
    #[track_caller]
    pub fn assert_ok(&self) -> &Self {
        assert!(
            self.is_ok(),
            "IMAP {} answered {} {}",
            self.command,
            self.status,
            self.text
        );
        self
    }

    /// Panics unless the command completed with NO.
    #[track_caller]
    pub fn assert_no(&self) -> &Self {
        assert_eq!(
            self.status, "NO",
            "IMAP {} answered {} {}",
            self.command, self.status, self.text
        );
        self
    }
}

impl Imap {
    pub fn connect(port: u16) -> io::Result<Imap> {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        let _ = stream.set_nodelay(true);
        let mut reader = BufReader::new(stream.try_clone()?);
        let greeting = String::from_utf8_lossy(&read_logical_line(&mut reader)?).into_owned();
        if !greeting.starts_with("* OK") {
            return Err(io::Error::other(format!("IMAP greeting: {greeting:?}")));
        }
        Ok(Imap {
            reader,
            writer: stream,
            next_tag: 1,
            greeting,
        })
    }

    /// Connects and logs in; panics on failure.
    #[track_caller]
    pub fn login(port: u16, user: &str, password: &str) -> Imap {
        let mut imap =
            Imap::connect(port).unwrap_or_else(|e| panic!("IMAP connect to port {port}: {e}"));
        imap.command(&format!("LOGIN {} {}", quoted(user), quoted(password)))
            .assert_ok();
        imap
    }

    /// `CREATE name` or `CREATE name server!partition` (the Cyrus murder form).
    pub fn create(&mut self, name: &str, location: Option<&str>) -> ImapReply {
        match location {
            // Cyrus reads the location as an atom: a quoted one is "extra arguments".
            Some(loc) => self.command(&format!("CREATE {} {loc}", quoted(name))),
            None => self.command(&format!("CREATE {}", quoted(name))),
        }
    }

    pub fn rename(&mut self, from: &str, to: &str) -> ImapReply {
        self.command(&format!("RENAME {} {}", quoted(from), quoted(to)))
    }

    pub fn delete(&mut self, name: &str) -> ImapReply {
        self.command(&format!("DELETE {}", quoted(name)))
    }

    pub fn setacl(&mut self, name: &str, identifier: &str, rights: &str) -> ImapReply {
        self.command(&format!(
            "SETACL {} {} {}",
            quoted(name),
            quoted(identifier),
            quoted(rights)
        ))
    }

    pub fn deleteacl(&mut self, name: &str, identifier: &str) -> ImapReply {
        self.command(&format!(
            "DELETEACL {} {}",
            quoted(name),
            quoted(identifier)
        ))
    }

    pub fn select(&mut self, name: &str) -> ImapReply {
        self.command(&format!("SELECT {}", quoted(name)))
    }

    /// `LIST "" "*"`: the mailbox names, in the order the server sent them.
    #[track_caller]
    pub fn list(&mut self) -> Vec<String> {
        let reply = self.command("LIST \"\" \"*\"");
        reply.assert_ok();
        let mut names = Vec::new();
        for line in &reply.untagged {
            let tokens = tokenize(line)
                .unwrap_or_else(|e| panic!("LIST line {:?}: {e}", String::from_utf8_lossy(line)));
            if tokens.len() == 5
                && tokens[1]
                    .text()
                    .is_some_and(|k| k.eq_ignore_ascii_case("LIST"))
            {
                if let Some(name) = tokens[4].text() {
                    names.push(name.to_string());
                }
            }
        }
        names
    }

    /// Sends `TAG <line>` and reads up to the tagged completion.
    /// Panics on I/O errors: a dead server fails the test.
    #[track_caller]
    pub fn command(&mut self, line: &str) -> ImapReply {
        match self.try_command(line) {
            Ok(r) => r,
            Err(e) => panic!("IMAP {line}: {e}"),
        }
    }

    pub fn try_command(&mut self, line: &str) -> io::Result<ImapReply> {
        let tag = format!("T{}", self.next_tag);
        self.next_tag += 1;
        self.writer
            .write_all(format!("{tag} {line}\r\n").as_bytes())?;
        self.writer.flush()?;
        let mut untagged = Vec::new();
        loop {
            let l = read_logical_line(&mut self.reader)?;
            if let Some(rest) = l.strip_prefix(format!("{tag} ").as_bytes()) {
                let rest = String::from_utf8_lossy(rest).into_owned();
                let (status, text) = rest.split_once(' ').unwrap_or((rest.as_str(), ""));
                return Ok(ImapReply {
                    command: line.to_string(),
                    untagged,
                    status: status.to_ascii_uppercase(),
                    text: text.to_string(),
                });
            }
            if l.starts_with(b"+") {
                return Err(io::Error::other("unexpected continuation request"));
            }
            untagged.push(l);
        }
    }

    pub fn logout(mut self) {
        let _ = self.try_command("LOGOUT");
    }
}
