//! The external (HLR-style) presence lookup, `[presence.external]`: asks an
//! HTTP service whether a number outside the PBX is reachable, carrying out
//! the delivery flow's `Action::LookupExternal`. What the answer means is
//! `engine::presence::decide_external`'s.
//!
//! The contract (also in the README): `GET <url>?number=<digits>` with
//! `Accept: application/json` (and `Authorization: Bearer <token>` when
//! configured); a 2xx answer whose body (at most [`MAX_BODY`] bytes) is a
//! JSON object with `"state"` one of `reachable`, `unreachable`, `busy`,
//! `unknown`; other members are ignored. Anything else — no answer within
//! `timeout_ms`, another status, a longer body, not JSON, another state —
//! is logged once (without the number) and counts as `unknown`. Answers
//! (not failures) are reused for `cache_ttl_seconds`.
//!
//! Owns: the HTTP request, its time limit, the body cap, the cache. Must
//! not know: what a state leads to.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use crate::config::ExternalLookupConfig;
use crate::domain::ExternalReach;

/// The most of an answer's body read; a longer one is refused.
pub const MAX_BODY: usize = 4096;
/// The most numbers cached at once (expired ones go first, then all).
const MAX_CACHED: usize = 10_000;

/// Why an answer was not taken.
#[derive(Debug, thiserror::Error)]
enum LookupError {
    #[error("the service could not be asked ({0})")]
    Transport(String),
    #[error("the service answered HTTP {0}")]
    Status(u16),
    #[error("the answer is longer than {MAX_BODY} bytes")]
    TooLong,
    #[error("the answer is not JSON")]
    NotJson,
    #[error("the answer is not a JSON object with a string `state`")]
    NoState,
    #[error("the answer's `state` is none of reachable, unreachable, busy, unknown")]
    BadState,
}

/// The configured lookup, shared by every delivery.
pub(super) struct ExternalLookup {
    client: reqwest::Client,
    config: ExternalLookupConfig,
    cache: Mutex<HashMap<String, (Instant, ExternalReach)>>,
}

impl ExternalLookup {
    pub fn new(config: ExternalLookupConfig) -> Result<Self, super::ServerError> {
        let client = reqwest::Client::builder()
            // The answer comes from the configured service or not at all.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| super::ServerError::Notify(format!("presence.external: {e}")))?;
        Ok(Self {
            client,
            config,
            cache: Mutex::default(),
        })
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.config.timeout_ms.into())
    }

    /// What the service says of `number`, within the timeout; `Unknown`
    /// when it says nothing usable.
    pub async fn reach(&self, number: &str) -> ExternalReach {
        if let Some(state) = self.cached(number) {
            debug!(%state, "external presence from the cache");
            return state;
        }
        match tokio::time::timeout(self.timeout(), self.ask(number)).await {
            Ok(Ok(state)) => {
                debug!(%state, "external presence looked up");
                self.keep(number, state);
                state
            }
            Ok(Err(e)) => {
                warn!("external presence lookup: {e}; the number counts as unknown (rung)");
                ExternalReach::Unknown
            }
            Err(_) => {
                warn!(
                    timeout_ms = self.config.timeout_ms,
                    "external presence lookup: no answer within [presence.external] timeout_ms; \
                     the number counts as unknown (rung)"
                );
                ExternalReach::Unknown
            }
        }
    }

    async fn ask(&self, number: &str) -> Result<ExternalReach, LookupError> {
        let mut request = self
            .client
            .get(&self.config.url)
            .query(&[("number", number)])
            .header(reqwest::header::ACCEPT, "application/json");
        if !self.config.token.is_empty() {
            request = request.bearer_auth(&self.config.token);
        }
        // The URL carries the number: never in an error that is logged.
        let transport = |e: reqwest::Error| LookupError::Transport(e.without_url().to_string());
        let mut response = request.send().await.map_err(transport)?;
        let status = response.status();
        if !status.is_success() {
            return Err(LookupError::Status(status.as_u16()));
        }
        if response
            .content_length()
            .is_some_and(|n| n > MAX_BODY as u64)
        {
            return Err(LookupError::TooLong);
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(transport)? {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(LookupError::TooLong);
            }
            body.extend_from_slice(&chunk);
        }
        // Never serde_json's message: it may quote the body.
        let answer: serde_json::Value =
            serde_json::from_slice(&body).map_err(|_| LookupError::NotJson)?;
        let state = answer
            .as_object()
            .and_then(|object| object.get("state"))
            .and_then(serde_json::Value::as_str)
            .ok_or(LookupError::NoState)?;
        state
            .parse::<ExternalReach>()
            .map_err(|_| LookupError::BadState)
    }

    fn cached(&self, number: &str) -> Option<ExternalReach> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let (at, state) = cache.get(number)?;
        let ttl = Duration::from_secs(self.config.cache_ttl_seconds.into());
        (at.elapsed() < ttl).then_some(*state)
    }

    fn keep(&self, number: &str, state: ExternalReach) {
        if self.config.cache_ttl_seconds == 0 {
            return;
        }
        let ttl = Duration::from_secs(self.config.cache_ttl_seconds.into());
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= MAX_CACHED {
            cache.retain(|_, (at, _)| at.elapsed() < ttl);
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
        }
        cache.insert(number.to_owned(), (Instant::now(), state));
    }
}
