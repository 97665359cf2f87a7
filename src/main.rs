//! The `sleddog` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use sleddog::control::{self, Options};

/// sleddog: a thread-per-core PostgreSQL pooler, load balancer and sharding proxy.
#[derive(Parser, Debug)]
#[command(name = "sleddog", version, about)]
struct Cli {
    /// Path to pgdog.toml.
    #[arg(
        short = 'c',
        long = "config",
        default_value = "pgdog.toml",
        global = true
    )]
    config: PathBuf,
    /// Path to users.toml.
    #[arg(
        short = 'u',
        long = "users",
        default_value = "users.toml",
        global = true
    )]
    users: PathBuf,
    /// Database URL(s), replacing [[databases]]; repeatable:
    /// postgres://user:pass@host:port/db?role=replica&shard=1&pool_size=5
    #[arg(
        short = 'd',
        long = "database_url",
        alias = "database-url",
        global = true
    )]
    database_url: Vec<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the proxy (the default).
    Run,
    /// Check the configuration and exit: 0 when valid, 1 otherwise.
    Configcheck,
    /// Print a SCRAM-SHA-256 verifier for a password, usable as `password_hash`.
    Hash {
        /// The password to hash.
        password: String,
    },
}

fn main() -> ExitCode {
    init_logging();
    let cli = Cli::parse();
    let options = Options {
        config_path: cli.config,
        users_path: cli.users,
        database_urls: cli.database_url,
    };
    let code = match cli.command.unwrap_or(Command::Run) {
        Command::Run => control::run(options),
        Command::Configcheck => match control::run::load_config(&options) {
            Some(_) => {
                println!("configuration is valid");
                0
            }
            None => 1,
        },
        Command::Hash { password } => {
            let salt: [u8; 16] = sleddog::auth::random_bytes();
            let secret = sleddog::auth::ScramSecret::from_password(
                &password,
                &salt,
                sleddog::auth::DEFAULT_ITERATIONS,
            );
            println!("{}", secret.to_verifier());
            0
        }
    };
    ExitCode::from(code as u8)
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("SLEDDOG_LOG")
        .or_else(|_| EnvFilter::try_from_env("RUST_LOG"))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
