//! Which CPUs workers are pinned to. A node's (or an executor's) CPUs are a [`CpuPool`]; each
//! lease or session takes as many as it has workers, the least used first, and gives them back
//! when it ends. So concurrent leases spread over the CPUs instead of all pinning their first
//! worker to the first CPU, and CPUs are shared only when there are more workers than CPUs.

use std::sync::{Arc, Mutex};

/// CPUs to pin workers to, and how many workers each has now.
#[derive(Debug, Default)]
pub struct CpuPool {
    cpus: Vec<usize>,
    users: Mutex<Vec<u32>>,
}

impl CpuPool {
    /// A pool of `cpus` (none: workers are not pinned). A CPU listed twice is one CPU.
    pub fn new(mut cpus: Vec<usize>) -> Arc<CpuPool> {
        let mut seen = std::collections::HashSet::new();
        cpus.retain(|c| seen.insert(*c));
        let users = Mutex::new(vec![0; cpus.len()]);
        Arc::new(CpuPool { cpus, users })
    }

    /// The pool's CPUs, in order.
    pub fn cpus(&self) -> &[usize] {
        &self.cpus
    }

    /// Takes a CPU for each of `n` workers: each the least used CPU at that moment (the
    /// earlier in the pool among equals), so `n` distinct CPUs while that many are unused, and
    /// as even a sharing as can be beyond. Empty if the pool is.
    pub fn take(self: &Arc<Self>, n: usize) -> Pinning {
        let mut taken = Vec::with_capacity(if self.cpus.is_empty() { 0 } else { n });
        if !self.cpus.is_empty() {
            let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
            for _ in 0..n {
                // The minimum of a non-empty list.
                let (i, _) = users
                    .iter()
                    .enumerate()
                    .min_by_key(|&(i, &u)| (u, i))
                    .unwrap_or((0, &0));
                users[i] += 1;
                taken.push(i);
            }
        }
        Pinning {
            pool: self.clone(),
            taken,
        }
    }
}

/// CPUs taken from a [`CpuPool`] for a lease's workers (worker `i` on `cpu(i)`), given back on
/// drop.
#[derive(Debug)]
pub struct Pinning {
    pool: Arc<CpuPool>,
    /// Indices into the pool's CPUs, one per worker.
    taken: Vec<usize>,
}

impl Pinning {
    /// The CPU worker `i` runs on; `None` without pinning.
    pub fn cpu(&self, i: usize) -> Option<usize> {
        self.taken.get(i).map(|&k| self.pool.cpus[k])
    }

    /// Every worker's CPU, in order (empty without pinning).
    pub fn cpus(&self) -> Vec<usize> {
        self.taken.iter().map(|&k| self.pool.cpus[k]).collect()
    }
}

impl Drop for Pinning {
    fn drop(&mut self) {
        let mut users = self.pool.users.lock().unwrap_or_else(|p| p.into_inner());
        for &k in &self.taken {
            users[k] -= 1;
        }
    }
}

/// `cpus` as a comma-separated list (`0,2,3`), as `--cpus` takes them.
pub fn cpu_list(cpus: &[usize]) -> String {
    let names: Vec<String> = cpus.iter().map(usize::to_string).collect();
    names.join(",")
}

#[cfg(test)]
mod tests;
