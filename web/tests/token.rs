//! `load_or_create_token`: creates a private file with a random token, reuses it afterwards.

use std::fs;
use std::path::PathBuf;

use netmix_web::load_or_create_token;

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("netmix-web-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[test]
fn creates_a_private_token_then_reuses_it() {
    let dir = TempDir::new("create");
    let path = dir.0.join("nested/dir/dashboard.token");

    let (token, created) = load_or_create_token(&path).unwrap();
    assert!(created);
    assert_eq!(token.len(), 32);
    assert!(token.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(fs::read_to_string(&path).unwrap().trim(), token);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "token file mode {mode:o}");
    }

    let (again, created) = load_or_create_token(&path).unwrap();
    assert!(!created);
    assert_eq!(again, token);

    let other = dir.0.join("other.token");
    let (different, _) = load_or_create_token(&other).unwrap();
    assert_ne!(different, token);
}

#[test]
fn existing_token_is_trimmed_and_an_empty_one_refused() {
    let dir = TempDir::new("existing");
    let path = dir.0.join("t");
    fs::write(&path, "  my-own-token \n\n").unwrap();
    assert_eq!(
        load_or_create_token(&path).unwrap(),
        ("my-own-token".to_owned(), false)
    );

    fs::write(&path, " \n").unwrap();
    let err = load_or_create_token(&path).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
}

#[cfg(unix)]
#[test]
fn a_world_readable_token_file_is_narrowed_to_0600() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = TempDir::new("narrow");
    let path = dir.0.join("t");
    fs::write(&path, "abc\n").unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    assert_eq!(load_or_create_token(&path).unwrap().0, "abc");
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

#[cfg(unix)]
#[test]
fn a_symlink_is_refused_and_its_target_left_alone() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = TempDir::new("symlink");
    let victim = dir.0.join("victim");
    fs::write(&victim, "0123456789abcdef0123456789abcdef\n").unwrap();
    fs::set_permissions(&victim, fs::Permissions::from_mode(0o644)).unwrap();
    let path = dir.0.join("dashboard-token");
    std::os::unix::fs::symlink(&victim, &path).unwrap();
    let err = load_or_create_token(&path).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied, "{err}");
    assert!(err.to_string().contains("is a symlink"), "{err}");
    let mode = fs::metadata(&victim).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644, "the link's target was not chmodded");
}

#[cfg(unix)]
#[test]
fn another_users_token_file_is_refused() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test makes a file owned by another user (chown): run it as root"
    );
    let dir = TempDir::new("foreign");
    let path = dir.0.join("dashboard-token");
    fs::write(&path, "chosen-by-someone-else\n").unwrap();
    std::os::unix::fs::chown(&path, Some(65534), Some(65534)).unwrap();
    let err = load_or_create_token(&path).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied, "{err}");
    assert!(err.to_string().contains("belongs to uid 65534"), "{err}");
}
