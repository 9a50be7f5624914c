//! ichido-token: the soft-token generator on the customer's PC — register (利用開始登録), show codes, resync (同期ズレ補正), back up.

mod api;
mod cli;
mod commands;
mod crypto;
mod explain;
mod prompt;
mod select;
mod store;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

use crate::cli::Cli;

fn main() -> ExitCode {
    let command = Cli::command().after_long_help(commands::store_help());
    let cli = match Cli::from_arg_matches(&command.get_matches()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    match commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ichido-token: {e:#}");
            ExitCode::FAILURE
        }
    }
}
