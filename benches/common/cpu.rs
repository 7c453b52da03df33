//! Thread CPU time as a criterion measurement, shared by the benches (`#[path]`-included).

use criterion::measurement::{Measurement, ValueFormatter, WallTime};

/// CPU time of the calling thread (`/proc/thread-self/schedstat`, ns; may lag by a scheduler
/// tick), for single-threaded benchmarks on a machine where other builds compete for the two
/// cores: wall time then measures the contention as much as the code.
pub struct ThreadCpu(pub WallTime);

pub fn thread_cpu_ns() -> u64 {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").expect("schedstat");
    s.split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .expect("schedstat runtime")
}

impl Measurement for ThreadCpu {
    type Intermediate = u64;
    type Value = u64;
    fn start(&self) -> u64 {
        thread_cpu_ns()
    }
    fn end(&self, start: u64) -> u64 {
        thread_cpu_ns().saturating_sub(start)
    }
    fn add(&self, a: &u64, b: &u64) -> u64 {
        a + b
    }
    fn zero(&self) -> u64 {
        0
    }
    fn to_f64(&self, v: &u64) -> f64 {
        *v as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        self.0.formatter() // values are nanoseconds, like wall time
    }
}
