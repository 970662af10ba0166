//! `kinc`: parse the command line, run it, print errors kind-style.

#[macro_use]
mod out;
mod cli;
mod commands;

use clap::Parser;

fn main() {
    let cli = cli::Cli::parse();
    if let Err(e) = commands::run(cli) {
        if e.downcast_ref::<out::Gone>().is_some() {
            return;
        }
        errln!("ERROR: {e:#}");
        std::process::exit(1);
    }
}
