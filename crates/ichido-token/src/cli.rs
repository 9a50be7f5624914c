//! The command line: subcommands, options and the help texts a bank customer reads.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

const ABOUT: &str =
    "Your bank's one-time password (ワンタイムパスワード) generator for internet banking.";

const LONG_ABOUT: &str = "\
ichido-token makes the one-time passwords (ワンタイムパスワード, OTP) that your bank
asks for when you log in to internet banking or approve a transaction. Several
users may share this PC: each user's token is kept apart.

First time, register (利用開始登録) with the contract number (契約者番号), user ID
(利用者ID) and login password of your internet banking:

    ichido-token register --server https://otp.your-bank.example --contract 1234567890 --user taro

Then, whenever the bank asks for a one-time password:

    ichido-token code

Keep a backup (a reinstalled or new PC keeps working with it):

    ichido-token export my-tokens.backup";

const STORE_HELP: &str = "\
The token file (default: in your configuration folder, see `ichido-token
--help`). It holds your tokens' secrets: keep it private, back it up with `export`.";

const SERVER_HELP: &str = "\
Your bank's OTP server: the https:// address your bank gave you. Needed for
`register`; elsewhere it picks a token when several match.";

/// The `ichido-token` command line.
#[derive(Debug, Parser)]
#[command(name = "ichido-token", version, about = ABOUT, long_about = LONG_ABOUT)]
pub struct Cli {
    #[arg(long, global = true, env = "ICHIDO_TOKEN_STORE", value_name = "FILE", help = STORE_HELP)]
    pub store: Option<PathBuf>,

    #[arg(long, global = true, value_name = "URL", help = SERVER_HELP)]
    pub server: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Register a new token for a user on this PC (利用開始登録).
    #[command(
        long_about = "\
Register a new token for a user on this PC (利用開始登録).

Give your bank's server (--server), your contract number (--contract, 契約者番号)
and user ID (--user, 利用者ID); the login password (ログインパスワード) is asked
without showing it. The token is stored on this PC, activated at once, and its
token ID (トークンID) is printed.

Each user can have one token. To move to another PC, export and import the
token, or ask your bank to deregister it (登録解除) and register again there.",
        after_help = "Example:\n    ichido-token register --server https://otp.your-bank.example --contract 1234567890 --user taro"
    )]
    Register(RegisterArgs),

    /// Show a one-time password (ワンタイムパスワード).
    #[command(long_about = "\
Show a one-time password (ワンタイムパスワード).

Only the code is printed, so scripts can use it. An event token makes a new code
each time you run this (like pressing the button of a token). A time token shows
the code of the current 30 seconds; how long it stays valid is shown below it.
--watch keeps showing the current code with a countdown until you press Ctrl+C.

With several tokens on this PC, choose one with --contract and --user.")]
    Code(CodeArgs),

    /// List the tokens on this PC (never their secrets).
    List,

    /// Fix a token that is out of sync with the bank (同期ズレ補正).
    #[command(long_about = "\
Fix a token that is out of sync with the bank (同期ズレ補正).

Use it when the bank refuses codes that you typed correctly: an event token
whose button was pressed many times without using the codes, or a time token
on a PC whose clock was wrong (fix the clock first). ichido-token sends two
consecutive codes itself; you only give the login password.")]
    Resync(ResyncArgs),

    /// Save the tokens to a backup file encrypted with a passphrase.
    #[command(long_about = "\
Save the tokens to a backup file encrypted with a passphrase you choose.

Restore it with `ichido-token import FILE`, e.g. after reinstalling this PC.
Keep the file and the passphrase apart: with both, anyone can make your codes.
After restoring an older backup of an event token, run `ichido-token resync`.")]
    Export(ExportArgs),

    /// Restore tokens from a backup file made by `export`.
    Import(ImportArgs),

    /// Remove a token from this PC.
    #[command(long_about = "\
Remove a token from this PC.

This does not deregister it at the bank: to stop using the token for good, or
if the PC is lost, ask your bank to deregister it (登録解除).")]
    Remove(RemoveArgs),

    /// Protect the token file with a passphrase, change it, or remove it.
    #[command(long_about = "\
Protect the token file with a passphrase, change it, or remove it (--remove).

Once set, ichido-token asks for the passphrase each time it opens the file
(scripts may set ICHIDO_TOKEN_PASSPHRASE). A forgotten passphrase cannot be
recovered: keep a backup (export).")]
    Passphrase(PassphraseArgs),
}

/// Event (a new code per press) or time (a new code every 30 seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KindArg {
    /// A new code each time you ask for one (HOTP).
    Event,
    /// A new code every 30 seconds (TOTP).
    Time,
}

impl KindArg {
    pub fn as_str(self) -> &'static str {
        match self {
            KindArg::Event => "event",
            KindArg::Time => "time",
        }
    }
}

#[derive(Debug, Args)]
pub struct RegisterArgs {
    /// Contract number (契約者番号).
    #[arg(long, value_name = "C")]
    pub contract: String,
    /// User ID (利用者ID).
    #[arg(long, value_name = "U")]
    pub user: String,
    /// Kind of token: `event` or `time`, as your bank told you.
    #[arg(long, value_enum, default_value_t = KindArg::Event)]
    pub kind: KindArg,
    /// Read the login password from the first line of standard input (for scripts).
    #[arg(long)]
    pub password_stdin: bool,
}

/// Picks a token when the store holds several.
#[derive(Debug, Args, Clone, Default)]
pub struct Select {
    /// Contract number (契約者番号) of the token to use.
    #[arg(long, value_name = "C")]
    pub contract: Option<String>,
    /// User ID (利用者ID) of the token to use.
    #[arg(long, value_name = "U")]
    pub user: Option<String>,
}

#[derive(Debug, Args)]
pub struct CodeArgs {
    #[command(flatten)]
    pub select: Select,
    /// Keep showing the current code with a countdown (time tokens) until Ctrl+C.
    #[arg(long)]
    pub watch: bool,
}

#[derive(Debug, Args)]
pub struct ResyncArgs {
    #[command(flatten)]
    pub select: Select,
    /// Read the login password from the first line of standard input (for scripts).
    #[arg(long)]
    pub password_stdin: bool,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The backup file to create (an existing file is never overwritten).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    #[command(flatten)]
    pub select: Select,
    /// Read the backup's passphrase from standard input instead of asking.
    #[arg(long)]
    pub passphrase_stdin: bool,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The backup file made by `export`.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Read the backup's passphrase from standard input instead of asking.
    #[arg(long)]
    pub passphrase_stdin: bool,
}

#[derive(Debug, Args)]
pub struct RemoveArgs {
    #[command(flatten)]
    pub select: Select,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub yes: bool,
}

#[derive(Debug, Args)]
pub struct PassphraseArgs {
    /// Remove the passphrase: the file is stored unencrypted (still private to you).
    #[arg(long)]
    pub remove: bool,
    /// Read the new passphrase from standard input instead of asking.
    #[arg(long)]
    pub passphrase_stdin: bool,
}
