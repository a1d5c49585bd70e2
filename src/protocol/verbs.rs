//! The one table of command words. The parser finds a word's [`Verb`]
//! here, the encoder writes a command's word from here, and the session
//! (`src/session/cmd/mod.rs`) maps each verb to the file that handles it:
//! a verb's name is written nowhere else.

use super::types::{AdminVerb, Command, Verb};

/// Every command word, as `imap/mupdate.c: docmd` compares it after its
/// case folding (the comparison here ignores case), then this project's
/// admin extensions (Cyrus has no command starting with `X`).
pub const VERBS: [(&str, Verb); 20] = [
    ("AUTHENTICATE", Verb::Authenticate),
    ("ACTIVATE", Verb::Activate),
    ("COMPRESS", Verb::Compress),
    ("DEACTIVATE", Verb::Deactivate),
    ("DELETE", Verb::Delete),
    ("FIND", Verb::Find),
    ("LIST", Verb::List),
    ("LOGOUT", Verb::Logout),
    ("NOOP", Verb::Noop),
    ("RESERVE", Verb::Reserve),
    ("STARTTLS", Verb::Starttls),
    ("UPDATE", Verb::Update),
    ("XRECORDS", Verb::Admin(AdminVerb::Records)),
    ("XCONFLICTS", Verb::Admin(AdminVerb::Conflicts)),
    ("XRESOLVE", Verb::Admin(AdminVerb::Resolve)),
    ("XGROUPS", Verb::Admin(AdminVerb::Groups)),
    ("XPRIMARY", Verb::Admin(AdminVerb::Primary)),
    ("XDELETE", Verb::Admin(AdminVerb::DeleteRecord)),
    ("XRIGHTS", Verb::Admin(AdminVerb::Rights)),
    ("XEXPORT", Verb::Admin(AdminVerb::Export)),
];

/// The verb of a command word, any case; `None` for a word that is no
/// command.
pub fn lookup(word: &[u8]) -> Option<Verb> {
    VERBS.iter().find(|(name, _)| word.eq_ignore_ascii_case(name.as_bytes())).map(|(_, v)| *v)
}

impl Verb {
    /// The command word (upper case); empty for [`Verb::Unknown`].
    pub fn name(self) -> &'static str {
        VERBS.iter().find(|(_, v)| *v == self).map_or("", |(name, _)| name)
    }
}

impl AdminVerb {
    /// The command word of an admin extension.
    pub fn name(self) -> &'static str {
        Verb::Admin(self).name()
    }
}

impl Command {
    /// The verb this command is sent with.
    pub fn verb(&self) -> Verb {
        match self {
            Command::Authenticate { .. } => Verb::Authenticate,
            Command::Activate { .. } => Verb::Activate,
            Command::Reserve { .. } => Verb::Reserve,
            Command::Deactivate { .. } => Verb::Deactivate,
            Command::Delete { .. } => Verb::Delete,
            Command::Find { .. } => Verb::Find,
            Command::List { .. } => Verb::List,
            Command::Update { .. } => Verb::Update,
            Command::Noop => Verb::Noop,
            Command::Logout => Verb::Logout,
            Command::Starttls => Verb::Starttls,
            Command::Compress { .. } => Verb::Compress,
            Command::Admin { verb, .. } => Verb::Admin(*verb),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_verb_has_one_name_and_back() {
        for (name, verb) in VERBS {
            assert_eq!(verb.name(), name);
            assert_eq!(lookup(name.as_bytes()), Some(verb));
            assert_eq!(lookup(name.to_ascii_lowercase().as_bytes()), Some(verb));
        }
        let names: std::collections::HashSet<_> = VERBS.iter().map(|(n, _)| n).collect();
        assert_eq!(names.len(), VERBS.len(), "a word twice in the table");
        assert_eq!(lookup(b"XNOSUCH"), None);
        assert_eq!(Verb::Unknown { needs_login: true }.name(), "");
    }
}
