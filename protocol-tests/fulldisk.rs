//! A full disk: writes get the storage-failing NO and lose nothing that
//! was acknowledged, another session's FIND keeps working, and writes
//! resume without a restart once space is freed; the log has one line
//! per state change.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use mupdated::tools::client::Client;
use mupdated::protocol::{Command, Entry, Status};
use mupdated::session::STORAGE_FAILING;

use crate::durability::{free_port, kill_9, start, start_logging, write_config};
use crate::fusefs::{Image, Mount};

fn activate(name: &str, n: usize) -> (Command, Entry) {
    let acl = format!("c{n}\tlrs\t").into_bytes();
    let location = b"be1!p".to_vec();
    (
        Command::Activate { name: name.into(), location: location.clone(), acl: acl.clone() },
        Entry::Mailbox { name: name.into(), location, acl },
    )
}

async fn login(addr: &str) -> Client {
    let (mut c, _) = Client::connect(addr, Duration::from_secs(10)).await.unwrap();
    c.authenticate("mupdater", "secret").await.unwrap();
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_refuses_writes_and_recovers_without_a_restart() {
    crate::fusefs::require_fuse();
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let config = dir.path().join("mupdated.toml");
    write_config(&config, &addr, &mnt.join("data"));
    let log_path = dir.path().join("mupdated.log");
    let log = std::fs::File::create(&log_path).unwrap();

    let mount = Mount::new(&mnt, Image::new());
    let mut daemon = start_logging(&config, &addr, Stdio::from(log)).await;
    let mut writer = login(&addr).await;
    let mut witness = login(&addr).await;
    // What was acknowledged, name -> entry.
    let mut acked: BTreeMap<String, Entry> = BTreeMap::new();
    let mut n = 0;
    for i in 0..200 {
        let name = format!("user.before{i}");
        let (cmd, entry) = activate(&name, n);
        n += 1;
        writer.run_ok(&cmd).await.unwrap();
        acked.insert(name, entry);
    }

    // Fill the disk: a little room, then nothing.
    mount.set_capacity(mount.used() + (256 << 10));
    let mut refused = 0;
    let t = Instant::now();
    while refused < 20 {
        assert!(t.elapsed() < Duration::from_secs(60), "writes never failed on a full disk ({} acknowledged)", acked.len());
        let name = format!("user.full{n}");
        let (cmd, entry) = activate(&name, n);
        n += 1;
        let (_, status, text) = writer.run(&cmd).await.expect("a full disk closed the writer's connection");
        match status {
            Status::Ok => {
                acked.insert(name, entry);
            }
            Status::No => {
                assert_eq!(text, STORAGE_FAILING, "a write on a full disk");
                refused += 1;
            }
            Status::Bad => panic!("BAD {text} for a write on a full disk"),
        }
        // Another session is served meanwhile.
        let probe = tokio::time::timeout(Duration::from_secs(2), witness.find(b"user.before7")).await;
        let found = probe.expect("witness FIND waited more than 2 s on a full disk").expect("witness FIND");
        assert_eq!(found.as_ref(), acked.get("user.before7"), "witness FIND on a full disk");
    }

    // Free space: writes resume by themselves.
    mount.set_capacity(u64::MAX);
    let t = Instant::now();
    loop {
        let name = format!("user.after{n}");
        let (cmd, entry) = activate(&name, n);
        n += 1;
        let (_, status, text) = writer.run(&cmd).await.expect("writer connection after the disk was freed");
        if status == Status::Ok {
            acked.insert(name, entry);
            break;
        }
        assert_eq!(text, STORAGE_FAILING);
        assert!(t.elapsed() < Duration::from_secs(20), "writes did not resume within 20 s after space was freed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for i in 0..50 {
        let name = format!("user.resumed{i}");
        let (cmd, entry) = activate(&name, n);
        n += 1;
        writer.run_ok(&cmd).await.expect("a write after recovery");
        acked.insert(name, entry);
    }

    // Nothing acknowledged was lost, before and after a restart.
    let check = |listed: Vec<Entry>, when: &str| {
        let listed: BTreeMap<String, Entry> =
            listed.into_iter().map(|e| (String::from_utf8_lossy(e.name()).into_owned(), e)).collect();
        let lost: Vec<_> = acked.iter().filter(|(k, v)| listed.get(*k) != Some(v)).map(|(k, _)| k.clone()).collect();
        assert!(lost.is_empty(), "{} acknowledged writes lost {when}, e.g. {:?}", lost.len(), lost.first());
    };
    check(witness.list(None).await.unwrap(), "after the disk was freed");
    kill_9(&mut daemon);
    let log = std::fs::read_to_string(&log_path).unwrap();
    let failing = log.lines().filter(|l| l.contains("storage failing")).count();
    let recovered = log.lines().filter(|l| l.contains("storage recovered")).count();
    assert_eq!((failing, recovered), (1, 1), "one log line per state change, log:\n{log}");
    let _daemon = start(&config, &addr).await;
    check(login(&addr).await.list(None).await.unwrap(), "after a restart");
    drop(_daemon);
    drop(mount);
}
