//! The one way the tests start the `ivm` binary. Nothing of the environment
//! of whoever runs the tests leaks in: `IVM_CONFIG`, `IVM_DATA_DIR` and
//! `IVM_LOG` are removed and the working directory is the system temporary
//! directory (no stray `./ivm.toml`). A test sets what it needs on the
//! returned `Command`.
//!
//! Standalone on purpose, so a suite that needs no Asterisk includes only
//! this: `#[path = "common/launch.rs"] mod launch;`.

#![allow(dead_code)]

use std::process::{Command, Output};

/// `ivm` with a clean environment; add arguments and environment to taste.
pub fn ivm_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ivm"));
    command
        .env_remove("IVM_CONFIG")
        .env_remove("IVM_DATA_DIR")
        .env_remove("IVM_LOG")
        .current_dir(std::env::temp_dir());
    command
}

/// Runs `command` to its end. Whatever its exit code, `ivm` must not have
/// panicked: bad input is an error message, never a panic.
pub fn run(command: &mut Command) -> Output {
    let out = command.output().expect("run the ivm binary");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "ivm panicked: {stderr}");
    out
}
