//! The `tern` command line: `serve` runs the broker.

use clap::{Parser, Subcommand};

/// Tern: an MQTT 3.1.1 and 5.0 broker and client toolkit.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the broker on its embedded defaults.
    Serve,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Serve => {
            eprintln!("tern serve: the broker is not built yet; only the protocol codec exists.");
            Ok(())
        }
    }
}
