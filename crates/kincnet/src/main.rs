//! The kincnet CNI plugin binary: CNI_* environment and config on stdin, result on stdout.

use std::io::{Read, Write};

fn main() {
    match std::env::args().nth(1).as_deref() {
        Some("--help" | "-h") => {
            print!("{}", kincnet::HELP);
            return;
        }
        // For people and image checks; runtimes use CNI_COMMAND=VERSION.
        Some("--version" | "-V") => {
            println!("kincnet {}", env!("CARGO_PKG_VERSION"));
            return;
        }
        _ => {}
    }
    let mut stdin = Vec::new();
    // VERSION may come with no stdin at all; a read error is the same as empty input.
    // One byte past the limit is enough for the parser to refuse it: nothing larger is
    // held in memory.
    let limit = kincnet::config::MAX_STDIN as u64 + 1;
    let _ = std::io::stdin().take(limit).read_to_end(&mut stdin);
    let out = kincnet::plugin::run(&|k: &str| std::env::var(k).ok(), &stdin);
    let mut so = std::io::stdout().lock();
    let _ = so.write_all(out.stdout.as_bytes());
    let _ = so.flush();
    drop(so);
    if kincnet::plugin::exit_detached_wanted() {
        kincnet::plugin::exit_detached(out.code);
    }
    std::process::exit(out.code);
}
