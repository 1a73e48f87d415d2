//! Who may talk to `ivm`'s call-control listeners, and what a peer's words
//! may become: one policy shared by the Asterisk FastAGI server and the
//! FreeSWITCH outbound-socket server.
//!
//! Owns: the CIDR allow lists, the per-install secret and its constant-time
//! check, the rate-limited "refused peer" warning, escaping peer text for
//! logs, the syntax a channel name or unique id must have before any command
//! carries it, unguessable originate ids, the external-target (toll fraud)
//! policy, counting connections per peer address, and the message permits
//! that bound capacity. Must not know: any PBX's wire syntax.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::warn;

use super::{CallId, OriginateId};

/// The default allow list: only this host.
pub const LOOPBACK: &[&str] = &["127.0.0.1/32", "::1/128"];
/// Secrets `ivm serve` refuses: empty, and the well-known defaults.
pub const DEFAULT_SECRETS: &[&str] = &[
    "",
    "ivm",
    "ClueCon",
    "change-me",
    "changeme",
    "CHANGE-ME-IVM-SECRET",
];
/// Shortest per-install secret accepted by `ivm serve`.
pub const MIN_SECRET_LEN: usize = 16;
/// One warning per refused peer address per this long; the rest are counted.
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(60);
/// Peer addresses remembered by the refusal log before it starts over.
const REFUSAL_LOG_MAX_PEERS: usize = 4096;

/// An IPv4 or IPv6 network, `address/prefix`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// `10.0.0.0/8`, `::1/128`; a bare address is a single host.
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = address
            .trim()
            .parse()
            .map_err(|_| format!("`{text}` is not an address/prefix such as 10.0.0.0/8"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.trim().parse::<u8>() {
                Ok(p) if p <= max => p,
                _ => return Err(format!("`{text}`: the prefix must be 0 to {max}")),
            },
        };
        Ok(Cidr { network, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        // An IPv4 peer may arrive as ::ffff:a.b.c.d on a dual-stack socket.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// Parse an allow list; the error names the bad entry.
pub fn parse_allow_list(entries: &[String]) -> Result<Vec<Cidr>, String> {
    entries.iter().map(|e| Cidr::parse(e)).collect()
}

/// Who may connect, and the secret the dialplan must pass.
#[derive(Clone)]
pub struct PeerPolicy {
    allow: Vec<Cidr>,
    secret: String,
    refusals: Arc<RefusalLog>,
}

impl fmt::Debug for PeerPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerPolicy")
            .field("allow", &self.allow)
            .field("secret", &"********")
            .finish()
    }
}

impl PartialEq for PeerPolicy {
    fn eq(&self, other: &Self) -> bool {
        self.allow == other.allow && self.secret == other.secret
    }
}

impl Eq for PeerPolicy {}

impl PeerPolicy {
    pub fn new(allow: Vec<Cidr>, secret: impl Into<String>) -> Self {
        PeerPolicy {
            allow,
            secret: secret.into(),
            refusals: Arc::new(RefusalLog::default()),
        }
    }

    /// From the config's strings; a bad entry is an error naming it.
    pub fn from_config(allow: &[String], secret: &str) -> Result<Self, String> {
        Ok(PeerPolicy::new(parse_allow_list(allow)?, secret))
    }

    /// Whether a connection from `ip` may even be read.
    pub fn allows(&self, ip: IpAddr) -> bool {
        self.allow.iter().any(|net| net.contains(ip))
    }

    /// Whether `offered` is the install's secret, in time that depends only
    /// on the secret's length. An empty configured secret matches nothing.
    pub fn secret_matches(&self, offered: &str) -> bool {
        !self.secret.is_empty() && constant_time_eq(offered.as_bytes(), self.secret.as_bytes())
    }

    /// Whether a secret is configured at all (`ivm serve` requires one).
    pub fn has_secret(&self) -> bool {
        !self.secret.is_empty()
    }

    /// Log a refused peer at warn, at most once per address per
    /// [`REFUSAL_LOG_INTERVAL`] (the next warning says how many were quiet).
    /// True when a line was written.
    pub fn refused(&self, listener: &str, peer: IpAddr, reason: &str) -> bool {
        self.refusals.refused(listener, peer, reason)
    }
}

/// Compare in time that depends only on `expected`'s length.
pub fn constant_time_eq(offered: &[u8], expected: &[u8]) -> bool {
    let mut diff = u8::from(offered.len() != expected.len());
    for (i, e) in expected.iter().enumerate() {
        let o = offered.get(i).copied().unwrap_or(!*e);
        diff |= std::hint::black_box(o ^ e);
    }
    diff == 0
}

#[derive(Default)]
struct RefusalLog {
    seen: Mutex<HashMap<IpAddr, (Instant, u64)>>,
}

impl RefusalLog {
    fn refused(&self, listener: &str, peer: IpAddr, reason: &str) -> bool {
        let now = Instant::now();
        let quiet = {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            if seen.len() >= REFUSAL_LOG_MAX_PEERS && !seen.contains_key(&peer) {
                seen.retain(|_, (at, _)| now.duration_since(*at) < REFUSAL_LOG_INTERVAL);
                if seen.len() >= REFUSAL_LOG_MAX_PEERS {
                    // Under a flood from many addresses: stay silent.
                    return false;
                }
            }
            match seen.get_mut(&peer) {
                Some((at, count)) if now.duration_since(*at) < REFUSAL_LOG_INTERVAL => {
                    *count += 1;
                    return false;
                }
                Some((at, count)) => {
                    let quiet = *count;
                    *at = now;
                    *count = 0;
                    quiet
                }
                None => {
                    seen.insert(peer, (now, 0));
                    0
                }
            }
        };
        warn!(%peer, listener, reason, refused_quietly_since_last = quiet,
            "refused a call-control peer and closed its connection");
        true
    }
}

/// Peer text made safe for one log line: control characters escaped,
/// at most `max` characters kept.
pub fn log_safe(text: &str) -> String {
    const MAX: usize = 128;
    let mut out = String::with_capacity(text.len().min(MAX));
    for (i, c) in text.chars().enumerate() {
        if i == MAX {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Whether a channel name or unique id a peer sent may be put into a switch
/// command: printable ASCII without spaces, not starting with `/` (an AMI
/// regular expression), and none of `,` `(` `)` `|` `"` `'` `\` `$` `{` `}`
/// `[` `]` `^` (application argument separators and option injection).
pub fn channel_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 256
        && !name.starts_with('/')
        && name.bytes().all(|b| {
            b.is_ascii_graphic()
                && !matches!(
                    b,
                    b',' | b'('
                        | b')'
                        | b'|'
                        | b'"'
                        | b'\''
                        | b'\\'
                        | b'$'
                        | b'{'
                        | b'}'
                        | b'['
                        | b']'
                        | b'^'
                )
        })
}

/// Whether a dialplan context name is safe in `Local/<n>@<context>`.
pub fn context_ok(context: &str) -> bool {
    !context.is_empty()
        && context.len() <= 79
        && context
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Separates the random part of an originate id from the call it was made
/// for (the random part is alphanumeric; both switches accept `_` in ids).
const ORIGIN_CALL_SEPARATOR: char = '_';
/// Base-62 digits of 128 random bits.
const RANDOM_DIGITS: usize = 22;

/// A new originate id: 128 random bits in 22 base-62 digits, and when the
/// originate is made on behalf of a call (the sender's), `_` and that call's
/// id, so the adapter can dial external targets through that caller's own
/// dialplan. At most 59 characters for a FreeSWITCH UUID. Every originate
/// the server starts takes its id from here.
pub fn originate_id(on_behalf_of: Option<&CallId>) -> OriginateId {
    originate_id_with_prefix("", on_behalf_of)
}

/// [`originate_id`] after a fixed prefix (e.g. `notify-<outbox id>-`).
pub fn originate_id_with_prefix(prefix: &str, on_behalf_of: Option<&CallId>) -> OriginateId {
    use argon2::password_hash::rand_core::{OsRng, RngCore};
    const DIGITS: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut bytes = [0u8; 16];
    OsRng.fill_bytes(&mut bytes);
    let mut n = u128::from_le_bytes(bytes);
    let mut id = String::with_capacity(prefix.len() + RANDOM_DIGITS + 40);
    id.push_str(prefix);
    for _ in 0..RANDOM_DIGITS {
        id.push(char::from(DIGITS[(n % 62) as usize]));
        n /= 62;
    }
    if let Some(call) = on_behalf_of
        && channel_name_ok(&call.0)
        && call.0.len() <= 40
    {
        id.push(ORIGIN_CALL_SEPARATOR);
        id.push_str(&call.0);
    }
    OriginateId(id)
}

/// The call an originate id was made for, if any.
pub fn origin_caller(origin: &OriginateId) -> Option<CallId> {
    origin
        .0
        .split_once(ORIGIN_CALL_SEPARATOR)
        .map(|(_, call)| CallId(call.to_owned()))
        .filter(|c| !c.0.is_empty())
}

/// Whether an originate id may ride in an AGI URL and a channel id: only
/// what [`originate_id`] makes, plus the characters of a unique id.
pub fn originate_id_ok(origin: &OriginateId) -> bool {
    !origin.0.is_empty()
        && origin.0.len() <= 120
        && origin
            .0
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Which targets may be dialled outside the PBX (toll fraud, S11).
///
/// A target of only digits longer than `extension_max_digits` (up to 15) is
/// external. External targets are allowed only when one pattern of
/// `[numbering] external_targets` matches, and are then dialled through the
/// caller's own dialplan context, never `ivm`'s.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DialPolicy {
    external: Vec<String>,
    extension_max_digits: usize,
}

impl DialPolicy {
    pub fn new(external_targets: &[String], extension_max_digits: usize) -> Self {
        DialPolicy {
            external: external_targets.to_vec(),
            extension_max_digits,
        }
    }

    pub fn from_numbering(numbering: &crate::config::NumberingConfig) -> Self {
        DialPolicy::new(&numbering.external_targets, numbering.extension_max_digits)
    }

    /// A target that leaves the PBX: `+` and digits, or more digits than an
    /// extension. With the default policy (`extension_max_digits` 0 from
    /// `Default`) every all-digit target of 7 or more digits is external.
    pub fn is_external(&self, target: &str) -> bool {
        let digits = target.strip_prefix('+').unwrap_or(target);
        let max = if self.extension_max_digits == 0 {
            6
        } else {
            self.extension_max_digits
        };
        target.starts_with('+')
            || (!digits.is_empty()
                && digits.bytes().all(|b| b.is_ascii_digit())
                && digits.len() > max)
    }

    /// Whether `target` is external and one pattern allows it.
    pub fn external_allowed(&self, target: &str) -> bool {
        self.external.iter().any(|p| pattern_matches(p, target))
    }
}

/// Check a pattern of `external_targets` when the config is read.
pub fn pattern_ok(pattern: &str) -> Result<(), String> {
    let body = pattern.strip_suffix('.').unwrap_or(pattern);
    if body.is_empty() {
        return Err(format!(
            "`{pattern}`: a pattern needs at least one digit or X"
        ));
    }
    if !body
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'X' | b'x' | b'N' | b'n' | b'Z' | b'z' | b'+'))
    {
        return Err(format!(
            "`{pattern}`: use digits, X (any digit), Z (1-9), N (2-9), a leading +, and an optional final . (one or more digits)"
        ));
    }
    Ok(())
}

/// Asterisk-style pattern without the leading `_`: `X` any digit, `Z` 1-9,
/// `N` 2-9, digits and `+` literally, a final `.` one or more further digits.
pub fn pattern_matches(pattern: &str, target: &str) -> bool {
    let (body, open) = match pattern.strip_suffix('.') {
        Some(body) => (body, true),
        None => (pattern, false),
    };
    let t = target.as_bytes();
    let p = body.as_bytes();
    if t.len() < p.len() || (!open && t.len() != p.len()) || (open && t.len() == p.len()) {
        return false;
    }
    let head = p.iter().zip(t).all(|(p, c)| match p.to_ascii_uppercase() {
        b'X' => c.is_ascii_digit(),
        b'Z' => (b'1'..=b'9').contains(c),
        b'N' => (b'2'..=b'9').contains(c),
        literal => literal == *c,
    });
    head && t[p.len()..].iter().all(u8::is_ascii_digit)
}

/// Counts live connections per peer address and refuses past a cap.
#[derive(Debug, Default)]
pub struct PerPeer {
    counts: Mutex<HashMap<IpAddr, usize>>,
}

impl PerPeer {
    /// A slot for `ip`, or `None` when it already holds `cap`.
    pub fn try_acquire(self: &Arc<Self>, ip: IpAddr, cap: usize) -> Option<PeerSlot> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let count = counts.entry(ip).or_insert(0);
        if *count >= cap {
            return None;
        }
        *count += 1;
        Some(PeerSlot {
            owner: self.clone(),
            ip,
        })
    }

    pub fn count(&self, ip: IpAddr) -> usize {
        let counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        counts.get(&ip).copied().unwrap_or(0)
    }
}

/// Held while a connection from one address lives.
#[derive(Debug)]
pub struct PeerSlot {
    owner: Arc<PerPeer>,
    ip: IpAddr,
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut counts = self.owner.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = counts.get_mut(&self.ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

/// How many messages may be recorded at once (`[limits]
/// max_concurrent_messages`). The server takes a permit when a caller starts
/// a message and keeps it until the message is done; a caller who gets none
/// hears "busy, try later". Target legs answering a message in progress
/// take no permit, so they are never refused by the cap.
#[derive(Debug, Clone)]
pub struct MessagePermits {
    semaphore: Arc<Semaphore>,
    capacity: usize,
}

/// One message's share of capacity; released on drop.
#[derive(Debug)]
pub struct MessagePermit {
    _permit: OwnedSemaphorePermit,
}

impl MessagePermits {
    pub fn new(capacity: usize) -> Self {
        MessagePermits {
            semaphore: Arc::new(Semaphore::new(capacity)),
            capacity,
        }
    }

    pub fn try_acquire(&self) -> Option<MessagePermit> {
        self.semaphore
            .clone()
            .try_acquire_owned()
            .ok()
            .map(|permit| MessagePermit { _permit: permit })
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn in_use(&self) -> usize {
        self.capacity - self.semaphore.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidr_lists_match_what_they_say() {
        let list = parse_allow_list(&["127.0.0.1/32".into(), "10.1.0.0/16".into()]).unwrap();
        let policy = PeerPolicy::new(list, "a-long-install-secret");
        assert!(policy.allows(ip("127.0.0.1")));
        assert!(!policy.allows(ip("127.0.0.2")));
        assert!(policy.allows(ip("10.1.200.3")));
        assert!(!policy.allows(ip("10.2.0.1")));
        assert!(policy.allows(ip("::ffff:127.0.0.1")), "v4-mapped v6");
        assert!(!policy.allows(ip("::1")));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
        assert!(Cidr::parse("::1").unwrap().contains(ip("::1")));
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("localhost").is_err());
    }

    #[test]
    fn the_secret_must_match_exactly_and_empty_matches_nothing() {
        let policy = PeerPolicy::new(Vec::new(), "s3cret-s3cret-s3cret");
        assert!(policy.secret_matches("s3cret-s3cret-s3cret"));
        assert!(!policy.secret_matches("s3cret-s3cret-s3cre"));
        assert!(!policy.secret_matches("s3cret-s3cret-s3cret!"));
        assert!(!policy.secret_matches(""));
        assert!(!PeerPolicy::new(Vec::new(), "").secret_matches(""));
        assert!(constant_time_eq(b"", b""));
        assert!(!constant_time_eq(b"\xff", b""));
    }

    #[test]
    fn channel_names_that_could_inject_are_refused() {
        assert!(channel_name_ok("PJSIP/1001-00000001"));
        assert!(channel_name_ok("Local/1002@ivm-originate-00000002;1"));
        assert!(channel_name_ok("1733350000.12"));
        for bad in [
            "/./",
            "",
            "PJSIP/1001,F(default^666^1)",
            "a b",
            "x|y",
            "x(y)",
            "a\r\nb",
            "${HANGUP}",
        ] {
            assert!(!channel_name_ok(bad), "{bad:?}");
        }
        assert!(context_ok("from-internal"));
        assert!(!context_ok("a,b") && !context_ok("") && !context_ok("a/b"));
    }

    #[test]
    fn originate_ids_are_random_and_carry_their_caller() {
        let call = CallId("1733350000.12".into());
        let a = originate_id(Some(&call));
        let b = originate_id(Some(&call));
        assert_ne!(a, b);
        assert!(originate_id_ok(&a), "{a:?}");
        assert_eq!(origin_caller(&a), Some(call));
        let plain = originate_id(None);
        assert_eq!(plain.0.len(), 22);
        let fs = originate_id(Some(&CallId("7f4de4bc-2b6c-4b1e-9a3e-0d4c6e0f6a11".into())));
        assert!(fs.0.len() <= 64, "{fs:?}");
        assert_eq!(origin_caller(&plain), None);
        // A caller id that could break the id is left out.
        assert_eq!(
            origin_caller(&originate_id(Some(&CallId("a,b".into())))),
            None
        );
        let notify = originate_id_with_prefix("notify-7-1-", None);
        assert!(notify.0.starts_with("notify-7-1-") && notify.0.len() == 11 + 22);
    }

    #[test]
    fn external_patterns() {
        assert!(pattern_matches("0049X.", "004915551234"));
        assert!(!pattern_matches("0049X.", "0049"));
        assert!(!pattern_matches("0049X.", "0033155512345"));
        assert!(pattern_matches("NXXNXXXXXX", "2125551234"));
        assert!(!pattern_matches("NXXNXXXXXX", "1125551234"));
        assert!(!pattern_matches("NXXNXXXXXX", "21255512345"));
        assert!(pattern_ok("0049X.").is_ok());
        assert!(pattern_ok("+49.").is_ok());
        assert!(pattern_ok(".").is_err());
        assert!(pattern_ok("0049[1-9]").is_err());
        let policy = DialPolicy::new(&["0049X.".into()], 6);
        assert!(policy.is_external("004915551234"));
        assert!(!policy.is_external("1002"));
        assert!(policy.is_external("+4915551234"));
        assert!(policy.external_allowed("004915551234"));
        assert!(!DialPolicy::default().external_allowed("004915551234"));
        assert!(DialPolicy::default().is_external("1234567"));
    }

    #[test]
    fn per_peer_slots_are_counted_and_released() {
        let peers = Arc::new(PerPeer::default());
        let a = ip("127.0.0.1");
        let one = peers.try_acquire(a, 2).unwrap();
        let two = peers.try_acquire(a, 2).unwrap();
        assert!(peers.try_acquire(a, 2).is_none());
        assert!(peers.try_acquire(ip("127.0.0.2"), 2).is_some());
        drop(one);
        assert_eq!(peers.count(a), 1);
        drop(two);
        assert_eq!(peers.count(a), 0);
    }

    #[test]
    fn message_permits_bound_capacity() {
        let permits = MessagePermits::new(2);
        let a = permits.try_acquire().unwrap();
        let _b = permits.try_acquire().unwrap();
        assert!(permits.try_acquire().is_none());
        assert_eq!(permits.in_use(), 2);
        drop(a);
        assert!(permits.try_acquire().is_some());
    }

    #[test]
    fn refusals_are_logged_once_per_address_not_per_connection() {
        let policy = PeerPolicy::new(Vec::new(), "");
        assert!(policy.refused("fastagi", ip("10.0.0.1"), "x"));
        for _ in 0..1000 {
            assert!(!policy.refused("fastagi", ip("10.0.0.1"), "x"));
        }
        assert!(policy.refused("fastagi", ip("10.0.0.2"), "x"));
    }

    #[test]
    fn log_text_is_one_safe_line() {
        assert_eq!(log_safe("1.1\nWARN forged"), "1.1\\nWARN forged");
        assert_eq!(log_safe("a\u{1b}[31m"), "a\\u{1b}[31m");
        assert!(log_safe(&"x".repeat(500)).chars().count() <= 129);
    }
}
