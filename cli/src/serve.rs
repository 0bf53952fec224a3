//! `weir serve`: load the configuration, set up logging, run the daemon.

use anyhow::{Context, Result};
use std::path::PathBuf;
use weir_daemon::Config;

/// Arguments of `weir serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Data directory. Default: `$WEIR_DATA_DIR`, else `$STATE_DIRECTORY`
    /// under systemd, else `./weir-data`.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Append socket path. Default: `weir.sock` in `$RUNTIME_DIRECTORY`
    /// under systemd, else in the data directory.
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// TOML configuration file (kebab-case keys). Default: `$WEIR_CONFIG`.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    print_config: bool,
}

/// Keys whose environment values are always strings.
const STRING_KEYS: [&str; 4] = ["data-dir", "socket", "log-level", "metrics-listen"];

/// Runs `weir serve`.
pub fn run(args: ServeArgs) -> Result<()> {
    let config = load(&args, env_utf8)?;
    let ignored = ignored_vars(std::env::vars_os().filter_map(|(k, _)| k.into_string().ok()))?;
    if args.print_config {
        print!("{}", render(&config)?);
        for var in &ignored {
            println!("# ignored: {var} is not a configuration variable");
        }
        return Ok(());
    }
    // Before logging (a journald socket) and the metrics listener (a TCP
    // socket and a thread) open descriptors: fd 3 is systemd's only now.
    let inherited = weir_daemon::server::take_inherited()?;
    init_logging(&config.log_level);
    for var in &ignored {
        tracing::warn!(variable = %var, "ignored: not a configuration variable");
    }
    // Hook for the optional Prometheus listener (cli/src/metrics.rs): it
    // asks this daemon for `Stats` over its own socket on every scrape.
    if let Some(addr) = &config.metrics_listen {
        crate::metrics::listen(addr, config.data_dir.clone())
            .with_context(|| format!("metrics-listen = {addr}"))?;
    }
    weir_daemon::server::serve_inherited(config, inherited)?;
    Ok(())
}

/// A variable's value, or an error naming it if it is set but not UTF-8:
/// the configuration is TOML text, which cannot carry it unchanged (a
/// lossy copy would serve another directory than the one named).
fn env_utf8(name: &str) -> Result<Option<String>> {
    match std::env::var(name) {
        Ok(v) => Ok(Some(v)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(v)) => Err(not_utf8(name, &v)),
    }
}

/// The refusal of a variable or flag whose value is not UTF-8.
fn not_utf8(name: &str, value: &std::ffi::OsStr) -> anyhow::Error {
    anyhow::anyhow!(
        "{name} is not valid UTF-8 ({value:?}): weir serve takes its configuration as TOML \
         text, which cannot hold that value unchanged; use a path (or value) that is valid \
         UTF-8, renaming the directory if need be"
    )
}

/// The configuration: file < environment < flags; `env` reads a variable
/// (an error for a value that is not UTF-8).
fn load(args: &ServeArgs, env: impl Fn(&str) -> Result<Option<String>>) -> Result<Config> {
    let file = match &args.config {
        Some(f) => Some(f.clone()),
        None => env("WEIR_CONFIG")?.map(PathBuf::from),
    };
    let mut table = match &file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            // Parse through Config first so that unknown keys name the file.
            Config::from_toml(&text)
                .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), short(&e, &text)))?;
            text.parse::<toml::Table>()?
        }
        None => toml::Table::new(),
    };
    if !table.contains_key("data-dir")
        && let Some(dir) = env("STATE_DIRECTORY")?.filter(|d| !d.is_empty())
    {
        let first = dir.split(':').next().unwrap_or_default().to_owned();
        table.insert("data-dir".into(), toml::Value::String(first));
    }
    for key in &config_keys()? {
        let var = env_var(key);
        if let Some(v) = env(&var)? {
            let value = env_value(key, &v);
            // Alone first, so that a bad value names its variable.
            let mut one = toml::Table::new();
            one.insert(key.clone(), value.clone());
            let text = toml::to_string(&one)?;
            if let Err(e) = Config::from_toml(&text) {
                let hint = if key == "socket-mode" {
                    " (an octal mode is written 0o660)"
                } else {
                    ""
                };
                anyhow::bail!("{var}={v}: {}{hint}", e.message());
            }
            table.insert(key.clone(), value);
        }
    }
    if let Some(d) = &args.data_dir {
        table.insert("data-dir".into(), path_value("--data-dir", d)?);
    }
    if let Some(s) = &args.socket {
        table.insert("socket".into(), path_value("--socket", s)?);
    }
    let config = Config::from_toml(&toml::to_string(&table)?)
        .context("invalid configuration (after WEIR_* variables and flags)")?;
    config.validate()?;
    Ok(config)
}

/// A TOML error's message and line, without the quoted source and markers
/// that would spill over several lines.
fn short(e: &toml::de::Error, text: &str) -> String {
    match e.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("line {line}: {}", e.message())
        }
        None => e.message().to_owned(),
    }
}

/// The configuration as TOML that `--config` reads back: the mode in
/// octal, and the optional keys that are unset as comments saying what
/// happens without them.
fn render(config: &Config) -> Result<String> {
    use std::fmt::Write;
    let mut out = String::new();
    for line in toml::to_string(config)?.lines() {
        if line.starts_with("socket-mode = ") {
            writeln!(out, "socket-mode = {:#o}", config.socket_mode)?;
        } else {
            writeln!(out, "{line}")?;
        }
    }
    if config.socket.is_none() {
        writeln!(
            out,
            "# socket: unset; the daemon listens on {}",
            config.socket_path().display()
        )?;
    }
    if config.metrics_listen.is_none() {
        writeln!(out, "# metrics-listen: unset; no Prometheus listener")?;
    }
    Ok(out)
}

/// Every configuration key (kebab-case).
fn config_keys() -> Result<Vec<String>> {
    let mut keys: Vec<String> = toml::to_string(&Config::default())?
        .parse::<toml::Table>()?
        .keys()
        .cloned()
        .collect();
    keys.extend(STRING_KEYS.iter().map(|k| (*k).to_owned()));
    keys.sort();
    keys.dedup();
    Ok(keys)
}

/// The environment variable that sets `key`: `WEIR_MAX_CONNECTIONS`.
fn env_var(key: &str) -> String {
    format!("WEIR_{}", key.to_uppercase().replace('-', "_"))
}

/// The `WEIR_*` variables among `names` that set nothing (a misspelt
/// `WEIR_SYNC` would otherwise go unnoticed). Not refused: the
/// environment is shared with other programs. `WEIR_CONFIG` and the
/// readers' variables (`WEIR_HUGE_PAGES`) are weir's, so not reported.
fn ignored_vars(names: impl Iterator<Item = String>) -> Result<Vec<String>> {
    let mut known: Vec<String> = config_keys()?.iter().map(|k| env_var(k)).collect();
    known.extend(["WEIR_CONFIG", weir::HUGE_PAGES_ENV].map(String::from));
    let mut ignored: Vec<String> = names
        .filter(|n| n.starts_with("WEIR_") && !known.contains(n))
        .collect();
    ignored.sort();
    Ok(ignored)
}

/// A flag's path as a TOML string; an error naming `flag` if it is not UTF-8.
fn path_value(flag: &str, p: &std::path::Path) -> Result<toml::Value> {
    let text = p.to_str().ok_or_else(|| not_utf8(flag, p.as_os_str()))?;
    Ok(toml::Value::String(text.to_owned()))
}

/// A TOML value when the text is one (`8192`, `true`, `0o660`, `[1, 2]`),
/// else the text as a string.
fn env_value(key: &str, text: &str) -> toml::Value {
    if STRING_KEYS.contains(&key) {
        return toml::Value::String(text.to_owned());
    }
    format!("v = {text}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(text.to_owned()))
}

pub(crate) fn init_logging(default_level: &str) {
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let journald = std::env::var_os("JOURNAL_STREAM").and_then(|_| tracing_journald::layer().ok());
    let registry = tracing_subscriber::registry().with(filter);
    match journald {
        Some(j) => registry.with(j).init(),
        None => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                    .with_writer(std::io::stderr),
            )
            .init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn args(data_dir: Option<&str>, config: Option<PathBuf>) -> ServeArgs {
        ServeArgs {
            data_dir: data_dir.map(PathBuf::from),
            socket: None,
            config,
            print_config: false,
        }
    }

    #[test]
    fn file_then_env_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("weir.toml");
        std::fs::write(
            &file,
            "data-dir = \"/from/file\"\nmax-connections = 10\nread-timeout-ms = 500\n",
        )
        .unwrap();
        let env: HashMap<&str, &str> = [
            ("WEIR_MAX_CONNECTIONS", "20"),
            ("WEIR_SOCKET_MODE", "0o640"),
            ("STATE_DIRECTORY", "/from/systemd"),
        ]
        .into();
        let get = |k: &str| Ok(env.get(k).map(|v| (*v).to_owned()));
        let c = load(&args(None, Some(file.clone())), get).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/from/file"));
        assert_eq!(c.max_connections, 20);
        assert_eq!(c.read_timeout_ms, 500);
        assert_eq!(c.socket_mode, 0o640);
        let c = load(&args(Some("/from/flag"), Some(file)), get).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/from/flag"));
        let c = load(&args(None, None), get).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/from/systemd"));
        let c = load(&args(None, None), |_| Ok(None)).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("weir-data"));
    }

    #[test]
    fn a_bad_environment_value_names_its_variable() {
        let e = load(&args(None, None), |k| {
            Ok((k == "WEIR_SOCKET_MODE").then(|| "0660".to_owned()))
        })
        .unwrap_err();
        let text = format!("{e:#}");
        assert!(text.starts_with("WEIR_SOCKET_MODE=0660: "), "{text}");
        assert!(text.contains("0o660") && !text.contains('\n'), "{text}");
    }

    #[test]
    fn a_bad_file_value_names_the_file_and_line_on_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("weir.toml");
        std::fs::write(&file, "sync = \"always\"\nmax-connections = \"many\"\n").unwrap();
        let e = load(&args(None, Some(file.clone())), |_| Ok(None)).unwrap_err();
        let text = format!("{e:#}");
        assert!(
            text.starts_with(&format!("{}: line 2: ", file.display())),
            "{text}"
        );
        assert!(!text.contains('\n') && !text.contains('^'), "{text}");
    }

    #[test]
    fn printed_configuration_reads_back() {
        let c = load(&args(Some("/d"), None), |_| Ok(None)).unwrap();
        let text = render(&c).unwrap();
        assert!(text.contains("socket-mode = 0o660"), "{text}");
        assert!(
            text.contains("# socket: unset; the daemon listens on "),
            "{text}"
        );
        assert!(text.contains("# metrics-listen: unset"), "{text}");
        assert_eq!(Config::from_toml(&text).unwrap(), c);
    }

    #[test]
    fn misspelt_variables_are_reported() {
        let names = [
            "WEIR_SYNCC",
            "WEIR_SYNC",
            "WEIR_CONFIG",
            "WEIR_DATA_DIR",
            "WEIR_HUGE_PAGES",
            "HOME",
        ];
        let ignored = ignored_vars(names.iter().map(|n| (*n).to_owned())).unwrap();
        assert_eq!(ignored, ["WEIR_SYNCC"]);
    }

    #[test]
    fn bad_values_are_named() {
        let e = load(&args(None, None), |k| {
            Ok((k == "WEIR_MAX_CONNECTIONS").then(|| "0".to_owned()))
        })
        .unwrap_err();
        assert!(format!("{e:#}").contains("max-connections"), "{e:#}");
    }
}
