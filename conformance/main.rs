//! Conformance tests: the same murder scenarios against real Cyrus IMAP
//! 3.6.1 (Debian) with, as MUPDATE master, Cyrus' own `mupdate -m`,
//! mupdated, or any master given by `MUPDATE_MASTER=host:port`.
//! See conformance/README.md.

#[macro_use]
mod macros {
    /// Instantiates a scenario function for each kind of master.
    macro_rules! scenario {
        ($name:ident) => {
            mod $name {
                use crate::harness::MasterKind;

                #[test]
                fn cyrus_master() {
                    super::$name(MasterKind::Cyrus)
                }

                #[test]
                fn mupdated() {
                    super::$name(MasterKind::Mupdated)
                }

                /// Both masters side by side, sessions recorded and compared.
                #[test]
                fn differential() {
                    crate::differential::run(stringify!($name), super::$name)
                }

                #[test]
                #[ignore = "needs MUPDATE_MASTER=host:port"]
                fn external_master() {
                    super::$name(MasterKind::External)
                }
            }
        };
    }
}

mod bench;
mod differential;
mod harness;
mod facts;
mod migration;
mod sasl;
mod scenarios;
mod tls;
mod tls_logins;
mod under_master;
