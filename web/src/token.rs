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
/// `0600` with a warning. On Unix an existing file must be the running user's own regular file,
/// not reached through a symlink: a token someone else planted is refused.
///
/// # Errors
///
/// Any I/O error creating or reading the file, `InvalidData` when an existing file holds no
/// token (empty or whitespace only), `PermissionDenied` for a symlink, a non-regular file or
/// another user's file, and `Other` when the OS random source fails.
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
    let mut file = open_own(path)?;
    let mut text = String::new();
    io::Read::read_to_string(&mut file, &mut text)?;
    let token = text.trim();
    if token.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("token file {} is empty", path.display()),
        ));
    }
    restrict_permissions(&file, path)?;
    Ok(token.to_owned())
}

/// Opens an existing token file that is the running user's own: not through a symlink
/// (`O_NOFOLLOW`), a regular file, owned by the user netmix runs as (checked on the open
/// descriptor). Anything else another user could have planted is refused.
#[cfg(unix)]
fn open_own(path: &Path) -> io::Result<fs::File> {
    use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(nix::errno::Errno::ELOOP as i32) {
                io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!("token file {} is a symlink; refusing it", path.display()),
                )
            } else {
                e
            }
        })?;
    let meta = file.metadata()?;
    let euid = nix::unistd::geteuid().as_raw();
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("token file {} is not a regular file", path.display()),
        ));
    }
    if meta.uid() != euid {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "token file {} belongs to uid {}, not to the user netmix runs as (uid {euid}); \
                 refusing a token someone else chose",
                path.display(),
                meta.uid()
            ),
        ));
    }
    Ok(file)
}

#[cfg(not(unix))]
fn open_own(path: &Path) -> io::Result<fs::File> {
    fs::File::open(path)
}

#[cfg(unix)]
fn create_private(path: &Path) -> io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    // `create_new` is O_EXCL: a symlink already at `path` fails instead of being followed.
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

/// Narrows the open file to `0600` (on the descriptor: a path could have been swapped).
#[cfg(unix)]
fn restrict_permissions(file: &fs::File, path: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = file.metadata()?.permissions().mode();
    if mode & 0o077 != 0 {
        tracing::warn!(
            path = %path.display(),
            mode = format_args!("{:o}", mode & 0o777),
            "Dashboard token file was readable by other users; restricted it to 0600."
        );
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

#[cfg(not(unix))]
fn restrict_permissions(_file: &fs::File, _path: &Path) -> io::Result<()> {
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
