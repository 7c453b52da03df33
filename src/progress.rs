//! Progress lines on standard error for long work, in bytes: done and total with units, the
//! percentage, the rate and the time left. At most a few per second, rewritten in place on a
//! terminal and cleared when the work ends (or is dropped on an error); one line per update
//! (every 5 s) otherwise; silent under `--quiet`.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

pub struct Progress {
    what: &'static str,
    total: u64,
    start: Instant,
    last: Option<Instant>,
    tty: bool,
    enabled: bool,
}

impl Progress {
    pub fn new(what: &'static str, total: u64, enabled: bool) -> Progress {
        Progress {
            what,
            total,
            start: Instant::now(),
            last: None,
            tty: std::io::stderr().is_terminal(),
            enabled,
        }
    }

    /// Report that `done` of `total` units are done; `detail` is appended.
    pub fn update(&mut self, done: u64, detail: impl FnOnce() -> String) {
        if !self.enabled {
            return;
        }
        let every = if self.tty {
            Duration::from_millis(200)
        } else {
            Duration::from_secs(5)
        };
        let now = Instant::now();
        if self.last.is_some_and(|l| now - l < every)
            || (self.last.is_none() && now - self.start < every)
        {
            return;
        }
        self.last = Some(now);
        let line = line(self.what, done, self.total, now - self.start, &detail());
        let mut e = std::io::stderr().lock();
        let _ = if self.tty {
            write!(e, "\r\x1b[K{line}")
        } else {
            writeln!(e, "{line}")
        };
    }

    /// Clear the line (on a terminal). Dropping the progress does the same.
    pub fn finish(&mut self) {
        if self.enabled && self.tty && self.last.is_some() {
            let _ = write!(std::io::stderr().lock(), "\r\x1b[K");
        }
        self.last = None;
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

/// `what: 12.3 MB / 45.6 MB (27 %), 2.1 MB/s, 0:16 left; detail`.
fn line(what: &str, done: u64, total: u64, elapsed: Duration, detail: &str) -> String {
    let mut s = format!("{what}: {} / {}", bytes(done), bytes(total));
    if let Some(pct) = (done.min(total) * 100).checked_div(total) {
        s.push_str(&format!(" ({pct} %)"));
    }
    let secs = elapsed.as_secs_f64();
    if secs >= 1.0 && done > 0 {
        let rate = done as f64 / secs;
        s.push_str(&format!(", {}/s", bytes(rate as u64)));
        if total > done {
            let left = ((total - done) as f64 / rate) as u64;
            s.push_str(&format!(", {}:{:02} left", left / 60, left % 60));
        }
    }
    if !detail.is_empty() {
        s.push_str("; ");
        s.push_str(detail);
    }
    s
}

/// `1234567` → `1.2 MB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < UNITS.len() {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_say_units_percent_rate_and_time_left() {
        let l = line(
            "pack",
            12_300_000,
            45_600_000,
            Duration::from_secs(6),
            "3 new chunks",
        );
        assert_eq!(
            l,
            "pack: 12.3 MB / 45.6 MB (26 %), 2.0 MB/s, 0:16 left; 3 new chunks"
        );
        // Before a second has passed there is no rate to speak of.
        assert_eq!(
            line("verify", 5, 10, Duration::ZERO, ""),
            "verify: 5 B / 10 B (50 %)"
        );
        assert_eq!(
            line("index", 0, 0, Duration::from_secs(3), ""),
            "index: 0 B / 0 B"
        );
    }
}
