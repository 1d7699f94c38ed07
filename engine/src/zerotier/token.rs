//! Finding the ZeroTier One service: its home folder, the port it bound and its auth token.
//!
//! Everything here is pure (the environment comes in as a [`Env`] value and files are read
//! through ordinary `std::fs` calls on the paths it computes), so it is unit-tested with temp
//! dirs. The facts come from `/work/shared/zerotier/README.md` §A1–A2:
//!
//! - **home**: `[zerotier] home` in the config, else `$ZEROTIER_HOME`, else the platform's
//!   folder (Linux `/var/lib/zerotier-one`, macOS `/Library/Application Support/ZeroTier/One`,
//!   Windows `%ProgramData%\ZeroTier\One`, then `C:\ZeroTier\One`, BSD `/var/db/zerotier-one`).
//! - **port**: the decimal text in `<home>/zerotier-one.port` (what the service writes on start),
//!   else `<home>/zerotier.port` (the newer name DesktopUI also reads), else 9993.
//! - **token** (trimmed, as the service trims it), first readable of: the config's explicit
//!   token; `<override home>/authtoken.secret`; the per-user copies
//!   (`~/.zeroTierOneAuthToken`, `~/.zerotier-local-auth` on Linux, the `Application Support`
//!   and `AppData\Local` copies on macOS and Windows); `<system home>/authtoken.secret`.
//!
//! The token is an [`AuthToken`], whose `Debug` prints `MASKED` and which has no `Display`: it
//! cannot reach a log line, the API or the page by accident.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// The service's default port (TCP, shared with its UDP traffic).
pub const DEFAULT_PORT: u16 = 9993;
/// The file the service writes the port it bound to.
pub const PORT_FILE: &str = "zerotier-one.port";
/// The newer port file name some clients read.
pub const PORT_FILE_NEW: &str = "zerotier.port";
/// The token file inside the home folder.
pub const TOKEN_FILE: &str = "authtoken.secret";

/// The ZeroTier One auth token. `Debug` prints `MASKED`; there is no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthToken(String);

impl AuthToken {
    /// A token from text, trimmed; `None` when nothing is left.
    pub fn new(text: &str) -> Option<Self> {
        let t = text.trim();
        (!t.is_empty()).then(|| Self(t.to_owned()))
    }

    /// The secret itself, only for the `X-ZT1-Auth` header.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AuthToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MASKED")
    }
}

/// Which operating system's conventions to follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Os {
    /// Linux.
    Linux,
    /// macOS.
    MacOs,
    /// Windows.
    Windows,
    /// FreeBSD, OpenBSD, NetBSD.
    Bsd,
}

impl Os {
    /// The OS this binary was built for.
    pub const fn current() -> Self {
        if cfg!(target_os = "macos") {
            Self::MacOs
        } else if cfg!(windows) {
            Self::Windows
        } else if cfg!(any(
            target_os = "freebsd",
            target_os = "openbsd",
            target_os = "netbsd"
        )) {
            Self::Bsd
        } else {
            Self::Linux
        }
    }
}

/// The parts of the environment discovery depends on.
#[derive(Debug, Clone, Default)]
pub struct Env {
    /// `[zerotier] home` from the config.
    pub config_home: Option<PathBuf>,
    /// `$ZEROTIER_HOME`.
    pub zerotier_home: Option<PathBuf>,
    /// The user's home (`$HOME`, or `%USERPROFILE%` on Windows).
    pub user_home: Option<PathBuf>,
    /// `%ProgramData%` (Windows).
    pub program_data: Option<PathBuf>,
}

impl Env {
    /// The real environment plus the config's `home`.
    pub fn from_process(config_home: Option<PathBuf>) -> Self {
        let var = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        Self {
            config_home,
            zerotier_home: var("ZEROTIER_HOME"),
            user_home: if cfg!(windows) {
                var("USERPROFILE")
            } else {
                var("HOME")
            },
            program_data: var("ProgramData"),
        }
    }
}

/// The platform's service homes, most likely first.
pub fn system_homes(os: Os, env: &Env) -> Vec<PathBuf> {
    match os {
        Os::Linux => vec![PathBuf::from("/var/lib/zerotier-one")],
        Os::Bsd => vec![PathBuf::from("/var/db/zerotier-one")],
        Os::MacOs => vec![PathBuf::from("/Library/Application Support/ZeroTier/One")],
        Os::Windows => {
            let data = env
                .program_data
                .clone()
                .unwrap_or_else(|| PathBuf::from(r"C:\ProgramData"));
            vec![
                data.join("ZeroTier").join("One"),
                PathBuf::from(r"C:\ZeroTier\One"),
            ]
        }
    }
}

/// The per-user token copies, in the order they are tried.
pub fn user_token_files(os: Os, env: &Env) -> Vec<PathBuf> {
    let Some(home) = &env.user_home else {
        return Vec::new();
    };
    match os {
        Os::Linux | Os::Bsd => vec![
            home.join(".zeroTierOneAuthToken"),
            home.join(".zerotier-local-auth"),
        ],
        Os::MacOs => {
            let support = home
                .join("Library")
                .join("Application Support")
                .join("ZeroTier");
            vec![
                support.join("One").join(TOKEN_FILE),
                support.join(TOKEN_FILE),
            ]
        }
        Os::Windows => {
            let local = home.join("AppData").join("Local").join("ZeroTier");
            vec![local.join("One").join(TOKEN_FILE), local.join(TOKEN_FILE)]
        }
    }
}

/// The home whose port file counts: the override if any, else the first system home that
/// exists (else the first system home).
pub fn service_home(os: Os, env: &Env) -> PathBuf {
    if let Some(h) = env.config_home.as_ref().or(env.zerotier_home.as_ref()) {
        return h.clone();
    }
    let homes = system_homes(os, env);
    homes
        .iter()
        .find(|h| h.is_dir())
        .or(homes.first())
        .cloned()
        .unwrap_or_default()
}

/// Where the port came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortInfo {
    /// The port to use.
    pub port: u16,
    /// The file it was read from; `None` when the default applies.
    pub file: Option<PathBuf>,
}

/// Reads the port from `<home>/zerotier-one.port`, then `<home>/zerotier.port`; 9993 when
/// neither holds a valid port.
pub fn read_port(home: &Path) -> PortInfo {
    for name in [PORT_FILE, PORT_FILE_NEW] {
        let file = home.join(name);
        if let Ok(text) = std::fs::read_to_string(&file)
            && let Ok(port) = text.trim().parse::<u16>()
            && port != 0
        {
            return PortInfo {
                port,
                file: Some(file),
            };
        }
    }
    PortInfo {
        port: DEFAULT_PORT,
        file: None,
    }
}

/// Where a usable token was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// `[zerotier] token` in the config.
    Config,
    /// This file.
    File(PathBuf),
}

impl fmt::Display for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Config => f.write_str("config zerotier.token"),
            Self::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// No token could be read: every place tried, and why each failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoToken {
    /// `(path, reason)` in the order tried.
    pub tried: Vec<(PathBuf, String)>,
}

impl fmt::Display for NoToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "no ZeroTier auth token (run as root or copy it to ~/.zeroTierOneAuthToken); tried: ",
        )?;
        for (i, (path, why)) in self.tried.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{} ({why})", path.display())?;
        }
        Ok(())
    }
}

impl NoToken {
    /// No token file exists in any place tried (every one "not found"): with nothing
    /// listening on the service's port either, ZeroTier One is not installed. A file that is
    /// there but unreadable or empty means it is.
    pub fn nothing_found(&self) -> bool {
        self.tried.iter().all(|(_, why)| why == NOT_FOUND)
    }
}

const NOT_FOUND: &str = "not found";

/// The token files in lookup order (after an explicit config token): the override home's,
/// the per-user copies, then the system homes'. No path appears twice.
pub fn token_files(os: Os, env: &Env) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    let overrides = [&env.config_home, &env.zerotier_home];
    let candidates = overrides
        .into_iter()
        .flatten()
        .map(|h| h.join(TOKEN_FILE))
        .chain(user_token_files(os, env))
        .chain(
            system_homes(os, env)
                .into_iter()
                .map(|h| h.join(TOKEN_FILE)),
        );
    for p in candidates {
        if !out.contains(&p) {
            out.push(p);
        }
    }
    out
}

/// Finds the token: the explicit one, else the first readable, non-empty file of
/// [`token_files`].
///
/// # Errors
/// [`NoToken`] naming every path tried and why it failed.
pub fn find_token(
    explicit: Option<&str>,
    os: Os,
    env: &Env,
) -> Result<(AuthToken, TokenSource), NoToken> {
    if let Some(t) = explicit.and_then(AuthToken::new) {
        return Ok((t, TokenSource::Config));
    }
    let mut tried = Vec::new();
    for path in token_files(os, env) {
        match std::fs::read_to_string(&path) {
            Ok(text) => match AuthToken::new(&text) {
                Some(t) => return Ok((t, TokenSource::File(path))),
                None => tried.push((path, "empty".to_owned())),
            },
            Err(e) => tried.push((path, describe(&e))),
        }
    }
    Err(NoToken { tried })
}

fn describe(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::NotFound => NOT_FOUND.to_owned(),
        io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        io::ErrorKind::InvalidData => "not text".to_owned(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(tag: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("netmix-zt-token-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn port_file_then_newer_name_then_default() {
        let home = temp("port");
        assert_eq!(read_port(&home).port, 9993);
        assert_eq!(read_port(&home).file, None);
        std::fs::write(home.join(PORT_FILE_NEW), "4545").unwrap();
        assert_eq!(read_port(&home).port, 4545);
        std::fs::write(home.join(PORT_FILE), " 31337\n").unwrap();
        let p = read_port(&home);
        assert_eq!(p.port, 31337);
        assert_eq!(p.file, Some(home.join(PORT_FILE)));
        std::fs::write(home.join(PORT_FILE), "garbage").unwrap();
        assert_eq!(read_port(&home).port, 4545, "a bad file is skipped");
        std::fs::remove_dir_all(&home).unwrap();
    }

    #[test]
    fn token_lookup_order_and_trimming() {
        let root = temp("order");
        let zt_home = root.join("zthome");
        let user = root.join("user");
        std::fs::create_dir_all(&zt_home).unwrap();
        std::fs::create_dir_all(&user).unwrap();
        let env = Env {
            zerotier_home: Some(zt_home.clone()),
            user_home: Some(user.clone()),
            ..Env::default()
        };
        let files = token_files(Os::Linux, &env);
        assert_eq!(
            files,
            vec![
                zt_home.join("authtoken.secret"),
                user.join(".zeroTierOneAuthToken"),
                user.join(".zerotier-local-auth"),
                PathBuf::from("/var/lib/zerotier-one/authtoken.secret"),
            ]
        );
        std::fs::write(user.join(".zeroTierOneAuthToken"), "userstoken\n").unwrap();
        let (t, src) = find_token(None, Os::Linux, &env).unwrap();
        assert_eq!(t.expose(), "userstoken");
        assert_eq!(src, TokenSource::File(user.join(".zeroTierOneAuthToken")));
        std::fs::write(
            zt_home.join("authtoken.secret"),
            "  abcdefghijklmnopqrstuvwx \n",
        )
        .unwrap();
        let (t, _) = find_token(None, Os::Linux, &env).unwrap();
        assert_eq!(t.expose(), "abcdefghijklmnopqrstuvwx");
        let (t, src) = find_token(Some("explicit"), Os::Linux, &env).unwrap();
        assert_eq!((t.expose(), src), ("explicit", TokenSource::Config));
        // The config's home wins over $ZEROTIER_HOME.
        let env2 = Env {
            config_home: Some(root.join("cfg")),
            ..env
        };
        assert_eq!(
            token_files(Os::Linux, &env2)[0],
            root.join("cfg/authtoken.secret")
        );
        assert_eq!(service_home(Os::Linux, &env2), root.join("cfg"));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn missing_token_names_every_path_and_never_the_secret() {
        let root = temp("none");
        let env = Env {
            zerotier_home: Some(root.join("h")),
            user_home: Some(root.join("u")),
            ..Env::default()
        };
        std::fs::create_dir_all(root.join("h")).unwrap();
        std::fs::write(root.join("h/authtoken.secret"), "  \n").unwrap();
        let e = find_token(None, Os::Linux, &env).unwrap_err();
        let msg = e.to_string();
        for p in token_files(Os::Linux, &env) {
            assert!(msg.contains(&p.display().to_string()), "{msg}");
        }
        assert!(msg.contains("(empty)"), "{msg}");
        assert!(
            !e.nothing_found(),
            "an empty token file means ZeroTier is there"
        );
        assert!(msg.contains("(not found)"), "{msg}");
        assert!(msg.contains("~/.zeroTierOneAuthToken"), "{msg}");
        assert!(!msg.contains('\n'));
        assert_eq!(format!("{:?}", AuthToken::new("s3cret").unwrap()), "MASKED");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn no_file_anywhere_is_nothing_found() {
        let absent = NoToken {
            tried: vec![
                (
                    PathBuf::from("/h/authtoken.secret"),
                    describe(&io::ErrorKind::NotFound.into()),
                ),
                (
                    PathBuf::from("/u/.zeroTierOneAuthToken"),
                    "not found".into(),
                ),
            ],
        };
        assert!(absent.nothing_found());
        let unreadable = NoToken {
            tried: vec![
                (PathBuf::from("/h/authtoken.secret"), "not found".into()),
                (
                    PathBuf::from("/var/lib/zerotier-one/authtoken.secret"),
                    "permission denied".into(),
                ),
            ],
        };
        assert!(!unreadable.nothing_found());
    }

    #[test]
    fn platform_paths() {
        let env = Env {
            user_home: Some(PathBuf::from("/Users/ana")),
            program_data: Some(PathBuf::from(r"D:\PD")),
            ..Env::default()
        };
        assert_eq!(
            system_homes(Os::MacOs, &env),
            vec![PathBuf::from("/Library/Application Support/ZeroTier/One")]
        );
        assert_eq!(
            user_token_files(Os::MacOs, &env)[0],
            PathBuf::from("/Users/ana/Library/Application Support/ZeroTier/One/authtoken.secret")
        );
        assert_eq!(
            system_homes(Os::Windows, &env)[0],
            PathBuf::from(r"D:\PD").join("ZeroTier").join("One")
        );
        assert_eq!(
            system_homes(Os::Windows, &env)[1],
            PathBuf::from(r"C:\ZeroTier\One")
        );
        assert_eq!(
            system_homes(Os::Bsd, &env),
            vec![PathBuf::from("/var/db/zerotier-one")]
        );
        let no_home = Env::default();
        assert!(user_token_files(Os::Linux, &no_home).is_empty());
        assert_eq!(
            service_home(
                Os::Linux,
                &Env {
                    zerotier_home: Some("/z".into()),
                    ..Env::default()
                }
            ),
            PathBuf::from("/z")
        );
    }
}
