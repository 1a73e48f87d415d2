//! FreeSWITCH's syntax as the adapter needs it, all of it pure: which file
//! extensions mean which audio format, what a file path must not contain,
//! sounds by name, `playback_terminators`, the `originate` command, cause
//! names, `sendevent` text, fresh UUIDs.
//!
//! Owns: the knowledge of how FreeSWITCH parses these strings (checked
//! against its source: `mod_sndfile`, `mod_dptools` `playback`,
//! `switch_separate_string`, `switch_channel_cause2str`). Must not know:
//! sockets, calls, the engine.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::media::AudioFormat;
use crate::proto::esl::Event;
use crate::switch::{HangupCause, OriginateRequest, SwitchError};

/// The channel variable that marks an originated leg coming back.
pub const ORIGIN_VARIABLE: &str = "ivm_origin";
/// Arguments of the `socket` application after the address.
pub const SOCKET_MODE: &str = "async full";
/// The beep when no sounds directory provides one: 1 kHz for 120 ms, like
/// the tone `ivm` installs for Asterisk.
pub const BEEP_TONE: &str = "tone_stream://%(120,0,1000)";

/// The extensions FreeSWITCH (`mod_sndfile`) reads and writes as `format`.
pub fn extensions_for(format: AudioFormat) -> Result<&'static [&'static str], SwitchError> {
    match format {
        AudioFormat::Slin { sample_rate: 8000 } => Ok(&["r8", "raw"]),
        AudioFormat::Slin { sample_rate: 16000 } => Ok(&["r16"]),
        AudioFormat::Ulaw => Ok(&["ul"]),
        AudioFormat::Alaw => Ok(&["al"]),
        AudioFormat::Wav => Ok(&["wav"]),
        AudioFormat::Slin { sample_rate } => Err(SwitchError::Refused(format!(
            "freeswitch has no raw 16-bit file format at {sample_rate} Hz \
             (.r8 is 8 kHz, .r16 16 kHz; .r24 and .r32 are 24 and 32-bit); \
             record at 8000 or 16000 Hz on freeswitch"
        ))),
    }
}

/// The path FreeSWITCH is given for a file of `format`: the path itself
/// when its extension already says `format` to FreeSWITCH, else a symlink
/// `<path>.<ext>` next to it (created here) that does.
pub fn fs_media_path(path: &Path, format: AudioFormat) -> Result<String, SwitchError> {
    let text = path
        .to_str()
        .ok_or_else(|| SwitchError::Refused(format!("{} is not valid utf-8", path.display())))?;
    check_fs_path(text)?;
    let extensions = extensions_for(format)?;
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    if extension
        .as_deref()
        .is_some_and(|e| extensions.contains(&e))
    {
        return Ok(text.to_owned());
    }
    let Some(first) = extensions.first() else {
        return Err(SwitchError::Refused(format!(
            "no file extension for {format:?}"
        )));
    };
    let alias = format!("{text}.{first}");
    ensure_alias(path, Path::new(&alias))?;
    Ok(alias)
}

/// What FreeSWITCH would misread in a file path: `@` (`playback` takes the
/// first `@@` as the offset), `{` (file parameters), `://` (a stream), line
/// breaks (the command itself).
pub fn check_fs_path(text: &str) -> Result<(), SwitchError> {
    let bad = if text.is_empty() {
        Some("is empty")
    } else if text.contains(|c: char| c.is_control()) {
        Some("contains a control character")
    } else if text.contains('@') {
        Some("contains '@', which playback reads as a sample offset")
    } else if text.starts_with('{') || text.contains("://") {
        Some("looks like a freeswitch file parameter or stream")
    } else {
        None
    };
    match bad {
        Some(problem) => Err(SwitchError::Refused(format!(
            "media path {text:?} {problem}; choose another file name"
        ))),
        None => Ok(()),
    }
}

#[cfg(unix)]
fn ensure_alias(target: &Path, alias: &Path) -> Result<(), SwitchError> {
    // Relative, so that it also resolves where FreeSWITCH mounts the same
    // directory under another name.
    let Some(name) = target.file_name() else {
        return Err(SwitchError::Refused(format!(
            "{} names no file",
            target.display()
        )));
    };
    match std::fs::read_link(alias) {
        Ok(existing) if existing.as_os_str() == name => return Ok(()),
        Ok(_) | Err(_) if alias.symlink_metadata().is_ok() => {
            return Err(SwitchError::Refused(format!(
                "{} exists and is not an alias of {}; remove it",
                alias.display(),
                target.display()
            )));
        }
        _ => {}
    }
    std::os::unix::fs::symlink(name, alias).map_err(|e| {
        SwitchError::Refused(format!(
            "freeswitch picks a file's format by its extension, and the alias {} \
             could not be created ({e}); give the file a freeswitch extension",
            alias.display()
        ))
    })
}

#[cfg(not(unix))]
fn ensure_alias(target: &Path, _alias: &Path) -> Result<(), SwitchError> {
    Err(SwitchError::Refused(format!(
        "{} has an extension freeswitch does not read; give it a freeswitch extension",
        target.display()
    )))
}

/// A sound by name, and whether `@@` offsets apply to it.
pub fn sound_file(sounds_dir: Option<&Path>, name: &str) -> Result<(String, bool), SwitchError> {
    if name.is_empty()
        || name.starts_with('.')
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(SwitchError::Refused(format!("bad sound name {name:?}")));
    }
    let Some(dir) = sounds_dir else {
        if name == "beep" {
            return Ok((BEEP_TONE.to_owned(), false));
        }
        // Relative: FreeSWITCH looks under its sound_prefix.
        return Ok((format!("{name}.wav"), true));
    };
    for (extension, format) in [
        ("wav", AudioFormat::Wav),
        ("r8", AudioFormat::Slin { sample_rate: 8000 }),
        ("sln", AudioFormat::Slin { sample_rate: 8000 }),
        ("r16", AudioFormat::Slin { sample_rate: 16000 }),
    ] {
        let path = dir.join(format!("{name}.{extension}"));
        if path.is_file() {
            return Ok((fs_media_path(&path, format)?, true));
        }
    }
    if name == "beep" {
        return Ok((BEEP_TONE.to_owned(), false));
    }
    // FreeSWITCH reports FILE NOT FOUND and the playback ends at once.
    let missing = dir.join(format!("{name}.wav"));
    let text = missing
        .to_str()
        .ok_or_else(|| SwitchError::Refused(format!("{} is not utf-8", missing.display())))?;
    check_fs_path(text)?;
    Ok((text.to_owned(), true))
}

/// `playback_terminators` for the engine's interrupt digits.
pub fn terminators(digits: &str) -> Result<String, SwitchError> {
    if digits.is_empty() {
        return Ok("none".to_owned());
    }
    if !digits
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '*' | '#' | 'A'..='D'))
    {
        return Err(SwitchError::Refused(format!(
            "interrupt digits {digits:?} are not DTMF digits"
        )));
    }
    Ok(digits.to_owned())
}

/// The dial string of `target`: `${target}` and `${domain}` in the
/// configured template replaced (`[freeswitch] target_dial_string`).
pub fn dial_target(template: &str, target: &str, domain: &str) -> Result<String, SwitchError> {
    if target.is_empty()
        || target.len() > 64
        || !target
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '*' | '#' | '+' | '.' | '_' | '-'))
    {
        return Err(SwitchError::Refused(format!(
            "cannot dial target {target:?}"
        )));
    }
    let url = template
        .replace("${target}", target)
        .replace("${domain}", domain);
    if url.contains(['\'', '"', ' ', '\n', '\r']) {
        return Err(SwitchError::Refused(format!(
            "dial string {template:?} must not contain quotes, spaces or line breaks"
        )));
    }
    Ok(url)
}

/// The `originate` arguments (after `originate `) that ring `request`
/// through the dial string `url` (see [`dial_target`]) and bring the
/// answered leg back to `socket`.
pub fn originate_command(
    url: &str,
    request: &OriginateRequest,
    socket: SocketAddr,
) -> Result<String, SwitchError> {
    let id = &request.id.0;
    if id.is_empty()
        || id.len() > 64
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(SwitchError::Refused(format!("bad originate id {id:?}")));
    }
    let seconds = request
        .ring_timeout
        .as_millis()
        .div_ceil(1000)
        .clamp(1, 3600);
    let name = clean_caller_id(&request.caller_id_name, 64, |c| {
        !c.is_control()
            && !matches!(
                c,
                '\'' | '"' | '\\' | ',' | '{' | '}' | '[' | ']' | '^' | '|' | '<' | '>' | '=' | '`'
            )
    });
    let number = clean_caller_id(&request.caller_id_number, 32, |c| {
        c.is_ascii_alphanumeric() || matches!(c, '+' | '*' | '#' | '.' | '_' | '-')
    });
    let mut variables = vec![format!("{ORIGIN_VARIABLE}={id}")];
    if !name.is_empty() {
        variables.push(format!("origination_caller_id_name={name}"));
    }
    if !number.is_empty() {
        variables.push(format!("origination_caller_id_number={number}"));
    }
    variables.push(format!("originate_timeout={seconds}"));
    // The stock `default` dialplan sleeps 10 s while default_password is
    // 1234; a leg that passes through it must not.
    variables.push("default_password=none".to_owned());
    if url.contains(['\'', '\n', '\r']) {
        return Err(SwitchError::Refused(format!(
            "dial string {url:?} must not contain quotes or line breaks"
        )));
    }
    // Both arguments are quoted: the caller name and `async full` hold
    // spaces, and originate splits its arguments at spaces outside quotes.
    Ok(format!(
        "originate '{{{}}}{url}' '&socket({socket} {SOCKET_MODE})'",
        variables.join(",")
    ))
}

fn clean_caller_id(value: &str, max: usize, keep: impl Fn(char) -> bool) -> String {
    value
        .chars()
        .filter(|c| keep(*c))
        .take(max)
        .collect::<String>()
        .trim()
        .to_owned()
}

/// FreeSWITCH's cause names and their Q.850 codes (`switch_channel.c`);
/// codes above 127 are FreeSWITCH's own.
const CAUSES: &[(&str, u16)] = &[
    ("UNSPECIFIED", 0),
    ("UNALLOCATED_NUMBER", 1),
    ("NO_ROUTE_TRANSIT_NET", 2),
    ("NO_ROUTE_DESTINATION", 3),
    ("CHANNEL_UNACCEPTABLE", 6),
    ("CALL_AWARDED_DELIVERED", 7),
    ("NORMAL_CLEARING", 16),
    ("USER_BUSY", 17),
    ("NO_USER_RESPONSE", 18),
    ("NO_ANSWER", 19),
    ("SUBSCRIBER_ABSENT", 20),
    ("CALL_REJECTED", 21),
    ("NUMBER_CHANGED", 22),
    ("REDIRECTION_TO_NEW_DESTINATION", 23),
    ("EXCHANGE_ROUTING_ERROR", 25),
    ("DESTINATION_OUT_OF_ORDER", 27),
    ("INVALID_NUMBER_FORMAT", 28),
    ("FACILITY_REJECTED", 29),
    ("RESPONSE_TO_STATUS_ENQUIRY", 30),
    ("NORMAL_UNSPECIFIED", 31),
    ("NORMAL_CIRCUIT_CONGESTION", 34),
    ("NETWORK_OUT_OF_ORDER", 38),
    ("NORMAL_TEMPORARY_FAILURE", 41),
    ("SWITCH_CONGESTION", 42),
    ("ACCESS_INFO_DISCARDED", 43),
    ("REQUESTED_CHAN_UNAVAIL", 44),
    ("PRE_EMPTED", 45),
    ("FACILITY_NOT_SUBSCRIBED", 50),
    ("OUTGOING_CALL_BARRED", 52),
    ("INCOMING_CALL_BARRED", 54),
    ("BEARERCAPABILITY_NOTAUTH", 57),
    ("BEARERCAPABILITY_NOTAVAIL", 58),
    ("SERVICE_UNAVAILABLE", 63),
    ("BEARERCAPABILITY_NOTIMPL", 65),
    ("CHAN_NOT_IMPLEMENTED", 66),
    ("FACILITY_NOT_IMPLEMENTED", 69),
    ("SERVICE_NOT_IMPLEMENTED", 79),
    ("INVALID_CALL_REFERENCE", 81),
    ("INCOMPATIBLE_DESTINATION", 88),
    ("INVALID_MSG_UNSPECIFIED", 95),
    ("MANDATORY_IE_MISSING", 96),
    ("MESSAGE_TYPE_NONEXIST", 97),
    ("WRONG_MESSAGE", 98),
    ("IE_NONEXIST", 99),
    ("INVALID_IE_CONTENTS", 100),
    ("WRONG_CALL_STATE", 101),
    ("RECOVERY_ON_TIMER_EXPIRE", 102),
    ("MANDATORY_IE_LENGTH_ERROR", 103),
    ("PROTOCOL_ERROR", 111),
    ("INTERWORKING", 127),
    ("ORIGINATOR_CANCEL", 487),
    ("CRASH", 700),
    ("SYSTEM_SHUTDOWN", 701),
    ("LOSE_RACE", 502),
    ("MANAGER_REQUEST", 503),
    ("BLIND_TRANSFER", 600),
    ("ATTENDED_TRANSFER", 601),
    ("ALLOTTED_TIMEOUT", 602),
    ("USER_CHALLENGE", 603),
    ("MEDIA_TIMEOUT", 604),
    ("PICKED_OFF", 605),
    ("USER_NOT_REGISTERED", 606),
    ("PROGRESS_TIMEOUT", 607),
    ("GATEWAY_DOWN", 609),
];

/// A FreeSWITCH cause name as the engine's cause.
pub fn cause_from_name(name: &str) -> HangupCause {
    let name = name.trim();
    let code = CAUSES
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, code)| *code);
    match code {
        Some(code @ 0..=127) => HangupCause::from_q850(code),
        // FreeSWITCH's own causes, in the engine's terms.
        Some(606 | 609) => HangupCause::Unreachable,
        Some(602 | 607) => HangupCause::NoAnswer,
        Some(code) => HangupCause::Other(code),
        // An unknown name is a failure we cannot classify.
        None => HangupCause::Other(41),
    }
}

/// The cause name `uuid_kill` and `sendmsg hangup` take.
pub fn cause_name(cause: HangupCause) -> &'static str {
    let code = cause.q850();
    CAUSES
        .iter()
        .find(|(_, c)| *c == code && code != 0)
        .map_or("NORMAL_CLEARING", |(name, _)| name)
}

/// The cause of a `CHANNEL_HANGUP_COMPLETE`: the Q.850 code when present,
/// else the name.
pub fn hangup_cause_of(event: &Event) -> HangupCause {
    if let Some(code) = event
        .variable("hangup_cause_q850")
        .and_then(|c| c.trim().parse::<u16>().ok())
        .filter(|c| *c != 0)
    {
        return HangupCause::from_q850(code);
    }
    event
        .hangup_cause()
        .map_or(HangupCause::Normal, cause_from_name)
}

/// `sendevent NAME` with headers and an optional body. Header values lose
/// control characters (they would end the header).
pub fn sendevent(name: &str, headers: &[(&str, String)], body: Option<&str>) -> String {
    let mut text = format!("sendevent {name}\n");
    for (header, value) in headers {
        let value: String = value.chars().filter(|c| !c.is_control()).collect();
        text.push_str(header);
        text.push_str(": ");
        text.push_str(&value);
        text.push('\n');
    }
    match body {
        Some(body) => {
            text.push_str(&format!("Content-Length: {}\n\n", body.len()));
            text.push_str(body);
        }
        None => text.push('\n'),
    }
    text
}

pub fn check_endpoint(endpoint: &str) -> Result<(), SwitchError> {
    if endpoint.is_empty()
        || endpoint.len() > 128
        || !endpoint.chars().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+' | '*' | '#' | '@')
        })
    {
        return Err(SwitchError::Refused(format!("bad endpoint {endpoint:?}")));
    }
    Ok(())
}

/// `user@domain` for an endpoint that may already carry its domain.
pub fn address_of(endpoint: &str, domain: &str) -> String {
    if endpoint.contains('@') {
        endpoint.to_owned()
    } else {
        format!("{endpoint}@{domain}")
    }
}

/// A fresh random UUID (version 4 layout) for Event-UUIDs and Job-UUIDs:
/// FreeSWITCH keeps at most 36 characters of a Job-UUID.
pub fn new_uuid() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut words = [0u64; 2];
    for (i, word) in words.iter_mut().enumerate() {
        // RandomState is seeded from the OS once per thread and varied per
        // instance: enough to keep ids of one process apart.
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u64(n);
        hasher.write_usize(i);
        *word = hasher.finish();
    }
    let hi = (words[0] & 0xffff_ffff_ffff_0fff) | 0x0000_0000_0000_4000;
    let lo = (words[1] & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000;
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        hi >> 32,
        (hi >> 16) & 0xffff,
        hi & 0xffff,
        lo >> 48,
        lo & 0xffff_ffff_ffff
    )
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use super::*;
    use crate::switch::OriginateId;

    fn request(name: &str) -> OriginateRequest {
        OriginateRequest {
            id: OriginateId("m1-t2".into()),
            target: "1002".into(),
            caller_id_name: name.into(),
            caller_id_number: "1001".into(),
            ring_timeout: Duration::from_millis(29_500),
        }
    }

    #[test]
    fn originate_quotes_its_arguments_and_brings_the_leg_back() {
        let socket = SocketAddr::from(([127, 0, 0, 1], 8084));
        assert_eq!(
            originate_command(
                &dial_target("user/${target}", "1002", "d").unwrap(),
                &request("IVM Alice"),
                socket
            )
            .unwrap(),
            "originate '{ivm_origin=m1-t2,origination_caller_id_name=IVM Alice,\
             origination_caller_id_number=1001,originate_timeout=30,default_password=none}\
             user/1002' '&socket(127.0.0.1:8084 async full)'"
        );
    }

    #[test]
    fn originate_cannot_be_broken_by_a_name_or_target() {
        let socket = SocketAddr::from(([127, 0, 0, 1], 8084));
        let command =
            originate_command("user/1002", &request("Eve',x=y}' '&bad\r\n"), socket).unwrap();
        assert!(
            command.contains("origination_caller_id_name=Evexy &bad,"),
            "{command}"
        );
        assert!(dial_target("user/${target}", "1002 &park", "d").is_err());
        assert!(dial_target("user/${target}@${domain}", "1002", "d' x").is_err());
        assert_eq!(
            dial_target(
                "{sip_auth_username=a}user/${target}@${domain}",
                "1002",
                "pbx.example"
            )
            .unwrap(),
            "{sip_auth_username=a}user/1002@pbx.example"
        );
        let mut bad = request("x");
        bad.id = OriginateId("a,b".into());
        assert!(originate_command("user/1002", &bad, socket).is_err());
        assert!(originate_command("user/'1002", &request("x"), socket).is_err());
    }

    #[test]
    fn causes_map_both_ways() {
        assert_eq!(cause_from_name("USER_BUSY"), HangupCause::Busy);
        assert_eq!(cause_from_name("NO_ANSWER"), HangupCause::NoAnswer);
        assert_eq!(cause_from_name("CALL_REJECTED"), HangupCause::Rejected);
        assert_eq!(
            cause_from_name("USER_NOT_REGISTERED"),
            HangupCause::Unreachable
        );
        assert_eq!(cause_from_name("ALLOTTED_TIMEOUT"), HangupCause::NoAnswer);
        assert_eq!(cause_from_name("NORMAL_CLEARING"), HangupCause::Normal);
        assert_eq!(cause_from_name("no such thing"), HangupCause::Other(41));
        assert_eq!(cause_name(HangupCause::Normal), "NORMAL_CLEARING");
        assert_eq!(cause_name(HangupCause::Busy), "USER_BUSY");
        assert_eq!(
            cause_name(HangupCause::Other(34)),
            "NORMAL_CIRCUIT_CONGESTION"
        );
        assert_eq!(cause_name(HangupCause::Other(999)), "NORMAL_CLEARING");
        for cause in [
            HangupCause::Normal,
            HangupCause::Busy,
            HangupCause::NoAnswer,
            HangupCause::Rejected,
            HangupCause::Unreachable,
        ] {
            assert_eq!(cause_from_name(cause_name(cause)), cause);
        }
    }

    #[test]
    fn formats_have_freeswitch_extensions() {
        assert_eq!(
            extensions_for(AudioFormat::Slin { sample_rate: 8000 }).unwrap(),
            &["r8", "raw"]
        );
        assert_eq!(
            extensions_for(AudioFormat::Slin { sample_rate: 16000 }).unwrap(),
            &["r16"]
        );
        let err = extensions_for(AudioFormat::Slin { sample_rate: 48000 }).unwrap_err();
        assert!(err.to_string().contains("48000 Hz"), "{err}");
    }

    #[test]
    fn a_path_with_a_freeswitch_extension_is_used_as_is() {
        let path = Path::new("/var/spool/ivm/m1.r8");
        assert_eq!(
            fs_media_path(path, AudioFormat::Slin { sample_rate: 8000 }).unwrap(),
            "/var/spool/ivm/m1.r8"
        );
        assert_eq!(
            fs_media_path(Path::new("/x/ramp.WAV"), AudioFormat::Wav).unwrap(),
            "/x/ramp.WAV"
        );
    }

    #[test]
    fn other_extensions_get_an_alias_that_freeswitch_reads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m1.sln");
        let alias = fs_media_path(&path, AudioFormat::Slin { sample_rate: 8000 }).unwrap();
        assert_eq!(alias, format!("{}.r8", path.display()));
        // Created before the file exists: FreeSWITCH creates it through it.
        assert_eq!(std::fs::read_link(&alias).unwrap(), PathBuf::from("m1.sln"));
        std::fs::write(&alias, b"\x01\x00").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"\x01\x00");
        // Idempotent.
        fs_media_path(&path, AudioFormat::Slin { sample_rate: 8000 }).unwrap();
        // Something else in the way is refused.
        let other = dir.path().join("m2.sln");
        std::fs::write(dir.path().join("m2.sln.r8"), b"").unwrap();
        assert!(fs_media_path(&other, AudioFormat::Slin { sample_rate: 8000 }).is_err());
    }

    #[test]
    fn paths_freeswitch_would_misread_are_refused() {
        for bad in ["/x/a@b.r8", "/x/a\n.r8", "{a=b}/x.r8", "http://x/y.wav", ""] {
            assert!(
                fs_media_path(Path::new(bad), AudioFormat::Slin { sample_rate: 8000 }).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn sounds_resolve_to_files_or_the_built_in_beep() {
        assert_eq!(
            sound_file(None, "beep").unwrap(),
            (BEEP_TONE.to_owned(), false)
        );
        assert_eq!(
            sound_file(None, "menu").unwrap(),
            ("menu.wav".to_owned(), true)
        );
        assert!(sound_file(None, "../etc/passwd").is_err());
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("beep.sln"), b"").unwrap();
        let (file, seekable) = sound_file(Some(dir.path()), "beep").unwrap();
        assert!(file.ends_with("beep.sln.r8") && seekable, "{file}");
        std::fs::write(dir.path().join("menu.wav"), b"").unwrap();
        let (file, _) = sound_file(Some(dir.path()), "menu").unwrap();
        assert!(file.ends_with("menu.wav"), "{file}");
    }

    #[test]
    fn interrupt_digits_become_terminators() {
        assert_eq!(terminators("").unwrap(), "none");
        assert_eq!(terminators("#5").unwrap(), "#5");
        assert!(terminators("5;x").is_err());
    }

    #[test]
    fn sendevent_carries_a_body_by_length() {
        let text = sendevent(
            "CUSTOM",
            &[("to", "1002@d\r\nexit".into())],
            Some("hi\n\nthere"),
        );
        assert_eq!(
            text,
            "sendevent CUSTOM\nto: 1002@dexit\nContent-Length: 9\n\nhi\n\nthere"
        );
        assert_eq!(
            sendevent("MESSAGE_WAITING", &[("a", "b".into())], None),
            "sendevent MESSAGE_WAITING\na: b\n\n"
        );
    }

    #[test]
    fn uuids_are_unique_and_36_characters() {
        let a = new_uuid();
        let b = new_uuid();
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert!(a.chars().all(|c| c.is_ascii_hexdigit() || c == '-'));
    }
}
