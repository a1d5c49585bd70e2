//! Bounded polling: wait for a condition without sleeping blindly.

use std::thread::sleep;
use std::time::{Duration, Instant};

/// Calls `probe` until it returns `Ok`, at most for `timeout`, backing off
/// from 20 ms to 500 ms between attempts. Panics with `what` and the last
/// error when time runs out.
#[track_caller]
pub fn until<T>(what: &str, timeout: Duration, mut probe: impl FnMut() -> Result<T, String>) -> T {
    let start = Instant::now();
    let mut pause = Duration::from_millis(20);
    loop {
        match probe() {
            Ok(v) => return v,
            Err(last) => {
                if start.elapsed() >= timeout {
                    panic!(
                        "timed out after {:?} waiting for {what}: {last}",
                        start.elapsed()
                    );
                }
            }
        }
        sleep(pause.min(timeout.saturating_sub(start.elapsed())));
        pause = (pause * 2).min(Duration::from_millis(500));
    }
}
