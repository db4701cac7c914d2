//! `kvscope verify` (what is wrong with a session's files) and `kvscope repair` (rebuild
//! a crashed session's Parquet from samples.jsonl). Local sessions only: both read and
//! rewrite files in place; an `s3://` session is refused with a message saying so.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;

use crate::store::{self, location::Location, verify::Level};

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// Session directory.
    pub session: String,
    /// Print the checks as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct RepairArgs {
    /// Session directory.
    pub session: String,
}

/// A local session directory, or a clear refusal for object storage.
fn local_dir(arg: &str, command: &str) -> anyhow::Result<PathBuf> {
    match Location::parse(arg)? {
        Location::Local(p) => Ok(p),
        remote => bail!(
            "`kvscope {command}` works on a local session directory; {remote} is in object storage: copy it down first (e.g. `aws s3 cp --recursive {remote} DIR`)"
        ),
    }
}

pub fn verify(a: VerifyArgs) -> anyhow::Result<ExitCode> {
    let dir = local_dir(&a.session, "verify")?;
    store::check_session_dir(&dir)?;
    let checks = store::verify::verify(&dir);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&checks)?);
    } else {
        for c in &checks {
            let tag = match c.level {
                Level::Ok => "ok",
                Level::Warning => "warning",
                Level::Error => "ERROR",
            };
            println!("{tag:<8} {:<20} {}", c.file, c.message);
        }
    }
    Ok(if checks.iter().any(|c| c.level == Level::Error) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

pub fn repair(a: RepairArgs) -> anyhow::Result<ExitCode> {
    let dir = local_dir(&a.session, "repair")?;
    let r = store::repair(&dir)?;
    match r.rebuilt_rows {
        Some(n) => println!(
            "{}: rebuilt samples.parquet from samples.jsonl ({n} rows)",
            dir.display()
        ),
        None => println!("{}: nothing to repair", dir.display()),
    }
    Ok(ExitCode::SUCCESS)
}
