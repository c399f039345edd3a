//! `medfm batch`: the archive batch of the Python package (`python -m medfm.batch`, on
//! Ray Data), run from the command line with the arguments as given. The batch lives in
//! one place, the package (docs/python.md, "Archives on Ray"); this front finds it.

use std::ffi::OsString;
use std::process::{Command, ExitCode};

use clap::Args;

/// The interpreter that has the `medfm` wheel installed.
const PYTHON_VAR: &str = "MEDFM_PYTHON";

#[derive(Args)]
#[command(disable_help_flag = true)]
pub(crate) struct BatchArgs {
    /// Arguments of `python -m medfm.batch` (`--help` lists them): --manifest M.csv or
    /// --folder DIR, --job embed|segment, --out DIR, [--rule rules.toml], [--address ADDR].
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<OsString>,
}

/// `$MEDFM_PYTHON` (`python3` by default) once it imports `module`; else the message
/// that says how to install the package (the caller exits 5, an io failure).
pub(crate) fn python_with(module: &str) -> Result<OsString, String> {
    let python = std::env::var_os(PYTHON_VAR).unwrap_or_else(|| "python3".into());
    let found = Command::new(&python)
        .args(["-c", &format!("import {module}")])
        .output();
    match found {
        Ok(out) if out.status.success() => Ok(python),
        outcome => {
            let why = match outcome {
                Ok(out) => String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
                    .to_string(),
                Err(e) => e.to_string(),
            };
            Err(format!(
                "this command runs the Python package's {module}, and {} has none ({why}); \
                 install the wheel with its batch extra (README, \"Python and archives\") or \
                 set {PYTHON_VAR} to a Python that has it",
                python.to_string_lossy()
            ))
        }
    }
}

/// Run `$MEDFM_PYTHON -m medfm.batch ARGS` and exit with its status; exit 5 with the way to
/// install the package when that Python has no `medfm.batch` ([`python_with`]).
pub(crate) fn cmd_batch(args: BatchArgs) -> ExitCode {
    let python = match python_with("medfm.batch") {
        Ok(p) => p,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(medfm::ErrorKind::Io.exit_code());
        }
    };
    match Command::new(&python)
        .args(["-m", "medfm.batch"])
        .args(&args.args)
        .status()
    {
        Ok(status) => ExitCode::from(status.code().map_or(1, |c| c.clamp(0, 255) as u8)),
        Err(e) => {
            eprintln!("error: running {}: {e}", python.to_string_lossy());
            ExitCode::from(medfm::ErrorKind::Io.exit_code())
        }
    }
}
