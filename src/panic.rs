//! Panics are reported as one line, never as a backtrace. redb 4 answers some damage to its
//! file (a page overwritten with garbage) with a panic instead of an error; the process-wide
//! hook installed by [`install`] records where a panic happened, and [`describe`] turns it into
//! the line an operator can act on: which state database is damaged and where the runbook says
//! how to recover it (docs/operations.md, "A damaged state database").

use std::path::{Path, PathBuf};
use std::sync::Mutex;

static LAST: Mutex<Option<Panic>> = Mutex::new(None);
static DATABASE: Mutex<Option<PathBuf>> = Mutex::new(None);

#[derive(Clone, Debug)]
struct Panic {
    message: String,
    file: String,
    line: u32,
}

/// Replace the default panic output with a record that [`describe`] reads.
pub fn install() {
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".into());
        let (file, line) = info
            .location()
            .map_or((String::new(), 0), |l| (l.file().to_owned(), l.line()));
        if let Ok(mut last) = LAST.lock() {
            *last = Some(Panic {
                message,
                file,
                line,
            });
        }
    }));
}

/// Remember the state database this process opened last (named when redb panics).
pub fn note_database(file: &Path) {
    if let Ok(mut d) = DATABASE.lock() {
        *d = Some(file.to_owned());
    }
}

/// One line for the last panic: a damaged state database when redb panicked, else a bug.
pub fn describe() -> String {
    let last = LAST.lock().ok().and_then(|l| l.clone());
    let Some(p) = last else {
        return "internal error: a thread panicked".into();
    };
    let short = p.file.rsplit('/').next().unwrap_or(&p.file);
    if p.file.contains("/redb-") {
        let db = DATABASE.lock().ok().and_then(|d| d.clone()).map_or_else(
            || "the state database".to_owned(),
            |d| d.display().to_string(),
        );
        format!(
            "{db} is damaged (redb failed at {short}:{}: {}): see docs/operations.md, \
             \"A damaged state database\", to recover it keeping the replay mark",
            p.line, p.message
        )
    } else {
        format!(
            "internal error (a bug in narlink, please report it): {} at {}:{}",
            p.message, p.file, p.line
        )
    }
}
