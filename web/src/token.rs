//! The dashboard token file: created once with a random token, readable only by its owner.

use std::fs;
use std::io::{self, Write as _};
use std::path::Path;

/// Random bytes in a token (hex-encoded to twice as many characters).
const TOKEN_BYTES: usize = 16;

/// Reads the dashboard token from `path`, or creates the file with a fresh random token.
///
/// Returns the token and whether the file was created. An existing token is trimmed of
/// whitespace, so a file edited by hand (trailing newline) still works. New files hold 32
/// lowercase hex characters from the OS random source and, on Unix, have mode `0600`; missing
/// parent directories are created. An existing file readable by other users is narrowed to
/// `0600` with a warning.
///
/// # Errors
///
/// Any I/O error creating or reading the file, `InvalidData` when an existing file holds no
/// token (empty or whitespace only), and `Other` when the OS random source fails.
pub fn load_or_create_token(path: &Path) -> io::Result<(String, bool)> {
    match read_token(path) {
        Ok(token) => return Ok((token, false)),
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => return Err(err),
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent)?;
    }
    let token = random_token()?;
    match create_private(path) {
        Ok(mut file) => {
            file.write_all(token.as_bytes())?;
            file.write_all(b"\n")?;
            file.sync_all()?;
            tracing::info!(path = %path.display(), "Created the dashboard token file.");
            Ok((token, true))
        }
        // Another process created it between our read and our create: use theirs.
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => Ok((read_token(path)?, false)),
        Err(err) => Err(err),
    }
}

fn read_token(path: &Path) -> io::Result<String> {
    let text = fs::read_to_string(path)?;
    let token = text.trim();
    if token.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("token file {} is empty", path.display()),
        ));
    }
    restrict_permissions(path)?;
    Ok(token.to_owned())
}

#[cfg(unix)]
fn create_private(path: &Path) -> io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

#[cfg(not(unix))]
fn create_private(path: &Path) -> io::Result<fs::File> {
    // Windows: the file inherits the ACL of the user's config directory.
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
}

#[cfg(unix)]
fn restrict_permissions(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = fs::metadata(path)?.permissions().mode();
    if mode & 0o077 != 0 {
        tracing::warn!(
            path = %path.display(),
            mode = format_args!("{:o}", mode & 0o777),
            "Dashboard token file was readable by other users; restricted it to 0600."
        );
        fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

#[cfg(not(unix))]
fn restrict_permissions(_path: &Path) -> io::Result<()> {
    Ok(())
}

fn random_token() -> io::Result<String> {
    let mut bytes = [0u8; TOKEN_BYTES];
    getrandom::fill(&mut bytes).map_err(|err| io::Error::other(format!("random source: {err}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_32_hex_chars_and_differ() {
        let a = random_token().unwrap();
        let b = random_token().unwrap();
        assert_eq!(a.len(), 32);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_ne!(a, b);
    }
}
