//! Reading a password without it ever appearing in argv or shell history.

use super::PasswordArgs;
use std::io::BufRead;

pub fn read(args: &PasswordArgs) -> Result<String, String> {
    let password = if args.password_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| format!("cannot read the password from stdin: {e}"))?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    } else {
        let first = rpassword::prompt_password("Password: ")
            .map_err(|e| format!("cannot prompt for a password ({e}); use --password-stdin"))?;
        let again = rpassword::prompt_password("Again: ")
            .map_err(|e| format!("cannot prompt for a password ({e}); use --password-stdin"))?;
        if first != again {
            return Err("the passwords do not match".to_owned());
        }
        first
    };
    if password.is_empty() {
        return Err("the password is empty".to_owned());
    }
    if password.len() > 72 {
        // bcrypt ignores everything past 72 bytes; say so rather than
        // silently accept a password that is shorter than it looks.
        return Err("the password is longer than 72 bytes, which bcrypt cannot use".to_owned());
    }
    Ok(password)
}

/// One password, no confirmation (for checking, not setting, one).
pub fn read_once(args: &PasswordArgs) -> Result<String, String> {
    if args.password_stdin {
        return read(args);
    }
    rpassword::prompt_password("Password: ")
        .map_err(|e| format!("cannot prompt for a password ({e}); use --password-stdin"))
}

pub fn hash(args: &PasswordArgs) -> Result<String, String> {
    let password = read(args)?;
    bcrypt::hash(password, args.cost).map_err(|e| format!("cannot hash: {e}"))
}
