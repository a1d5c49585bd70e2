//! `mupdatectl bench` against an in-process mupdated with tiny parameters:
//! every phase must produce its figures and they must be sane. No timing
//! assertions: numbers come from real benchmark runs (README).

use std::process::Command as Process;

use crate::server::TestServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_produces_every_figure() {
    let server = TestServer::start().await;
    let addr = server.addr();
    let data = server.dir.path().join("data");
    let pid = std::process::id().to_string();
    let out = tokio::task::spawn_blocking(move || {
        Process::new(env!("CARGO_BIN_EXE_mupdatectl"))
            .args(["--server", &addr, "--user", "mupdater", "--json", "--timeout", "20", "bench"])
            .args(["--mailboxes", "300", "--servers", "4", "--list-server", "be01"])
            .args(["--churn-concurrency", "1,4", "--churn-seconds", "0.5"])
            .args(["--find-seconds", "0.5", "--propagation-samples", "10", "--propagation-seconds", "3"])
            .args(["--connect-seconds", "0.3"])
            .args(["--stalled-concurrency", "2", "--stalled-seconds", "0.5", "--stalled-fill-mib", "1"])
            .args(["--server-pid", &pid, "--data-dir"])
            .arg(&data)
            .env("MUPDATE_PASSWORD", "secret")
            .output()
            .expect("run mupdatectl bench")
    })
    .await
    .unwrap();
    assert!(out.status.success(), "bench failed: {}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert_eq!(r["errors"], serde_json::json!([]), "{r}");
    assert_eq!(r["server"]["implementation"], "mupdated");
    let num = |v: &serde_json::Value| v.as_f64().unwrap_or_else(|| panic!("not a number: {v} in {r}"));
    assert_eq!(r["load"]["ok"], 300);
    assert!(num(&r["load"]["mailboxes_per_s"]) > 0.0);
    assert!(num(&r["find"]["ops"]) > 0.0 && r["find"]["misses"] == 0 && r["find"]["errors"] == 0);
    assert!(num(&r["find"]["p50_ms"]) <= num(&r["find"]["p99_ms"]));
    assert_eq!(r["list"]["full_entries"], r["load"]["ok"]);
    assert!(num(&r["list"]["prefix_entries"]) > 0.0 && num(&r["list"]["prefix_entries"]) < num(&r["list"]["full_entries"]));
    assert_eq!(r["update"]["entries"], r["list"]["full_entries"]);
    let churn = r["churn"].as_array().expect("churn levels");
    assert_eq!(churn.len(), 2);
    for level in churn {
        assert!(num(&level["transactions"]) > 0.0 && level["errors"] == 0, "{level}");
    }
    for kind in ["push", "noop"] {
        let p = &r["propagation"][kind];
        assert!(num(&p["samples"]) > 0.0, "{kind}: {p}");
        assert_eq!(p["lost"], 0, "{kind}: {p}");
    }
    assert!(num(&r["stalled"]["baseline"]["transactions"]) > 0.0);
    assert!(num(&r["stalled"]["stalled"]["transactions"]) > 0.0);
    assert!(num(&r["connect"]["connections"]) > 0.0 && num(&r["connect"]["per_s"]) > 0.0, "{r}");
    assert!(num(&r["connect"]["p50_ms"]) > 0.0 && num(&r["connect"]["p50_ms"]) <= num(&r["connect"]["p99_ms"]));
    assert_eq!(r["rights"]["rows"], 100, "{r}");
    assert!(num(&r["rights"]["latency"]["p99_ms"]) > 0.0);
    assert!(num(&r["resources"]["peak_rss_kib"]) > 0.0);
    assert!(num(&r["disk"]["bytes"]) > 0.0 && num(&r["disk"]["bytes_per_mailbox"]) > 0.0);
    server.stop().await;
}
