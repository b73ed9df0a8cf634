//! `sluice-control-plane`: parse settings, then serve until SIGINT or SIGTERM.

// A usage batch decodes into thousands of small strings on one thread and is freed on another
// (sqlx's worker); glibc malloc's bookkeeping took 14 % of the control plane's time under load.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sluice_control_plane::settings::Settings;

/// The Sluice control plane: store, vault and admin API.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// A TOML settings file; SLUICE_* environment variables override it.
    #[arg(long, env = "SLUICE_CONFIG")]
    config: Option<PathBuf>,
    /// Local development: generate a master key into the data directory if none is set.
    #[arg(long)]
    dev: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Print a new random master key (base64) for SLUICE_MASTER_KEY.
    GenerateMasterKey,
}

/// EX_USAGE from sysexits.h: bad settings.
const EXIT_BAD_SETTINGS: u8 = 64;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::GenerateMasterKey) = cli.command {
        println!(
            "{}",
            sluice_control_plane::vault::generate_master_key().expose()
        );
        return ExitCode::SUCCESS;
    }
    let settings = match Settings::load(cli.config.as_deref(), std::env::vars(), cli.dev) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("sluice-control-plane: bad settings: {error}");
            return ExitCode::from(EXIT_BAD_SETTINGS);
        }
    };
    sluice_shared::logging::init(&settings.log, settings.log_format);
    match run(settings) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("sluice-control-plane: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(settings: Settings) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(sluice_control_plane::server::serve(
        settings,
        shutdown_signal(),
    ))?;
    Ok(())
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(_) => {
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
