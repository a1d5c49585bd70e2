//! Transcript tests: each file in protocol-tests/transcripts is played
//! byte for byte against an in-process mupdated with a fresh database.
//! Format: src/tools/transcript.rs. Users of the test server:
//! `mupdater`/`secret` (admin), `be1`/`be1pw` (backend of server be1),
//! `be2`/`be2pw` (backend of be2), `be1a`/`be1apw` and `be1b`/`be1bpw`
//! (backends of be1a and be1b), `fe`/`fepw` (reader).

mod server;

use std::time::Duration;

use mupdated::tools::replay::{play, Mode};
use mupdated::tools::transcript;
use server::TestServer;

async fn run(name: &str, text: &str) {
    let server = TestServer::start().await;
    let steps = transcript::parse(text).unwrap_or_else(|e| panic!("{name}: {e}"));
    let report = play(&server.addr(), &steps, Mode::Exact, mupdated::session::VERSION, Duration::from_secs(5)).await;
    assert!(report.matched(), "{name}: server answers differ from the transcript\n{}", report.render());
    server.stop().await;
}

macro_rules! transcripts {
    ($($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                run(stringify!($name), include_str!(concat!("transcripts/", stringify!($name), ".txt"))).await;
            }
        )*
    };
}

transcripts!(
    greeting_and_logout,
    authenticate,
    authenticate_failures,
    before_login,
    command_errors,
    string_forms,
    writes_and_find,
    list_order,
    list_prefix,
    unknown_names,
    update_stream,
    partial_update,
    roles,
    limits,
    admin,
);

mod bench_smoke;
mod cli;
mod cli_migrate;
mod connections;
mod daemon_limits;
mod robustness;
mod durability;
mod fulldisk;
mod fusefs;
mod powercut;
mod integrity;
mod fuzz_smoke;
mod limits;
mod listeners;
mod tls;
mod replay;
