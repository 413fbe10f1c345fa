//! `tern passwd FILE USER`: adds or changes a user's password in a password file (created if
//! missing), or removes the user with `-D`. The password is asked for twice on a terminal, or
//! read from the first line of standard input otherwise, so scripts can pipe it in.

use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use tern_auth::PasswordFile;

/// Arguments of `tern passwd`.
#[derive(Debug, clap::Args)]
pub(crate) struct PasswdArgs {
    /// The password file (created if missing).
    file: PathBuf,
    /// The user to add, change or delete.
    user: String,
    /// Delete the user instead.
    #[arg(short = 'D', long)]
    delete: bool,
}

pub(crate) fn run(args: &PasswdArgs) -> anyhow::Result<()> {
    let mut file = if args.file.exists() {
        PasswordFile::load(&args.file)?
    } else {
        PasswordFile::default()
    };
    if args.delete {
        if !file.remove(&args.user) {
            bail!("no user {:?} in {}", args.user, args.file.display());
        }
    } else {
        let password = read_password()?;
        if password.is_empty() {
            bail!("empty password");
        }
        file.set_password(&args.user, &password)?;
    }
    write(&args.file, &file.render())
}

pub(crate) fn read_password() -> anyhow::Result<String> {
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ").context("cannot read password")?;
        let second =
            rpassword::prompt_password("Reenter password: ").context("cannot read password")?;
        if first != second {
            bail!("passwords do not match");
        }
        return Ok(first);
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("cannot read password from standard input")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

/// Replaces the file in one step (a half-written password file would lock users out), readable
/// by its owner only.
fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    std::fs::write(&temporary, text)
        .with_context(|| format!("cannot write {}", temporary.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("cannot restrict {}", temporary.display()))?;
    }
    std::fs::rename(&temporary, path)
        .with_context(|| format!("cannot replace {}", path.display()))?;
    Ok(())
}
