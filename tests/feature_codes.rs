//! The default number plan against the default feature codes of FreePBX and
//! FusionPBX: which dial strings both would claim.
//!
//! Sources (read 2026-11-24 through public copies of the repositories):
//! * FreePBX 15-17: the `install.php` of each module that registers feature codes
//!   (`FreePBX/core`, `callforward`, `donotdisturb`, `callwaiting`,
//!   `voicemail`, `findmefollow`, `paging`, `parking`, `blacklist`,
//!   `infoservices`, `speeddial`, `dictate`, `daynight`, `timeconditions`,
//!   `queues`, `recordings`, `hotelwakeup`, `fax`, `campon`, `phonebook`).
//!   The recordings module's old `*77`/`*99` were removed in FreePBX 13 (its
//!   install.php deletes them), so they are not current defaults.
//! * FusionPBX: `fusionpbx/fusionpbx` `app/dialplans/resources/switch/conf/dialplan/*.xml`
//!   (the `expression` regex of each), and the fusionpbx-docs feature-code
//!   page for the few whose XML was not read (marked "docs").
//!
//! A dial string is claimed by a PBX when it equals one of its EXACT codes,
//! or is one of its PREFIX codes followed by what that code's own pattern
//! accepts. In-call codes (transfer, in-call recording) are dialled during a
//! call, never as a new call, so they cannot collide and are not listed.
//!
//! Not checked: FreePBX's voicemail direct-dial prefix `*` + an existing
//! extension. It is a catch-all below every feature code (FreePBX's own
//! `*72`, `*97`, ... would "collide" with it in the same way) and only claims
//! `*` + extensions that exist on the site.

use ivm::config::NumberingConfig;
use ivm::numbering::NumberPlan;

#[derive(Clone, Copy)]
enum Claim {
    Exact,
    /// Followed by `min..=max` digits.
    Digits(usize, usize),
    /// Followed by anything at all (`(.*)` / `(.+)` patterns).
    Anything,
}

use Claim::*;

struct Code {
    pbx: &'static str,
    code: &'static str,
    claim: Claim,
    feature: &'static str,
}

const fn c(pbx: &'static str, code: &'static str, claim: Claim, feature: &'static str) -> Code {
    Code {
        pbx,
        code,
        claim,
        feature,
    }
}

const FREEPBX: &str = "FreePBX";
const FUSION: &str = "FusionPBX";

#[rustfmt::skip]
const CODES: &[Code] = &[
    // FreePBX core
    c(FREEPBX, "*11", Exact, "user logon"),
    c(FREEPBX, "*12", Exact, "user logoff"),
    c(FREEPBX, "555", Exact, "ChanSpy"),
    c(FREEPBX, "7777", Exact, "simulate incoming call"),
    c(FREEPBX, "888", Exact, "ZapBarge (Asterisk < 12.5)"),
    c(FREEPBX, "**", Digits(1, 15), "directed call pickup"),
    c(FREEPBX, "*8", Exact, "group call pickup"),
    // callforward
    c(FREEPBX, "*72", Exact, "call forward all on"),
    c(FREEPBX, "*73", Exact, "call forward all off"),
    c(FREEPBX, "*74", Exact, "call forward all prompting off"),
    c(FREEPBX, "*90", Exact, "call forward busy on"),
    c(FREEPBX, "*91", Exact, "call forward busy off"),
    c(FREEPBX, "*92", Exact, "call forward busy prompting off"),
    c(FREEPBX, "*52", Exact, "call forward no answer on"),
    c(FREEPBX, "*53", Exact, "call forward no answer off"),
    c(FREEPBX, "*740", Exact, "call forward toggle"),
    // donotdisturb, callwaiting
    c(FREEPBX, "*76", Exact, "DND toggle"),
    c(FREEPBX, "*78", Exact, "DND on"),
    c(FREEPBX, "*79", Exact, "DND off"),
    c(FREEPBX, "*70", Exact, "call waiting on"),
    c(FREEPBX, "*71", Exact, "call waiting off"),
    // voicemail, findmefollow
    c(FREEPBX, "*97", Exact, "my voicemail"),
    c(FREEPBX, "*98", Exact, "dial voicemail"),
    c(FREEPBX, "*21", Exact, "follow-me toggle"),
    // paging
    c(FREEPBX, "*80", Digits(1, 15), "intercom"),
    c(FREEPBX, "*54", Exact, "user intercom allow"),
    c(FREEPBX, "*55", Exact, "user intercom disallow"),
    // parking: lot 70, slots 71-78, parked-call pickup prefix
    c(FREEPBX, "*85", Digits(1, 4), "pickup parked call"),
    c(FREEPBX, "70", Exact, "parking lot"),
    c(FREEPBX, "71", Exact, "park slot"), c(FREEPBX, "72", Exact, "park slot"),
    c(FREEPBX, "73", Exact, "park slot"), c(FREEPBX, "74", Exact, "park slot"),
    c(FREEPBX, "75", Exact, "park slot"), c(FREEPBX, "76", Exact, "park slot"),
    c(FREEPBX, "77", Exact, "park slot"), c(FREEPBX, "78", Exact, "park slot"),
    // blacklist, infoservices
    c(FREEPBX, "*30", Exact, "blacklist a number"),
    c(FREEPBX, "*31", Exact, "remove from blacklist"),
    c(FREEPBX, "*32", Exact, "blacklist last caller"),
    c(FREEPBX, "*69", Exact, "call trace"),
    c(FREEPBX, "*43", Exact, "echo test"),
    c(FREEPBX, "*60", Exact, "speaking clock"),
    c(FREEPBX, "*65", Exact, "speak your extension"),
    c(FREEPBX, "#", Exact, "directory"),
    // speeddial, dictate
    c(FREEPBX, "*0", Digits(1, 2), "speed dial"),
    c(FREEPBX, "*75", Exact, "set speed dial"),
    c(FREEPBX, "*34", Exact, "dictation"),
    c(FREEPBX, "*35", Exact, "email dictation"),
    // daynight (*280-*289), time conditions (*27 + id), queues, recordings
    c(FREEPBX, "*28", Digits(1, 1), "call flow toggle"),
    c(FREEPBX, "*27", Exact, "all time condition overrides"),
    c(FREEPBX, "*27", Digits(1, 4), "time condition override"),
    c(FREEPBX, "*45", Exact, "queue toggle"),
    c(FREEPBX, "*45", Digits(1, 8), "queue login/logout"),
    c(FREEPBX, "*46", Exact, "queue pause toggle"),
    c(FREEPBX, "*47", Exact, "queue caller count"),
    c(FREEPBX, "*29", Digits(1, 4), "edit system recording"),
    // hotelwakeup, fax, campon, phonebook
    c(FREEPBX, "*68", Exact, "wake-up calls"),
    c(FREEPBX, "666", Exact, "dial system fax"),
    c(FREEPBX, "*82", Exact, "camp-on request"),
    c(FREEPBX, "*83", Exact, "camp-on cancel"),
    c(FREEPBX, "*84", Exact, "camp-on toggle"),
    c(FREEPBX, "411", Exact, "phonebook directory"),

    // FusionPBX dialplans (490_do-not-disturb.xml, 070_speed_dial.xml, ...)
    c(FUSION, "*77", Exact, "DND toggle"),
    c(FUSION, "*78", Exact, "DND on"),
    c(FUSION, "*363", Exact, "DND on"),
    c(FUSION, "*79", Exact, "DND off"),
    c(FUSION, "*0", Anything, "speed dial"),
    c(FUSION, "*8", Digits(2, 7), "page extension"),
    c(FUSION, "*8", Exact, "group intercept"),
    c(FUSION, "*724", Exact, "page group"),
    c(FUSION, "**", Digits(1, 15), "intercept extension"),
    c(FUSION, "*33", Digits(2, 7), "eavesdrop"),
    c(FUSION, "*22", Exact, "agent status toggle"),
    c(FUSION, "*22", Anything, "agent status"),
    c(FUSION, "*23", Exact, "agent status by id"),
    c(FUSION, "*97", Exact, "voicemail"),
    c(FUSION, "*98", Exact, "voicemail main"),
    c(FUSION, "*4000", Exact, "voicemail main"),
    c(FUSION, "*98", Digits(2, 12), "check a mailbox"),
    c(FUSION, "*99", Digits(2, 10), "send to voicemail"),
    c(FUSION, "*59", Digits(2, 2), "valet park slot"),
    c(FUSION, "*67", Digits(1, 15), "call privacy"),
    c(FUSION, "*69", Exact, "call return"),
    c(FUSION, "*870", Exact, "redial"),
    c(FUSION, "*925", Exact, "wake-up call"),
    c(FUSION, "*000", Exact, "operator forward"),
    c(FUSION, "0", Exact, "operator"),
    // docs
    c(FUSION, "*72", Exact, "call forward on"),
    c(FUSION, "*73", Exact, "call forward off"),
    c(FUSION, "*74", Exact, "call forward toggle"),
    c(FUSION, "*21", Exact, "follow me"),
    c(FUSION, "*411", Exact, "directory"),
    c(FUSION, "*3472", Exact, "DISA"),
    c(FUSION, "*732", Exact, "recordings"),
    c(FUSION, "*9170", Exact, "talking clock time"),
    c(FUSION, "*9171", Exact, "talking clock date"),
    c(FUSION, "*9172", Exact, "talking clock date and time"),
    c(FUSION, "*9192", Exact, "info"),
    c(FUSION, "*9193", Exact, "video record"),
    c(FUSION, "*9194", Exact, "video playback"),
    c(FUSION, "*9195", Exact, "delayed echo"),
    c(FUSION, "*9196", Exact, "echo test"),
    c(FUSION, "*9197", Exact, "milliwatt tone"),
    c(FUSION, "*9198", Exact, "tone stream"),
    c(FUSION, "*9664", Exact, "music on hold"),
    c(FUSION, "*9888", Exact, "conference"),
];

/// Dial strings the IVM number plan claims although a PBX's default claims
/// them too. The required defaults make these two unavoidable: `*77`
/// alone must be "reply" and `*55` alone "next unheard message". On such a
/// PBX the administrator changes one code (README, "Number plan").
const KNOWN_OVERLAPS: &[(&str, &str)] = &[("FusionPBX", "*77"), ("FreePBX", "*55")];

/// Representative arguments for a prefix code: every argument up to 3 digits,
/// and longer ones built from each digit and from a counting pattern.
fn digit_arguments(min: usize, max: usize) -> Vec<String> {
    let mut out = Vec::new();
    for len in min..=max.min(15) {
        if len <= 3 {
            let count = 10usize.pow(len as u32);
            out.extend((0..count).map(|n| format!("{n:0len$}")));
        } else {
            out.extend((0..10).map(|d| d.to_string().repeat(len)));
            out.push("1234567890123456"[..len].to_string());
            out.push("7700000000000000"[..len].to_string());
            out.push("5512345600000000"[..len].to_string());
        }
    }
    out
}

fn any_arguments() -> Vec<String> {
    let mut out = digit_arguments(0, 6);
    for s in ["*", "*1", "1*2", "*192*168*1*20", "1002*1003", "#"] {
        out.push(s.to_string());
    }
    out
}

fn claimed_strings(code: &Code) -> Vec<String> {
    match code.claim {
        Exact => vec![code.code.to_string()],
        Digits(min, max) => digit_arguments(min, max)
            .into_iter()
            .map(|a| format!("{}{a}", code.code))
            .collect(),
        Anything => any_arguments()
            .into_iter()
            .map(|a| format!("{}{a}", code.code))
            .collect(),
    }
}

#[test]
fn default_plan_claims_no_feature_code_of_freepbx_or_fusionpbx() {
    let plan = NumberPlan::new(NumberingConfig::default());
    let mut overlaps = Vec::new();
    for code in CODES {
        for dialed in claimed_strings(code) {
            if let Ok(meaning) = plan.parse(&dialed) {
                overlaps.push(format!(
                    "{} {} ({}) as `{dialed}` = ivm {}",
                    code.pbx, code.code, code.feature, meaning.kind
                ));
                if !KNOWN_OVERLAPS.contains(&(code.pbx, dialed.as_str())) {
                    panic!(
                        "new collision: {}",
                        overlaps.last().map(String::as_str).unwrap_or_default()
                    );
                }
            }
        }
    }
    // The documented overlaps are exactly what the check finds: if a default
    // changes so that one disappears, this list must shrink with it.
    assert_eq!(overlaps.len(), KNOWN_OVERLAPS.len(), "{overlaps:#?}");
}

#[test]
fn the_lists_are_checked_for_real() {
    // A plan that takes FreePBX's DND code must be caught, so the check above
    // cannot pass by looking at nothing.
    let plan = NumberPlan::new(NumberingConfig {
        message_code: "*79".into(),
        ..NumberingConfig::default()
    });
    let caught = CODES
        .iter()
        .flat_map(claimed_strings)
        .filter(|d| plan.parse(d).is_ok())
        .count();
    assert!(caught > 0);
}

#[test]
fn the_readme_alternatives_remove_every_overlap() {
    let plan = NumberPlan::new(NumberingConfig {
        message_code: "*37".into(),
        retrieve_code: "*56".into(),
        ..NumberingConfig::default()
    });
    let overlaps: Vec<String> = CODES
        .iter()
        .flat_map(claimed_strings)
        .filter(|d| plan.parse(d).is_ok())
        .collect();
    assert!(overlaps.is_empty(), "{overlaps:?}");
}

#[test]
fn presence_star_codes_claim_no_feature_code_and_no_message_string() {
    let config = NumberingConfig::default();
    let plan = NumberPlan::new(config.clone());
    let claimed: Vec<String> = CODES.iter().flat_map(claimed_strings).collect();
    for code in [&config.dnd_code, &config.available_code, &config.away_code] {
        assert!(
            ivm::engine::dial::presence_code(code, &config).is_some(),
            "{code} sets a status"
        );
        assert!(plan.parse(code).is_err(), "{code} is an ivm message string");
        for pbx in CODES {
            assert!(
                !claimed_strings(pbx).contains(code),
                "{code} is {} {} ({})",
                pbx.pbx,
                pbx.code,
                pbx.feature
            );
        }
        // Nor is it the start of a string a PBX claims (a phone that dials
        // as the digits come would be cut short).
        assert!(
            !claimed
                .iter()
                .any(|c| c.starts_with(code.as_str()) || code.starts_with(c.as_str())),
            "{code} is a prefix of a PBX code or has one"
        );
    }
}

/// The shipped Asterisk snippet hands every code to ivm with the install's
/// secret: ivm refuses a FastAGI session without it, so a line that forgot
/// it is a code that never works (the presence codes once did).
#[test]
fn every_code_of_the_shipped_asterisk_dialplan_passes_the_secret() {
    let snippet = include_str!("../dialplan/asterisk/extensions_ivm.conf");
    let agi: Vec<&str> = snippet
        .lines()
        .filter(|l| !l.trim_start().starts_with(';') && l.contains("AGI(agi://"))
        .collect();
    assert!(!agi.is_empty());
    for line in &agi {
        assert!(line.contains(",${IVM_AGI_SECRET})"), "no secret: {line}");
    }
    let config = NumberingConfig::default();
    for code in [&config.dnd_code, &config.available_code, &config.away_code] {
        assert!(
            agi.iter()
                .any(|l| l.starts_with(&format!("exten => {code},1,"))),
            "{code} is not routed to ivm"
        );
    }
}
