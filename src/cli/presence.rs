//! `ivm presence set|show`, `ivm user rules`, `ivm user notify`: a user's
//! own presence setting, delivery rules and notification channels.

use anyhow::{Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use serde::Serialize;

use ivm::config::Config;
use ivm::domain::{DeliveryRules, Presence, QuietHours, Reaction, UserStatus};
use ivm::notify::ChannelKind;
use ivm::store::now_ms;

use super::{check_extension, open_store, print_json};

#[derive(Subcommand)]
pub(super) enum PresenceCommand {
    /// Set a user's own status: `dnd`, `away` (optionally `--until`), or
    /// `available` (clears both).
    Set {
        extension: String,
        #[arg(value_enum)]
        status: StatusArg,
        /// How long `away` lasts: `90m`, `2h`, `1d` (default: until changed).
        #[arg(long, value_name = "DURATION")]
        until: Option<String>,
    },
    /// Show every user's presence: the switch's word and their own setting.
    Show {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub(super) enum StatusArg {
    Available,
    Dnd,
    Away,
}

#[derive(Clone, Copy, ValueEnum)]
pub(super) enum StoreOrRing {
    Store,
    Ring,
}

#[derive(Clone, Copy, ValueEnum)]
pub(super) enum BusyArg {
    Ring,
    Wait,
    Store,
}

/// `ivm user rules EXT [...]`: with no option, shows the rules.
#[derive(Args)]
pub(super) struct RulesArgs {
    extension: String,
    /// No phone registered: `store` (do not ring, notify at once) or `ring`.
    #[arg(long, value_enum)]
    offline: Option<StoreOrRing>,
    /// Do-not-disturb: `store` (notify by the lamp only) or `ring`.
    #[arg(long, value_enum)]
    dnd: Option<StoreOrRing>,
    /// On a call: `ring` (call waiting), `wait` (stored, pushed when the
    /// call ends), or `store`.
    #[arg(long, value_enum)]
    busy: Option<BusyArg>,
    /// Seconds to ring (5 to 300); 0 goes back to `[delivery] ring_timeout_seconds`.
    #[arg(long, value_name = "SECONDS")]
    ring_timeout: Option<u32>,
    /// Push when available: at most this many calls about the same newest
    /// unheard message (0 to 20; 0: never pushed; default 3).
    #[arg(long, value_name = "N")]
    push_limit: Option<u32>,
    /// No push calls in this daily window of the server's local time
    /// (`22:00-07:00` crosses midnight); one held back is placed when it
    /// ends, if the user is still unheard and reachable.
    #[arg(long, value_name = "HH:MM-HH:MM", conflicts_with = "no_quiet_hours")]
    quiet_hours: Option<QuietHours>,
    /// Clear the quiet hours.
    #[arg(long)]
    no_quiet_hours: bool,
    #[arg(long)]
    json: bool,
}

/// `ivm user notify EXT [...]`: the channels a message not heard live is
/// notified by. With no option, shows them.
#[derive(Args)]
pub(super) struct NotifyArgs {
    extension: String,
    /// SMS to the user's mobile, through the configured gateway (Kannel or SMPP).
    #[arg(long)]
    sms: bool,
    /// A text message to the desk phone.
    #[arg(long)]
    sip_message: bool,
    /// The message-waiting lamp.
    #[arg(long)]
    mwi: bool,
    /// The configured webhook.
    #[arg(long)]
    webhook: bool,
    /// The smart-caller-ID missed call.
    #[arg(long)]
    missed_call: bool,
    /// No notification at all.
    #[arg(long, conflicts_with_all = ["sms", "sip_message", "mwi", "webhook", "missed_call", "default"])]
    none: bool,
    /// Back to `[notify] default_channels`.
    #[arg(long, conflicts_with_all = ["sms", "sip_message", "mwi", "webhook", "missed_call"])]
    default: bool,
    #[arg(long)]
    json: bool,
}

pub(super) fn presence(config: &Config, cmd: PresenceCommand) -> Result<()> {
    match cmd {
        PresenceCommand::Set {
            extension,
            status,
            until,
        } => {
            check_extension(config, "extension", &extension)?;
            let now = now_ms();
            let (status, until_ms) = match (status, until) {
                (StatusArg::Away, Some(until)) => (
                    UserStatus::Away,
                    Some(now.saturating_add(duration_ms(&until)?)),
                ),
                (_, Some(_)) => bail!("--until: only `away` has an end time"),
                (StatusArg::Away, None) => (UserStatus::Away, None),
                (StatusArg::Dnd, None) => (UserStatus::Dnd, None),
                (StatusArg::Available, None) => (UserStatus::Available, None),
            };
            open_store(&config.data_dir)?.set_user_status(&extension, status, until_ms, now)?;
            println!("{extension}: {}", describe_status(status, until_ms, now));
        }
        PresenceCommand::Show { json } => {
            let now = now_ms();
            let list = open_store(&config.data_dir)?.list_presence(now)?;
            if json {
                #[derive(Serialize)]
                struct Row {
                    extension: String,
                    #[serde(flatten)]
                    presence: Presence,
                }
                let rows: Vec<Row> = list
                    .into_iter()
                    .map(|(extension, presence)| Row {
                        extension,
                        presence,
                    })
                    .collect();
                return print_json(&rows);
            }
            println!(
                "{:<8} {:<13} {:<9} {:<12} STATUS",
                "EXT", "REGISTERED", "CONTACTS", "PHONE"
            );
            for (extension, p) in list {
                let registered = match p.registered {
                    Some(true) => "yes",
                    Some(false) => "no",
                    None => "unknown",
                };
                println!(
                    "{extension:<8} {registered:<13} {:<9} {:<12} {}",
                    p.contacts,
                    p.activity.as_str(),
                    describe_status(p.status, p.away_until_ms, now)
                );
            }
        }
    }
    Ok(())
}

fn describe_status(status: UserStatus, until_ms: Option<i64>, now: i64) -> String {
    match (status, until_ms) {
        (UserStatus::Away, Some(until)) => {
            let minutes = ((until - now).max(0) + 59_999) / 60_000;
            format!("away ({}h {:02}m more)", minutes / 60, minutes % 60)
        }
        (status, _) => status.as_str().to_owned(),
    }
}

/// `90m`, `2h`, `1d`, `45s` to milliseconds (at most 366 days).
fn duration_ms(text: &str) -> Result<i64> {
    let text = text.trim();
    let (digits, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: i64 = match digits.parse() {
        Ok(n) if n > 0 && digits.len() <= 6 => n,
        _ => bail!("--until: {text:?} is not a duration such as 90m, 2h or 1d"),
    };
    let unit_ms = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => bail!("--until: {text:?} is not a duration such as 90m, 2h or 1d"),
    };
    let ms = n * unit_ms;
    if ms > 366 * 86_400_000 {
        bail!("--until: {text:?} is longer than a year");
    }
    Ok(ms)
}

pub(super) fn rules(config: &Config, args: RulesArgs) -> Result<()> {
    check_extension(config, "extension", &args.extension)?;
    let mut store = open_store(&config.data_dir)?;
    if store.user(&args.extension)?.is_none() {
        bail!("no user with extension {}", args.extension);
    }
    let mut rules = store.rules(&args.extension)?;
    let changing = args.offline.is_some()
        || args.dnd.is_some()
        || args.busy.is_some()
        || args.ring_timeout.is_some()
        || args.push_limit.is_some()
        || args.quiet_hours.is_some()
        || args.no_quiet_hours;
    let store_or_ring = |a: StoreOrRing| match a {
        StoreOrRing::Store => Reaction::Store,
        StoreOrRing::Ring => Reaction::Ring,
    };
    if let Some(a) = args.offline {
        rules.offline = store_or_ring(a);
    }
    if let Some(a) = args.dnd {
        rules.dnd = store_or_ring(a);
    }
    if let Some(b) = args.busy {
        rules.busy = match b {
            BusyArg::Ring => Reaction::Ring,
            BusyArg::Wait => Reaction::Wait,
            BusyArg::Store => Reaction::Store,
        };
    }
    if let Some(seconds) = args.ring_timeout {
        rules.ring_timeout_seconds = (seconds != 0).then_some(seconds);
    }
    if let Some(limit) = args.push_limit {
        rules.push_limit = limit;
    }
    if let Some(window) = args.quiet_hours {
        rules.quiet_hours = Some(window);
    }
    if args.no_quiet_hours {
        rules.quiet_hours = None;
    }
    if changing {
        store.set_rules(&args.extension, &rules, now_ms())?;
    }
    print_rules(config, &args.extension, &rules, args.json)
}

fn print_rules(config: &Config, extension: &str, rules: &DeliveryRules, json: bool) -> Result<()> {
    if json {
        #[derive(Serialize)]
        struct Out<'a> {
            extension: &'a str,
            #[serde(flatten)]
            rules: &'a DeliveryRules,
        }
        return print_json(&Out { extension, rules });
    }
    let ring = match rules.ring_timeout_seconds {
        Some(s) => format!("{s}s"),
        None => format!("{}s (the default)", config.delivery.ring_timeout_seconds),
    };
    let push = match rules.push_limit {
        0 => "never".to_owned(),
        1 => "at most 1 call per message".to_owned(),
        n => format!("at most {n} calls per message"),
    };
    let quiet = match rules.quiet_hours {
        Some(window) => format!("{window} (local time)"),
        None => "none".to_owned(),
    };
    println!(
        "{extension}: offline {}, dnd {}, busy {}, ring {ring}, push {push}, quiet hours {quiet}",
        rules.offline, rules.dnd, rules.busy
    );
    Ok(())
}

pub(super) fn notify(config: &Config, args: NotifyArgs) -> Result<()> {
    check_extension(config, "extension", &args.extension)?;
    let mut store = open_store(&config.data_dir)?;
    let mut chosen: Vec<ChannelKind> = Vec::new();
    if args.sms {
        let sms = [ChannelKind::SmsSmpp, ChannelKind::SmsKannel]
            .into_iter()
            .find(|k| config.notify.is_configured(*k));
        match sms {
            Some(kind) => chosen.push(kind),
            None => bail!("--sms: no SMS gateway is configured ([notify.smpp] or [notify.kannel])"),
        }
    }
    if args.webhook {
        if !config.notify.is_configured(ChannelKind::Webhook) {
            bail!("--webhook: no webhook is configured ([notify.webhook])");
        }
        chosen.push(ChannelKind::Webhook);
    }
    for (on, kind) in [
        (args.sip_message, ChannelKind::SipMessage),
        (args.mwi, ChannelKind::Mwi),
        (args.missed_call, ChannelKind::SmartCallerId),
    ] {
        if on {
            chosen.push(kind);
        }
    }
    let names: Vec<&str> = chosen.iter().map(|k| k.as_str()).collect();
    if args.default {
        store.set_notify_channels(&args.extension, None, now_ms())?;
    } else if args.none || !names.is_empty() {
        store.set_notify_channels(&args.extension, Some(&names), now_ms())?;
    } else if store.user(&args.extension)?.is_none() {
        bail!("no user with extension {}", args.extension);
    }
    let own = store.notify_channels(&args.extension)?;
    let (channels, default) = match own {
        Some(list) => (list, false),
        None => (
            config
                .notify
                .default_channels
                .iter()
                .map(|k| k.as_str().to_owned())
                .collect(),
            true,
        ),
    };
    if args.json {
        #[derive(Serialize)]
        struct Out<'a> {
            extension: &'a str,
            channels: &'a [String],
            default: bool,
        }
        return print_json(&Out {
            extension: &args.extension,
            channels: &channels,
            default,
        });
    }
    let list = if channels.is_empty() {
        "none".to_owned()
    } else {
        channels.join(", ")
    };
    let from = if default { " (the default)" } else { "" };
    println!("{}: notified by {list}{from}", args.extension);
    Ok(())
}
