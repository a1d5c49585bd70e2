//! What peers send reaches the log only through [`Escaped`], so a name
//! holding a line feed or a terminal escape cannot forge a log line.

use std::fmt;
use std::time::{Duration, Instant};

/// Peer-supplied bytes for a log field: printable ASCII as it is, a
/// backslash doubled, every other byte (control, DEL, non-ASCII) as `\xNN`.
pub struct Escaped<'a>(pub &'a [u8]);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        escape_into(self.0, f)
    }
}

fn escape_into(bytes: &[u8], f: &mut impl fmt::Write) -> fmt::Result {
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if (0x20..0x7f).contains(&b) && b != b'\\' {
            continue;
        }
        // Printable ASCII runs are valid UTF-8.
        f.write_str(std::str::from_utf8(&bytes[start..i]).unwrap_or_default())?;
        if b == b'\\' {
            f.write_str("\\\\")?;
        } else {
            write!(f, "\\x{b:02x}")?;
        }
        start = i + 1;
    }
    f.write_str(std::str::from_utf8(&bytes[start..]).unwrap_or_default())
}

/// Escape a whole formatted log value (the daemon's field formatter runs
/// every field through this, whatever the call site did).
pub fn escape_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            out.push_str(&format!("\\x{:02x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

/// Logs a recurring failure once per interval, with the count of the
/// occurrences it did not log.
pub struct Throttle {
    interval: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    /// Logs at most one occurrence per `interval`; the first occurrence is
    /// always logged.
    pub fn new(interval: Duration) -> Self {
        Throttle { interval, last: None, suppressed: 0 }
    }

    /// `Some(suppressed since the last logged one)` when this occurrence
    /// should be logged, `None` when it is only counted.
    pub fn hit(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(t) if now.duration_since(t) < self.interval => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_everything_that_could_forge_a_line() {
        let cases: &[(&[u8], &str)] = &[
            (b"user.a", "user.a"),
            (b"a\nb", "a\\x0ab"),
            (b"a\r\n2026-01-01 INFO forged", "a\\x0d\\x0a2026-01-01 INFO forged"),
            (b"\x1b[31mred", "\\x1b[31mred"),
            (b"back\\slash", "back\\\\slash"),
            (b"\xc3\xa9\x7f", "\\xc3\\xa9\\x7f"),
            (b"", ""),
        ];
        for (input, want) in cases {
            assert_eq!(Escaped(input).to_string(), *want, "{input:?}");
        }
        assert_eq!(escape_str("a\nb\u{1b}c é"), "a\\x0ab\\x1bc é");
    }

    #[test]
    fn throttle_logs_once_per_interval_and_counts_the_rest() {
        let mut t = Throttle::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(t.hit(t0), Some(0));
        for i in 1..=5 {
            assert_eq!(t.hit(t0 + Duration::from_secs(i)), None);
        }
        assert_eq!(t.hit(t0 + Duration::from_secs(11)), Some(5));
        assert_eq!(t.hit(t0 + Duration::from_secs(12)), None);
    }
}
