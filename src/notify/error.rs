/// Why a send did not succeed. The variant is a promise about the gateway's
/// state, which is what the outbox policy needs to avoid double sends.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotifyError {
    /// Certainly not sent, and worth retrying: connection refused, not
    /// bound, throttled, a temporary refusal.
    #[error("gateway unavailable: {0}")]
    Unavailable(String),
    /// Certainly not sent, and retrying will not help: a bad number, bad
    /// credentials, a refusal the gateway calls permanent.
    #[error("gateway refused: {0}")]
    Rejected(String),
    /// The request left us but no answer came back (timeout, connection lost
    /// mid-request): the gateway may or may not have sent it.
    #[error("outcome unknown: {0}")]
    Unknown(String),
    /// The notification cannot go through this channel (wrong payload kind,
    /// unusable recipient). Certainly not sent; not retried.
    #[error("cannot send this notification: {0}")]
    Invalid(String),
}

impl NotifyError {
    /// Whether the gateway certainly did not act on the request.
    pub fn certainly_not_sent(&self) -> bool {
        !matches!(self, NotifyError::Unknown(_))
    }
}
