//! `berth passwd`: writes Mosquitto password files, so that no Mosquitto install is needed.
//! The options are `mosquitto_passwd`'s: `-c` makes a new file (replacing one that is
//! there), `-b` takes the password from the command line, `-D` deletes a user; otherwise
//! the password is read twice from the terminal (with echo off), or once from standard
//! input when that is not a terminal. New hashes are argon2id with Mosquitto 2.1's
//! parameters (`--hash pbkdf2` writes the `$7$` of 2.0, with its 101 iterations and 12-byte
//! salt, for files a Mosquitto 2.0 must read too).

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Parser;

use crate::auth::{Hash, PasswordFile};

#[derive(Debug, Parser)]
#[command(
    name = "berth passwd",
    about = "Add, change or delete a user in a Mosquitto password file"
)]
pub struct PasswdArgs {
    /// Create a new password file, replacing an existing one.
    #[arg(short = 'c')]
    pub create: bool,
    /// Batch mode: the password is the last argument.
    #[arg(short = 'b')]
    pub batch: bool,
    /// Delete the user from the file.
    #[arg(short = 'D')]
    pub delete: bool,
    /// The hash for new passwords: argon2id (Mosquitto 2.1's default) or pbkdf2
    /// (`$7$`, which Mosquitto 2.0 reads).
    #[arg(long, value_enum, default_value = "argon2id")]
    pub hash: HashKind,
    pub file: PathBuf,
    pub username: String,
    /// With -b only.
    pub password: Option<String>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum HashKind {
    Argon2id,
    Pbkdf2,
}

/// Runs `berth passwd` with `args` (what follows `passwd` on the command line).
pub fn main(args: impl IntoIterator<Item = String>) -> anyhow::Result<()> {
    let args = PasswdArgs::parse_from(std::iter::once("berth passwd".to_string()).chain(args));
    run(&args, || read_password(&args.username))
}

fn run(args: &PasswdArgs, password: impl FnOnce() -> anyhow::Result<String>) -> anyhow::Result<()> {
    if args.username.is_empty() || args.username.contains(':') {
        bail!("a username may not be empty or hold ':'");
    }
    if args.batch != args.password.is_some() && !args.delete {
        bail!("give the password as the last argument with -b, and only then");
    }
    let mut file = if args.create {
        if args.delete {
            bail!("-c and -D together would delete from a new, empty file");
        }
        PasswordFile::default()
    } else {
        PasswordFile::load(&args.file)?
    };
    if args.delete {
        if !file.remove(&args.username) {
            bail!("user {} is not in {}", args.username, args.file.display());
        }
    } else {
        let password = match &args.password {
            Some(p) => p.clone(),
            None => password()?,
        };
        let hash = match args.hash {
            HashKind::Argon2id => Hash::argon2id(password.as_bytes()),
            HashKind::Pbkdf2 => Hash::pbkdf2(password.as_bytes(), 101, 12),
        };
        file.set(&args.username, hash);
    }
    write_atomically(&args.file, &file.to_string())
}

/// Writes through a temporary file and a rename, so that a broker reloading on SIGHUP never
/// reads half a file. The file is readable by its owner only (it holds password hashes).
fn write_atomically(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    out.write_all(text.as_bytes())
        .and_then(|()| out.sync_all())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))
}

fn read_password(username: &str) -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        let mut line = String::new();
        stdin.lock().read_line(&mut line)?;
        return Ok(line.trim_end_matches(['\n', '\r']).to_string());
    }
    let first = prompt(&format!("Password for {username}: "))?;
    let again = prompt("Reenter password: ")?;
    if first != again {
        bail!("the passwords do not match");
    }
    Ok(first)
}

/// Reads one line from the terminal with echo off.
#[allow(unsafe_code)] // termios: two libc calls on stdin, each with its SAFETY note.
fn prompt(text: &str) -> anyhow::Result<String> {
    eprint!("{text}");
    let _ = std::io::stderr().flush();
    // SAFETY: a zeroed termios is a valid value to fill; fd 0 is open (it is a terminal).
    let mut saved: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: tcgetattr writes into `saved`, which lives for the call.
    let have_terminal = unsafe { libc::tcgetattr(0, &mut saved) } == 0;
    if have_terminal {
        let mut quiet = saved;
        quiet.c_lflag &= !libc::ECHO;
        // SAFETY: `quiet` is a valid termios copied from the terminal's own.
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &quiet) };
    }
    let mut line = String::new();
    let read = std::io::stdin().lock().read_line(&mut line);
    if have_terminal {
        // SAFETY: restores the settings read above.
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &saved) };
    }
    eprintln!();
    read?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> PasswdArgs {
        PasswdArgs::parse_from(std::iter::once("berth passwd").chain(list.iter().copied()))
    }

    #[test]
    fn creates_changes_and_deletes_users() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        let p = path.to_str().unwrap();
        run(&args(&["-c", "-b", p, "alice", "one"]), || unreachable!()).unwrap();
        run(
            &args(&["-b", "--hash", "pbkdf2", p, "bob", "two"]),
            || unreachable!(),
        )
        .unwrap();
        run(&args(&[p, "alice"]), || Ok("three".into())).unwrap();
        let file = PasswordFile::load(&path).unwrap();
        assert!(file.verify("alice", b"three"));
        assert!(!file.verify("alice", b"one"));
        assert!(file.verify("bob", b"two"));
        assert!(matches!(
            file.get("bob"),
            Some(Hash::Pbkdf2 {
                iterations: 101,
                ..
            })
        ));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        run(&args(&["-D", p, "alice"]), || unreachable!()).unwrap();
        let file = PasswordFile::load(&path).unwrap();
        assert_eq!(file.len(), 1);
        let error = run(&args(&["-D", p, "alice"]), || unreachable!()).unwrap_err();
        assert!(
            error.to_string().contains("user alice is not in"),
            "{error}"
        );
    }

    #[test]
    fn refuses_what_it_cannot_do() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("missing");
        let p = p.to_str().unwrap();
        let missing = run(&args(&["-b", p, "a", "x"]), || unreachable!()).unwrap_err();
        assert!(
            missing.to_string().starts_with("password_file "),
            "{missing}"
        );
        let colon = run(&args(&["-c", "-b", p, "a:b", "x"]), || unreachable!()).unwrap_err();
        assert!(colon.to_string().contains("':'"), "{colon}");
        let no_password = run(&args(&["-c", "-b", p, "a"]), || unreachable!()).unwrap_err();
        assert!(no_password.to_string().contains("-b"), "{no_password}");
    }
}
