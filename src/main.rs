//! The `flowrun` command: arguments in, exit status out. Everything else lives
//! in the engine and steps crates.

mod cli;
mod commands;
mod editor;
mod output;

fn main() {
    let code = commands::main(cli::parse());
    std::process::exit(code);
}
