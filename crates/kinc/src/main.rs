//! `kinc`: parse the command line, run it, print errors kind-style.

mod cli;
mod commands;

use clap::Parser;

fn main() {
    let cli = cli::Cli::parse();
    if let Err(e) = commands::run(cli) {
        eprintln!("ERROR: {e:#}");
        std::process::exit(1);
    }
}
