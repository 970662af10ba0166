//! `pause`: the pod infra container's program; the logic is in the library.

use std::io::Write;

fn main() {
    if kinc_pause::wants_version(std::env::args_os().skip(1)) {
        let _ = writeln!(std::io::stdout(), "{}", kinc_pause::version_line());
        return;
    }
    std::process::exit(kinc_pause::run());
}
