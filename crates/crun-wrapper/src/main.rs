//! `crun-wrapper`: see the library docs and `crun-wrapper --help`.

fn main() {
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    if args.first().is_some_and(|a| a == "explain") {
        args.remove(0);
        std::process::exit(crun_wrapper::explain::run(args));
    }
    if args.first().is_some_and(|a| a == "--help" || a == "-?") {
        print!("{}", crun_wrapper::HELP);
    }
    std::process::exit(crun_wrapper::wrap(args));
}
