//! `till`: parses the command line and hands it to the library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = till::Cli::parse();
    till::run(cli)
}
