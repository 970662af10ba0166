//! `crun-wrapper`: see the library docs and `crun-wrapper --help`.

use std::io::Write;

fn main() {
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    if args.first().is_some_and(|a| a == "explain") {
        args.remove(0);
        std::process::exit(crun_wrapper::explain::run(args));
    }
    if args.first().is_some_and(|a| a == "--help" || a == "-?") {
        // Best effort: crun's own help follows whatever stdout is.
        let mut out = std::io::stdout().lock();
        let _ = out
            .write_all(crun_wrapper::HELP.as_bytes())
            .and_then(|()| out.flush());
    }
    std::process::exit(crun_wrapper::wrap(args));
}
