//! Whether a plugin file may be loaded at all: nothing another local user controls may decide
//! what code netmix runs.
//!
//! The rules are OpenSSH's StrictModes, applied to the plugin file, to the folder it was found
//! in, and (after symlinks are resolved) to every folder on the real path up to `/`:
//!
//! - each is owned by root or by the user netmix runs as;
//! - none is writable by group or others — except a root-owned folder with the sticky bit
//!   (`/tmp`), where others may add entries but not rename or remove ours;
//! - the file is a regular file, opened once (`O_NOFOLLOW`) and checked on that descriptor
//!   (`fstat`). On Linux the library is then loaded through `/proc/self/fd/<n>`: the very file
//!   that was checked, even if a name on the way were swapped afterwards.
//!
//! So a symlink planted in an open folder, a file or folder of another user, a safe folder in an
//! open one, or a folder that is itself a symlink in an open one: each is refused in one line,
//! before any of the file's code (its ELF constructors run inside `dlopen`) can run.
//!
//! On Windows, see [`open_trusted`]'s Windows variant for exactly what is checked (no link,
//! a regular file held open read-only-shared while it loads; folder ACLs are not inspected).

use std::fs::File;
use std::path::{Path, PathBuf};

/// A plugin file opened for loading, and the path to hand to the dynamic loader.
#[derive(Debug)]
pub struct Opened {
    /// The open file (kept open until the loader has mapped it).
    pub file: File,
    /// `/proc/self/fd/<n>` on Linux (the checked file itself), else the resolved path.
    pub load_path: PathBuf,
}

/// Opens `path` for loading if no other user could have written or swapped it.
///
/// # Errors
/// One line saying which file or folder fails which rule, and what to do.
#[cfg(unix)]
pub fn open_trusted(path: &Path) -> Result<Opened, String> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};

    let euid = nix::unistd::geteuid().as_raw();
    // The folders on the path as named (whoever may write one of them could swap a symlink
    // below it), then every folder on the real path of the file's folder and of the file.
    let found_in = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let named =
        std::path::absolute(found_in).map_err(|e| format!("cannot read its folder: {e}"))?;
    check_folders(&named, euid, "its folder")?;
    let real_dir =
        std::fs::canonicalize(found_in).map_err(|e| format!("cannot read its folder: {e}"))?;
    if real_dir != named {
        check_folders(&real_dir, euid, "the folder it resolves to")?;
    }
    let real = std::fs::canonicalize(path).map_err(|e| format!("cannot read: {e}"))?;
    if let Some(dir) = real.parent()
        && dir != real_dir
    {
        check_folders(dir, euid, "the folder its link points into")?;
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(&real)
        .map_err(|e| format!("cannot open: {e}"))?;
    let meta = file.metadata().map_err(|e| format!("cannot read: {e}"))?;
    if !meta.is_file() {
        return Err("refused: not a regular file".to_owned());
    }
    check_owner_and_mode(meta.uid(), meta.mode(), euid, false)
        .map_err(|why| format!("refused: the file {why}"))?;
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let load_path = {
        use std::os::fd::AsRawFd;
        PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()))
    };
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let load_path = real;
    Ok(Opened { file, load_path })
}

/// Windows: what is checked is that the file is a regular file reached by no symlink or
/// junction (the file itself is not a reparse point), opened so that nobody may write,
/// rename or delete it while it is open (share mode read-only), and loaded by that path while
/// held. Folder ACLs are **not** inspected: keep plugin folders where only you and
/// administrators can write (the shipped `plugins\` under Program Files, a folder in your
/// profile), as README "Install" says.
///
/// # Errors
/// When the file cannot be opened, or is a link.
#[cfg(not(unix))]
pub fn open_trusted(path: &Path) -> Result<Opened, String> {
    let meta = std::fs::symlink_metadata(path).map_err(|e| format!("cannot read: {e}"))?;
    if meta.file_type().is_symlink() {
        return Err(
            "refused: a symbolic link (load the file it points to from a folder of yours)"
                .to_owned(),
        );
    }
    if !meta.is_file() {
        return Err("refused: not a regular file".to_owned());
    }
    let file = open_shared_read(path).map_err(|e| format!("cannot open: {e}"))?;
    Ok(Opened {
        file,
        load_path: path.to_path_buf(),
    })
}

/// Opens `path` so that others may only read it while it is open.
#[cfg(windows)]
fn open_shared_read(path: &Path) -> std::io::Result<File> {
    use std::os::windows::fs::OpenOptionsExt;
    /// `FILE_SHARE_READ`: others may read, not write or delete.
    const FILE_SHARE_READ: u32 = 0x1;
    std::fs::OpenOptions::new()
        .read(true)
        .share_mode(FILE_SHARE_READ)
        .open(path)
}

#[cfg(not(any(unix, windows)))]
fn open_shared_read(path: &Path) -> std::io::Result<File> {
    File::open(path)
}

/// Checks `dir` and every folder above it (each as `stat` sees it: a symlink on the way counts
/// as the folder it points to, and the folder holding the link is checked too, as an ancestor).
#[cfg(unix)]
fn check_folders(dir: &Path, euid: u32, what: &str) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;

    for (depth, folder) in dir.ancestors().enumerate() {
        let meta = std::fs::metadata(folder)
            .map_err(|e| format!("cannot read the folder {}: {e}", folder.display()))?;
        let name = if depth == 0 {
            format!("{what} {}", folder.display())
        } else {
            format!("the folder {} above it", folder.display())
        };
        check_owner_and_mode(meta.uid(), meta.mode(), euid, true)
            .map_err(|why| format!("refused: {name} {why}"))?;
    }
    Ok(())
}

/// The rule for one file or folder: owned by root or `euid`; not writable by group or others,
/// unless it is a root-owned sticky folder.
#[cfg(unix)]
fn check_owner_and_mode(uid: u32, mode: u32, euid: u32, folder: bool) -> Result<(), String> {
    const GROUP_OR_OTHER_WRITE: u32 = 0o022;
    const STICKY: u32 = 0o1000;
    if uid != 0 && uid != euid {
        return Err(format!(
            "belongs to uid {uid}, not to root or the user netmix runs as (uid {euid})"
        ));
    }
    let sticky_root_folder = folder && uid == 0 && mode & STICKY != 0;
    if mode & GROUP_OR_OTHER_WRITE != 0 && !sticky_root_folder {
        return Err(format!(
            "is writable by group or others (mode {:o}); chmod go-w it",
            mode & 0o7777
        ));
    }
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn the_rule() {
        let me = 1000;
        assert!(check_owner_and_mode(0, 0o755, me, true).is_ok());
        assert!(check_owner_and_mode(me, 0o700, me, true).is_ok());
        assert!(check_owner_and_mode(0, 0o1777, me, true).is_ok(), "/tmp");
        let e = check_owner_and_mode(1234, 0o755, me, true).unwrap_err();
        assert!(e.contains("belongs to uid 1234"), "{e}");
        let e = check_owner_and_mode(me, 0o1777, me, true).unwrap_err();
        assert!(e.contains("writable by group or others (mode 1777)"), "{e}");
        assert!(
            check_owner_and_mode(0, 0o1777, me, false).is_err(),
            "files get no exemption"
        );
        assert!(check_owner_and_mode(0, 0o775, me, true).is_err());
        assert!(check_owner_and_mode(0, 0o644, me, false).is_ok());
    }
}
