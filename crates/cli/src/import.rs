//! `leadline import leads FILE --tenant SLUG`: a CSV file into a tenant,
//! with a progress bar, a summary, and the rejected rows written back as CSV
//! for fixing and importing again.

use std::{
    io::{BufReader, Read as _},
    path::{Path, PathBuf},
    time::Instant,
};

use leadline_app::{CsvSource, ImportOptions, Services};
use leadline_domain::{
    Slug,
    import::{ImportRun, OnDuplicate, Target},
};
use sha2::Digest as _;

/// What `import leads` was asked to do.
#[derive(Debug)]
pub struct ImportArgs {
    /// The CSV file.
    pub file: PathBuf,
    /// The tenant's slug.
    pub tenant: String,
    /// `HEADER=field` overrides.
    pub map: Vec<String>,
    /// Duplicate policy.
    pub on_duplicate: String,
    /// Where rejected rows go (default: next to the file).
    pub rejected: Option<PathBuf>,
    /// No progress bar.
    pub quiet: bool,
}

/// Parses `HEADER=field` (the last `=` splits, so headers may hold one).
fn mapping(raw: &str) -> anyhow::Result<(String, Target)> {
    let (header, target) = raw
        .rsplit_once('=')
        .ok_or_else(|| anyhow::anyhow!("--map {raw:?}: expected HEADER=field"))?;
    let target = Target::parse(target).map_err(|e| anyhow::anyhow!("--map {raw:?}: {e}"))?;
    Ok((header.trim().to_owned(), target))
}

/// SHA-256 (hex) and line count of the file, in one pass off the runtime.
async fn fingerprint(path: &Path) -> anyhow::Result<(String, u64)> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || -> anyhow::Result<(String, u64)> {
        let mut file = BufReader::new(std::fs::File::open(&path)?);
        let mut hash = sha2::Sha256::new();
        let mut lines = 0u64;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hash.update(&buf[..n]);
            lines += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
        }
        let hex = hash
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>();
        Ok((hex, lines))
    })
    .await?
}

/// Runs the import and prints its summary; returns the run.
///
/// # Errors
/// An unreadable file, an unknown tenant, a mapping that does not fit, or
/// the store's failure (the run resumes when the command is run again).
pub async fn import_leads(services: &Services, args: &ImportArgs) -> anyhow::Result<ImportRun> {
    let slug = Slug::parse(&args.tenant).map_err(|e| anyhow::anyhow!("--tenant: {e}"))?;
    let tenant = services
        .tenants
        .find_by_slug(&slug)
        .await?
        .ok_or_else(|| anyhow::anyhow!("--tenant: no tenant has the slug {slug}"))?;
    let options = ImportOptions {
        on_duplicate: args
            .on_duplicate
            .parse::<OnDuplicate>()
            .map_err(|e| anyhow::anyhow!("--on-duplicate: {e}"))?,
        mapping: args
            .map
            .iter()
            .map(|m| mapping(m))
            .collect::<anyhow::Result<_>>()?,
    };
    let file = &args.file;
    let (sha, lines) = fingerprint(file)
        .await
        .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    let source = CsvSource::open(
        std::fs::File::open(file).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?,
    )
    .await
    .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;

    let bar = if args.quiet {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(lines.max(1))
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:30} {pos}/{len} lines  {per_sec}  ETA {eta}  {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    let name = file.file_name().map_or_else(
        || file.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let result = services
        .imports
        .run(tenant.id, &sha, &name, source, &options, |run| {
            bar.set_position(run.committed_line);
            bar.set_message(format!(
                "{} created, {} updated, {} skipped, {} rejected",
                run.counts.created, run.counts.updated, run.counts.skipped, run.counts.rejected
            ));
        })
        .await;
    bar.finish_and_clear();
    let run = result?;
    let c = run.counts;
    println!(
        "imported {} into {}: {} rows, {} created, {} updated, {} skipped, {} rejected in {:.1} s (import {})",
        file.display(),
        slug,
        c.rows,
        c.created,
        c.updated,
        c.skipped,
        c.rejected,
        started.elapsed().as_secs_f64(),
        run.id
    );
    if c.rejected > 0 {
        let out = args.rejected.clone().unwrap_or_else(|| {
            let mut name = file.as_os_str().to_owned();
            name.push(".rejected.csv");
            PathBuf::from(name)
        });
        let csv = services.imports.rejected_csv(tenant.id, run.id).await?;
        std::fs::write(&out, csv).map_err(|e| anyhow::anyhow!("{}: {e}", out.display()))?;
        for row in services
            .imports
            .rejects(tenant.id, run.id)
            .await?
            .iter()
            .take(5)
        {
            for e in &row.errors {
                let column = if e.column.is_empty() {
                    "row"
                } else {
                    &e.column
                };
                eprintln!("line {}: {column}: {}", row.line, e.reason);
            }
        }
        println!(
            "{} rejected rows (with their reasons in the last column) are in {}: fix them and import that file",
            c.rejected,
            out.display()
        );
    }
    Ok(run)
}
