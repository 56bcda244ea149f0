//! `medallion token create`: makes a new access token for the serving layer
//! and prints it once, with the `[[auth.tokens]]` entry (name, role, SHA-256)
//! to paste into medallion.toml. The token itself is stored nowhere.

use anyhow::Result;
use clap::{Args, Subcommand};

use medallion::config::tokens::{new_token, token_entry};
use medallion::config::Role;

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Make a token with a name and a role; print it once and its [[auth.tokens]] entry
    #[command(after_help = "Examples:\n  \
        medallion token create --role reader --name bi\n  \
        medallion token create --role admin --name ops >> secrets.txt\n\n\
        Roles: reader sees PII columns masked, analyst sees stable pseudonyms, admin sees clear text.\n\
        Paste the printed entry into medallion.toml; clients send the token as `Authorization: Bearer <token>` \
        (HTTP) or as the password (PostgreSQL wire, any user name). Only its SHA-256 is configured: \
        a lost token cannot be shown again, make a new one.")]
    Create(CreateArgs),
}

#[derive(Args)]
pub struct CreateArgs {
    /// What the token may see: reader, analyst or admin
    #[arg(long, value_parser = parse_role)]
    role: Role,
    /// The token's name, as audit records and messages show it (e.g. the tool or team using it)
    #[arg(long)]
    name: String,
}

fn parse_role(text: &str) -> std::result::Result<Role, String> {
    Role::parse(text).ok_or_else(|| format!("'{text}' is not a role: use reader, analyst or admin"))
}

pub fn run(command: &TokenCommand) -> Result<()> {
    match command {
        TokenCommand::Create(args) => create(args),
    }
}

fn create(args: &CreateArgs) -> Result<()> {
    let name = args.name.trim();
    if name.is_empty() {
        anyhow::bail!("--name is empty: name the token after who uses it, e.g. --name bi");
    }
    let token = new_token()?;
    println!("token (shown once; store it now): {token}\n");
    println!("add to medallion.toml:\n");
    print!("{}", token_entry(name, args.role, &token));
    eprintln!("\ntoken create: '{name}' ({}); the server accepts it once medallion.toml has the entry and it restarts", args.role);
    Ok(())
}
