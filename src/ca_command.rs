//! `watchtower ca ...`: the commands that manage Watchtower's local certificate authority from
//! the shell: `path`, `export`, `regenerate`, `install` and `uninstall`.
//!
//! This file owns the argument parsing and what gets printed: results on stdout (so
//! `curl --cacert "$(watchtower ca path)"` and `watchtower ca export > ca.pem` work), notes and
//! errors on stderr. The config is found by the same rules as the proxy (`--config`, else
//! `./watchtower.toml`, else built-in defaults) so both agree on where the CA lives. Reading,
//! creating and checking the CA pair belongs to `crate::tls::ca`; changing trust stores to
//! `crate::tls::trust`. Exit codes: 0 done, 1 something failed or `regenerate` lacked `--yes`,
//! 2 bad arguments, a bad config or an unusable CA.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::config::Config;
use crate::tls::LocalCa;
use crate::tls::trust::{self, TrustReport};

/// The help text of the `ca` family.
pub const USAGE: &str = "\
Manage Watchtower's local certificate authority (the CA that signs the certificates
Watchtower presents for intercepted HTTPS hosts).

Usage:
  watchtower ca path              print the CA certificate's path (creates the CA if absent)
  watchtower ca export            print the CA certificate (PEM) to stdout
  watchtower ca install           trust the CA: system store, Firefox/Chromium (NSS),
                                  macOS keychain or Windows ROOT store
  watchtower ca uninstall         remove this CA from those stores again
  watchtower ca regenerate --yes  replace the CA with a new one (every device must
                                  trust the new one; without --yes, only explains)

Options:
  -c, --config PATH   config file naming [tls] ca_cert / ca_key (default:
                      ./watchtower.toml if present, else the user's data directory)
  -y, --yes           confirm `regenerate`
  -h, --help          this text
";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Help,
    Path,
    Export,
    Regenerate,
    Install,
    Uninstall,
}

impl Action {
    fn from_word(word: &str) -> Option<Action> {
        Some(match word {
            "help" => Action::Help,
            "path" => Action::Path,
            "export" => Action::Export,
            "regenerate" => Action::Regenerate,
            "install" => Action::Install,
            "uninstall" => Action::Uninstall,
            _ => return None,
        })
    }
}

/// The parsed command line after `watchtower ca`.
#[derive(Debug, PartialEq, Eq)]
struct CaArgs {
    /// `None` when no subcommand was given.
    action: Option<Action>,
    config: Option<PathBuf>,
    yes: bool,
}

fn parse_args(args: &[String]) -> Result<CaArgs, String> {
    let mut parsed = CaArgs {
        action: None,
        config: None,
        yes: false,
    };
    let mut help = false;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "-h" | "--help" => help = true,
            "-y" | "--yes" => parsed.yes = true,
            "-c" | "--config" => {
                let path = it
                    .next()
                    .filter(|p| !p.is_empty())
                    .ok_or_else(|| format!("{arg} needs a file path"))?;
                parsed.config = Some(PathBuf::from(path));
            }
            s if s.starts_with("--config=") => {
                let path = &s["--config=".len()..];
                if path.is_empty() {
                    return Err("--config needs a file path".to_string());
                }
                parsed.config = Some(PathBuf::from(path));
            }
            s if s.starts_with('-') => return Err(format!("unknown option {s:?}")),
            word if parsed.action.is_none() => {
                let action = Action::from_word(word)
                    .ok_or_else(|| format!("unknown ca command {word:?}"))?;
                parsed.action = Some(action);
            }
            extra => return Err(format!("unexpected argument {extra:?}")),
        }
    }
    if help {
        parsed.action = Some(Action::Help);
    } else if parsed.yes && parsed.action != Some(Action::Regenerate) {
        return Err("--yes only applies to `watchtower ca regenerate`".to_string());
    }
    Ok(parsed)
}

/// Runs `watchtower ca <args>`; `args` is what follows `ca`.
pub fn run(args: &[String]) -> ExitCode {
    let code = run_with(args, &mut io::stdout().lock(), &mut io::stderr().lock());
    ExitCode::from(code)
}

/// Why a command stopped before finishing.
enum Stop {
    /// Bad arguments: the message, then the usage text; exit 2.
    Usage(String),
    /// Bad config or unusable CA: one sentence; exit 2.
    Fatal(String),
    /// stdout or stderr could not be written (a closed pipe); exit 1.
    Output(io::Error),
}

impl From<io::Error> for Stop {
    fn from(err: io::Error) -> Stop {
        Stop::Output(err)
    }
}

fn run_with(args: &[String], out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    match dispatch(args, out, err) {
        Ok(code) => code,
        Err(Stop::Usage(message)) => {
            // Nothing useful is left to do if stderr itself is gone.
            let _ = write!(err, "watchtower: {message}\n\n{USAGE}");
            2
        }
        Err(Stop::Fatal(message)) => {
            let _ = writeln!(err, "watchtower: {message}");
            2
        }
        Err(Stop::Output(e)) => {
            let _ = writeln!(err, "watchtower: cannot write the output: {e}");
            1
        }
    }
}

fn dispatch(args: &[String], out: &mut dyn Write, err: &mut dyn Write) -> Result<u8, Stop> {
    let parsed = parse_args(args).map_err(Stop::Usage)?;
    let action = match parsed.action {
        None => return Err(Stop::Usage("`watchtower ca` needs a command".to_string())),
        Some(Action::Help) => {
            out.write_all(USAGE.as_bytes())?;
            return Ok(0);
        }
        Some(action) => action,
    };
    let config = Config::load(parsed.config.as_deref()).map_err(|e| Stop::Fatal(e.to_string()))?;
    let cert = config.tls.ca_cert.as_path();
    let key = config.tls.ca_key.as_path();
    match action {
        Action::Path => {
            open_or_create(cert, key, err)?;
            writeln!(out, "{}", cert.display())?;
            Ok(0)
        }
        Action::Export => {
            let ca = open_or_create(cert, key, err)?;
            let pem = ca.cert_pem();
            out.write_all(pem.as_bytes())?;
            if !pem.ends_with('\n') {
                writeln!(out)?;
            }
            Ok(0)
        }
        Action::Regenerate if parsed.yes => {
            let ca = LocalCa::create(cert, key).map_err(|e| Stop::Fatal(e.to_string()))?;
            writeln!(
                out,
                "replaced the local CA: {} (key {})",
                cert.display(),
                key.display()
            )?;
            writeln!(out, "new CA: {}", ca.describe())?;
            writeln!(
                out,
                "next: restart a running watchtower, run `watchtower ca install{}` here, and \
                 import the new certificate on every other device that trusted the old one",
                config_flag(&parsed.config)
            )?;
            Ok(0)
        }
        Action::Regenerate => {
            explain_regenerate(cert, key, &parsed.config, err)?;
            Ok(1)
        }
        Action::Install => {
            let ca = open_or_create(cert, key, err)?;
            print_ca(&ca, cert, out)?;
            print_report(&trust::install(&ca, cert), out, err)
        }
        Action::Uninstall => {
            // Creating a CA only to take it out of the stores again would be pointless.
            if !cert.exists() {
                writeln!(
                    out,
                    "there is no CA certificate at {}, so nothing of it can be installed; \
                     nothing to do",
                    cert.display()
                )?;
                return Ok(0);
            }
            let ca = LocalCa::load(cert, key).map_err(|e| Stop::Fatal(e.to_string()))?;
            print_ca(&ca, cert, out)?;
            print_report(&trust::uninstall(&ca, cert), out, err)
        }
        Action::Help => Ok(0),
    }
}

/// Loads the CA pair, creating it first when both files are absent, and says so on stderr.
fn open_or_create(cert: &Path, key: &Path, err: &mut dyn Write) -> Result<LocalCa, Stop> {
    let (ca, created) =
        LocalCa::load_or_create(cert, key).map_err(|e| Stop::Fatal(e.to_string()))?;
    if created {
        writeln!(
            err,
            "watchtower: created a new local CA at {} (key {}): {}; nothing trusts it yet, see \
             `watchtower ca install`",
            cert.display(),
            key.display(),
            ca.describe()
        )?;
    }
    Ok(ca)
}

/// ` --config PATH` when the user gave one, so suggested commands act on the same CA.
fn config_flag(config: &Option<PathBuf>) -> String {
    match config {
        // Quoted when needed, so the suggested command can be pasted as it is.
        Some(path) => {
            let path = path.display().to_string();
            if path.contains(|c: char| c.is_whitespace() || "'\"$`\\".contains(c)) {
                format!(" --config '{}'", path.replace('\'', r"'\''"))
            } else {
                format!(" --config {path}")
            }
        }
        None => String::new(),
    }
}

fn explain_regenerate(
    cert: &Path,
    key: &Path,
    config: &Option<PathBuf>,
    err: &mut dyn Write,
) -> io::Result<()> {
    let current = if cert.exists() || key.exists() {
        match LocalCa::load(cert, key) {
            Ok(ca) => ca.describe(),
            Err(e) => format!("unusable ({e})"),
        }
    } else {
        "none yet (--yes creates one)".to_string()
    };
    let flag = config_flag(config);
    write!(
        err,
        "watchtower ca regenerate replaces the local CA with a new key and certificate:
  certificate  {cert}
  key          {key}
  current      {current}
Every browser, device and trust store that trusts the current CA will reject the
certificates Watchtower presents until it trusts the new one. The usual sequence:
  watchtower ca uninstall{flag}         # take the current CA out of this machine's stores
  watchtower ca regenerate --yes{flag}
  watchtower ca install{flag}           # trust the new one here
then import it again on phones and other devices, and restart a running watchtower.
Nothing was changed; rerun with --yes to replace the CA.
",
        cert = cert.display(),
        key = key.display(),
    )
}

fn print_ca(ca: &LocalCa, cert: &Path, out: &mut dyn Write) -> io::Result<()> {
    writeln!(out, "CA: {}", ca.describe())?;
    writeln!(out, "    {}", cert.display())
}

/// Changed lines, then unchanged, then the manual steps, then failures (on stderr); exit 0
/// unless something failed.
fn print_report(
    report: &TrustReport,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<u8, Stop> {
    for line in &report.changed {
        writeln!(out, "changed: {line}")?;
    }
    for line in &report.unchanged {
        writeln!(out, "unchanged: {line}")?;
    }
    for line in &report.manual {
        writeln!(out, "do by hand: {line}")?;
    }
    for line in &report.failed {
        writeln!(err, "failed: {line}")?;
    }
    Ok(if report.is_ok() { 0 } else { 1 })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    fn parse(words: &[&str]) -> Result<CaArgs, String> {
        parse_args(&args(words))
    }

    #[test]
    fn subcommands_parse() {
        for (word, action) in [
            ("path", Action::Path),
            ("export", Action::Export),
            ("regenerate", Action::Regenerate),
            ("install", Action::Install),
            ("uninstall", Action::Uninstall),
            ("help", Action::Help),
        ] {
            let parsed = parse(&[word]).unwrap();
            assert_eq!(parsed.action, Some(action), "{word}");
            assert_eq!(parsed.config, None);
            assert!(!parsed.yes);
        }
        assert_eq!(parse(&[]).unwrap().action, None);
    }

    #[test]
    fn config_may_come_anywhere_in_any_spelling() {
        for words in [
            &["--config", "/x/w.toml", "path"][..],
            &["path", "--config", "/x/w.toml"],
            &["-c", "/x/w.toml", "path"],
            &["path", "--config=/x/w.toml"],
        ] {
            let parsed = parse(words).unwrap();
            assert_eq!(parsed.action, Some(Action::Path), "{words:?}");
            assert_eq!(parsed.config, Some(PathBuf::from("/x/w.toml")), "{words:?}");
        }
    }

    #[test]
    fn yes_belongs_to_regenerate() {
        for words in [&["regenerate", "--yes"][..], &["-y", "regenerate"]] {
            let parsed = parse(words).unwrap();
            assert_eq!(parsed.action, Some(Action::Regenerate));
            assert!(parsed.yes);
        }
        assert!(!parse(&["regenerate"]).unwrap().yes);
        let message = parse(&["install", "--yes"]).unwrap_err();
        assert!(
            message.contains("only applies to `watchtower ca regenerate`"),
            "{message}"
        );
    }

    #[test]
    fn help_wins_over_everything_else() {
        for words in [
            &["--help"][..],
            &["-h"],
            &["install", "--help"],
            &["regenerate", "--yes", "-h"],
        ] {
            assert_eq!(
                parse(words).unwrap().action,
                Some(Action::Help),
                "{words:?}"
            );
        }
    }

    #[test]
    fn bad_arguments_are_named() {
        for (words, needle) in [
            (&["frobnicate"][..], "unknown ca command \"frobnicate\""),
            (&["path", "export"], "unexpected argument \"export\""),
            (&["path", "--force"], "unknown option \"--force\""),
            (&["path", "--config"], "--config needs a file path"),
            (&["path", "-c"], "-c needs a file path"),
            (&["path", "--config="], "--config needs a file path"),
        ] {
            let message = parse(words).unwrap_err();
            assert!(message.contains(needle), "{words:?}: {message}");
        }
    }

    #[test]
    fn suggested_config_flags_paste_into_a_shell() {
        assert_eq!(config_flag(&None), "");
        assert_eq!(
            config_flag(&Some(PathBuf::from("/etc/w.toml"))),
            " --config /etc/w.toml"
        );
        assert_eq!(
            config_flag(&Some(PathBuf::from("/my dir/it's.toml"))),
            r" --config '/my dir/it'\''s.toml'"
        );
    }

    /// Runs the command, returning (exit code, stdout, stderr).
    fn run_captured(words: &[&str]) -> (u8, String, String) {
        let mut out = Vec::new();
        let mut err = Vec::new();
        let code = run_with(&args(words), &mut out, &mut err);
        (
            code,
            String::from_utf8(out).unwrap(),
            String::from_utf8(err).unwrap(),
        )
    }

    #[test]
    fn usage_and_exit_codes() {
        let (code, out, err) = run_captured(&["--help"]);
        assert_eq!((code, out.as_str(), err.as_str()), (0, USAGE, ""));

        let (code, out, err) = run_captured(&[]);
        assert_eq!(code, 2);
        assert!(out.is_empty());
        assert!(
            err.starts_with("watchtower: `watchtower ca` needs a command"),
            "{err}"
        );
        assert!(err.ends_with(USAGE));

        let (code, _, err) = run_captured(&["nope"]);
        assert_eq!(code, 2);
        assert!(err.contains("unknown ca command \"nope\""), "{err}");
    }

    #[test]
    fn a_missing_config_file_is_a_fatal_error() {
        let (code, out, err) = run_captured(&["path", "--config", "/nonexistent/watchtower.toml"]);
        assert_eq!(code, 2);
        assert!(out.is_empty());
        assert!(err.starts_with("watchtower: "), "{err}");
        assert!(err.contains("/nonexistent/watchtower.toml"), "{err}");
    }

    #[test]
    fn path_export_and_regenerate_work_on_the_configured_pair() {
        let dir =
            std::env::temp_dir().join(format!("watchtower-ca-command-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("watchtower.toml");
        std::fs::write(
            &config,
            "[tls]\nca_cert = \"ca.pem\"\nca_key = \"ca-key.pem\"\n",
        )
        .unwrap();
        let config = config.display().to_string();
        let cert = dir.join("ca.pem");

        // First use creates the pair and says so on stderr; stdout is just the path.
        let (code, out, err) = run_captured(&["path", "-c", &config]);
        assert_eq!(code, 0, "{err}");
        assert_eq!(out, format!("{}\n", cert.display()));
        assert!(err.contains("created a new local CA"), "{err}");
        assert!(dir.join("ca-key.pem").is_file());

        let (code, pem, err) = run_captured(&["export", "-c", &config]);
        assert_eq!(code, 0);
        assert!(err.is_empty(), "second use must not create again: {err}");
        assert_eq!(pem, std::fs::read_to_string(&cert).unwrap());
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(!pem.contains("PRIVATE KEY"));

        // Without --yes nothing changes.
        let (code, out, err) = run_captured(&["regenerate", "-c", &config]);
        assert_eq!(code, 1);
        assert!(out.is_empty());
        assert!(err.contains("Nothing was changed"), "{err}");
        assert!(
            err.contains(&format!("watchtower ca uninstall --config {config}")),
            "{err}"
        );
        assert_eq!(std::fs::read_to_string(&cert).unwrap(), pem);

        let (code, out, err) = run_captured(&["regenerate", "--yes", "-c", &config]);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("new CA: "), "{out}");
        let new_pem = std::fs::read_to_string(&cert).unwrap();
        assert_ne!(new_pem, pem);
        let ca = LocalCa::load(&cert, &dir.join("ca-key.pem")).unwrap();
        assert!(out.contains(&ca.fingerprint()), "{out}");

        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn uninstall_without_a_ca_creates_nothing() {
        let dir =
            std::env::temp_dir().join(format!("watchtower-ca-uninstall-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("watchtower.toml");
        std::fs::write(&config, "[tls]\nca_cert = \"ca.pem\"\n").unwrap();
        let (code, out, _) = run_captured(&["uninstall", "-c", &config.display().to_string()]);
        assert_eq!(code, 0);
        assert!(out.contains("nothing to do"), "{out}");
        assert!(!dir.join("ca.pem").exists() && !dir.join("ca-key.pem").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn report_lines_are_prefixed_and_failures_set_the_exit_code() {
        let mut report = TrustReport {
            changed: vec!["wrote x".into()],
            unchanged: vec!["y ok".into()],
            manual: vec!["run z".into()],
            failed: Vec::new(),
        };
        let (mut out, mut err) = (Vec::new(), Vec::new());
        assert!(matches!(print_report(&report, &mut out, &mut err), Ok(0)));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "changed: wrote x\nunchanged: y ok\ndo by hand: run z\n"
        );
        report.failed.push("boom".into());
        let (mut out, mut err) = (Vec::new(), Vec::new());
        assert!(matches!(print_report(&report, &mut out, &mut err), Ok(1)));
        assert_eq!(String::from_utf8(err).unwrap(), "failed: boom\n");
    }
}
