//! `skupper`: parse the command line and hand it to the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    skupper::main(skupper::args::Cli::parse())
}
