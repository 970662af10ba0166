//! `cargo xtask <task> [args]`: each task lives in its own module and parses its own
//! arguments, so tasks can grow without touching each other.

mod hostvm;
mod image;

use std::process::ExitCode;

const USAGE: &str = "usage: cargo xtask <task> [args]

tasks:
  image    build the release binaries, assemble the node image context, podman build
  hostvm   build and run the Debian trixie test host VM

Run `cargo xtask <task> --help` for a task's options.";

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let task = args.next();
    let rest: Vec<String> = args.collect();
    let result = match task.as_deref() {
        Some("image") => image::run(rest),
        Some("hostvm") => hostvm::run(rest),
        Some("-h") | Some("--help") | Some("help") => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some(other) => Err(anyhow::anyhow!("unknown task {other:?}\n\n{USAGE}")),
        None => Err(anyhow::anyhow!("no task given\n\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
