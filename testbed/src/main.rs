//! `ivm-testbed`: the demo and the benchmark. They bring their own switch,
//! phones and data (no configuration file) and run `ivm serve` in-process.
//! Not part of the product: the `ivm` binary does not link any of this.
//!
//! Exit codes: 0 success, 2 usage error (clap), 1 any other failure with one
//! line on stderr.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};

use ivm::config::MediaMode;
use ivm_testbed::bench::{BenchOptions, delivery, demo_report};
use ivm_testbed::scenario::{ScenarioConfig, SwitchKind, run_baseline, run_ivm};

#[derive(Parser)]
#[command(
    name = "ivm-testbed",
    version,
    about = "ivm's demo and benchmark on a throwaway PBX with real SIP phones"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show an instant message end to end: a throwaway Asterisk (or
    /// FreeSWITCH), two SIP phones, ivm in between; prints the timeline and
    /// what was measured.
    Demo(DemoArgs),
    /// Measure ivm on a throwaway Asterisk (or FreeSWITCH) with real SIP phones.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Args)]
struct DemoArgs {
    /// Where to leave the WAV files of what each phone said and heard.
    #[arg(long, value_name = "DIR", default_value = "ivm-demo")]
    out: PathBuf,
    /// Length of the message.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100))]
    seconds: u32,
    /// How long the target rings before it answers.
    #[arg(long, value_name = "MS", default_value_t = 3000, value_parser = clap::value_parser!(u32).range(0..=25_000))]
    answer_after_ms: u32,
    /// Seed of the speech-like signal (run N of `bench delivery` uses N).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The switch: a throwaway Asterisk 22, or a throwaway FreeSWITCH from
    /// the build installed in /opt/freeswitch.
    #[arg(long, value_enum, default_value_t = Switch::Asterisk)]
    switch: Switch,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Switch {
    Asterisk,
    Freeswitch,
}

impl From<Switch> for SwitchKind {
    fn from(switch: Switch) -> Self {
        match switch {
            Switch::Asterisk => SwitchKind::Asterisk,
            Switch::Freeswitch => SwitchKind::Freeswitch,
        }
    }
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Instant delivery, side by side with the same message as a plain call.
    Delivery {
        /// How many messages to send.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
        runs: u32,
        /// How long the target rings before it answers.
        #[arg(long, value_name = "MS", default_value_t = 3000, value_parser = clap::value_parser!(u32).range(0..=25_000))]
        answer_after_ms: u32,
        /// Length of each message.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100))]
        seconds: u32,
        /// `[delivery] media` to measure: `stream` (ivm carries the audio;
        /// AudioSocket, Asterisk only), `files` (the switch records, ivm
        /// plays the file), or `both` (each run in each mode, beside the
        /// same plain call). Default: `stream` on Asterisk, `files` on
        /// FreeSWITCH (which has no stream yet).
        #[arg(long, value_enum)]
        media: Option<BenchMedia>,
        /// Print one JSON object instead of a table (with `--media both`,
        /// a JSON array of one object per mode).
        #[arg(long)]
        json: bool,
        /// The switch (see `demo --switch`).
        #[arg(long, value_enum, default_value_t = Switch::Asterisk)]
        switch: Switch,
    },
    /// Presence on Asterisk with real phones: the target's phone
    /// unregisters, a message to it is stored, the phone registers again
    /// and ivm pushes the message. Prints REGISTER -> push ring and
    /// presence event -> state in ivm (p50, p95, max).
    Presence {
        /// How many times.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
        runs: u32,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum BenchMedia {
    Stream,
    Files,
    Both,
}

fn main() -> ExitCode {
    // Logs go to stderr so that `--json` output on stdout stays clean.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("IVM_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(args) => demo(args),
        Command::Bench(BenchCommand::Delivery {
            runs,
            answer_after_ms,
            seconds,
            media,
            json,
            switch,
        }) => bench_media(switch, media).and_then(|media| {
            bench_delivery(
                &BenchOptions {
                    runs,
                    answer_after_ms,
                    message_seconds: seconds,
                    switch: switch.into(),
                    media,
                },
                json,
            )
        }),
        Command::Bench(BenchCommand::Presence { runs, json }) => bench_presence(runs, json),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ivm-testbed: {}", format!("{e:#}").replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn demo(args: DemoArgs) -> Result<()> {
    let config = ScenarioConfig {
        message_ms: args.seconds * 1000,
        answer_after_ms: args.answer_after_ms,
        seed: args.seed,
        keep_dir: Some(args.out.clone()),
        switch: args.switch.into(),
        media: match args.switch {
            Switch::Asterisk => MediaMode::Stream,
            Switch::Freeswitch => MediaMode::Files,
        },
    };
    runtime()?.block_on(async {
        let switch = match args.switch {
            Switch::Asterisk => "Asterisk",
            Switch::Freeswitch => "FreeSWITCH",
        };
        eprintln!(
            "ivm-testbed demo: starting a throwaway {switch} (the phones come from a root \
             filesystem built on first use: about a minute, as root), phones 1001 and 1002 \
             and ivm; 1001 sends a {} s instant message...",
            args.seconds
        );
        let run = run_ivm(&config)
            .await
            .context("the instant message could not be run")?;
        eprintln!("ivm-testbed demo: now the same message as a plain call, for comparison...");
        let baseline = run_baseline(&config).await.map_err(|e| e.to_string());
        let out = std::path::absolute(&args.out).unwrap_or_else(|_| args.out.clone());
        print!(
            "{}",
            demo_report(&run, baseline.as_ref().map_err(String::as_str), &out)
        );
        Ok(())
    })
}

/// The media modes to measure on `switch`: FreeSWITCH has only `files`.
fn bench_media(switch: Switch, media: Option<BenchMedia>) -> Result<Vec<MediaMode>> {
    Ok(match (switch, media) {
        (Switch::Freeswitch, None | Some(BenchMedia::Files)) => vec![MediaMode::Files],
        (Switch::Freeswitch, Some(_)) => {
            bail!("--media stream is Asterisk-only: FreeSWITCH delivers through files")
        }
        (Switch::Asterisk, None | Some(BenchMedia::Stream)) => vec![MediaMode::Stream],
        (Switch::Asterisk, Some(BenchMedia::Files)) => vec![MediaMode::Files],
        (Switch::Asterisk, Some(BenchMedia::Both)) => vec![MediaMode::Stream, MediaMode::Files],
    })
}

fn bench_delivery(options: &BenchOptions, json: bool) -> Result<()> {
    let summaries = runtime()?.block_on(delivery(options, |line| eprintln!("{line}")));
    match (json, summaries.as_slice()) {
        (true, [one]) => println!("{}", serde_json::to_string(one)?),
        (true, _) => println!("{}", serde_json::to_string(&summaries)?),
        (false, _) => {
            for summary in &summaries {
                print!("{}", summary.table());
            }
        }
    }
    if summaries.iter().all(|s| s.runs_ok == 0) {
        bail!("no run could be measured (see the reasons above)");
    }
    Ok(())
}

fn bench_presence(runs: u32, json: bool) -> Result<()> {
    let summary = runtime()?
        .block_on(ivm_testbed::presence_bench::presence(runs, |line| {
            eprintln!("{line}")
        }))
        .context("the presence benchmark could not run")?;
    if json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        print!("{}", summary.table());
    }
    if summary.runs_ok == 0 {
        bail!("no run could be measured (see the reasons above)");
    }
    Ok(())
}
