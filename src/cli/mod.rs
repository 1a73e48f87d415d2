//! The `ivm` command line: parses arguments (clap), loads the configuration,
//! and calls into the library. The only place that uses `anyhow`.
//!
//! Exit codes: 0 success, 2 usage error (clap), 1 any other failure with one
//! line on stderr.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use serde::Serialize;

use ivm::config::Config;
use ivm::numbering::{DialKind, Dialed, NumberPlan, Target};
use ivm::store::{self, NewUser, Store, validate};

mod presence;

#[derive(Parser)]
#[command(
    name = "ivm",
    version,
    about = "Instant voice messaging for FreeSWITCH and Asterisk"
)]
struct Cli {
    /// Configuration file (else $IVM_CONFIG, ./ivm.toml, /etc/ivm/ivm.toml).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Where the database and audio live (overrides `data_dir`).
    #[arg(long, global = true, value_name = "DIR", env = "IVM_DATA_DIR")]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show or check the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Explain the number plan.
    #[command(subcommand)]
    Dialplan(DialplanCommand),
    /// Manage users (extensions that send and receive messages).
    #[command(subcommand)]
    User(UserCommand),
    /// Manage stored groups.
    #[command(subcommand)]
    Group(GroupCommand),
    /// Users' presence: set do-not-disturb or away, show who is reachable.
    #[command(subcommand)]
    Presence(presence::PresenceCommand),
    /// Look at or delete stored messages.
    #[command(subcommand)]
    Message(MessageCommand),
    /// Manage bearer tokens of the HTTP API (`[api] listen`).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Check the configured switch, the dialplan snippet and the data directory.
    Doctor,
    /// Serve: take calls from the configured switch until SIGINT or SIGTERM.
    Serve,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the effective configuration (secrets masked).
    Show,
    /// Validate a configuration file.
    Check { file: PathBuf },
}

#[derive(Subcommand)]
enum DialplanCommand {
    /// Show what a dialed string means.
    Explain {
        digits: String,
        /// The extension that dials (resolves a reply's target).
        #[arg(long, value_name = "EXT")]
        from: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Add a user.
    Add(UserAdd),
    /// List users (PINs are never shown).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove a user.
    Remove { extension: String },
    /// Show or set a user's delivery rules (offline, dnd, busy, ring time).
    Rules(presence::RulesArgs),
    /// Show or set the channels a user is notified by.
    Notify(presence::NotifyArgs),
    /// Set a user's PIN (asked twice on the terminal, without echo), or
    /// read it from stdin, or clear it.
    Passwd {
        extension: String,
        /// Read the PIN from the first line of stdin instead.
        #[arg(long, conflicts_with = "clear")]
        pin_stdin: bool,
        /// Remove the PIN: the user can retrieve only from their own phone.
        #[arg(long)]
        clear: bool,
    },
}

#[derive(Args)]
struct UserAdd {
    extension: String,
    #[arg(long)]
    name: String,
    /// Mobile number in E.164 form, e.g. +15551230001.
    #[arg(long, value_name = "E164")]
    mobile: Option<String>,
    /// Read the PIN for retrieving messages from another phone from the
    /// first line of stdin (6 to 12 digits, not one digit repeated, not a
    /// run like 123456, not the extension). Or set it later with
    /// `ivm user passwd`, which asks on the terminal.
    #[arg(long)]
    pin_stdin: bool,
    /// Refused: a PIN on the command line is seen by every user of the
    /// machine (`ps`, shell history). Use --pin-stdin or `ivm user passwd`.
    #[arg(long, value_name = "DIGITS", hide = true)]
    pin: Option<String>,
}

#[derive(Subcommand)]
enum GroupCommand {
    /// Add a stored group.
    Add {
        number: String,
        /// Member extensions, comma separated.
        #[arg(long, value_delimiter = ',', required = true)]
        members: Vec<String>,
        #[arg(long)]
        name: Option<String>,
    },
    /// List groups.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show one group: its name and members.
    Show {
        number: String,
        #[arg(long)]
        json: bool,
    },
    /// Rename a group, add or remove members (all of it or nothing).
    Edit {
        number: String,
        /// Members to add, comma separated.
        #[arg(long, value_delimiter = ',', value_name = "EXT,...")]
        add: Vec<String>,
        /// Members to remove, comma separated.
        #[arg(long, value_delimiter = ',', value_name = "EXT,...")]
        remove: Vec<String>,
        #[arg(long)]
        name: Option<String>,
    },
    /// Remove a group (its members stay users).
    Remove { number: String },
}

#[derive(Subcommand)]
enum MessageCommand {
    /// List messages, newest first.
    List {
        /// Only messages to this extension or number.
        #[arg(long, value_name = "EXT")]
        to: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Delete a message: its rows, its retrieval codes and its audio files.
    Delete {
        /// The message's id (`ivm message list`).
        id: i64,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token and print it once (only its SHA-256 is stored).
    Create {
        /// `read` may only GET; `admin` may do everything.
        #[arg(long, value_parser = ["read", "admin"])]
        scope: String,
        /// A name to recognise it by in `ivm token list`.
        #[arg(long, default_value = "token")]
        name: String,
    },
    /// List tokens (never the tokens themselves).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by its id.
    Revoke { id: i64 },
}

pub fn main() -> ExitCode {
    // Usage errors exit 2 here; --help and --version exit 0.
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ivm: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

fn one_line(e: &anyhow::Error) -> String {
    format!("{e:#}").replace('\n', " ")
}

fn run(cli: Cli) -> Result<()> {
    // Nothing ivm creates (database, messages, prompts) is open to other
    // users. Its group keeps access: the switch, in ivm's group, records
    // into the data directory and plays the prompts from it.
    // SAFETY: umask only sets the process's file-creation mask; it cannot fail.
    unsafe {
        libc::umask(0o007);
    }
    if let Command::Config(ConfigCommand::Check { file }) = &cli.command {
        let config = Config::from_file(file)?;
        if let Some(warning) = ivm::config::readable_by_others(&config, file) {
            eprintln!("ivm: warning: {warning}");
        }
        println!("{}: ok", file.display());
        return Ok(());
    }
    let (config, config_path) = Config::load(cli.config.as_deref(), cli.data_dir.as_deref())?;
    match cli.command {
        Command::Config(ConfigCommand::Show) => {
            match &config_path {
                Some(p) => println!("# from {}", p.display()),
                None => println!("# no config file found; every value is a default"),
            }
            print!("{}", config.to_toml_masked());
            Ok(())
        }
        Command::Config(ConfigCommand::Check { .. }) => Ok(()),
        Command::Dialplan(DialplanCommand::Explain { digits, from, json }) => {
            explain(&config, &digits, from.as_deref(), json)
        }
        Command::Doctor => doctor(&config),
        Command::Serve => serve(config),
        Command::User(cmd) => user(&config, cmd),
        Command::Group(cmd) => group(&config, cmd),
        Command::Token(cmd) => token(&config, cmd),
        Command::Message(MessageCommand::Delete { id }) => {
            let mut store = open_store(&config.data_dir)?;
            let removed = store.delete_message(ivm::domain::MessageId(id), &config.data_dir)?;
            println!("deleted message {id} ({} files removed)", removed.len());
            Ok(())
        }
        Command::Presence(cmd) => presence::presence(&config, cmd),
        Command::Message(MessageCommand::List { to, json }) => {
            let store = open_store(&config.data_dir)?;
            let rows = store.list_messages(to.as_deref())?;
            if json {
                return print_json(&rows);
            }
            println!(
                "{:>6}  {:<16} {:<16} {:<10} {:<12} {:<8} {:>8}",
                "ID", "FROM", "TO", "STATE", "DELIVERY", "CODE", "SECONDS"
            );
            for r in rows {
                println!(
                    "{:>6}  {:<16} {:<16} {:<10} {:<12} {:<8} {:>8}",
                    r.id,
                    r.from,
                    r.to.unwrap_or_default(),
                    r.state,
                    r.delivery_state.map(|s| s.as_str()).unwrap_or_default(),
                    r.code.unwrap_or_default(),
                    r.duration_ms
                        .map(|ms| format!("{:.1}", ms as f64 / 1000.0))
                        .unwrap_or_default(),
                );
            }
            Ok(())
        }
    }
}

fn open_store(data_dir: &Path) -> Result<Store> {
    Store::open(data_dir).with_context(|| format!("opening the store in {}", data_dir.display()))
}

/// Open the store only if it exists: explaining a dial string must not
/// create a data directory as a side effect.
fn existing_store(data_dir: &Path) -> Result<Option<Store>> {
    if data_dir.join(store::DB_FILE).is_file() {
        return open_store(data_dir).map(Some);
    }
    Ok(None)
}

fn print_json<T: Serialize>(value: &T) -> Result<()> {
    println!("{}", serde_json::to_string(value)?);
    Ok(())
}

fn check_extension(config: &Config, field: &'static str, ext: &str) -> Result<()> {
    let n = &config.numbering;
    validate::digits(field, ext, n.extension_min_digits, n.extension_max_digits)?;
    Ok(())
}

fn explain(config: &Config, digits: &str, from: Option<&str>, json: bool) -> Result<()> {
    if let Some(from) = from {
        check_extension(config, "--from", from)?;
    }
    let plan = NumberPlan::new(config.numbering.clone());
    let mut dialed = plan
        .parse(digits)
        .with_context(|| format!("`{digits}` is not in the number plan"))?;
    let store = existing_store(&config.data_dir)?;
    for target in &dialed.targets {
        if let Target::Group(number) = target {
            let known = match &store {
                Some(s) => s.group(number)?.is_some(),
                None => false,
            };
            if !known {
                bail!(
                    "no stored group {number} (add it with `ivm group add {number} --members ...`, or dial an ad-hoc list)"
                );
            }
        }
    }
    if dialed.kind == DialKind::Reply
        && let (Some(from), Some(store)) = (from, &store)
        && let Some(sender) = store.last_sender_to(from)?
    {
        dialed.targets.push(Target::Extension(sender));
    }
    if json {
        return print_json(&dialed);
    }
    println!("{}", describe(&dialed));
    Ok(())
}

fn describe(d: &Dialed) -> String {
    let targets: Vec<String> = d
        .targets
        .iter()
        .map(|t| match t {
            Target::Extension(v) => format!("extension {v}"),
            Target::Number(v) => format!("number {v}"),
            Target::Ip(v) => format!("ip {v}"),
            Target::Group(v) => format!("group {v}"),
        })
        .collect();
    let form = match d.form {
        ivm::numbering::Form::Prefix => "prefix form",
        ivm::numbering::Form::Suffix => "suffix form",
    };
    match d.kind {
        DialKind::Message | DialKind::GroupMessage => {
            format!("{} to {} ({form})", d.kind, targets.join(", "))
        }
        DialKind::Reply if targets.is_empty() => "reply to whoever last sent a message".into(),
        DialKind::Reply => format!("reply to {}", targets.join(", ")),
        DialKind::Retrieve => format!(
            "retrieve message {} ({form})",
            d.message_code.as_deref().unwrap_or_default()
        ),
        DialKind::RetrieveNext => "retrieve the newest unheard message, then the next".into(),
    }
}

fn user(config: &Config, cmd: UserCommand) -> Result<()> {
    match cmd {
        UserCommand::Add(add) => {
            if add.pin.is_some() {
                bail!(PIN_ON_ARGV);
            }
            check_extension(config, "extension", &add.extension)?;
            let pin = if add.pin_stdin {
                Some(pin_from_stdin()?)
            } else {
                None
            };
            if let Some(pin) = &pin {
                validate::pin_policy(&add.extension, pin)?;
            }
            let mut store = open_store(&config.data_dir)?;
            store.add_user(&NewUser {
                extension: &add.extension,
                name: &add.name,
                mobile: add.mobile.as_deref(),
                pin: pin.as_deref(),
            })?;
            println!("added user {} ({})", add.extension, add.name);
        }
        UserCommand::List { json } => {
            let users = open_store(&config.data_dir)?.list_users()?;
            if json {
                return print_json(&users);
            }
            println!("{:<8} {:<24} {:<16} PIN", "EXT", "NAME", "MOBILE");
            for u in users {
                let pin = if u.has_pin { "set" } else { "-" };
                println!(
                    "{:<8} {:<24} {:<16} {pin}",
                    u.extension,
                    u.name,
                    u.mobile.unwrap_or_default()
                );
            }
        }
        UserCommand::Remove { extension } => {
            open_store(&config.data_dir)?.remove_user(&extension)?;
            println!("removed user {extension}");
        }
        UserCommand::Rules(args) => return presence::rules(config, args),
        UserCommand::Notify(args) => return presence::notify(config, args),
        UserCommand::Passwd {
            extension,
            pin_stdin,
            clear,
        } => {
            let mut store = open_store(&config.data_dir)?;
            if store.user(&extension)?.is_none() {
                bail!("no user {extension}");
            }
            let pin = match (clear, pin_stdin) {
                (true, _) => None,
                (false, true) => Some(pin_from_stdin()?),
                (false, false) => Some(pin_from_terminal()?),
            };
            if let Some(pin) = &pin {
                validate::pin_policy(&extension, pin)?;
            }
            store.set_pin(&extension, pin.as_deref())?;
            match pin {
                Some(_) => println!("PIN set for {extension}"),
                None => println!("PIN cleared for {extension}"),
            }
        }
    }
    Ok(())
}

const PIN_ON_ARGV: &str = "--pin is refused: a PIN on the command line is seen by every user of \
     the machine (ps, shell history); give it on stdin with --pin-stdin, or set it with \
     `ivm user passwd EXT`, which asks on the terminal";

/// The PIN on the first line of stdin (its line ending dropped).
fn pin_from_stdin() -> Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("cannot read the PIN from stdin")?;
    let pin = line.trim_end_matches(['\r', '\n']).to_owned();
    if pin.is_empty() {
        bail!("no PIN on stdin");
    }
    Ok(pin)
}

/// Ask for the PIN twice on the terminal, not echoed.
fn pin_from_terminal() -> Result<String> {
    use std::io::IsTerminal;
    if !std::io::stdin().is_terminal() {
        bail!("stdin is not a terminal: give the PIN on stdin with --pin-stdin");
    }
    let first = read_hidden("New PIN: ")?;
    let again = read_hidden("The PIN again: ")?;
    if first != again {
        bail!("the two PINs differ; nothing changed");
    }
    Ok(first)
}

/// One line from the terminal on stdin with echo off (restored after,
/// also on error).
fn read_hidden(prompt: &str) -> Result<String> {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    let fd = std::io::stdin().as_raw_fd();
    // SAFETY: termios is plain data; tcgetattr fills it or fails.
    let mut saved: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: fd is stdin, `saved` a valid termios to fill.
    if unsafe { libc::tcgetattr(fd, &mut saved) } != 0 {
        bail!(
            "cannot read the terminal's settings: {}",
            std::io::Error::last_os_error()
        );
    }
    let mut quiet = saved;
    quiet.c_lflag &= !libc::ECHO;
    quiet.c_lflag |= libc::ECHONL;
    eprint!("{prompt}");
    let _ = std::io::stderr().flush();
    // SAFETY: fd is stdin, `quiet` a termios read from it.
    if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &quiet) } != 0 {
        bail!(
            "cannot turn the terminal's echo off: {}",
            std::io::Error::last_os_error()
        );
    }
    let mut line = String::new();
    let read = std::io::stdin().read_line(&mut line);
    // SAFETY: restores the settings read above.
    unsafe { libc::tcsetattr(fd, libc::TCSANOW, &saved) };
    read.context("cannot read the PIN from the terminal")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

fn group(config: &Config, cmd: GroupCommand) -> Result<()> {
    let max = config.limits.max_group_members as usize;
    match cmd {
        GroupCommand::Add {
            number,
            members,
            name,
        } => {
            validate::digits("number", &number, 1, 15)?;
            let list = member_list(config, "members", &members)?;
            open_store(&config.data_dir)?.add_group(&number, name.as_deref(), &list, max)?;
            println!("added group {number} with {} member(s)", list.len());
        }
        GroupCommand::List { json } => {
            let groups = open_store(&config.data_dir)?.list_groups()?;
            if json {
                return print_json(&groups);
            }
            println!("{:<8} {:<24} MEMBERS", "NUMBER", "NAME");
            for g in groups {
                print_group(&g);
            }
        }
        GroupCommand::Show { number, json } => {
            let Some(g) = open_store(&config.data_dir)?.group(&number)? else {
                bail!("no group {number} (`ivm group list` shows them)");
            };
            if json {
                return print_json(&g);
            }
            println!("{:<8} {:<24} MEMBERS", "NUMBER", "NAME");
            print_group(&g);
        }
        GroupCommand::Edit {
            number,
            add,
            remove,
            name,
        } => {
            if add.is_empty() && remove.is_empty() && name.is_none() {
                bail!("nothing to change: give --add, --remove or --name");
            }
            let add = member_list(config, "add", &add)?;
            let remove = member_list(config, "remove", &remove)?;
            let g = open_store(&config.data_dir)?.edit_group(
                &number,
                name.as_deref(),
                &add,
                &remove,
                max,
            )?;
            println!(
                "group {number} now has {} member(s): {}",
                g.members.len(),
                g.members.join(",")
            );
        }
        GroupCommand::Remove { number } => {
            open_store(&config.data_dir)?.remove_group(&number)?;
            println!("removed group {number}");
        }
    }
    Ok(())
}

/// Extensions as typed (`--members 1001, 1002`): trimmed and checked; a
/// member given twice is the store's error to report.
fn member_list(config: &Config, field: &'static str, given: &[String]) -> Result<Vec<String>> {
    let mut list = Vec::with_capacity(given.len());
    for m in given.iter().map(|m| m.trim()) {
        check_extension(config, field, m)?;
        list.push(m.to_owned());
    }
    Ok(list)
}

fn print_group(g: &store::Group) {
    println!(
        "{:<8} {:<24} {}",
        g.number,
        g.name.clone().unwrap_or_default(),
        g.members.join(",")
    );
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn token(config: &Config, cmd: TokenCommand) -> Result<()> {
    let mut store = open_store(&config.data_dir)?;
    match cmd {
        TokenCommand::Create { scope, name } => {
            let scope: ivm::store::api::Scope = scope.parse()?;
            let (id, token) = store.create_token(&name, scope)?;
            eprintln!(
                "token {id} ({name}, {}): shown once, keep it now",
                scope.as_str()
            );
            println!("{token}");
        }
        TokenCommand::List { json } => {
            let tokens = store.list_tokens()?;
            if json {
                return print_json(&tokens);
            }
            println!("{:>4}  {:<20} {:<6} LAST USED", "ID", "NAME", "SCOPE");
            for t in tokens {
                println!(
                    "{:>4}  {:<20} {:<6} {}",
                    t.id,
                    t.name,
                    t.scope.as_str(),
                    t.last_used_at_ms
                        .map(|ms| format!("{} s ago", (store::now_ms() - ms) / 1000))
                        .unwrap_or_else(|| "never".into())
                );
            }
        }
        TokenCommand::Revoke { id } => {
            if !store.revoke_token(id)? {
                bail!("no token with id {id}");
            }
            println!("revoked token {id}");
        }
    }
    Ok(())
}

fn doctor(config: &Config) -> Result<()> {
    let checks = runtime()?.block_on(ivm::doctor::run(config));
    let failed = checks.iter().filter(|c| !c.ok).count();
    for check in &checks {
        println!("{} {}", if check.ok { "ok  " } else { "FAIL" }, check.line);
    }
    if failed > 0 {
        bail!("{failed} of {} checks failed", checks.len());
    }
    Ok(())
}

fn serve(config: Config) -> Result<()> {
    let weak = config.weak_secrets();
    if !weak.is_empty() {
        bail!("refusing to serve with weak secrets: {}", weak.join("; "));
    }
    runtime()?.block_on(async move {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let server = tokio::spawn(ivm::server::run(config, stopped, Some(ready_tx)));
        tokio::spawn(async move {
            if let Ok(ready) = ready_rx.await {
                let mut on = Vec::new();
                if let Some(agi) = ready.agi_address {
                    on.push(format!("asterisk fastagi {agi}"));
                }
                if let Some(socket) = ready.outbound_address {
                    on.push(format!("freeswitch socket {socket}"));
                }
                // Scripts and tests wait for this line.
                println!("ivm: serving ({})", on.join(", "));
            }
        });
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing the SIGTERM handler")?;
        let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
            .context("installing the SIGINT handler")?;
        let mut server = server;
        tokio::select! {
            result = &mut server => return result.context("server task")?.context("serving"),
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        // The first signal: no new calls, those in progress finish (up to
        // [server] shutdown_grace_seconds), the outbox drains. A second
        // signal: out at once.
        eprintln!("ivm: stopping; calls in progress may finish (signal again to stop at once)");
        let _ = stop.send(true);
        tokio::select! {
            result = &mut server => result.context("server task")?.context("serving"),
            _ = int.recv() => bail!("stopped at once by a second signal"),
            _ = term.recv() => bail!("stopped at once by a second signal"),
        }
    })
}
