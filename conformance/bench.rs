//! `examples/bench-vs-cyrus` end to end with a tiny directory: Cyrus's
//! `mupdate -m` and mupdated benchmarked in one run, every figure of the
//! table produced for both, a ratio wherever one is defined. No timing
//! assertions: numbers come from real runs (README, docs/performance.md).

use std::process::Command;

use crate::harness::cyrus::Cyrus;

/// Rows mupdated over TLS must fill too (third column), with a TLS-vs-clear ratio.
const TLS: &[&str] = &["churn c=1 tx/s", "churn c=4 tx/s", "find ops/s", "find p99 ms", "connect /s", "connect p50 ms"];

/// Rows that both servers must fill (the rights index is mupdated's own).
const BOTH: &[&str] = &[
    "load mailboxes/s",
    "churn c=1 tx/s",
    "churn c=4 tx/s",
    "find ops/s",
    "find p99 ms",
    "connect /s",
    "connect p50 ms",
    "list full ms",
    "list one server ms",
    "update dump ms",
    "propagation push p99 ms",
    "propagation NOOP p99 ms",
    "stalled drop %",
    "server peak RSS KiB",
    "disk bytes/mailbox",
    "server CPU us per FIND",
    "server CPU ms per churn tx",
    "server CPU us per loaded mailbox",
];

#[test]
fn bench_vs_cyrus_produces_the_table() {
    Cyrus::require();
    let out = tempfile::tempdir().expect("temporary folder");
    let root = env!("CARGO_MANIFEST_DIR");
    let run = Command::new("bash")
        .arg(format!("{root}/examples/bench-vs-cyrus"))
        .arg("300")
        .arg(out.path())
        .arg("--")
        .args(["--servers", "4", "--list-server", "be01", "--churn-concurrency", "1,4", "--churn-seconds", "0.5"])
        .args(["--find-seconds", "0.5", "--propagation-samples", "3", "--propagation-seconds", "1"])
        .args(["--connect-seconds", "0.3"])
        .args(["--stalled-concurrency", "2", "--stalled-seconds", "0.5", "--stalled-fill-mib", "1"])
        .env("MUPDATED_BIN", env!("CARGO_BIN_EXE_mupdated"))
        .env("MUPDATECTL_BIN", env!("CARGO_BIN_EXE_mupdatectl"))
        .current_dir(root)
        .output()
        .expect("run examples/bench-vs-cyrus");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "bench-vs-cyrus failed:\n{stderr}");
    let table = std::fs::read_to_string(out.path().join("table.txt")).expect("table.txt");
    assert!(table.contains("Cyrus:    Cyrus IMAP 3.6"), "{table}");
    assert!(table.contains("mupdated: mupdated "), "{table}");
    assert!(!table.contains("ERROR"), "{table}");
    for row in BOTH {
        let line = table
            .lines()
            .find(|l| l.starts_with(&format!("{row}  ")))
            .unwrap_or_else(|| panic!("no row {row:?} in\n{table}"));
        let cells: Vec<&str> = line[row.len()..].split_whitespace().collect();
        assert!(cells.len() >= 2, "{line}");
        let mut figures = Vec::new();
        for (who, cell) in ["Cyrus", "mupdated"].iter().zip(&cells) {
            let v = cell.parse::<f64>();
            assert!(v.is_ok(), "{row}: {who} has no figure in {line:?}\n{table}");
            figures.extend(v);
        }
        // A ratio needs two non-zero figures (CPU is counted in 10 ms ticks).
        if row != &"stalled drop %" && figures.iter().all(|&v| v > 0.0) {
            assert!(line.ends_with("faster") || line.ends_with("slower"), "{row}: no ratio in {line:?}");
        }
    }
    assert!(table.contains("TLS:      mupdated "), "{table}");
    for row in TLS {
        let line = table
            .lines()
            .find(|l| l.starts_with(&format!("{row}  ")))
            .unwrap_or_else(|| panic!("no row {row:?} in\n{table}"));
        let cells: Vec<&str> = line[row.len()..].split_whitespace().collect();
        assert!(cells.len() >= 5, "{row}: no TLS figure and ratio in {line:?}");
        let clear = cells[1].parse::<f64>();
        let tls = cells[2].parse::<f64>();
        assert!(clear.is_ok() && tls.is_ok(), "{row}: mupdated clear and TLS figures in {line:?}");
        assert!(cells[4] == "faster" || cells[4] == "slower", "{row}: no TLS-vs-clear ratio in {line:?}");
    }
    for name in ["cyrus", "mupdated", "mupdated-tls"] {
        let json = std::fs::read(out.path().join(format!("{name}.json"))).expect("JSON report");
        let r: serde_json::Value = serde_json::from_slice(&json).expect("JSON");
        assert_eq!(r["errors"], serde_json::json!([]), "{name}: {r}");
        assert_eq!(r["load"]["ok"], 300, "{name}: {r}");
    }
}
