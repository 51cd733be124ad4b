//! `--config FILE` for the demo and the proxy: the cache layer from a
//! configuration file (see `examples/config/` and the `hitbox-config`
//! crate) instead of the one the example builds in code.
//!
//! An invalid file stops the example before it serves anything: the error
//! is printed as `FILE:LINE:COLUMN: what was expected`, and the process
//! exits with status 1. It never panics.

use std::path::PathBuf;

use hitbox_config::{Built, Config};

/// Takes `--config FILE` (or `--config=FILE`) out of `args`; the other
/// arguments are returned in order for the example's own parsing.
pub fn split_config_arg<I, S>(args: I) -> Result<(Vec<String>, Option<PathBuf>), String>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let mut rest = Vec::new();
    let mut config = None;
    let mut args = args.into_iter().map(Into::into);
    while let Some(arg) = args.next() {
        let value = if arg == "--config" {
            Some(args.next().ok_or("--config needs a file")?)
        } else {
            arg.strip_prefix("--config=").map(str::to_owned)
        };
        match value {
            Some(_) if config.is_some() => return Err("--config is given twice".into()),
            Some(file) if file.is_empty() => return Err("--config needs a file".into()),
            Some(file) => config = Some(PathBuf::from(file)),
            None => rest.push(arg),
        }
    }
    Ok((rest, config))
}

/// Whether `args` ask for the usage (`-h` or `--help`), a `--config`
/// value aside: `--config --help` names a file.
pub fn wants_help<S: AsRef<str>>(args: &[S]) -> bool {
    let args = args.iter().map(|a| a.as_ref().to_owned());
    match split_config_arg(args) {
        Ok((rest, _)) => rest.iter().any(|arg| arg == "-h" || arg == "--help"),
        Err(_) => false,
    }
}

/// Reads, checks and builds the configuration at `path`; the error is the
/// message to print (`FILE:LINE:COLUMN: ...`).
pub async fn build(path: &std::path::Path) -> Result<Built, String> {
    build_checked(path, |_| Ok(())).await
}

/// [`build`], with a check of the example's own (`check`) between reading
/// the file and building it: what the rest of the command line needs of
/// the file.
pub async fn build_checked(
    path: &std::path::Path,
    check: impl FnOnce(&Config) -> Result<(), String>,
) -> Result<Built, String> {
    let config = Config::from_file(path).map_err(|e| e.to_string())?;
    check(&config)?;
    config.build().await.map_err(|e| e.to_string())
}

/// For `main`: the arguments without `--config FILE`, and what that file
/// built, if given. On a bad `--config` or an invalid file, prints
/// `PROGRAM: ERROR` on stderr and exits with status 1.
pub async fn from_args_or_exit(
    program: &str,
    args: impl IntoIterator<Item = String>,
) -> (Vec<String>, Option<Built>) {
    let fail = |message: String| -> ! {
        eprintln!("{program}: {message}");
        std::process::exit(1)
    };
    let (rest, path) = split_config_arg(args).unwrap_or_else(|message| fail(message));
    let Some(path) = path else {
        return (rest, None);
    };
    match build(&path).await {
        Ok(built) => {
            eprintln!("{program}: cache layer from {}", path.display());
            (rest, Some(built))
        }
        Err(message) => fail(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_is_taken_out() {
        let (rest, path) = split_config_arg(["--listen", "x", "--config", "a.toml", "-v"]).unwrap();
        assert_eq!(rest, ["--listen", "x", "-v"]);
        assert_eq!(path, Some(PathBuf::from("a.toml")));
        let (rest, path) = split_config_arg(["--config=b.yaml"]).unwrap();
        assert!(rest.is_empty());
        assert_eq!(path, Some(PathBuf::from("b.yaml")));
        assert_eq!(
            split_config_arg(["--help"]).unwrap(),
            (vec!["--help".to_owned()], None)
        );
        assert!(split_config_arg(["--config"]).is_err());
        assert!(split_config_arg(["--config="]).is_err());
        assert!(split_config_arg(["--config=a.toml", "--config", "b.toml"]).is_err());
    }

    #[test]
    fn help_is_asked_for_outside_a_config_value() {
        assert!(wants_help(&["--help"]));
        assert!(wants_help(&["--config", "a.toml", "-h"]));
        assert!(!wants_help(&["--config", "--help"]));
        assert!(!wants_help(&["--config=a.toml"]));
        assert!(!wants_help::<&str>(&[]));
    }
}
