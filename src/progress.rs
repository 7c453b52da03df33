//! Progress lines on standard error for long work: at most a few per second, rewritten in
//! place on a terminal, one line per update (every 5 s) otherwise, and silent under `--quiet`.

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
        let line = format!("{}: {done}/{} {}", self.what, self.total, detail());
        let mut e = std::io::stderr().lock();
        let _ = if self.tty {
            write!(e, "\r\x1b[K{line}")
        } else {
            writeln!(e, "{line}")
        };
    }

    pub fn finish(&mut self) {
        if self.enabled && self.tty && self.last.is_some() {
            let _ = write!(std::io::stderr().lock(), "\r\x1b[K");
        }
    }
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
