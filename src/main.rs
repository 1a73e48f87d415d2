//! The `ivm` binary: everything lives in the library; `cli` wires it up.

mod cli;

fn main() -> std::process::ExitCode {
    // Logs go to stderr so that `--json` output on stdout stays clean.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("IVM_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    cli::main()
}
