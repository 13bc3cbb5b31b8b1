//! Putting the local CA certificate into this machine's trust stores and taking it out again:
//! the work behind `watchtower ca install` and `watchtower ca uninstall`, done the way mkcert
//! does it.
//!
//! Linux: the system store is found by which anchor folder exists (Fedora/RHEL, Debian/Ubuntu,
//! Arch, openSUSE); our copy is a file named `watchtower-local-ca-<first 8 hex digits of the
//! SHA-256 fingerprint>` followed by the distribution's refresh command, so uninstall removes
//! exactly our file and nothing else. On Arch that means writing into
//! `/etc/ca-certificates/trust-source/anchors/` and running `trust extract-compat`, which is what
//! `trust anchor --store` does too, but with a file name we choose. Firefox and Chromium keep
//! their own NSS databases (`~/.pki/nssdb`, the Firefox profiles); those are changed with
//! `certutil` under the nickname `Watchtower local CA <prefix>`. macOS uses the System keychain
//! (`security`), Windows the machine ROOT store (`certutil`); both are removed by SHA-1
//! thumbprint. Anything else gets instructions.
//!
//! Nothing is silent: every store looked at ends up as one sentence in a [`TrustReport`] saying
//! what changed, what was already right, what the user must do by hand (with the exact command,
//! `sudo` included, since this module never elevates itself), or what failed and why. Only the
//! certificate is ever read or copied; the private key is not touched.
//!
//! The machine is reached through `TrustEnv` (home folder, file-system root, a command
//! runner), so the tests run every flow against a temporary folder and a fake runner. Loading
//! or creating the CA belongs to `crate::tls::ca`; printing the report to `crate::ca_command`.

use std::borrow::Cow;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::tls::LocalCa;

/// Installed copies in a system anchor folder are named `<FILE_STEM><prefix>.<ext>`.
const FILE_STEM: &str = "watchtower-local-ca-";
/// NSS nicknames are `<NICKNAME_BASE> <prefix>`.
const NICKNAME_BASE: &str = "Watchtower local CA";
/// Hex digits of the SHA-256 fingerprint that name our files and nicknames: enough to tell
/// one CA from the next after `watchtower ca regenerate`.
const SHORT_FINGERPRINT_DIGITS: usize = 8;
const MACOS_SYSTEM_KEYCHAIN: &str = "/Library/Keychains/System.keychain";
/// Longest excerpt of a failing command's output that goes into a report line.
const OUTPUT_EXCERPT_CHARS: usize = 400;
/// Where Firefox keeps profiles, relative to the home folder: the distribution package, the
/// Snap and the Flatpak.
const FIREFOX_PROFILE_ROOTS: [&str; 3] = [
    ".mozilla/firefox",
    "snap/firefox/common/.mozilla/firefox",
    ".var/app/org.mozilla.firefox/.mozilla/firefox",
];
/// The NSS database Chromium and Chrome use on Linux, relative to the home folder.
const CHROMIUM_NSS_DB: &str = ".pki/nssdb";
const NSS_TOOLS_HINT: &str = "Debian/Ubuntu: `sudo apt install libnss3-tools`, Fedora/RHEL: \
     `sudo dnf install nss-tools`, Arch: `sudo pacman -S nss`, openSUSE: \
     `sudo zypper install mozilla-nss-tools`";

/// What `install` or `uninstall` did, one human sentence per entry.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TrustReport {
    /// Changes made: a file written or removed, a command that ran and succeeded.
    pub changed: Vec<String>,
    /// Stores that were already as wanted (or had nothing to remove), so nothing was done.
    pub unchanged: Vec<String>,
    /// What the user must do by hand, each with the exact command.
    pub manual: Vec<String>,
    /// What was tried and failed, with the reason (the command's own error output).
    pub failed: Vec<String>,
}

impl TrustReport {
    /// True when nothing failed (manual steps may still be left).
    pub fn is_ok(&self) -> bool {
        self.failed.is_empty()
    }
}

/// Adds the CA certificate at `cert_path` (which holds `ca`) to this machine's trust stores.
pub fn install(ca: &LocalCa, cert_path: &Path) -> TrustReport {
    let cert = CaCert::of(ca, cert_path);
    install_in(&mut TrustEnv::system(), &cert)
}

/// Removes this CA (and only this one) from the trust stores `install` writes to.
pub fn uninstall(ca: &LocalCa, cert_path: &Path) -> TrustReport {
    let cert = CaCert::of(ca, cert_path);
    uninstall_in(&mut TrustEnv::system(), &cert)
}

/// The facts about the CA certificate that the stores need.
struct CaCert<'a> {
    pem: &'a str,
    path: &'a Path,
    /// First hex digits of the SHA-256 fingerprint, uppercase.
    short: String,
    /// SHA-1 thumbprint in uppercase hex: the only digest `security delete-certificate -Z` and
    /// `certutil -delstore` accept.
    sha1: String,
}

impl<'a> CaCert<'a> {
    fn of(ca: &'a LocalCa, path: &'a Path) -> CaCert<'a> {
        // SHA-1 names a certificate here, it protects nothing.
        let sha1 = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, ca.cert_der());
        CaCert {
            pem: ca.cert_pem(),
            path,
            short: short_fingerprint(&ca.fingerprint()),
            sha1: hex_upper(sha1.as_ref()),
        }
    }

    fn file_name(&self, extension: &str) -> String {
        format!("{FILE_STEM}{}.{extension}", self.short)
    }

    fn nickname(&self) -> String {
        format!("{NICKNAME_BASE} {}", self.short)
    }
}

/// `AB:CD:12:...` -> `ABCD12..`, the first [`SHORT_FINGERPRINT_DIGITS`] hex digits.
fn short_fingerprint(fingerprint: &str) -> String {
    fingerprint
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(SHORT_FINGERPRINT_DIGITS)
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

fn hex_upper(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

/// Which trust-store family applies; chosen at compile time in production, set by tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Platform {
    Linux,
    MacOs,
    Windows,
    Other(&'static str),
}

impl Platform {
    fn current() -> Platform {
        if cfg!(target_os = "linux") {
            Platform::Linux
        } else if cfg!(target_os = "macos") {
            Platform::MacOs
        } else if cfg!(target_os = "windows") {
            Platform::Windows
        } else {
            Platform::Other(std::env::consts::OS)
        }
    }
}

/// One external command, kept as data so it can be run, logged by a fake, or shown to the user.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Cmd {
    program: String,
    args: Vec<OsString>,
}

impl Cmd {
    fn new(program: &str) -> Cmd {
        Cmd {
            program: program.to_string(),
            args: Vec::new(),
        }
    }

    fn arg(mut self, arg: impl AsRef<OsStr>) -> Cmd {
        self.args.push(arg.as_ref().to_os_string());
        self
    }

    /// A command line made of fixed words, such as a refresh command.
    fn from_words(words: &[&str]) -> Cmd {
        let (program, args) = words.split_first().unwrap_or((&"", &[]));
        args.iter().fold(Cmd::new(program), |cmd, a| cmd.arg(a))
    }
}

/// Shell-style, so a line from a report can be pasted into a terminal.
impl fmt::Display for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&quote(OsStr::new(&self.program)))?;
        for arg in &self.args {
            write!(f, " {}", quote(arg))?;
        }
        Ok(())
    }
}

/// Quotes an argument for a POSIX shell (or, on Windows, for cmd.exe) when it needs it.
fn quote(arg: &OsStr) -> Cow<'_, str> {
    let text = arg.to_string_lossy();
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:,=+@%".contains(c));
    if plain {
        text
    } else if cfg!(windows) {
        Cow::Owned(format!("\"{text}\""))
    } else {
        Cow::Owned(format!("'{}'", text.replace('\'', r"'\''")))
    }
}

/// What a finished command said.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Ran {
    success: bool,
    /// How it ended, as std prints it ("exit status: 1").
    status: String,
    stdout: String,
    stderr: String,
}

impl Ran {
    /// The command's complaint for a report line: stderr, else stdout (Windows `certutil`
    /// reports errors there), on one line and capped in length.
    fn excerpt(&self) -> String {
        let text = if self.stderr.trim().is_empty() {
            &self.stdout
        } else {
            &self.stderr
        };
        let line = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" | ");
        match line.char_indices().nth(OUTPUT_EXCERPT_CHARS) {
            Some((cut, _)) => format!("{}...", &line[..cut]),
            None => line,
        }
    }
}

/// How trust-store code reaches programs, so tests can stand in for them.
trait Runner {
    /// Whether `program` can be found on PATH (or in the sbin folders).
    fn exists(&self, program: &str) -> bool;
    /// Runs `cmd` to completion with stdin closed, so a password prompt fails instead of
    /// hanging.
    fn run(&mut self, cmd: &Cmd) -> io::Result<Ran>;
}

/// The real thing: `std::process::Command`.
struct SystemRunner;

impl Runner for SystemRunner {
    fn exists(&self, program: &str) -> bool {
        find_program(program).is_some()
    }

    fn run(&mut self, cmd: &Cmd) -> io::Result<Ran> {
        // update-ca-certificates lives in /usr/sbin, which a user's PATH often lacks.
        let program = find_program(&cmd.program).unwrap_or_else(|| PathBuf::from(&cmd.program));
        let output = Command::new(program)
            .args(&cmd.args)
            .stdin(Stdio::null())
            .output()?;
        Ok(Ran {
            success: output.status.success(),
            status: output.status.to_string(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }
}

fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let sbin: &[&str] = if cfg!(unix) {
        &["/usr/local/sbin", "/usr/sbin", "/sbin"]
    } else {
        &[]
    };
    std::env::split_paths(&path)
        .chain(sbin.iter().map(PathBuf::from))
        .flat_map(|dir| [dir.join(name), dir.join(format!("{name}.exe"))])
        .find(|candidate| candidate.is_file())
}

/// Everything the trust-store code touches on this machine.
struct TrustEnv<R> {
    platform: Platform,
    /// Home folder whose browser databases are updated; `None` when it is not known.
    home: Option<PathBuf>,
    /// `/` in production; tests point it at a temporary folder holding a system layout.
    root: PathBuf,
    /// Set when started through `sudo` (`SUDO_USER`): browser databases are then left alone,
    /// since they belong to that user and must not become root's files.
    sudo_user: Option<String>,
    runner: R,
}

impl TrustEnv<SystemRunner> {
    fn system() -> TrustEnv<SystemRunner> {
        let home_var = if cfg!(windows) { "USERPROFILE" } else { "HOME" };
        TrustEnv {
            platform: Platform::current(),
            home: std::env::var_os(home_var)
                .map(PathBuf::from)
                .filter(|p| p.is_absolute()),
            root: PathBuf::from("/"),
            sudo_user: std::env::var("SUDO_USER").ok().filter(|u| !u.is_empty()),
            runner: SystemRunner,
        }
    }
}

impl<R: Runner> TrustEnv<R> {
    /// `Some(true)` when the effective user is root (`id -u` says 0); `None` when `id` could
    /// not tell, in which case the write is tried and a permission error reported.
    fn is_root(&mut self) -> Option<bool> {
        let ran = self.runner.run(&Cmd::new("id").arg("-u")).ok()?;
        ran.success.then(|| ran.stdout.trim() == "0")
    }

    /// Runs `cmd` as an administrator would: when not root, leaves the `sudo` command as a
    /// manual step; when it fails, adds that command after the failure.
    fn run_as_admin(&mut self, label: &str, cmd: &Cmd, report: &mut TrustReport) {
        if self.is_root() == Some(false) {
            report
                .manual
                .push(format!("{label}: needs an administrator; run: sudo {cmd}"));
        } else if !self.run_step(label, cmd, report) {
            report
                .manual
                .push(format!("{label}: run it by hand: sudo {cmd}"));
        }
    }

    /// Runs `cmd` and records it as changed (success) or failed (with its error output).
    fn run_step(&mut self, label: &str, cmd: &Cmd, report: &mut TrustReport) -> bool {
        match self.runner.run(cmd) {
            Ok(ran) if ran.success => {
                report.changed.push(format!("{label}: ran `{cmd}`"));
                true
            }
            Ok(ran) => {
                let why = ran.excerpt();
                let why = if why.is_empty() {
                    String::new()
                } else {
                    format!(": {why}")
                };
                report
                    .failed
                    .push(format!("{label}: `{cmd}` failed ({}){why}", ran.status));
                false
            }
            Err(err) => {
                report
                    .failed
                    .push(format!("{label}: could not run `{cmd}`: {err}"));
                false
            }
        }
    }
}

fn install_in<R: Runner>(env: &mut TrustEnv<R>, cert: &CaCert) -> TrustReport {
    let mut report = TrustReport::default();
    match env.platform {
        Platform::Linux => {
            install_linux_system(env, cert, &mut report);
            nss(env, cert, Direction::Install, &mut report);
        }
        Platform::MacOs => install_macos(env, cert, &mut report),
        Platform::Windows => install_windows(env, cert, &mut report),
        Platform::Other(os) => report.manual.push(format!(
            "{os}: Watchtower cannot change this system's trust store itself; add {} to it \
             by hand (README, \"Trusting Watchtower's CA\")",
            cert.path.display()
        )),
    }
    report
}

fn uninstall_in<R: Runner>(env: &mut TrustEnv<R>, cert: &CaCert) -> TrustReport {
    let mut report = TrustReport::default();
    match env.platform {
        Platform::Linux => {
            uninstall_linux_system(env, cert, &mut report);
            nss(env, cert, Direction::Uninstall, &mut report);
        }
        Platform::MacOs => uninstall_macos(env, cert, &mut report),
        Platform::Windows => uninstall_windows(env, cert, &mut report),
        Platform::Other(os) => report.manual.push(format!(
            "{os}: Watchtower cannot change this system's trust store itself; if you added {} \
             by hand, remove it the same way",
            cert.path.display()
        )),
    }
    report
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Install,
    Uninstall,
}

/// A Linux distribution family's CA anchor folder and the command that rebuilds its bundles.
struct SystemStore {
    name: &'static str,
    /// Relative to the file-system root.
    anchors: &'static str,
    extension: &'static str,
    refresh: &'static [&'static str],
}

/// Checked in this order, first existing folder wins (mkcert's order).
const SYSTEM_STORES: [SystemStore; 4] = [
    SystemStore {
        name: "Fedora/RHEL",
        anchors: "etc/pki/ca-trust/source/anchors",
        extension: "pem",
        refresh: &["update-ca-trust", "extract"],
    },
    SystemStore {
        name: "Debian/Ubuntu",
        anchors: "usr/local/share/ca-certificates",
        // update-ca-certificates only picks up files ending in .crt.
        extension: "crt",
        refresh: &["update-ca-certificates"],
    },
    SystemStore {
        name: "Arch",
        anchors: "etc/ca-certificates/trust-source/anchors",
        extension: "crt",
        refresh: &["trust", "extract-compat"],
    },
    SystemStore {
        name: "openSUSE",
        anchors: "usr/share/pki/trust/anchors",
        extension: "pem",
        refresh: &["update-ca-certificates"],
    },
];

/// The system store of this machine, with its anchor folder under `root`.
fn detect_system_store(root: &Path) -> Option<(&'static SystemStore, PathBuf)> {
    SYSTEM_STORES.iter().find_map(|store| {
        let dir = root.join(store.anchors);
        dir.is_dir().then_some((store, dir))
    })
}

fn looked_for(root: &Path) -> String {
    SYSTEM_STORES
        .iter()
        .map(|s| root.join(s.anchors).display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Other `watchtower-local-ca-*` files in the anchor folder: earlier CAs (before a
/// `ca regenerate`) that are still trusted. Reported, never removed: uninstall takes out
/// exactly the current CA.
fn report_older_copies(
    label: &str,
    dir: &Path,
    ours: &str,
    refresh: &Cmd,
    report: &mut TrustReport,
) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let mut older: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with(FILE_STEM) && name != ours
        })
        .map(|e| e.path())
        .collect();
    older.sort();
    for path in older {
        report.manual.push(format!(
            "{label}: {} is an earlier Watchtower CA and is still trusted; to remove it run: \
             sudo rm {} && sudo {refresh}",
            path.display(),
            quote(path.as_os_str())
        ));
    }
}

/// Where our copy of the CA goes in this machine's system store.
struct SystemTarget {
    store: &'static SystemStore,
    dir: PathBuf,
    label: String,
    /// Our file in the anchor folder.
    dest: PathBuf,
    refresh: Cmd,
}

/// Finds the system store under `root` and our file in it, and reports earlier Watchtower
/// copies there. With no known layout, adds a manual step ending in `advice` and gives `None`.
fn system_target(
    root: &Path,
    cert: &CaCert,
    advice: &str,
    report: &mut TrustReport,
) -> Option<SystemTarget> {
    let Some((store, dir)) = detect_system_store(root) else {
        report.manual.push(format!(
            "system trust store: none of the known layouts was found (looked for {}); {advice}",
            looked_for(root)
        ));
        return None;
    };
    let label = format!("system trust store ({})", store.name);
    let file_name = cert.file_name(store.extension);
    let dest = dir.join(&file_name);
    let refresh = Cmd::from_words(store.refresh);
    report_older_copies(&label, &dir, &file_name, &refresh, report);
    Some(SystemTarget {
        store,
        dir,
        label,
        dest,
        refresh,
    })
}

/// Writes (install) or removes (uninstall) our file in the system store, then runs the
/// refresh command. Without root, or where it cannot write, the user gets `by_hand`; without
/// the refresh command nothing is changed.
fn change_system_file<R: Runner>(
    env: &mut TrustEnv<R>,
    cert: &CaCert,
    target: &SystemTarget,
    direction: Direction,
    by_hand: &str,
    report: &mut TrustReport,
) {
    let SystemTarget {
        store,
        dir,
        label,
        dest,
        refresh,
    } = target;
    if env.is_root() == Some(false) {
        report
            .manual
            .push(format!("{label}: needs root; run: {by_hand}"));
        return;
    }
    let refresh_program = store.refresh[0];
    if !env.runner.exists(refresh_program) {
        report.failed.push(match direction {
            Direction::Install => format!(
                "{label}: found {} but no `{refresh_program}` command, so nothing was written; \
                 install the ca-certificates package and rerun `watchtower ca install`",
                dir.display()
            ),
            Direction::Uninstall => format!(
                "{label}: no `{refresh_program}` command, so {} was left in place; run by hand: \
                 {by_hand}",
                dest.display()
            ),
        });
        return;
    }
    let (verb, done, outcome) = match direction {
        Direction::Install => ("write", "wrote", fs::write(dest, cert.pem)),
        Direction::Uninstall => ("remove", "removed", fs::remove_file(dest)),
    };
    match outcome {
        Ok(()) => report
            .changed
            .push(format!("{label}: {done} {}", dest.display())),
        Err(err) if err.kind() == io::ErrorKind::PermissionDenied => {
            report.manual.push(format!(
                "{label}: cannot {verb} {} ({err}); run: {by_hand}",
                dest.display()
            ));
            return;
        }
        Err(err) => {
            report
                .failed
                .push(format!("{label}: cannot {verb} {}: {err}", dest.display()));
            return;
        }
    }
    env.run_step(label, refresh, report);
}

fn install_linux_system<R: Runner>(env: &mut TrustEnv<R>, cert: &CaCert, report: &mut TrustReport) {
    let advice = format!(
        "add {} to your distribution's CA store by hand",
        cert.path.display()
    );
    let Some(target) = system_target(&env.root, cert, &advice, report) else {
        return;
    };
    let dest = &target.dest;
    if fs::read_to_string(dest).is_ok_and(|text| text == cert.pem) {
        report.unchanged.push(format!(
            "{}: {} already holds this CA",
            target.label,
            dest.display()
        ));
        return;
    }
    let by_hand = format!(
        "sudo cp {} {} && sudo {}",
        quote(cert.path.as_os_str()),
        quote(dest.as_os_str()),
        target.refresh
    );
    change_system_file(env, cert, &target, Direction::Install, &by_hand, report);
}

fn uninstall_linux_system<R: Runner>(
    env: &mut TrustEnv<R>,
    cert: &CaCert,
    report: &mut TrustReport,
) {
    let advice = format!(
        "if you added {} to your distribution's CA store by hand, remove it the same way",
        cert.path.display()
    );
    let Some(target) = system_target(&env.root, cert, &advice, report) else {
        return;
    };
    let dest = &target.dest;
    if fs::symlink_metadata(dest).is_err() {
        report.unchanged.push(format!(
            "{}: {} is not there; nothing to remove",
            target.label,
            dest.display()
        ));
        return;
    }
    let by_hand = format!(
        "sudo rm {} && sudo {}",
        quote(dest.as_os_str()),
        target.refresh
    );
    change_system_file(env, cert, &target, Direction::Uninstall, &by_hand, report);
}

/// One NSS certificate database (a Firefox profile or Chromium's `~/.pki/nssdb`).
struct NssDb {
    /// `sql:<dir>` for `cert9.db`, `dbm:<dir>` for the legacy `cert8.db`.
    spec: OsString,
    legacy: bool,
    label: String,
}

fn nss_db(dir: &Path, what: &str) -> Option<NssDb> {
    let (prefix, legacy) = if dir.join("cert9.db").is_file() {
        ("sql:", false)
    } else if dir.join("cert8.db").is_file() {
        ("dbm:", true)
    } else {
        return None;
    };
    let mut spec = OsString::from(prefix);
    spec.push(dir);
    Some(NssDb {
        spec,
        legacy,
        label: format!("{what} {}", dir.display()),
    })
}

/// Chromium's database, then every Firefox profile (sorted) that holds a certificate database.
fn find_nss_dbs(home: &Path) -> Vec<NssDb> {
    let mut dbs: Vec<NssDb> = nss_db(&home.join(CHROMIUM_NSS_DB), "Chromium/Chrome NSS database")
        .into_iter()
        .collect();
    for profiles in FIREFOX_PROFILE_ROOTS {
        let Ok(entries) = fs::read_dir(home.join(profiles)) else {
            continue;
        };
        let mut dirs: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect();
        dirs.sort();
        dbs.extend(dirs.iter().filter_map(|d| nss_db(d, "Firefox profile")));
    }
    dbs
}

/// Nicknames in a `certutil -L` listing that start with [`NICKNAME_BASE`]. Each line is the
/// nickname (which may hold spaces) padded with spaces, then the trust flags such as `C,,`.
fn watchtower_nicknames(listing: &str) -> Vec<String> {
    listing
        .lines()
        .map(str::trim_end)
        .filter(|line| line.starts_with(NICKNAME_BASE))
        .map(|line| match line.rsplit_once(char::is_whitespace) {
            Some((nick, flags)) if flags.contains(',') => nick.trim_end().to_string(),
            _ => line.to_string(),
        })
        .collect()
}

fn certutil_delete(db: &NssDb, nickname: &str) -> Cmd {
    Cmd::new("certutil")
        .arg("-D")
        .arg("-d")
        .arg(&db.spec)
        .arg("-n")
        .arg(nickname)
}

fn nss<R: Runner>(
    env: &mut TrustEnv<R>,
    cert: &CaCert,
    direction: Direction,
    report: &mut TrustReport,
) {
    let verb = match direction {
        Direction::Install => "install",
        Direction::Uninstall => "uninstall",
    };
    if let Some(user) = &env.sudo_user {
        report.manual.push(format!(
            "Firefox/Chromium (NSS): running under sudo, so {user}'s browser databases were \
             not touched (they would end up owned by root); run `watchtower ca {verb}` again \
             as {user}, without sudo"
        ));
        return;
    }
    let Some(home) = env.home.clone() else {
        report.manual.push(format!(
            "Firefox/Chromium (NSS): the home folder is not known (HOME is unset), so browser \
             databases were not looked for; {verb} {} in the browser's certificate settings",
            cert.path.display()
        ));
        return;
    };
    let dbs = find_nss_dbs(&home);
    if dbs.is_empty() {
        report.unchanged.push(format!(
            "Firefox/Chromium (NSS): no certificate database under {} (looked in ~/{CHROMIUM_NSS_DB} \
             and ~/{}); nothing to do",
            home.display(),
            FIREFOX_PROFILE_ROOTS.join(", ~/")
        ));
        return;
    }
    if !env.runner.exists("certutil") {
        let list = dbs.iter().map(|d| d.label.as_str()).collect::<Vec<_>>();
        report.manual.push(format!(
            "Firefox/Chromium (NSS): found {} but no `certutil`; install it ({NSS_TOOLS_HINT}) \
             and rerun `watchtower ca {verb}`",
            list.join(", ")
        ));
        return;
    }
    let ours = cert.nickname();
    let mut any_changed = false;
    for db in &dbs {
        let list = Cmd::new("certutil").arg("-L").arg("-d").arg(&db.spec);
        let nicknames = match env.runner.run(&list) {
            Ok(ran) if ran.success => watchtower_nicknames(&ran.stdout),
            Ok(ran) => {
                report.failed.push(format!(
                    "{}: `{list}` failed ({}): {}{}",
                    db.label,
                    ran.status,
                    ran.excerpt(),
                    legacy_hint(db)
                ));
                continue;
            }
            Err(err) => {
                report
                    .failed
                    .push(format!("{}: could not run `{list}`: {err}", db.label));
                continue;
            }
        };
        for other in nicknames.iter().filter(|n| **n != ours) {
            report.manual.push(format!(
                "{}: \"{other}\" is an earlier Watchtower CA and is still trusted; to remove it \
                 run: {}",
                db.label,
                certutil_delete(db, other)
            ));
        }
        let present = nicknames.contains(&ours);
        let cmd = match (direction, present) {
            (Direction::Install, true) => {
                report.unchanged.push(format!(
                    "{}: already trusts this CA as \"{ours}\"",
                    db.label
                ));
                continue;
            }
            (Direction::Uninstall, false) => {
                report.unchanged.push(format!(
                    "{}: \"{ours}\" is not there; nothing to remove",
                    db.label
                ));
                continue;
            }
            (Direction::Install, false) => Cmd::new("certutil")
                .arg("-A")
                .arg("-d")
                .arg(&db.spec)
                .arg("-t")
                .arg("C,,")
                .arg("-n")
                .arg(&ours)
                .arg("-i")
                .arg(cert.path),
            (Direction::Uninstall, true) => certutil_delete(db, &ours),
        };
        if env.run_step(&db.label, &cmd, report) {
            any_changed = true;
        } else if let Some(last) = report.failed.last_mut() {
            last.push_str(legacy_hint(db));
        }
    }
    if any_changed {
        report.manual.push(
            "Firefox/Chromium (NSS): restart any browser that is running, so it rereads its \
             certificates"
                .to_string(),
        );
    }
}

fn legacy_hint(db: &NssDb) -> &'static str {
    if db.legacy {
        " (an old cert8.db database is locked while Firefox runs: close Firefox and retry)"
    } else {
        ""
    }
}

/// How report lines name the macOS store.
const MACOS_LABEL: &str = "macOS System keychain";
/// How report lines name the Windows store.
const WINDOWS_LABEL: &str = "Windows ROOT store";

/// The note that Firefox 120 and later follows the system store named `store` on `os`.
fn firefox_follows_system_store(os: &str, store: &str) -> String {
    format!(
        "Firefox on {os}: version 120 and later trusts the {store}'s CAs \
         (security.enterprise_roots.enabled); nothing to do"
    )
}

fn macos_add(cert: &CaCert) -> Cmd {
    Cmd::new("security")
        .arg("add-trusted-cert")
        .arg("-d")
        .arg("-r")
        .arg("trustRoot")
        .arg("-k")
        .arg(MACOS_SYSTEM_KEYCHAIN)
        .arg(cert.path)
}

fn install_macos<R: Runner>(env: &mut TrustEnv<R>, cert: &CaCert, report: &mut TrustReport) {
    env.run_as_admin(MACOS_LABEL, &macos_add(cert), report);
    report
        .unchanged
        .push(firefox_follows_system_store("macOS", "System keychain"));
}

fn uninstall_macos<R: Runner>(env: &mut TrustEnv<R>, cert: &CaCert, report: &mut TrustReport) {
    let label = MACOS_LABEL;
    let sha1 = &cert.sha1;
    // Reading the keychain needs no root, so "not there" is answered without sudo.
    let find = Cmd::new("security")
        .arg("find-certificate")
        .arg("-a")
        .arg("-Z")
        .arg(MACOS_SYSTEM_KEYCHAIN);
    if let Ok(ran) = env.runner.run(&find)
        && ran.success
        && !ran
            .stdout
            .to_ascii_uppercase()
            .contains(&format!("SHA-1 HASH: {sha1}"))
    {
        report.unchanged.push(format!(
            "{label}: no certificate with SHA-1 {sha1}; nothing to remove"
        ));
        return;
    }
    // -t also drops the trust settings; run as root it drops the admin-domain ones that
    // `add-trusted-cert -d` wrote.
    let delete = Cmd::new("security")
        .arg("delete-certificate")
        .arg("-t")
        .arg("-Z")
        .arg(sha1)
        .arg(MACOS_SYSTEM_KEYCHAIN);
    env.run_as_admin(label, &delete, report);
}

/// `certutil -user <action> Root <what>`: the same change in the current user's own store.
fn certutil_user(action: &str, what: impl AsRef<OsStr>) -> Cmd {
    Cmd::new("certutil")
        .arg("-user")
        .arg(action)
        .arg("Root")
        .arg(what)
}

/// Runs `cmd` on the machine ROOT store; if that fails, tells how to run it as administrator
/// and, as `user_note`, how `user_cmd` does it for the user's own store.
fn run_on_windows_root<R: Runner>(
    env: &mut TrustEnv<R>,
    cmd: &Cmd,
    user_note: &str,
    user_cmd: &Cmd,
    report: &mut TrustReport,
) {
    if !env.run_step(WINDOWS_LABEL, cmd, report) {
        report.manual.push(format!(
            "{WINDOWS_LABEL}: from a command prompt opened with \"Run as administrator\", run: \
             {cmd} ({user_note}: {user_cmd})"
        ));
    }
}

fn install_windows<R: Runner>(env: &mut TrustEnv<R>, cert: &CaCert, report: &mut TrustReport) {
    let add = Cmd::new("certutil")
        .arg("-addstore")
        .arg("-f")
        .arg("ROOT")
        .arg(cert.path);
    run_on_windows_root(
        env,
        &add,
        "or, for your user only and without admin rights",
        &certutil_user("-addstore", cert.path),
        report,
    );
    report
        .unchanged
        .push(firefox_follows_system_store("Windows", WINDOWS_LABEL));
}

fn uninstall_windows<R: Runner>(env: &mut TrustEnv<R>, cert: &CaCert, report: &mut TrustReport) {
    let sha1 = &cert.sha1;
    let delete = Cmd::new("certutil").arg("-delstore").arg("ROOT").arg(sha1);
    run_on_windows_root(
        env,
        &delete,
        "if it was added for your user only",
        &certutil_user("-delstore", sha1),
        report,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEM: &str = "-----BEGIN CERTIFICATE-----\nTEST\n-----END CERTIFICATE-----\n";
    const NICK: &str = "Watchtower local CA ABCD1234";

    /// Stands in for the programs: records every command line and answers from a script.
    struct FakeRunner {
        programs: Vec<&'static str>,
        /// What `id -u` prints; empty means `id` fails.
        uid: &'static str,
        /// Command-line prefix -> answer; the first match wins, else plain success.
        replies: Vec<(String, Ran)>,
        log: Vec<String>,
    }

    impl FakeRunner {
        fn new(programs: &[&'static str], uid: &'static str) -> FakeRunner {
            FakeRunner {
                programs: programs.to_vec(),
                uid,
                replies: Vec::new(),
                log: Vec::new(),
            }
        }

        fn reply(mut self, prefix: &str, success: bool, stdout: &str, stderr: &str) -> FakeRunner {
            let ran = Ran {
                success,
                status: if success {
                    "exit status: 0"
                } else {
                    "exit status: 1"
                }
                .to_string(),
                stdout: stdout.to_string(),
                stderr: stderr.to_string(),
            };
            self.replies.push((prefix.to_string(), ran));
            self
        }

        /// Logged lines other than `id -u`.
        fn commands(&self) -> Vec<&str> {
            self.log
                .iter()
                .map(String::as_str)
                .filter(|l| *l != "id -u")
                .collect()
        }
    }

    impl Runner for FakeRunner {
        fn exists(&self, program: &str) -> bool {
            self.programs.contains(&program)
        }

        fn run(&mut self, cmd: &Cmd) -> io::Result<Ran> {
            let line = cmd.to_string();
            self.log.push(line.clone());
            if line == "id -u" {
                if self.uid.is_empty() {
                    return Err(io::Error::new(io::ErrorKind::NotFound, "no id"));
                }
                return Ok(Ran {
                    success: true,
                    status: "exit status: 0".into(),
                    stdout: format!("{}\n", self.uid),
                    stderr: String::new(),
                });
            }
            Ok(self
                .replies
                .iter()
                .find(|(prefix, _)| line.starts_with(prefix.as_str()))
                .map(|(_, ran)| ran.clone())
                .unwrap_or(Ran {
                    success: true,
                    status: "exit status: 0".into(),
                    ..Ran::default()
                }))
        }
    }

    /// A fresh temporary folder with `root/`, `home/` and the CA certificate file.
    struct Sandbox {
        dir: PathBuf,
        cert_path: PathBuf,
    }

    impl Sandbox {
        fn new(name: &str) -> Sandbox {
            let dir = std::env::temp_dir().join(format!(
                "watchtower-trust-test-{}-{name}",
                std::process::id()
            ));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(dir.join("root")).unwrap();
            fs::create_dir_all(dir.join("home")).unwrap();
            let cert_path = dir.join("ca.pem");
            fs::write(&cert_path, PEM).unwrap();
            Sandbox { dir, cert_path }
        }

        fn root(&self) -> PathBuf {
            self.dir.join("root")
        }

        fn home(&self) -> PathBuf {
            self.dir.join("home")
        }

        fn mkdir(&self, relative: &str) -> PathBuf {
            let path = self.dir.join(relative);
            fs::create_dir_all(&path).unwrap();
            path
        }

        fn touch(&self, relative: &str) {
            let path = self.dir.join(relative);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, "").unwrap();
        }

        fn env(&self, platform: Platform, runner: FakeRunner) -> TrustEnv<FakeRunner> {
            TrustEnv {
                platform,
                home: Some(self.home()),
                root: self.root(),
                sudo_user: None,
                runner,
            }
        }

        fn cert(&self) -> CaCert<'_> {
            CaCert {
                pem: PEM,
                path: &self.cert_path,
                short: short_fingerprint("ab:cd:12:34:56:78:9a"),
                sha1: "0123456789ABCDEF0123456789ABCDEF01234567".to_string(),
            }
        }
    }

    impl Drop for Sandbox {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }

    fn assert_mentions(lines: &[String], needles: &[&str]) {
        assert!(
            lines.iter().any(|l| needles.iter().all(|n| l.contains(n))),
            "no line with all of {needles:?} in {lines:#?}"
        );
    }

    #[test]
    fn names_come_from_the_fingerprint_prefix() {
        assert_eq!(short_fingerprint("ab:cd:12:34:56:78"), "ABCD1234");
        let sandbox = Sandbox::new("names");
        let cert = sandbox.cert();
        assert_eq!(cert.file_name("crt"), "watchtower-local-ca-ABCD1234.crt");
        assert_eq!(cert.nickname(), NICK);
    }

    #[test]
    fn a_real_ca_yields_its_names_and_thumbprint() {
        let sandbox = Sandbox::new("real-ca");
        let (cert_path, key_path) = (
            sandbox.dir.join("real.pem"),
            sandbox.dir.join("real-key.pem"),
        );
        let ca = LocalCa::create(&cert_path, &key_path).unwrap();
        let cert = CaCert::of(&ca, &cert_path);
        let fingerprint: String = ca.fingerprint().chars().filter(|c| *c != ':').collect();
        assert_eq!(cert.short, fingerprint[..8]);
        assert_eq!(cert.sha1.len(), 40);
        assert!(
            cert.sha1
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_lowercase())
        );
        assert_eq!(cert.pem, fs::read_to_string(&cert_path).unwrap());
    }

    #[test]
    fn commands_display_quoted_for_a_shell() {
        let cmd = Cmd::new("certutil")
            .arg("-n")
            .arg("Watchtower local CA X")
            .arg("it's")
            .arg("sql:/a/b.default");
        assert_eq!(
            cmd.to_string(),
            r"certutil -n 'Watchtower local CA X' 'it'\''s' sql:/a/b.default"
        );
        assert_eq!(
            Cmd::from_words(&["update-ca-trust", "extract"]).to_string(),
            "update-ca-trust extract"
        );
    }

    #[test]
    fn debian_layout_as_root_writes_our_file_then_refreshes() {
        let sandbox = Sandbox::new("debian");
        let anchors = sandbox.mkdir("root/usr/local/share/ca-certificates");
        let runner = FakeRunner::new(&["update-ca-certificates"], "0");
        let mut env = sandbox.env(Platform::Linux, runner);

        let report = install_in(&mut env, &sandbox.cert());
        let dest = anchors.join("watchtower-local-ca-ABCD1234.crt");
        assert_eq!(fs::read_to_string(&dest).unwrap(), PEM);
        assert!(report.is_ok(), "{report:#?}");
        assert!(report.manual.is_empty(), "{report:#?}");
        assert_mentions(
            &report.changed,
            &["Debian/Ubuntu", "wrote", &dest.display().to_string()],
        );
        assert_mentions(&report.changed, &["ran `update-ca-certificates`"]);
        assert_mentions(
            &report.unchanged,
            &["Firefox/Chromium (NSS)", "nothing to do"],
        );
        assert_eq!(env.runner.commands(), ["update-ca-certificates"]);

        // A second install finds the file in place and runs nothing.
        env.runner.log.clear();
        let report = install_in(&mut env, &sandbox.cert());
        assert!(report.changed.is_empty(), "{report:#?}");
        assert_mentions(&report.unchanged, &["already holds this CA"]);
        assert!(env.runner.commands().is_empty());
    }

    #[test]
    fn fedora_layout_uses_anchors_and_update_ca_trust() {
        let sandbox = Sandbox::new("fedora");
        let anchors = sandbox.mkdir("root/etc/pki/ca-trust/source/anchors");
        // Fedora wins when both folders exist, as in mkcert.
        sandbox.mkdir("root/usr/local/share/ca-certificates");
        let runner = FakeRunner::new(&["update-ca-trust"], "0");
        let mut env = sandbox.env(Platform::Linux, runner);

        let report = install_in(&mut env, &sandbox.cert());
        assert!(anchors.join("watchtower-local-ca-ABCD1234.pem").is_file());
        assert!(report.is_ok(), "{report:#?}");
        assert_mentions(
            &report.changed,
            &["Fedora/RHEL", "ran `update-ca-trust extract`"],
        );
        assert_eq!(env.runner.commands(), ["update-ca-trust extract"]);

        let report = uninstall_in(&mut env, &sandbox.cert());
        assert!(!anchors.join("watchtower-local-ca-ABCD1234.pem").exists());
        assert_mentions(&report.changed, &["removed"]);
    }

    #[test]
    fn arch_and_opensuse_layouts_are_recognised() {
        for (anchors, file, refresh) in [
            (
                "root/etc/ca-certificates/trust-source/anchors",
                "watchtower-local-ca-ABCD1234.crt",
                "trust extract-compat",
            ),
            (
                "root/usr/share/pki/trust/anchors",
                "watchtower-local-ca-ABCD1234.pem",
                "update-ca-certificates",
            ),
        ] {
            let sandbox = Sandbox::new("arch-suse");
            let dir = sandbox.mkdir(anchors);
            let runner = FakeRunner::new(&["trust", "update-ca-certificates"], "0");
            let mut env = sandbox.env(Platform::Linux, runner);
            let report = install_in(&mut env, &sandbox.cert());
            assert!(dir.join(file).is_file(), "{report:#?}");
            assert_eq!(env.runner.commands(), [refresh]);
        }
    }

    #[test]
    fn not_root_gets_the_exact_sudo_command_and_nothing_is_written() {
        let sandbox = Sandbox::new("notroot");
        let anchors = sandbox.mkdir("root/usr/local/share/ca-certificates");
        let runner = FakeRunner::new(&["update-ca-certificates"], "1000");
        let mut env = sandbox.env(Platform::Linux, runner);

        let report = install_in(&mut env, &sandbox.cert());
        let dest = anchors.join("watchtower-local-ca-ABCD1234.crt");
        assert!(!dest.exists());
        assert!(report.changed.is_empty(), "{report:#?}");
        let expected = format!(
            "sudo cp {} {} && sudo update-ca-certificates",
            sandbox.cert_path.display(),
            dest.display()
        );
        assert_mentions(&report.manual, &["needs root", &expected]);
        assert!(env.runner.commands().is_empty());

        fs::write(&dest, PEM).unwrap();
        let report = uninstall_in(&mut env, &sandbox.cert());
        assert!(dest.exists());
        let expected = format!("sudo rm {} && sudo update-ca-certificates", dest.display());
        assert_mentions(&report.manual, &["needs root", &expected]);
    }

    #[test]
    fn uninstall_removes_only_our_file_and_points_at_older_ones() {
        let sandbox = Sandbox::new("uninstall");
        let anchors = sandbox.mkdir("root/usr/local/share/ca-certificates");
        let ours = anchors.join("watchtower-local-ca-ABCD1234.crt");
        let older = anchors.join("watchtower-local-ca-00FF00FF.crt");
        let foreign = anchors.join("corporate-root.crt");
        for path in [&ours, &older, &foreign] {
            fs::write(path, PEM).unwrap();
        }
        let runner = FakeRunner::new(&["update-ca-certificates"], "0");
        let mut env = sandbox.env(Platform::Linux, runner);

        let report = uninstall_in(&mut env, &sandbox.cert());
        assert!(!ours.exists());
        assert!(older.exists() && foreign.exists());
        assert_mentions(&report.changed, &["removed", &ours.display().to_string()]);
        assert_mentions(&report.changed, &["ran `update-ca-certificates`"]);
        assert_mentions(
            &report.manual,
            &[
                "earlier Watchtower CA",
                &format!("sudo rm {}", older.display()),
            ],
        );
        assert!(!report.manual.iter().any(|l| l.contains("corporate-root")));

        // Nothing left of ours: no command runs.
        env.runner.log.clear();
        let report = uninstall_in(&mut env, &sandbox.cert());
        assert_mentions(&report.unchanged, &["is not there; nothing to remove"]);
        assert!(env.runner.commands().is_empty());
    }

    #[test]
    fn failing_refresh_is_reported_with_its_stderr() {
        let sandbox = Sandbox::new("refresh-fails");
        sandbox.mkdir("root/usr/local/share/ca-certificates");
        let runner = FakeRunner::new(&["update-ca-certificates"], "").reply(
            "update-ca-certificates",
            false,
            "",
            "run-parts: failed\n",
        );
        let mut env = sandbox.env(Platform::Linux, runner);
        let report = install_in(&mut env, &sandbox.cert());
        assert!(!report.is_ok());
        assert_mentions(
            &report.failed,
            &["`update-ca-certificates` failed (exit status: 1): run-parts: failed"],
        );
    }

    #[test]
    fn missing_refresh_command_writes_nothing() {
        let sandbox = Sandbox::new("no-refresh");
        let anchors = sandbox.mkdir("root/usr/local/share/ca-certificates");
        let mut env = sandbox.env(Platform::Linux, FakeRunner::new(&[], "0"));
        let report = install_in(&mut env, &sandbox.cert());
        assert!(fs::read_dir(anchors).unwrap().next().is_none());
        assert_mentions(&report.failed, &["no `update-ca-certificates` command"]);
    }

    #[test]
    fn unknown_layout_asks_for_manual_work() {
        let sandbox = Sandbox::new("unknown");
        let mut env = sandbox.env(Platform::Linux, FakeRunner::new(&[], "0"));
        let report = install_in(&mut env, &sandbox.cert());
        assert_mentions(
            &report.manual,
            &["none of the known layouts", "ca-certificates"],
        );
        assert!(report.is_ok());
    }

    #[test]
    fn nss_profiles_get_certutil_add_and_delete() {
        let sandbox = Sandbox::new("nss");
        sandbox.touch("home/.pki/nssdb/cert9.db");
        sandbox.touch("home/.mozilla/firefox/a.default-release/cert9.db");
        sandbox.touch("home/.mozilla/firefox/b.old/cert8.db");
        sandbox.mkdir("home/.mozilla/firefox/c.empty");
        sandbox.touch("home/snap/firefox/common/.mozilla/firefox/d.snap/cert9.db");
        let home = sandbox.home();
        let chromium = format!("sql:{}", home.join(".pki/nssdb").display());
        let firefox = format!(
            "sql:{}",
            home.join(".mozilla/firefox/a.default-release").display()
        );
        let legacy = format!("dbm:{}", home.join(".mozilla/firefox/b.old").display());
        let snap = format!(
            "sql:{}",
            home.join("snap/firefox/common/.mozilla/firefox/d.snap")
                .display()
        );
        // The snap profile already trusts us and holds an earlier Watchtower CA.
        let listing = "\nCertificate Nickname                                         Trust Attributes\n\
                       SSL,S/MIME,JAR/XPI\n\n\
                       Watchtower local CA ABCD1234                                 C,,\n\
                       Watchtower local CA 00FF00FF                                 C,,\n";
        let runner = FakeRunner::new(&["certutil"], "0").reply(
            &format!("certutil -L -d {snap}"),
            true,
            listing,
            "",
        );
        let mut env = sandbox.env(Platform::Linux, runner);

        let report = install_in(&mut env, &sandbox.cert());
        let cert = sandbox.cert_path.display();
        let add = |db: &str| format!("certutil -A -d {db} -t C,, -n '{NICK}' -i {cert}");
        assert_eq!(
            env.runner.commands(),
            [
                format!("certutil -L -d {chromium}"),
                add(&chromium),
                format!("certutil -L -d {firefox}"),
                add(&firefox),
                format!("certutil -L -d {legacy}"),
                add(&legacy),
                format!("certutil -L -d {snap}"),
            ]
        );
        assert!(report.is_ok(), "{report:#?}");
        assert_mentions(
            &report.changed,
            &["Firefox profile", "a.default-release", "certutil -A"],
        );
        assert_mentions(&report.unchanged, &["d.snap", "already trusts this CA"]);
        assert_mentions(
            &report.manual,
            &[
                "earlier Watchtower CA",
                &format!("certutil -D -d {snap} -n 'Watchtower local CA 00FF00FF'"),
            ],
        );
        assert!(!report.changed.iter().any(|l| l.contains("c.empty")));
        let restarts = report
            .manual
            .iter()
            .filter(|l| l.contains("restart"))
            .count();
        assert_eq!(restarts, 1, "{report:#?}");

        // Uninstall deletes only where our nickname is listed.
        env.runner.log.clear();
        let report = uninstall_in(&mut env, &sandbox.cert());
        let deletes: Vec<&str> = env
            .runner
            .commands()
            .into_iter()
            .filter(|c| c.starts_with("certutil -D"))
            .collect();
        assert_eq!(deletes, [format!("certutil -D -d {snap} -n '{NICK}'")]);
        assert_mentions(
            &report.unchanged,
            &["a.default-release", "nothing to remove"],
        );
    }

    #[test]
    fn nss_profiles_without_certutil_say_which_package_to_install() {
        let sandbox = Sandbox::new("nss-no-certutil");
        sandbox.touch("home/.mozilla/firefox/a.default/cert9.db");
        let mut env = sandbox.env(Platform::Linux, FakeRunner::new(&[], "0"));
        let report = install_in(&mut env, &sandbox.cert());
        assert_mentions(
            &report.manual,
            &[
                "a.default",
                "no `certutil`",
                "libnss3-tools",
                "nss-tools",
                "rerun `watchtower ca install`",
            ],
        );
        assert!(env.runner.commands().is_empty());
    }

    #[test]
    fn nss_failure_on_a_legacy_database_says_to_close_firefox() {
        let sandbox = Sandbox::new("nss-fail");
        sandbox.touch("home/.mozilla/firefox/b.old/cert8.db");
        let runner = FakeRunner::new(&["certutil"], "0").reply(
            "certutil -A",
            false,
            "",
            "certutil: function failed: SEC_ERROR_LEGACY_DATABASE",
        );
        let mut env = sandbox.env(Platform::Linux, runner);
        let report = install_in(&mut env, &sandbox.cert());
        assert_mentions(
            &report.failed,
            &["SEC_ERROR_LEGACY_DATABASE", "close Firefox"],
        );
    }

    #[test]
    fn under_sudo_browser_databases_are_left_alone() {
        let sandbox = Sandbox::new("sudo");
        sandbox.touch("home/.pki/nssdb/cert9.db");
        let mut env = sandbox.env(Platform::Linux, FakeRunner::new(&["certutil"], "0"));
        env.sudo_user = Some("dev".to_string());
        let report = install_in(&mut env, &sandbox.cert());
        assert_mentions(
            &report.manual,
            &["running under sudo", "as dev, without sudo"],
        );
        assert!(
            !env.runner
                .commands()
                .iter()
                .any(|c| c.starts_with("certutil"))
        );
    }

    #[test]
    fn nicknames_are_parsed_from_a_listing() {
        let listing = "Certificate Nickname    Trust Attributes\n\n\
                       Watchtower local CA ABCD1234     C,,\n\
                       Other CA                         C,,\n\
                       Watchtower local CA 1 2 3        CT,C,C  \n";
        assert_eq!(
            watchtower_nicknames(listing),
            ["Watchtower local CA ABCD1234", "Watchtower local CA 1 2 3"]
        );
    }

    #[test]
    fn macos_runs_security_or_says_how() {
        let sandbox = Sandbox::new("macos");
        let cert = sandbox.cert_path.display().to_string();
        let add = format!(
            "security add-trusted-cert -d -r trustRoot -k /Library/Keychains/System.keychain {cert}"
        );
        let mut env = sandbox.env(Platform::MacOs, FakeRunner::new(&[], "0"));
        let report = install_in(&mut env, &sandbox.cert());
        assert_eq!(env.runner.commands(), [add.as_str()]);
        assert_mentions(&report.changed, &[&add]);

        let mut env = sandbox.env(Platform::MacOs, FakeRunner::new(&[], "501"));
        let report = install_in(&mut env, &sandbox.cert());
        assert_mentions(&report.manual, &[&format!("sudo {add}")]);

        let runner = FakeRunner::new(&[], "0")
            .reply(
                "security find-certificate",
                true,
                "SHA-1 hash: 0123456789ABCDEF0123456789ABCDEF01234567\n",
                "",
            )
            .reply(
                "security delete-certificate",
                false,
                "",
                "Unable to delete certificate",
            );
        let mut env = sandbox.env(Platform::MacOs, runner);
        let report = uninstall_in(&mut env, &sandbox.cert());
        assert_eq!(
            env.runner.commands(),
            [
                "security find-certificate -a -Z /Library/Keychains/System.keychain",
                "security delete-certificate -t -Z 0123456789ABCDEF0123456789ABCDEF01234567 \
                 /Library/Keychains/System.keychain",
            ]
        );
        assert_mentions(&report.failed, &["Unable to delete certificate"]);
        assert_mentions(
            &report.manual,
            &["run it by hand", "sudo security delete-certificate -t -Z"],
        );

        let runner = FakeRunner::new(&[], "0").reply(
            "security find-certificate",
            true,
            "SHA-1 hash: FFFF\n",
            "",
        );
        let mut env = sandbox.env(Platform::MacOs, runner);
        let report = uninstall_in(&mut env, &sandbox.cert());
        assert_mentions(&report.unchanged, &["nothing to remove"]);
    }

    #[test]
    fn windows_uses_certutil_root_store() {
        let sandbox = Sandbox::new("windows");
        let cert = sandbox.cert_path.display().to_string();
        let runner =
            FakeRunner::new(&[], "").reply("certutil -addstore", false, "Access is denied.", "");
        let mut env = sandbox.env(Platform::Windows, runner);
        let report = install_in(&mut env, &sandbox.cert());
        assert_eq!(
            env.runner.commands(),
            [format!("certutil -addstore -f ROOT {cert}")]
        );
        assert_mentions(&report.failed, &["Access is denied."]);
        assert_mentions(
            &report.manual,
            &["Run as administrator", "certutil -user -addstore Root"],
        );

        let mut env = sandbox.env(Platform::Windows, FakeRunner::new(&[], ""));
        let report = uninstall_in(&mut env, &sandbox.cert());
        assert_eq!(
            env.runner.commands(),
            ["certutil -delstore ROOT 0123456789ABCDEF0123456789ABCDEF01234567"]
        );
        assert!(report.is_ok());
    }

    #[test]
    fn other_platforms_get_instructions() {
        let sandbox = Sandbox::new("other");
        let mut env = sandbox.env(Platform::Other("plan9"), FakeRunner::new(&[], ""));
        let report = install_in(&mut env, &sandbox.cert());
        assert_mentions(&report.manual, &["plan9", "by hand"]);
        assert!(env.runner.log.is_empty());
    }

    #[test]
    fn long_command_output_is_cut_to_one_line() {
        let ran = Ran {
            stderr: format!("first\n\n  second\n{}", "x".repeat(1000)),
            ..Ran::default()
        };
        let excerpt = ran.excerpt();
        assert!(excerpt.starts_with("first | second | xxx"));
        assert!(excerpt.ends_with("..."));
        assert!(excerpt.len() < OUTPUT_EXCERPT_CHARS + 10);
    }
}
