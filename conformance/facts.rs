//! The facts model against real Cyrus 3.6.1: a replica pair replicating
//! with Cyrus's own sync_client/sync_server, failover by `mupdatectl
//! primary` reaching a Cyrus frontend through its UPDATE stream, and a
//! mailbox created on two unrelated backends kept as a conflict.
//! mupdated only (Cyrus's master has one record per mailbox).
//! See conformance/README.md, "Facts model".

use std::time::{Duration, Instant};

use crate::harness::cyrus::{Instance, Role, Workspace, ADMIN};
use crate::harness::imap::Imap;
use crate::harness::mupdate::{Entry, Kind, Mupdate};
use crate::harness::ports::free_port;
use crate::harness::replication::{
    add_sync_server, point_sync_client, sync_client, FactsMaster, Group, Login,
};
use crate::harness::wait;

/// Every right Cyrus 3.6 knows.
const ALL_RIGHTS: &str = "lrswipkxtecdan";

/// Processes stop in field order (Cyrus first, then mupdated), the
/// workspace folder goes last.
struct FactsMurder {
    frontend: Option<Instance>,
    backends: Vec<Instance>,
    master: FactsMaster,
    #[allow(dead_code)] // kept alive until the processes are gone
    ws: Workspace,
}

impl FactsMurder {
    /// mupdated with one backend login per backend (`be-<name>`, bound to
    /// that backend's servername), a reader login for the frontend's slave
    /// and the given replica groups (built from the backends' servernames);
    /// then the backends and, if asked, a frontend following mupdated.
    fn start(
        names: &[&str],
        groups: impl FnOnce(&[String]) -> Vec<Group>,
        frontend: bool,
    ) -> FactsMurder {
        let ws = Workspace::new();
        let ports: Vec<u16> = names.iter().map(|_| free_port()).collect();
        let servers: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let mut logins: Vec<Login> = names
            .iter()
            .zip(&servers)
            .map(|(n, s)| Login::backend(&format!("be-{n}"), s))
            .collect();
        logins.push(Login::reader("frontend"));
        let master = FactsMaster::start(&ws, &logins, &groups(&servers));
        let mut backends: Vec<Instance> = names
            .iter()
            .zip(&ports)
            .zip(&logins)
            .map(|((n, p), l)| {
                let role = Role::Backend {
                    master: master.addr.clone(),
                    mupdate_user: l.name.clone(),
                    mupdate_password: l.password.clone(),
                };
                Instance::spawn(&ws, n, role, *p)
            })
            .collect();
        let mut fe = frontend.then(|| {
            let role = Role::Frontend {
                master: master.addr.clone(),
                mupdate_user: "frontend".into(),
                mupdate_password: logins.last().expect("reader").password.clone(),
                slave_port: free_port(),
                serverlist: servers.clone(),
            };
            Instance::spawn(&ws, "f", role, free_port())
        });
        for b in &mut backends {
            b.wait_ready();
        }
        if let Some(f) = &mut fe {
            f.wait_ready();
        }
        FactsMurder {
            frontend: fe,
            backends,
            master,
            ws,
        }
    }

    fn frontend(&self) -> &Instance {
        self.frontend.as_ref().expect("started with a frontend")
    }
}

/// Replica group `pair-1`: the first two backends, the first primary.
fn pair_of_first_two(servers: &[String]) -> Vec<Group> {
    vec![Group {
        name: "pair-1".into(),
        servers: servers[..2].to_vec(),
        primary: Some(servers[0].clone()),
    }]
}

#[track_caller]
fn find(mu: &mut Mupdate, name: &str) -> Option<Entry> {
    mu.find(name).unwrap_or_else(|e| panic!("FIND {name}: {e}"))
}

/// LIST (no prefix), only the lines for `name`.
#[track_caller]
fn listed(mu: &mut Mupdate, name: &str) -> Vec<Entry> {
    mu.list(None)
        .unwrap_or_else(|e| panic!("LIST: {e}"))
        .into_iter()
        .filter(|e| e.name == name)
        .collect()
}

/// `mupdatectl --json records NAME` as (location, state, role) triples.
#[track_caller]
fn records(m: &FactsMaster, name: &str) -> Vec<(String, String, String)> {
    let v = m.ctl_json(&["records", name]);
    v.as_array()
        .unwrap_or_else(|| panic!("records {name}: {v}"))
        .iter()
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap_or_default().to_string();
            (s("location"), s("state"), s("role"))
        })
        .collect()
}

fn rec(loc: &str, state: &str, role: &str) -> (String, String, String) {
    (loc.into(), state.into(), role.into())
}

/// APPENDs a small message (a LITERAL+ literal) to `mailbox`.
#[track_caller]
fn append(imap: &mut Imap, mailbox: &str, subject: &str) {
    let msg = format!("From: t@example.org\r\nSubject: {subject}\r\n\r\n{subject}\r\n");
    imap.command(&format!("APPEND \"{mailbox}\" {{{}+}}\r\n{msg}", msg.len()))
        .assert_ok();
}

/// SELECTs `mailbox` and returns its EXISTS count.
#[track_caller]
fn exists(imap: &mut Imap, mailbox: &str) -> u32 {
    let r = imap.select(mailbox);
    r.assert_ok();
    r.untagged
        .iter()
        .find_map(|l| {
            let l = String::from_utf8_lossy(l);
            let mut w = l.split_whitespace();
            match (w.next(), w.next(), w.next()) {
                (Some("*"), Some(n), Some(k)) if k.eq_ignore_ascii_case("EXISTS") => n.parse().ok(),
                _ => None,
            }
        })
        .unwrap_or_else(|| panic!("SELECT {mailbox}: no EXISTS in {:?}", r.untagged))
}

/// A new admin IMAP connection to `inst` (a new frontend process each
/// time: prefork=0) and the EXISTS count of `mailbox` there.
#[track_caller]
fn exists_on(inst: &Instance, mailbox: &str) -> u32 {
    let mut imap = inst.imap();
    let n = exists(&mut imap, mailbox);
    imap.logout();
    n
}

#[track_caller]
fn assert_ctl_ok(f: &crate::harness::process::Finished, what: &str) {
    assert!(
        f.success(),
        "{what} failed ({}):\n{}{}",
        f.status,
        f.stdout,
        f.stderr
    );
}

// ---------------------------------------------------------------------------
// 1 + 2. A replica pair: both records kept, the primary routed to, failover.

#[test]
fn replica_pair_and_failover() {
    let m = FactsMurder::start(&["a", "b"], pair_of_first_two, true);
    let (a, b, fe) = (&m.backends[0], &m.backends[1], m.frontend());
    let (on_a, on_b) = (a.location("default"), b.location("default"));
    point_sync_client(a, add_sync_server(b));

    // A user's mailbox on the primary; the admin gets rights to use it.
    let x = "user.x";
    let mut ia = a.imap();
    ia.create(x, None).assert_ok();
    ia.setacl(x, ADMIN, ALL_RIGHTS).assert_ok();
    let acl = format!("x\t{ALL_RIGHTS}\t{ADMIN}\t{ALL_RIGHTS}\t");
    let mut mu = m.master.login();
    assert_eq!(find(&mut mu, x), Some(Entry::mailbox(x, &on_a, &acl)));

    // Cyrus replication A -> B. B's sync_server creates the mailbox with
    // the ordinary mboxlist calls, so B (mupdate_server set, its own
    // login) asserts its copy itself: RESERVE + ACTIVATE at B's location,
    // before sync_client returns. No `ctl_mboxlist -m` is needed.
    assert_ctl_ok(&sync_client(a, &["-u", "x"]), "sync_client -u x");
    assert_eq!(
        records(&m.master, x),
        vec![
            rec(&on_a, "active", "effective"),
            rec(&on_b, "active", "shadow")
        ],
        "both facts kept, A effective (mupdated log:\n{})",
        m.master.log()
    );
    // Unmodified clients see one record: A's.
    assert_eq!(find(&mut mu, x), Some(Entry::mailbox(x, &on_a, &acl)));
    assert_eq!(listed(&mut mu, x), vec![Entry::mailbox(x, &on_a, &acl)]);
    // B's own facts (what `ctl_mboxlist -m` on B merges with) hold its copy,
    // so a push from B keeps it (no "Remove Local Mailbox") and changes nothing.
    let b_prefix = format!("{}!", b.servername);
    assert_eq!(
        mu.list(Some(&b_prefix)).expect("LIST b!"),
        vec![Entry::mailbox(x, &on_b, &acl)]
    );
    let dry = b.ctl_mboxlist(&["-m", "-w"]);
    assert_ctl_ok(&dry, "ctl_mboxlist -m -w on B");
    assert!(
        !dry.stdout.contains(x) && !dry.stderr.contains(x),
        "ctl_mboxlist -m -w on B would touch {x}:\n{}{}",
        dry.stdout,
        dry.stderr
    );

    // The frontend routes to the primary: a message APPENDed through it
    // lands on A only (not replicated yet).
    wait::until(
        "the frontend to list user.x",
        Duration::from_secs(10),
        || {
            let mut f = fe.imap();
            let names = f.list();
            f.logout();
            if names.iter().any(|n| n == x) {
                Ok(())
            } else {
                Err(format!("frontend LIST: {names:?}"))
            }
        },
    );
    let mut f = fe.imap();
    append(&mut f, x, "through the frontend");
    assert_eq!(exists(&mut f, x), 1);
    f.logout();
    assert_eq!(exists_on(a, x), 1, "A has the message");
    assert_eq!(exists_on(b, x), 0, "B does not (not replicated yet)");

    // Replicate it, then mark B: a message only B has.
    assert_ctl_ok(&sync_client(a, &["-u", "x"]), "sync_client -u x");
    assert_eq!(exists_on(b, x), 1, "replicated to B");
    let mut ib = b.imap();
    append(&mut ib, x, "only on B");
    ib.logout();
    assert_eq!((exists_on(a, x), exists_on(b, x)), (1, 2));
    // Replication kept B's record a shadow.
    assert_eq!(find(&mut mu, x), Some(Entry::mailbox(x, &on_a, &acl)));

    // 2. Failover: B becomes the primary; nothing restarts. The frontend's
    // slave receives `MAILBOX user.x B!default` on its UPDATE stream, so the
    // next connection through the frontend reaches B.
    let fe_pid = fe.pid();
    let o = m.master.ctl(&["primary", "pair-1", &b.servername]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "mupdatectl primary: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let started = Instant::now();
    assert_eq!(
        m.master.ctl_json(&["primary", "pair-1"]),
        serde_json::json!([{"group": "pair-1", "primary": b.servername}])
    );
    assert_eq!(
        records(&m.master, x),
        vec![
            rec(&on_a, "active", "shadow"),
            rec(&on_b, "active", "effective")
        ]
    );
    assert_eq!(find(&mut mu, x), Some(Entry::mailbox(x, &on_b, &acl)));
    assert_eq!(listed(&mut mu, x), vec![Entry::mailbox(x, &on_b, &acl)]);
    // The stream is applied by the slave asynchronously: poll briefly (in
    // practice the first SELECT already sees B).
    let mut tries = 0;
    wait::until(
        "a SELECT through the frontend to reach B",
        Duration::from_secs(10),
        || {
            tries += 1;
            match exists_on(fe, x) {
                2 => Ok(()),
                n => Err(format!("frontend SELECT saw {n} messages (A has 1, B 2)")),
            }
        },
    );
    eprintln!(
        "failover: frontend reached B after {tries} SELECT(s), {:?}",
        started.elapsed()
    );
    // And writes through the frontend go to B now.
    let mut f = fe.imap();
    append(&mut f, x, "after failover");
    f.logout();
    assert_eq!((exists_on(a, x), exists_on(b, x)), (1, 3));
    assert_eq!(fe.pid(), fe_pid, "the frontend was not restarted");
    // The former primary keeps its copy: its own facts still list it, so a
    // push from A is silent (no "Remove Local Mailbox").
    let dry = a.ctl_mboxlist(&["-m", "-w"]);
    assert_ctl_ok(&dry, "ctl_mboxlist -m -w on A");
    assert!(
        !dry.stdout.contains(x),
        "ctl_mboxlist -m -w on A after failover: {}",
        dry.stdout
    );
    ia.logout();
    let _ = mu.logout();
}

// ---------------------------------------------------------------------------
// 3. Two unrelated backends: the second create is refused, a forced push
// of a copy made behind the master's back is a conflict, not an overwrite.

#[test]
fn conflict_between_unrelated_backends() {
    let m = FactsMurder::start(&["c", "d"], |_| Vec::new(), false);
    let (c, d) = (&m.backends[0], &m.backends[1]);
    let (on_c, on_d) = (c.location("default"), d.location("default"));
    let z = "user.z";
    let acl = format!("z\t{ALL_RIGHTS}\t");
    let mut mu = m.master.login();

    let mut ic = c.imap();
    ic.create(z, None).assert_ok();
    assert_eq!(find(&mut mu, z), Some(Entry::mailbox(z, &on_c, &acl)));

    // Over IMAP on D: mupdated refuses D's RESERVE ("mailbox already
    // exists"), D answers NO and rolls its local copy back.
    let mut id = d.imap();
    id.create(z, None).assert_no();
    assert!(!id.list().iter().any(|n| n == z), "D rolled its copy back");
    assert_eq!(find(&mut mu, z), Some(Entry::mailbox(z, &on_c, &acl)));
    assert_eq!(
        records(&m.master, z),
        vec![rec(&on_c, "active", "effective")]
    );

    // Behind the master's back: LOCALCREATE (the admin-only command XFER
    // uses; MBOXLIST_CREATE_LOCALONLY) creates it on D with no MUPDATE
    // traffic at all.
    id.command(&format!("LOCALCREATE \"{z}\"")).assert_ok();
    assert!(id.list().iter().any(|n| n == z), "D has its own copy");
    assert_eq!(
        records(&m.master, z),
        vec![rec(&on_c, "active", "effective")]
    );

    // A plain push from D would wipe D's copy (FIND says C holds it);
    // the dry run only says so.
    let dry = d.ctl_mboxlist(&["-m", "-w"]);
    assert_ctl_ok(&dry, "ctl_mboxlist -m -w on D");
    assert!(
        dry.stdout.contains(&format!("Remove Local Mailbox: {z}")),
        "ctl_mboxlist -m -w on D: {}{}",
        dry.stdout,
        dry.stderr
    );
    // The forced push (`-a`: the local copy is authoritative) sends
    // ACTIVATE user.z D!default: a second fact, kept as a conflict; C's
    // record stays the one clients see.
    let forced = d.ctl_mboxlist(&["-m", "-a"]);
    assert_ctl_ok(&forced, "ctl_mboxlist -m -a on D");
    assert_eq!(
        m.master.ctl_json(&["conflicts"]),
        serde_json::json!([{"name": z, "effective": c.servername, "others": [d.servername]}])
    );
    assert_eq!(
        records(&m.master, z),
        vec![
            rec(&on_c, "active", "effective"),
            rec(&on_d, "active", "conflict")
        ]
    );
    assert_eq!(find(&mut mu, z), Some(Entry::mailbox(z, &on_c, &acl)));
    assert_eq!(listed(&mut mu, z), vec![Entry::mailbox(z, &on_c, &acl)]);
    // Each side's own facts hold its copy: neither push wipes anything now.
    for (b, on) in [(c, &on_c), (d, &on_d)] {
        let own = mu
            .list(Some(&format!("{}!", b.servername)))
            .expect("LIST server!");
        assert_eq!(own.len(), 1, "LIST {}!: {own:?}", b.servername);
        assert_eq!(
            (own[0].kind, own[0].location.as_str()),
            (Kind::Mailbox, on.as_str())
        );
        let dry = b.ctl_mboxlist(&["-m", "-w"]);
        assert_ctl_ok(&dry, "ctl_mboxlist -m -w");
        assert!(
            !dry.stdout.contains(z),
            "ctl_mboxlist -m -w on {}: {}",
            b.name,
            dry.stdout
        );
    }
    assert!(id.list().iter().any(|n| n == z), "D kept its copy");
    ic.logout();
    id.logout();
    let _ = mu.logout();
}

// ---------------------------------------------------------------------------
// A delayed DELETE on the primary, then replicated: the name disappears
// for clients at once (the replica's shadow is not promoted), and the
// replica's own DELETE later removes its shadow.

#[test]
fn replica_follows_delayed_delete() {
    let m = FactsMurder::start(&["a", "b"], pair_of_first_two, false);
    let (a, b) = (&m.backends[0], &m.backends[1]);
    let (on_a, on_b) = (a.location("default"), b.location("default"));
    point_sync_client(a, add_sync_server(b));
    let sub = "user.y.sub";
    let mut ia = a.imap();
    ia.create("user.y", None).assert_ok();
    ia.create(sub, None).assert_ok();
    // Admins need the x right to delete a user's mailbox.
    ia.setacl(sub, ADMIN, "x").assert_ok();
    assert_ctl_ok(&sync_client(a, &["-u", "y"]), "sync_client -u y");
    assert_eq!(
        records(&m.master, sub),
        vec![
            rec(&on_a, "active", "effective"),
            rec(&on_b, "active", "shadow")
        ]
    );

    // delete_mode delayed: A renames it to DELETED.user.y.sub.<hex>, i.e.
    // DELETE user.y.sub (removes A's record only), RESERVE + ACTIVATE of
    // the new name at "A!".
    ia.delete(sub).assert_ok();
    let mut mu = m.master.login();
    assert_eq!(find(&mut mu, sub), None, "B's shadow is not promoted");
    assert_eq!(listed(&mut mu, sub), vec![]);
    assert_eq!(
        records(&m.master, sub),
        vec![rec(&on_b, "active", "shadow")]
    );
    let tombstone = mu
        .list(None)
        .expect("LIST")
        .into_iter()
        .find(|e| e.name.starts_with("DELETED.user.y.sub."))
        .expect("the DELETED.* name");
    assert_eq!(tombstone.location, a.location(""));

    // Replication renames B's copy the same way: B's DELETE removes its
    // shadow, its DELETED.* copy becomes a shadow of A's.
    let r = sync_client(a, &["-u", "y"]);
    assert_ctl_ok(&r, "sync_client -u y");
    assert!(r.stdout.contains("RENAME"), "sync_client: {}", r.stdout);
    assert_eq!(
        m.master.ctl(&["records", sub]).status.code(),
        Some(1),
        "no record of {sub} is left"
    );
    assert_eq!(
        records(&m.master, &tombstone.name),
        vec![
            rec(&a.location(""), "active", "effective"),
            rec(&on_b, "active", "shadow")
        ]
    );
    assert_eq!(find(&mut mu, &tombstone.name), Some(tombstone.clone()));
    let dry = b.ctl_mboxlist(&["-m", "-w"]);
    assert_ctl_ok(&dry, "ctl_mboxlist -m -w on B");
    assert_eq!(dry.stdout.trim(), "", "a push from B changes nothing");
    ia.logout();
    let _ = mu.logout();
}
