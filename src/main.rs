//! The `flowrun` command: arguments in, exit status out. Everything else lives
//! in the engine and steps crates; this crate only parses arguments, wires the
//! engine's phases together per subcommand, prints, and maps every outcome to
//! one [`exit::ExitStatus`].
//!
//! Where things go: a new subcommand is a variant in `cli.rs`, a file in
//! `commands/` returning `Result<ExitStatus, Error>`, and one arm in
//! `commands::dispatch`; its text rendering goes in `output/`.

mod cli;
mod commands;
mod error;
mod exit;
mod journal;
mod load;
mod logging;
mod output;

fn main() -> std::process::ExitCode {
    let cli = cli::parse();
    logging::init(cli.verbose, cli.quiet);
    let status = commands::dispatch(cli).unwrap_or_else(|e| e.report());
    status.into()
}
