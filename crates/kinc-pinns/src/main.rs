//! `pinns`: pins a pod's namespaces for CRI-O; the logic is in the library.

use std::io::Write;

use clap::Parser;
use kinc_pinns::cli::{Cli, Config};

fn main() {
    // clap exits 2 on a malformed command line, 0 after --help or --version.
    let cli = Cli::parse();
    let code = match Config::from_cli(&cli).and_then(|cfg| kinc_pinns::pin::run(&cfg)) {
        Ok(_) => 0,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "pinns: {e}");
            e.exit_code()
        }
    };
    std::process::exit(code);
}
