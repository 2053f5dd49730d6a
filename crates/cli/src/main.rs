//! `leadline`: the service and its admin commands.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use leadline::{config, run};
use leadline_store::MigrateOp;
use secrecy::SecretString;

/// mimalloc rather than the system allocator: a request allocates many
/// small, short-lived buffers on every worker thread, and glibc's malloc
/// took about a tenth of the service's CPU under load (`perf record` during
/// `cargo xtask bench --quick`; the effect is in docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "leadline",
    version,
    about = "Multi-tenant lead and outreach engine"
)]
struct Cli {
    /// A TOML config file (default: ./leadline.toml when present; also LEADLINE_CONFIG).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the HTTP API (the default). Applies pending migrations first.
    Serve {
        /// Listen address, overriding http.bind.
        #[arg(long)]
        bind: Option<std::net::SocketAddr>,
    },
    /// Deliver sent messages (the relay `serve` also runs unless
    /// relay.enabled=false), until SIGINT/SIGTERM.
    Relay,
    /// Apply, revert or list schema migrations.
    Migrate {
        #[command(subcommand)]
        action: Option<MigrateAction>,
    },
    /// Manage tenants.
    Tenant {
        #[command(subcommand)]
        action: TenantAction,
    },
    /// Manage a tenant's API keys (as `/v1/keys` does, without needing a key).
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
    /// Invite the people who use the console.
    Users {
        #[command(subcommand)]
        action: UsersAction,
    },
    /// Configuration.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Bring data in.
    Import {
        #[command(subcommand)]
        what: ImportWhat,
    },
    /// Take data out.
    Export {
        #[command(subcommand)]
        what: ExportWhat,
    },
    /// Privacy requests.
    Privacy {
        #[command(subcommand)]
        action: PrivacyAction,
    },
    /// The audit trail.
    Audit {
        #[command(subcommand)]
        action: AuditAction,
    },
    /// Back up the whole database into a new file, with a manifest of
    /// every table's row count and digest; safe while the service runs.
    Backup {
        /// The file to create (never overwritten; readable by its owner only).
        #[arg(long)]
        out: PathBuf,
    },
    /// Restore a backup: SQLite into database.url, a file that must not
    /// exist yet; PostgreSQL into an empty database, as its owner
    /// (database.migration_url). Refuses a damaged, truncated or altered
    /// file before writing anything.
    Restore {
        /// The backup file.
        file: PathBuf,
    },
    /// PostgreSQL roles for the service.
    Roles {
        #[command(subcommand)]
        action: RolesAction,
    },
}

#[derive(Debug, Subcommand)]
enum PrivacyAction {
    /// Everything a tenant holds about one person, as one JSON document
    /// (as `POST /v1/privacy/export`); recorded in the audit trail.
    Export {
        /// The tenant's slug.
        #[arg(long)]
        tenant: String,
        /// The person's email.
        #[arg(long)]
        email: String,
        /// Write it here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Erase one person from everything a tenant holds (as `POST
    /// /v1/privacy/erase`): irreversible; prints what was erased.
    Erase {
        /// The tenant's slug.
        #[arg(long)]
        tenant: String,
        /// The person's email.
        #[arg(long)]
        email: String,
    },
}

#[derive(Debug, Subcommand)]
enum AuditAction {
    /// Check every tenant's hash chain (or one's): exit 1 naming the first
    /// record that was edited, deleted under or moved.
    Verify {
        /// Only this tenant (its slug).
        #[arg(long)]
        tenant: Option<String>,
        /// Where each tenant's last verification ended (read, then
        /// updated): keep it where the database's owner cannot write.
        #[arg(long)]
        anchors: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum MigrateAction {
    /// Apply every pending migration (the default).
    Up,
    /// Revert the most recent migrations.
    Down {
        /// How many to revert.
        #[arg(long, default_value_t = 1)]
        steps: u32,
    },
    /// List migrations and whether each is applied.
    Status,
}

#[derive(Debug, Subcommand)]
enum ConfigAction {
    /// Validate the configuration and print the effective values, secrets
    /// redacted (exit 2 listing every bad key when it is invalid).
    Check,
}

#[derive(Debug, Subcommand)]
enum TenantAction {
    /// Create a tenant; prints its API key (once) on stdout.
    Create {
        /// URL-safe handle: lowercase letters, digits and dashes.
        slug: String,
        /// Display name (defaults to the slug).
        #[arg(long)]
        name: Option<String>,
    },
    /// Write one tenant, every id kept, to a new file another deployment
    /// (of either backend) can import. Run with the owner's URL
    /// (database.migration_url) on PostgreSQL.
    Export {
        /// The tenant's slug.
        slug: String,
        /// The file to write (new; readable by its owner only).
        #[arg(long)]
        out: PathBuf,
    },
    /// Import a tenant written by `tenant export`, into a database at the
    /// same migration that holds no tenant of its id or slug.
    Import {
        /// The export file.
        file: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum KeysAction {
    /// Issue a key; prints it (once) on stdout.
    Create {
        /// The tenant's slug.
        #[arg(long)]
        tenant: String,
        /// What people will call it.
        #[arg(long)]
        name: String,
        /// viewer, agent, approver or admin.
        #[arg(long, conflicts_with = "scopes")]
        role: Option<String>,
        /// Explicit scopes instead of a role, comma-separated: read,
        /// leads:write, events:write, approvals:draft, approvals:decide, admin.
        #[arg(long)]
        scopes: Option<String>,
        /// When it stops working by itself (RFC 3339).
        #[arg(long)]
        expires_at: Option<String>,
    },
    /// List the tenant's keys (never their secrets).
    List {
        /// The tenant's slug.
        #[arg(long)]
        tenant: String,
    },
    /// Revoke a key: every instance refuses it within a second.
    Revoke {
        /// The tenant's slug.
        #[arg(long)]
        tenant: String,
        /// The key's id (from `keys list`).
        id: String,
    },
    /// Issue a key's successor and let the old one work for the overlap;
    /// prints the new key (once) on stdout.
    Rotate {
        /// The tenant's slug.
        #[arg(long)]
        tenant: String,
        /// The key's id (from `keys list`).
        id: String,
        /// How long the old key keeps working, in seconds (at most 604800).
        #[arg(long, default_value_t = 86_400)]
        overlap_seconds: u32,
    },
}

#[derive(Debug, Subcommand)]
enum UsersAction {
    /// Create a user and print a one-time login link (once) on stdout.
    Invite {
        /// The tenant's slug.
        #[arg(long)]
        tenant: String,
        /// Their email (their sign-in name).
        #[arg(long)]
        email: String,
        /// Their name (defaults to the email).
        #[arg(long)]
        name: Option<String>,
        /// viewer, agent, approver or admin.
        #[arg(long, default_value = "agent")]
        role: String,
        /// The console's address as people reach it (default: http.bind).
        #[arg(long)]
        url: Option<String>,
    },
    /// Print a new one-time login link for a user (a forgotten password).
    Link {
        /// The tenant's slug.
        #[arg(long)]
        tenant: String,
        /// The user's email.
        #[arg(long)]
        email: String,
        /// The console's address as people reach it (default: http.bind).
        #[arg(long)]
        url: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum ImportWhat {
    /// Leads from a CSV file (a CRM's export or a spreadsheet). Headers are
    /// matched to fields by name; unknown columns land in metadata. Running
    /// it again with the same file continues (or repeats nothing of) the
    /// earlier run.
    Leads {
        /// The CSV file (UTF-8; `,`, `;` or tab).
        file: PathBuf,
        /// The tenant's slug.
        #[arg(long)]
        tenant: String,
        /// Map a column: `--map "E-mail Address=email"`; fields: first_name,
        /// last_name, name, email, phone, company, source, status, owner,
        /// tags, metadata, ignore. Repeat for several.
        #[arg(long = "map", value_name = "HEADER=FIELD")]
        map: Vec<String>,
        /// A row whose email is already a lead's: skip, update or create.
        #[arg(long, default_value = "skip")]
        on_duplicate: String,
        /// Where to write rejected rows (default: FILE.rejected.csv).
        #[arg(long)]
        rejected: Option<PathBuf>,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
}

#[derive(Debug, Subcommand)]
enum ExportWhat {
    /// Leads as CSV, in the columns `import leads` maps back.
    Leads {
        /// The tenant's slug.
        #[arg(long)]
        tenant: String,
        /// Write here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Only the hits of this search, best first.
        #[arg(long)]
        q: Option<String>,
        /// Only leads in this status.
        #[arg(long)]
        status: Option<String>,
        /// Only leads with this tag.
        #[arg(long)]
        tag: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum RolesAction {
    /// Create or repair the login role the service connects as. Run with the
    /// owner's or an administrator's URL (database.migration_url or database.url).
    Setup {
        /// The login role's name.
        login: String,
        /// Environment variable holding its password.
        #[arg(long, default_value = "LEADLINE_SERVICE_PASSWORD")]
        password_env: String,
    },
    /// Check that a login role is safe to run the service as (exit 1 if not).
    Verify {
        /// The login role's name.
        login: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let file = cli.config.or_else(config::file_from_env);
    let config = match config::load(file.as_deref()) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("leadline: {err}");
            return ExitCode::from(2);
        }
    };
    run::init_logging(&config);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("leadline: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(
        cli.command.unwrap_or(Command::Serve { bind: None }),
        config,
    )) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("leadline: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(command: Command, mut config: config::Config) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve { bind } => {
            if let Some(bind) = bind {
                config.http.bind = bind;
            }
            let listener = tokio::net::TcpListener::bind(config.http.bind)
                .await
                .map_err(|e| anyhow::anyhow!("http.bind {}: {e}", config.http.bind))?;
            eprintln!("leadline listening on http://{}", listener.local_addr()?);
            run::serve(&config, listener, run::shutdown_signal()).await?;
        }
        Command::Relay => {
            eprintln!("leadline relay running; stop it with Ctrl-C or SIGTERM");
            run::relay(&config, run::shutdown_signal()).await?;
        }
        Command::Migrate { action } => {
            let op = match action.unwrap_or(MigrateAction::Up) {
                MigrateAction::Up => Some(MigrateOp::Up),
                MigrateAction::Down { steps } => Some(MigrateOp::Down { steps }),
                MigrateAction::Status => None,
            };
            for m in run::migrate(&config, op).await? {
                println!(
                    "{:<45} {}",
                    m.name,
                    if m.applied { "applied" } else { "pending" }
                );
            }
        }
        Command::Tenant {
            action: TenantAction::Create { slug, name },
        } => {
            let created = run::create_tenant(&config, &slug, name.as_deref()).await?;
            eprintln!(
                "created tenant {} ({}). Its API key is below; it is shown only this once:",
                created.tenant.slug, created.tenant.id
            );
            println!("{}", created.api_key.expose());
        }
        Command::Tenant {
            action: TenantAction::Export { slug, out },
        } => {
            use secrecy::ExposeSecret as _;
            let url = config.database.owner_url();
            let manifest =
                leadline_store::transfer::export_tenant(url.expose_secret(), &slug, &out).await?;
            eprintln!(
                "exported tenant {} ({}): {} rows in {} tables, to {}",
                manifest.slug,
                manifest.tenant_id,
                manifest.rows(),
                manifest.tables.len(),
                out.display()
            );
        }
        Command::Tenant {
            action: TenantAction::Import { file },
        } => {
            use secrecy::ExposeSecret as _;
            let url = config.database.owner_url();
            let manifest =
                leadline_store::transfer::import_tenant(&file, url.expose_secret()).await?;
            eprintln!(
                "imported tenant {} ({}): {} rows, each table matching the export's manifest",
                manifest.slug,
                manifest.tenant_id,
                manifest.rows()
            );
        }
        Command::Keys { action } => keys(&config, action).await?,
        Command::Privacy {
            action: PrivacyAction::Export { tenant, email, out },
        } => {
            // `--out -` is standard output, as usual.
            let out = out.filter(|path| path.as_os_str() != "-");
            let file = out
                .as_deref()
                .map(leadline::privacy::create_private)
                .transpose()?;
            let exported = run::with_services(&config, async |s| {
                leadline::privacy::export(s, &tenant, &email).await
            })
            .await;
            match (exported, file, out) {
                (Ok(json), Some(file), Some(path)) => {
                    leadline::privacy::write_all(file, &json)?;
                    eprintln!("wrote {} bytes to {}", json.len(), path.display());
                }
                (Ok(json), _, _) => println!("{json}"),
                (Err(e), _, path) => {
                    // Nothing was exported: no empty file stays behind.
                    if let Some(path) = path {
                        let _ = std::fs::remove_file(path);
                    }
                    return Err(e);
                }
            }
        }
        Command::Privacy {
            action: PrivacyAction::Erase { tenant, email },
        } => {
            let report = run::with_cached_services(&config, async |s| {
                leadline::privacy::erase(s, &tenant, &email).await
            })
            .await?;
            println!("{report}");
        }
        Command::Backup { out } => {
            use secrecy::ExposeSecret as _;
            // PostgreSQL: the owner's login, a member of leadline_backup.
            let url = config.database.owner_url();
            let manifest = leadline_store::backup::backup(url.expose_secret(), &out).await?;
            eprintln!(
                "backed up {} tables, {} rows, to {} ({} bytes of {})",
                manifest.tables.len(),
                manifest.rows(),
                out.display(),
                manifest.payload_bytes,
                manifest.backend
            );
        }
        Command::Restore { file } => {
            use secrecy::ExposeSecret as _;
            // PostgreSQL: as the owner, into an empty database.
            let url = config.database.owner_url();
            let manifest = leadline_store::backup::restore(&file, url.expose_secret()).await?;
            eprintln!(
                "restored {} tables, {} rows, each matching the manifest (taken {} by leadline {}, schema {})",
                manifest.tables.len(),
                manifest.rows(),
                manifest.created_at,
                manifest.leadline,
                manifest.schema
            );
        }
        Command::Audit {
            action: AuditAction::Verify { tenant, anchors },
        } => {
            let mut kept = match &anchors {
                Some(path) => leadline::audit::read_anchors(path)?,
                None => leadline::audit::Anchors::new(),
            };
            let checked = run::with_services(&config, async |s| {
                leadline::audit::verify(s, tenant.as_deref(), &mut kept).await
            })
            .await?;
            if let Some(path) = &anchors {
                leadline::audit::write_anchors(path, &kept)?;
            }
            let mut broken = false;
            for c in &checked {
                println!("{}", c.describe());
                broken |= c.is_broken();
            }
            if broken {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Users { action } => users(&config, action).await?,
        Command::Import {
            what:
                ImportWhat::Leads {
                    file,
                    tenant,
                    map,
                    on_duplicate,
                    rejected,
                    quiet,
                },
        } => {
            let args = leadline::import::ImportArgs {
                file,
                tenant,
                map,
                on_duplicate,
                rejected,
                quiet,
            };
            let run = run::import_leads(&config, &args).await?;
            if run.counts.rejected > 0 {
                return Ok(ExitCode::from(2));
            }
        }
        Command::Export {
            what:
                ExportWhat::Leads {
                    tenant,
                    out,
                    q,
                    status,
                    tag,
                },
        } => {
            let to_file = out.is_some();
            let args = leadline::export::ExportArgs {
                tenant,
                out,
                q,
                status,
                tag,
            };
            let bytes = run::export_leads(&config, &args).await?;
            if to_file {
                eprintln!("exported {bytes} bytes");
            }
        }
        Command::Roles {
            action:
                RolesAction::Setup {
                    login,
                    password_env,
                },
        } => {
            let password = std::env::var(&password_env).map_err(|_| {
                anyhow::anyhow!(
                    "set the role's password in the {password_env} environment variable"
                )
            })?;
            if password.len() < 12 {
                anyhow::bail!("{password_env}: the password must be at least 12 characters");
            }
            run::setup_service_role(&config, &login, &SecretString::from(password)).await?;
            eprintln!("role {login} is ready; connect the service as it (database.url)");
        }
        Command::Config {
            action: ConfigAction::Check,
        } => {
            for (key, value) in config.describe() {
                println!("{key} = {value}");
            }
        }
        Command::Roles {
            action: RolesAction::Verify { login },
        } => {
            let problems = run::verify_service_role(&config, &login).await?;
            if problems.is_empty() {
                println!(
                    "{login}: ok (not superuser, no BYPASSRLS, owns nothing, no TRUNCATE, RLS forced on every tenant table)"
                );
            } else {
                for p in &problems {
                    println!("{login}: {p}");
                }
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn keys(config: &config::Config, action: KeysAction) -> anyhow::Result<()> {
    use leadline::keys;
    match action {
        KeysAction::Create {
            tenant,
            name,
            role,
            scopes,
            expires_at,
        } => {
            let args = keys::CreateArgs {
                tenant,
                name,
                role,
                scopes,
                expires_at,
            };
            let issued = run::with_services(config, async |s| keys::create(s, &args).await).await?;
            eprintln!(
                "issued key {} ({}). It is below; it is shown only this once:",
                issued.key.id, issued.key.name
            );
            println!("{}", issued.token.expose());
        }
        KeysAction::List { tenant } => {
            let listed = run::with_services(config, async |s| keys::list(s, &tenant).await).await?;
            let now = chrono::Utc::now();
            for key in &listed {
                println!("{}", keys::describe(key, now));
            }
        }
        KeysAction::Revoke { tenant, id } => {
            let key =
                run::with_services(config, async |s| keys::revoke(s, &tenant, &id).await).await?;
            eprintln!(
                "revoked key {} ({}); running instances refuse it within a second",
                key.id, key.name
            );
        }
        KeysAction::Rotate {
            tenant,
            id,
            overlap_seconds,
        } => {
            let (old, new, token) = run::with_services(config, async |s| {
                keys::rotate(s, &tenant, &id, overlap_seconds).await
            })
            .await?;
            let until = old
                .expires_at
                .map_or_else(|| "-".to_owned(), |t| t.to_rfc3339());
            eprintln!(
                "issued key {} to follow {}, which works until {until}. The new key is below; it is shown only this once:",
                new.id, old.id
            );
            println!("{}", token.expose());
        }
    }
    Ok(())
}

async fn users(config: &config::Config, action: UsersAction) -> anyhow::Result<()> {
    use leadline::users;
    match action {
        UsersAction::Invite {
            tenant,
            email,
            name,
            role,
            url,
        } => {
            let invited = run::with_services(config, async |s| {
                users::invite(s, &tenant, &email, name.as_deref(), &role).await
            })
            .await?;
            let base = users::console_url(url.as_deref(), config.http.bind);
            eprintln!(
                "invited {} ({}). Their login link is below; it works once, for 72 hours:",
                invited.user.email, invited.user.role
            );
            println!("{}", users::link_url(&base, &invited.link));
        }
        UsersAction::Link { tenant, email, url } => {
            let (user, link) =
                run::with_services(config, async |s| users::link(s, &tenant, &email).await).await?;
            let base = users::console_url(url.as_deref(), config.http.bind);
            eprintln!(
                "a new login link for {}; it works once, for 72 hours:",
                user.email
            );
            println!("{}", users::link_url(&base, &link));
        }
    }
    Ok(())
}
