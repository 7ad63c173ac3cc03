use clap::Parser;

use karo::config::{Cli, Command};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Crd) => match karo::api::crd_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("karo: {e}");
                std::process::ExitCode::FAILURE
            }
        },
        Some(Command::Version) => {
            println!("karo {}", env!("CARGO_PKG_VERSION"));
            std::process::ExitCode::SUCCESS
        }
        None => karo::run::main(cli.run),
    }
}
