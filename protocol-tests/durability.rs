//! kill -9 while several clients ACTIVATE: after a restart every ACTIVATE
//! that was answered OK is there.

use std::collections::BTreeSet;
use std::process::{Child, Command as Process, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mupdated::tools::client::Client;
use mupdated::protocol::Command;

/// The daemon as a child process, killed by its own PID on drop.
pub(crate) struct Daemon(pub(crate) Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A minimal configuration: one admin login, the given address and data.
pub(crate) fn write_config(path: &std::path::Path, addr: &str, data: &std::path::Path) {
    let text = format!(
        "listen = [\"{addr}\"]\ndata_dir = \"{}\"\n[[users]]\nname = \"mupdater\"\npassword = \"secret\"\nrole = \"admin\"\n",
        data.display()
    );
    std::fs::write(path, text).unwrap();
}

pub(crate) async fn start(config: &std::path::Path, addr: &str) -> Daemon {
    start_logging(config, addr, Stdio::inherit()).await
}

/// Start the daemon with its log (stderr) sent to `log`.
pub(crate) async fn start_logging(config: &std::path::Path, addr: &str, log: Stdio) -> Daemon {
    let child = Process::new(env!("CARGO_BIN_EXE_mupdated"))
        .arg("--config")
        .arg(config)
        .arg("--log")
        .arg("warn")
        .stdin(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start mupdated");
    let mut d = Daemon(child);
    for _ in 0..400 {
        if let Ok(Some(status)) = d.0.try_wait() {
            panic!("mupdated exited at start: {status}");
        }
        if Client::connect(addr, Duration::from_secs(1)).await.is_ok() {
            return d;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("mupdated did not start on {addr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_activates_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let config = dir.path().join("mupdated.toml");
    write_config(&config, &addr, &dir.path().join("data"));
    let mut daemon = start(&config, &addr).await;
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let mut writers = Vec::new();
    for w in 0..6 {
        let acked = acked.clone();
        let addr = addr.clone();
        writers.push(tokio::spawn(async move {
            let Ok((mut c, _)) = Client::connect(&addr, Duration::from_secs(5)).await else { return };
            if c.authenticate("mupdater", "secret").await.is_err() {
                return;
            }
            for i in 0.. {
                let name = format!("user.w{w}.m{i}");
                let cmd = Command::Activate {
                    name: name.clone().into_bytes(),
                    location: b"be1!default".to_vec(),
                    acl: b"anyone\tlrs\t".to_vec(),
                };
                match c.run_ok(&cmd).await {
                    Ok(_) => {
                        acked.lock().unwrap().insert(name);
                    }
                    Err(_) => return,
                }
            }
        }));
    }
    // Let the writers get going, then kill without warning.
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if acked.lock().unwrap().len() > 300 {
            break;
        }
    }
    kill_9(&mut daemon);
    for w in writers {
        let _ = w.await;
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 50, "writers made progress before the kill ({})", acked.len());

    let _daemon = start(&config, &addr).await;
    let (mut c, _) = Client::connect(&addr, Duration::from_secs(5)).await.unwrap();
    c.authenticate("mupdater", "secret").await.unwrap();
    let listed: BTreeSet<String> =
        c.list(None).await.unwrap().iter().map(|e| String::from_utf8_lossy(e.name()).into_owned()).collect();
    let lost: Vec<_> = acked.difference(&listed).collect();
    assert!(lost.is_empty(), "{} acknowledged ACTIVATEs lost after kill -9, e.g. {:?}", lost.len(), lost.first());
}

/// SIGKILL by PID (std's Child::kill sends SIGKILL on Unix).
pub(crate) fn kill_9(d: &mut Daemon) {
    d.0.kill().expect("kill -9");
    let _ = d.0.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_says_bye_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let config = dir.path().join("mupdated.toml");
    write_config(&config, &addr, &dir.path().join("data"));
    let mut daemon = start(&config, &addr).await;
    let (mut c, _) = Client::connect(&addr, Duration::from_secs(5)).await.unwrap();
    c.authenticate("mupdater", "secret").await.unwrap();
    c.run_ok(&Command::Activate { name: b"user.a".to_vec(), location: b"be1!p".to_vec(), acl: vec![] }).await.unwrap();
    c.run_ok(&Command::Update { hosts: vec![] }).await.unwrap();
    let pid = daemon.0.id().to_string();
    let st = Process::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(st.success());
    match c.read_response().await {
        Ok(mupdated::protocol::Response::Bye { text }) => assert_eq!(text, b"server shutting down"),
        other => panic!("expected a BYE, got {other:?}"),
    }
    let status = tokio::task::spawn_blocking(move || {
        let s = daemon.0.wait();
        (s, daemon)
    })
    .await
    .unwrap()
    .0
    .unwrap();
    assert!(status.success(), "exit status {status:?}");
    // The data is there after a clean stop.
    let _daemon = start(&config, &addr).await;
    let (mut c, _) = Client::connect(&addr, Duration::from_secs(5)).await.unwrap();
    c.authenticate("mupdater", "secret").await.unwrap();
    assert!(c.find(b"user.a").await.unwrap().is_some());
}
