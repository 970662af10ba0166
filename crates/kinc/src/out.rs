//! The binary's output. Results go to stdout through [`outln!`]/[`out!`], which return an
//! error instead of panicking like `println!`: a reader that left (`kinc get clusters |
//! head -1`) becomes [`Gone`], which `main` turns into a quiet exit 0, as ripgrep does.
//! Notes go to stderr through [`errln!`], best effort: they are never worth failing for.

use std::fmt;
use std::io::{self, Write};

/// Stdout's reader is gone: stop writing and exit without a message.
#[derive(Debug, thiserror::Error)]
#[error("stdout was closed by its reader")]
pub struct Gone;

/// Writes (and flushes) to stdout; a closed pipe is [`Gone`], any other failure an error
/// naming stdout.
pub fn print(args: fmt::Arguments) -> anyhow::Result<()> {
    let mut o = io::stdout().lock();
    o.write_fmt(args)
        .and_then(|()| o.flush())
        .map_err(|e| match e.kind() {
            io::ErrorKind::BrokenPipe => anyhow::Error::new(Gone),
            _ => anyhow::Error::new(e).context("writing to stdout"),
        })
}

/// A line on stderr, if stderr takes it.
pub fn note(args: fmt::Arguments) {
    let _ = writeln!(io::stderr(), "{args}");
}

macro_rules! out {
    ($($arg:tt)*) => { $crate::out::print(format_args!($($arg)*)) };
}

macro_rules! outln {
    ($($arg:tt)*) => { $crate::out::print(format_args!("{}\n", format_args!($($arg)*))) };
}

macro_rules! errln {
    ($($arg:tt)*) => { $crate::out::note(format_args!($($arg)*)) };
}
