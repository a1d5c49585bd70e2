//! Power cut: the daemon's data on a filesystem that forgets what was not
//! fsynced ([`crate::fusefs`]); kill -9 at a random moment, drop the page
//! cache, restart: every acknowledged write is there.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use mupdated::tools::client::Client;
use mupdated::protocol::{Command, Entry, Status};

use crate::durability::{free_port, kill_9, start, write_config};
use crate::fusefs::{Image, Mount};

use crate::server::Rng;

const WRITERS: usize = 4;
const NAMES_PER_WRITER: usize = 750;
const ROUNDS: usize = 6;

fn name(w: usize, i: usize) -> Vec<u8> {
    format!("user.w{w}.n{i}").into_bytes()
}

/// What one writer knows about its names: the last acknowledged state,
/// and the state of the one command that was in flight at the kill.
struct Writer {
    known: Vec<Option<Entry>>,
    in_flight: Option<(usize, Option<Entry>)>,
}

async fn write_until_killed(addr: String, w: usize, mut me: Writer, seed: u64, acked: Arc<AtomicUsize>) -> Writer {
    let mut rng = Rng(seed | 1);
    let Ok((mut c, _)) = Client::connect(&addr, Duration::from_secs(5)).await else {
        return me;
    };
    if c.authenticate("mupdater", "secret").await.is_err() {
        return me;
    }
    for n in 0u64.. {
        let i = rng.below(NAMES_PER_WRITER as u64) as usize;
        let mbox = name(w, i);
        let location = format!("be1!p{}", rng.below(4)).into_bytes();
        let (cmd, next) = match rng.below(3) {
            0 => {
                let mut acl = format!("w{w}c{n}\tlrs\t").into_bytes();
                if w == 0 && rng.below(40) == 0 {
                    // Now and then a value past sled's blob threshold (128
                    // KiB): written as a file of its own under blobs/.
                    // Random letters: compressed, still past it.
                    let noise: String = (0..300 << 10).map(|_| (b'a' + rng.below(26) as u8) as char).collect();
                    acl.extend(format!("big{n}\t{noise}\t").into_bytes());
                }
                let next = Some(Entry::Mailbox { name: mbox.clone(), location: location.clone(), acl: acl.clone() });
                (Command::Activate { name: mbox, location, acl }, next)
            }
            1 => (Command::Delete { name: mbox }, None),
            _ => {
                // RESERVE for a server that already has a record changes
                // nothing (facts model).
                let next = match &me.known[i] {
                    None => Some(Entry::Reserve { name: mbox.clone(), location: location.clone() }),
                    same => same.clone(),
                };
                (Command::Reserve { name: mbox, location }, next)
            }
        };
        me.in_flight = Some((i, next.clone()));
        match c.run(&cmd).await {
            Ok((_, Status::Ok, _)) => {
                me.known[i] = next;
                me.in_flight = None;
                acked.fetch_add(1, Ordering::Relaxed);
            }
            Ok((_, status, text)) => panic!("writer {w}: {cmd:?} answered {status:?} {text}"),
            Err(_) => return me,
        }
    }
    me
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_power_cuts() {
    crate::fusefs::require_fuse();
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let config = dir.path().join("mupdated.toml");
    write_config(&config, &addr, &mnt.join("data"));
    let seed = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1);
    eprintln!("powercut seed {seed}");
    let mut rng = Rng(seed | 1);

    let mut writers: Vec<Writer> =
        (0..WRITERS).map(|_| Writer { known: vec![None; NAMES_PER_WRITER], in_flight: None }).collect();
    let mut image = Image::new();
    let mut report = Vec::new();
    let mut total_lost = 0;
    for round in 0..=ROUNDS {
        let mount = Mount::new(&mnt, image);
        let mut daemon = start(&config, &addr).await;
        if round > 0 {
            // The machine is back: check what the previous round acknowledged.
            let (mut c, _) = Client::connect(&addr, Duration::from_secs(10)).await.unwrap();
            c.authenticate("mupdater", "secret").await.unwrap();
            let listed: HashMap<Vec<u8>, Entry> =
                c.list(None).await.unwrap().into_iter().map(|e| (e.name().to_vec(), e)).collect();
            let mut lost = Vec::new();
            for (w, me) in writers.iter_mut().enumerate() {
                for i in 0..NAMES_PER_WRITER {
                    let now = listed.get(&name(w, i)).cloned();
                    let in_flight = matches!(&me.in_flight, Some((j, s)) if *j == i && *s == now);
                    if now != me.known[i] && !in_flight {
                        lost.push(format!(
                            "{}: acknowledged {:?}, found {:?}",
                            String::from_utf8_lossy(&name(w, i)),
                            me.known[i],
                            now
                        ));
                    }
                    me.known[i] = now;
                }
                me.in_flight = None;
            }
            report.push(format!("round {round}: {} acknowledged states lost", lost.len()));
            if let Some(first) = lost.first() {
                report.push(format!("  e.g. {first}"));
            }
            total_lost += lost.len();
        }
        if round == ROUNDS {
            kill_9(&mut daemon);
            drop(mount);
            break;
        }
        let acked = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = std::mem::take(&mut writers)
            .into_iter()
            .enumerate()
            .map(|(w, me)| tokio::spawn(write_until_killed(addr.clone(), w, me, rng.next(), acked.clone())))
            .collect();
        let t = Instant::now();
        while acked.load(Ordering::Relaxed) < 50 && t.elapsed() < Duration::from_secs(20) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.below(1000))).await;
        kill_9(&mut daemon);
        for t in tasks {
            writers.push(t.await.expect("writer task"));
        }
        let n = acked.load(Ordering::Relaxed);
        assert!(n >= 50, "round {round}: writers made little progress before the cut ({n})");
        let blobs = std::fs::read_dir(mnt.join("data/blobs")).map(|d| d.count()).unwrap_or(0);
        report.push(format!("round {round}: {n} writes acknowledged ({blobs} blob files), then kill -9 and power cut"));
        image = mount.cut();
    }
    eprintln!("{}", report.join("\n"));
    assert_eq!(total_lost, 0, "acknowledged writes lost at power cuts (seed {seed}):\n{}", report.join("\n"));
}
