//! Latency samples and medians.

use std::sync::Mutex;

/// Nanosecond samples, shared between tasks.
#[derive(Default)]
pub struct Samples(Mutex<Vec<u64>>);

impl Samples {
    pub fn push(&self, nanos: u64) {
        self.0.lock().expect("samples lock").push(nanos);
    }

    pub fn len(&self) -> usize {
        self.0.lock().expect("samples lock").len()
    }

    /// (p50, p99) in milliseconds.
    pub fn percentiles_ms(&self) -> (f64, f64) {
        let mut v = self.0.lock().expect("samples lock").clone();
        v.sort_unstable();
        let at = |q: f64| -> f64 {
            if v.is_empty() {
                return f64::NAN;
            }
            let i = ((v.len() as f64 - 1.0) * q).round() as usize;
            v[i] as f64 / 1e6
        };
        (at(0.50), at(0.99))
    }
}

/// The median of a few values.
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}
