//! The `outpost` command: `serve`, `check`, `user …`, `token issue|list|revoke`. A thin layer over the
//! library; `anyhow` lives here and nowhere else but start-up.

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use outpost::config::{self, Config, LogFormat, Overrides};
use outpost::records::Role;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "outpost",
    version,
    about = "An agent appliance for one edge box"
)]
struct Cli {
    /// Configuration file (default: /etc/outpost/outpost.toml when it exists, else built-in defaults).
    #[arg(long, global = true, env = "OUTPOST_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory (store, secrets, certificates).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// Log line format on stderr.
    #[arg(long, global = true, value_parser = ["text", "json"])]
    log_format: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon (the default).
    Serve {
        /// Address(es) to listen on, comma-separated (e.g. 127.0.0.1:8000).
        #[arg(long)]
        listen: Option<String>,
    },
    /// Check a configuration file and exit.
    Check,
    /// Manage users in the data dir's store (stop the daemon first).
    #[command(subcommand)]
    User(UserCommand),
    /// Mint, list and revoke device tokens (stop the daemon first).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Write a consistent copy of the store to FILE (through the running daemon, if any).
    Backup { file: PathBuf },
    /// Say how the store is: whether it writes, its size, the free space beside it.
    Status,
}

#[derive(Subcommand)]
enum UserCommand {
    /// Add a user; prints a generated password unless --password-stdin is given.
    Add {
        username: String,
        #[arg(long, default_value = "user", value_parser = ["user", "admin"])]
        role: String,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List users.
    List,
    /// Set a user's password (generated and printed unless --password-stdin).
    Passwd {
        username: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Remove a user with its sessions, history, executions and device tokens; agents it
    /// made pass to the oldest other admin.
    Remove { username: String },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Mint a long-lived token for a user (e.g. a voice device).
    Issue {
        #[arg(long)]
        user: String,
        /// Lifetime: 90s, 15m, 12h, 30d.
        #[arg(long, default_value = "30d")]
        ttl: String,
        /// Limit the token to these scopes (space-separated: chat voice tasks).
        #[arg(long)]
        scope: Option<String>,
        /// A name to tell the token apart by in `token list`.
        #[arg(long)]
        label: Option<String>,
    },
    /// List device tokens that have not expired (all users, or one).
    List {
        #[arg(long)]
        user: Option<String>,
    },
    /// Revoke a device token by its id (from `token list`).
    Revoke { id: String },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let _ = writeln!(std::io::stderr(), "outpost: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let listen = match &cli.command {
        Some(Command::Serve { listen }) => listen.clone(),
        _ => None,
    };
    let overrides = Overrides {
        config: cli.config.clone(),
        listen,
        data_dir: cli.data_dir.clone(),
    };
    let mut config = config::load(&overrides, |key| std::env::var(key).ok())?;
    if let Some(format) = &cli.log_format {
        config.log_format = if format == "json" {
            LogFormat::Json
        } else {
            LogFormat::Text
        };
    }
    // Store reads run on the blocking pool; a few threads per core serve them with less
    // switching than tokio's default of hundreds.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(16)
        .build()
        .context("starting the async runtime")?;
    match cli.command.unwrap_or(Command::Serve { listen: None }) {
        Command::Serve { .. } => {
            outpost::service::init_logging(&config);
            runtime.block_on(serve(config, overrides))
        }
        Command::Check => {
            let mut out = std::io::stdout();
            writeln!(
                out,
                "configuration is valid: {} agent(s), listening on {}",
                config.agents.len(),
                config
                    .listen
                    .iter()
                    .map(|a| a.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )?;
            Ok(())
        }
        Command::User(command) => runtime.block_on(user(config, command)),
        Command::Token(command) => runtime.block_on(token(config, command)),
        Command::Backup { file } => runtime.block_on(backup(config, file)),
        Command::Status => runtime.block_on(status(config)),
    }
}

/// Serves until stopped: sockets from the service manager when it passed any, READY once
/// listening, SIGHUP re-reads the same configuration layers.
async fn serve(config: Config, overrides: Overrides) -> anyhow::Result<()> {
    let inherited = outpost::service::inherited_listeners()
        .context("taking the sockets passed by the service manager")?;
    let daemon = outpost::start_with(config, inherited).await?;
    outpost::service::run(daemon, || {
        config::load(&overrides, |key| std::env::var(key).ok())
    })
    .await;
    Ok(())
}

/// Asks the running daemon for a copy of its store; with no daemon, copies the file itself.
async fn backup(config: Config, file: PathBuf) -> anyhow::Result<()> {
    let mut out = std::io::stdout();
    let through_daemon = outpost::control::request_backup(&config.data_dir, &file)
        .await
        .context("asking the running daemon for a backup")?;
    if let Some(bytes) = through_daemon {
        writeln!(
            out,
            "backed up the running daemon's store to {} ({bytes} bytes)",
            file.display()
        )?;
        return Ok(());
    }
    let path = outpost::data_dir::store_file(&config.data_dir);
    if !path.exists() {
        bail!("no store at {} and no daemon answering", path.display());
    }
    let store = open_store(&config).await?;
    let backup = store.backup_to(&file).await?;
    writeln!(
        out,
        "backed up {} to {} ({} tables, {} rows)",
        store.path().display(),
        backup.path.display(),
        backup.tables,
        backup.rows
    )?;
    Ok(())
}

async fn status(config: Config) -> anyhow::Result<()> {
    let mut out = std::io::stdout();
    let store_file = outpost::data_dir::store_file(&config.data_dir);
    let answer = outpost::control::request_status(&config.data_dir)
        .await
        .context("asking the running daemon")?;
    let Some(pairs) = answer else {
        writeln!(
            out,
            "daemon       not running (no answer on the control socket)"
        )?;
        let size = std::fs::metadata(&store_file).map_or(0, |m| m.len());
        writeln!(
            out,
            "store        {} ({})",
            store_file.display(),
            megabytes(size)
        )?;
        if let Some(free) = outpost::store::health::free_bytes(&config.data_dir) {
            writeln!(
                out,
                "free space   {} on the data dir's file system",
                megabytes(free)
            )?;
        }
        return Ok(());
    };
    let get = |key: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    let number = |key: &str| get(key).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    writeln!(out, "daemon       running")?;
    let state = match (get("state"), get("unwritable_seconds")) {
        (Some("writable"), _) | (None, _) => "writable".to_string(),
        (Some("full"), since) => format!(
            "refused: the disk is full (for {} s); free space on it and writes resume",
            since.unwrap_or("0")
        ),
        (Some(other), since) => format!(
            "refused: {other} after an I/O error (for {} s); see the log",
            since.unwrap_or("0")
        ),
    };
    writeln!(out, "writes       {state}")?;
    writeln!(
        out,
        "store        {} ({})",
        store_file.display(),
        megabytes(number("file_bytes"))
    )?;
    if get("free_bytes").is_some() {
        writeln!(
            out,
            "free space   {} on the data dir's file system",
            megabytes(number("free_bytes"))
        )?;
    }
    writeln!(
        out,
        "since start  {} writes refused, {} I/O errors, {} reopenings",
        number("refused_writes"),
        number("io_errors"),
        number("reopened")
    )?;
    Ok(())
}

fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// Opens the store for a command that edits it; a running daemon holds it.
async fn open_store(config: &Config) -> anyhow::Result<outpost::store::Store> {
    outpost::data_dir::create_dir(&config.data_dir)
        .with_context(|| format!("creating the data dir {}", config.data_dir.display()))?;
    let (dir, options) = (config.data_dir.clone(), outpost::store_options(config));
    let store =
        tokio::task::spawn_blocking(move || outpost::store::Store::open_with(&dir, options))
            .await??;
    Ok(store)
}

fn read_password(from_stdin: bool) -> anyhow::Result<(String, bool)> {
    if !from_stdin {
        return Ok((outpost::ids::random_token(15), true));
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let password = line.trim_end_matches(['\r', '\n']).to_string();
    if password.is_empty() {
        bail!("no password on standard input");
    }
    Ok((password, false))
}

async fn user(config: Config, command: UserCommand) -> anyhow::Result<()> {
    let store = open_store(&config).await?;
    let users = outpost::users::Users::new(
        store,
        outpost::users::HashPool::new(1, 1, Default::default()),
    );
    let mut out = std::io::stdout();
    match command {
        UserCommand::Add {
            username,
            role,
            password_stdin,
        } => {
            let role = if role == "admin" {
                Role::Admin
            } else {
                Role::User
            };
            let (password, generated) = read_password(password_stdin)?;
            users.create(&username, &password, role).await?;
            writeln!(out, "added {username} ({})", role.as_str())?;
            if generated {
                writeln!(out, "password: {password}")?;
            }
        }
        UserCommand::List => {
            for user in users.list().await? {
                writeln!(
                    out,
                    "{}\t{}\t{}",
                    user.username,
                    user.role.as_str(),
                    user.created_at.to_rfc3339()
                )?;
            }
        }
        UserCommand::Passwd {
            username,
            password_stdin,
        } => {
            let (password, generated) = read_password(password_stdin)?;
            users.set_password(&username, &password).await?;
            writeln!(out, "password of {username} changed")?;
            if generated {
                writeln!(out, "password: {password}")?;
            }
        }
        UserCommand::Remove { username } => {
            let heir = users.default_heir(&username).await?;
            users.remove(&username, &heir).await?;
            writeln!(out, "removed {username}")?;
        }
    }
    Ok(())
}

async fn token(config: Config, command: TokenCommand) -> anyhow::Result<()> {
    let store = open_store(&config).await?;
    let auth = outpost::auth::Auth::open(
        store.clone(),
        &config.data_dir,
        config.token_ttl,
        config.login_attempts_per_minute,
    )
    .await?;
    let mut out = std::io::stdout();
    match command {
        TokenCommand::Issue {
            user,
            ttl,
            scope,
            label,
        } => {
            let ttl = config::parse_duration(&ttl).map_err(|m| anyhow::anyhow!("--ttl: {m}"))?;
            let scope = scope
                .as_deref()
                .map(outpost::api::check_scope)
                .transpose()
                .map_err(|m| anyhow::anyhow!("--scope: {m}"))?;
            let account = outpost::users::Users::new(
                store,
                outpost::users::HashPool::new(1, 1, Default::default()),
            )
            .get(&user)
            .await
            .with_context(|| format!("user {user}"))?;
            let (issued, _) = auth.issue_device(&account, ttl, scope, label).await?;
            writeln!(out, "{}", issued.access_token)?;
        }
        TokenCommand::List { user } => {
            for token in auth.stored_device_tokens(user.as_deref()).await? {
                writeln!(
                    out,
                    "{}\t{}\t{}\t{}\t{}",
                    token.id,
                    token.username,
                    token.scope.as_deref().unwrap_or("*"),
                    token.expires_at.to_rfc3339(),
                    token.label.as_deref().unwrap_or("")
                )?;
            }
        }
        TokenCommand::Revoke { id } => {
            let token = auth.revoke_stored_device_token(&id).await?;
            writeln!(out, "revoked {} of {}", token.id, token.username)?;
        }
    }
    Ok(())
}
