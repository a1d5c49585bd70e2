//! The differential instance of every scenario: the scenario runs against
//! Cyrus' `mupdate -m` and against mupdated at the same time, each murder
//! recording its Cyrus clients' MUPDATE sessions; the two recordings are
//! compared (harness/differential.rs) and the report written to
//! `$CONFORMANCE_REPORT_DIR` (default `<target>/conformance-report`),
//! one `differential-<scenario>.md` per scenario. Any difference not
//! normalised by a documented rule fails the test.

use std::path::PathBuf;

use crate::harness::differential::{compare, load};
use crate::harness::murder::record_murders_into;
use crate::harness::MasterKind;

/// Where reports and recordings go.
pub fn report_dir() -> PathBuf {
    std::env::var_os("CONFORMANCE_REPORT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("../conformance-report"))
}

pub fn run(scenario: &str, f: fn(MasterKind)) {
    let base = report_dir().join("recordings").join(scenario);
    let _ = std::fs::remove_dir_all(&base);
    let runs: Vec<(MasterKind, PathBuf)> = [MasterKind::Cyrus, MasterKind::Mupdated]
        .into_iter()
        .map(|k| (k, base.join(format!("{k:?}").to_ascii_lowercase())))
        .collect();
    std::thread::scope(|s| {
        let handles: Vec<_> = runs
            .iter()
            .map(|(kind, dir)| {
                let (kind, dir) = (*kind, dir.clone());
                s.spawn(move || {
                    record_murders_into(&dir);
                    f(kind)
                })
            })
            .collect();
        for (h, (kind, _)) in handles.into_iter().zip(&runs) {
            if let Err(e) = h.join() {
                eprintln!("the {kind:?} run of {scenario} failed");
                std::panic::resume_unwind(e);
            }
        }
    });
    let reference = load(&runs[0].1);
    let subject = load(&runs[1].1);
    let c = compare(scenario, &reference, &subject, "mupdated");
    let path = report_dir().join(format!("differential-{scenario}.md"));
    std::fs::create_dir_all(report_dir()).expect("create the report folder");
    std::fs::write(&path, &c.report).expect("write the differential report");
    assert_eq!(
        c.differences,
        0,
        "{} undocumented difference(s) between Cyrus and mupdated; see {}",
        c.differences,
        path.display()
    );
}
