//! The criterion micro-benchmarks of the hot pure paths: the domain's
//! API-key check and context serialisation ([`hot_paths`]), the cache's L1
//! and keys ([`l1`]), the per-instance rate limiter ([`rate`]). They run in this process, through criterion's library
//! API, and are read back from criterion's `estimates.json` files.
//!
//! In process rather than as `cargo bench` targets: a bench target is built
//! in its own feature resolution (criterion's dependencies switch features
//! on in crates the service shares, `zerocopy` for one), which rebuilt most
//! of the dependency graph in release a second time, about six minutes on
//! two cores, before a quick run could start.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context as _;
use criterion::Criterion;
use serde::Deserialize;

mod hot_paths;
mod l1;
mod rate;

/// One benchmark's result.
#[derive(Debug, Clone)]
pub struct Micro {
    /// `group/function`.
    pub id: String,
    /// Median time per iteration, nanoseconds.
    pub median_ns: f64,
    /// Mean, nanoseconds.
    pub mean_ns: f64,
}

#[derive(Deserialize)]
struct Benchmark {
    full_id: String,
}

#[derive(Deserialize)]
struct Estimates {
    mean: Estimate,
    median: Estimate,
}

#[derive(Deserialize)]
struct Estimate {
    point_estimate: f64,
}

/// Runs the micro-benchmarks (`--quick`: 1 s warm-up and 1 s measurement
/// each, instead of 3 s and 5 s) on a thread of their own, and returns their
/// results. `target_dir/criterion` holds criterion's files.
///
/// # Errors
/// A benchmark that panicked, or unreadable results.
pub fn run(target_dir: &Path, quick: bool) -> anyhow::Result<Vec<Micro>> {
    let criterion_dir = target_dir.join("criterion");
    // Stale results of benchmarks that no longer exist must not be reported.
    let _ = std::fs::remove_dir_all(&criterion_dir);
    let (warm_up, measurement) = if quick {
        (Duration::from_secs(1), Duration::from_secs(1))
    } else {
        (Duration::from_secs(3), Duration::from_secs(5))
    };
    let dir = criterion_dir.clone();
    // A thread of its own: the L1 benchmark drives its own tokio runtime,
    // which cannot be started from inside this process's.
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                // `output_directory` is criterion's (hidden) setter for
                // what `CRITERION_HOME` sets; the environment is not ours to
                // change in a running process.
                let mut c = Criterion::default()
                    .without_plots()
                    .output_directory(&dir)
                    .warm_up_time(warm_up)
                    .measurement_time(measurement);
                hot_paths::run(&mut c);
                l1::run(&mut c);
                rate::run(&mut c);
                c.final_summary();
            })
            .join()
    })
    .map_err(|_| anyhow::anyhow!("a micro-benchmark panicked"))?;
    let mut results = Vec::new();
    collect(&criterion_dir, &mut results)?;
    results.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(results)
}

/// Finds every `new/benchmark.json` + `new/estimates.json` pair under `dir`.
fn collect(dir: &Path, out: &mut Vec<Micro>) -> anyhow::Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let path: PathBuf = entry.path();
        if !path.is_dir() {
            continue;
        }
        if path.file_name().is_some_and(|n| n == "new") {
            let read = |name: &str| {
                std::fs::read_to_string(path.join(name))
                    .with_context(|| format!("reading {}", path.join(name).display()))
            };
            if let (Ok(benchmark), Ok(estimates)) = (read("benchmark.json"), read("estimates.json"))
            {
                let benchmark: Benchmark = serde_json::from_str(&benchmark)?;
                let estimates: Estimates = serde_json::from_str(&estimates)?;
                out.push(Micro {
                    id: benchmark.full_id,
                    median_ns: estimates.median.point_estimate,
                    mean_ns: estimates.mean.point_estimate,
                });
            }
        } else if path.file_name().is_none_or(|n| n != "report") {
            collect(&path, out)?;
        }
    }
    Ok(())
}
