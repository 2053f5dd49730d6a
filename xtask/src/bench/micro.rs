//! The criterion micro-benchmarks of the hot pure paths (`xtask/benches`:
//! the domain's API-key check and context serialisation, the cache's L1 and
//! keys): run through `cargo bench -p xtask`, read back from criterion's
//! `estimates.json` files.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::Context as _;
use serde::Deserialize;

use super::infra::CommandLog;

/// The package with the criterion benches, and its bench targets.
pub const PACKAGES: [&str; 1] = ["xtask"];
const BENCHES: [&str; 2] = ["hot_paths", "l1"];

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

/// Runs the micro-benchmarks (`--quick`: criterion's quick mode with 1 s
/// warm-up and measurement) and returns their results.
///
/// # Errors
/// Build or run failures.
pub fn run(
    cargo: &Path,
    workspace: &Path,
    target_dir: &Path,
    quick: bool,
    log: &mut CommandLog,
) -> anyhow::Result<Vec<Micro>> {
    let criterion_dir = target_dir.join("criterion");
    // Stale results of benchmarks that no longer exist must not be reported.
    let _ = std::fs::remove_dir_all(&criterion_dir);
    let mut command = Command::new(cargo);
    command.current_dir(workspace).arg("bench");
    for package in PACKAGES {
        command.args(["-p", package]);
    }
    // Only the criterion targets: the libraries' own test harnesses would
    // reject criterion's arguments.
    for bench in BENCHES {
        command.args(["--bench", bench]);
    }
    command.args(["--", "--noplot"]);
    if quick {
        command.args(["--quick", "--warm-up-time", "1", "--measurement-time", "1"]);
    }
    log.run(&mut command)?;
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
