//! The client's configuration: from the environment or a builder, checked
//! whole (every problem at once, each naming its variable or field).

use std::{fmt, time::Duration};

use reqwest::Url;

use super::error::HubSpotError;
use crate::error::{FieldError, ValidationErrors};

/// HubSpot's API address, the default base URL.
pub const DEFAULT_BASE_URL: &str = "https://api.hubapi.com";

/// An access token (a private app's `pat-…` token or a service key): sent
/// only in the `Authorization` header, marked sensitive there, and shown
/// nowhere else — its `Debug` is `AccessToken(***)` and it has no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken(Box<str>);

impl AccessToken {
    /// Wraps a token. It is checked by [`HubSpotConfigBuilder::build`].
    pub fn new(token: impl Into<String>) -> Self {
        AccessToken(token.into().into_boxed_str())
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccessToken(***)")
    }
}

/// A checked configuration of [`HubSpotClient`](super::HubSpotClient).
/// Build it with [`HubSpotConfig::from_env`] or [`HubSpotConfig::builder`].
#[derive(Debug, Clone)]
pub struct HubSpotConfig {
    pub(crate) token: AccessToken,
    pub(crate) base_url: Url,
    pub(crate) timeout: Duration,
    pub(crate) max_retries: u32,
    pub(crate) retry_min_delay: Duration,
    pub(crate) retry_max_delay: Duration,
    pub(crate) requests_per_10s: u32,
    pub(crate) rolling_window: Duration,
    pub(crate) requests_per_day: u32,
    pub(crate) search_requests_per_second: u32,
    pub(crate) breaker_threshold: u32,
    pub(crate) breaker_cooldown: Duration,
    pub(crate) deal_to_contact_type_id: Option<u32>,
    pub(crate) deal_to_company_type_id: Option<u32>,
}

/// The environment variables [`HubSpotConfig::from_env`] reads.
pub mod vars {
    /// Required: a private app's access token (`pat-…`) or a service key.
    pub const TOKEN: &str = "HUBSPOT_TOKEN";
    /// The API's base URL (default `https://api.hubapi.com`).
    pub const BASE_URL: &str = "HUBSPOT_BASE_URL";
    /// Timeout of one request in milliseconds (default 30,000).
    pub const TIMEOUT_MS: &str = "HUBSPOT_TIMEOUT_MS";
    /// Retries of a failed request, 0 to 5 (default 3).
    pub const MAX_RETRIES: &str = "HUBSPOT_MAX_RETRIES";
    /// The app's budget of requests per rolling 10 seconds (default 100).
    pub const REQUESTS_PER_10S: &str = "HUBSPOT_REQUESTS_PER_10S";
    /// The app's budget of requests per day (default 250,000).
    pub const REQUESTS_PER_DAY: &str = "HUBSPOT_REQUESTS_PER_DAY";
    /// The budget of search requests per second (default 5).
    pub const SEARCH_REQUESTS_PER_SECOND: &str = "HUBSPOT_SEARCH_REQUESTS_PER_SECOND";
    /// Consecutive failures that open the circuit breaker (default 5).
    pub const BREAKER_THRESHOLD: &str = "HUBSPOT_BREAKER_THRESHOLD";
    /// How long the breaker stays open before one probe, in ms (default 30,000).
    pub const BREAKER_COOLDOWN_MS: &str = "HUBSPOT_BREAKER_COOLDOWN_MS";
    /// The deal → contact association type id (default: asked from HubSpot).
    pub const DEAL_CONTACT_ASSOCIATION_TYPE_ID: &str = "HUBSPOT_DEAL_CONTACT_ASSOCIATION_TYPE_ID";
    /// The deal → company association type id (default: asked from HubSpot).
    pub const DEAL_COMPANY_ASSOCIATION_TYPE_ID: &str = "HUBSPOT_DEAL_COMPANY_ASSOCIATION_TYPE_ID";
}

/// Builds a [`HubSpotConfig`]; [`build`](Self::build) checks everything at once.
#[derive(Debug, Clone)]
pub struct HubSpotConfigBuilder {
    token: Option<AccessToken>,
    base_url: String,
    timeout: Duration,
    max_retries: u32,
    retry_min_delay: Duration,
    retry_max_delay: Duration,
    requests_per_10s: u32,
    rolling_window: Duration,
    requests_per_day: u32,
    search_requests_per_second: u32,
    breaker_threshold: u32,
    breaker_cooldown: Duration,
    deal_to_contact_type_id: Option<u32>,
    deal_to_company_type_id: Option<u32>,
}

impl Default for HubSpotConfigBuilder {
    fn default() -> Self {
        HubSpotConfigBuilder {
            token: None,
            base_url: DEFAULT_BASE_URL.to_string(),
            timeout: Duration::from_secs(30),
            max_retries: 3,
            retry_min_delay: Duration::from_millis(500),
            retry_max_delay: Duration::from_secs(30),
            requests_per_10s: 100,
            rolling_window: Duration::from_secs(10),
            requests_per_day: 250_000,
            search_requests_per_second: 5,
            breaker_threshold: 5,
            breaker_cooldown: Duration::from_secs(30),
            deal_to_contact_type_id: None,
            deal_to_company_type_id: None,
        }
    }
}

impl HubSpotConfig {
    /// The largest number of retries a configuration may ask for.
    pub const MAX_RETRIES: u32 = 5;

    /// A builder with the defaults and `token`.
    pub fn builder(token: AccessToken) -> HubSpotConfigBuilder {
        HubSpotConfigBuilder {
            token: Some(token),
            ..HubSpotConfigBuilder::default()
        }
    }

    /// Reads the variables in [`vars`] from the process environment. Every
    /// problem is reported at once, in [`HubSpotError::Config`], each naming
    /// its variable and why (never quoting the token).
    pub fn from_env() -> Result<HubSpotConfig, HubSpotError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// As [`from_env`](Self::from_env), reading each variable through
    /// `lookup` (a map in a test, a secrets store).
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<HubSpotConfig, HubSpotError> {
        let mut errors = ValidationErrors::new();
        let mut b = HubSpotConfigBuilder {
            token: lookup(vars::TOKEN).map(AccessToken::new),
            ..HubSpotConfigBuilder::default()
        };
        if let Some(url) = lookup(vars::BASE_URL) {
            b.base_url = url;
        }
        let mut number = |var: &'static str, max: u64| -> Option<u64> {
            let raw = lookup(var)?;
            match raw.trim().parse::<u64>() {
                Ok(n) if n <= max => Some(n),
                Ok(_) => {
                    errors.push(FieldError::new(
                        var,
                        "out_of_range",
                        format!("must be at most {max}"),
                    ));
                    None
                }
                Err(_) => {
                    errors.push(FieldError::new(
                        var,
                        "invalid_format",
                        format!("must be a whole number, got {raw:?}"),
                    ));
                    None
                }
            }
        };
        let u32_max = u64::from(u32::MAX);
        if let Some(ms) = number(vars::TIMEOUT_MS, u32_max) {
            b.timeout = Duration::from_millis(ms);
        }
        if let Some(n) = number(vars::MAX_RETRIES, u32_max) {
            b.max_retries = n as u32;
        }
        if let Some(n) = number(vars::REQUESTS_PER_10S, u32_max) {
            b.requests_per_10s = n as u32;
        }
        if let Some(n) = number(vars::REQUESTS_PER_DAY, u32_max) {
            b.requests_per_day = n as u32;
        }
        if let Some(n) = number(vars::SEARCH_REQUESTS_PER_SECOND, u32_max) {
            b.search_requests_per_second = n as u32;
        }
        if let Some(n) = number(vars::BREAKER_THRESHOLD, u32_max) {
            b.breaker_threshold = n as u32;
        }
        if let Some(ms) = number(vars::BREAKER_COOLDOWN_MS, u32_max) {
            b.breaker_cooldown = Duration::from_millis(ms);
        }
        if let Some(n) = number(vars::DEAL_CONTACT_ASSOCIATION_TYPE_ID, u32_max) {
            b.deal_to_contact_type_id = Some(n as u32);
        }
        if let Some(n) = number(vars::DEAL_COMPANY_ASSOCIATION_TYPE_ID, u32_max) {
            b.deal_to_company_type_id = Some(n as u32);
        }
        b.check(&mut errors, env_name);
        if errors.is_empty() {
            b.finish().map_err(HubSpotError::Config)
        } else {
            Err(HubSpotError::Config(errors))
        }
    }

    /// The base URL requests go to.
    pub fn base_url(&self) -> &Url {
        &self.base_url
    }

    /// The budget of requests per rolling 10 seconds.
    pub fn requests_per_10s(&self) -> u32 {
        self.requests_per_10s
    }

    /// The budget of requests per day.
    pub fn requests_per_day(&self) -> u32 {
        self.requests_per_day
    }

    /// The number of retries of a failed request.
    pub fn max_retries(&self) -> u32 {
        self.max_retries
    }
}

/// The variable that sets a builder field.
fn env_name(field: &'static str) -> &'static str {
    match field {
        "token" => vars::TOKEN,
        "base_url" => vars::BASE_URL,
        "timeout" => vars::TIMEOUT_MS,
        "max_retries" => vars::MAX_RETRIES,
        "requests_per_10s" => vars::REQUESTS_PER_10S,
        "requests_per_day" => vars::REQUESTS_PER_DAY,
        "search_requests_per_second" => vars::SEARCH_REQUESTS_PER_SECOND,
        "breaker_threshold" => vars::BREAKER_THRESHOLD,
        "breaker_cooldown" => vars::BREAKER_COOLDOWN_MS,
        other => other,
    }
}

impl HubSpotConfigBuilder {
    /// The API's base URL (http or https, no query, no user info).
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = url.into();
        self
    }

    /// Timeout of one request (default 30 s; at least 1 ms).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Retries of a failed request, 0 to 5 (default 3).
    pub fn max_retries(mut self, retries: u32) -> Self {
        self.max_retries = retries;
        self
    }

    /// The shortest and longest wait between retries, before jitter
    /// (default 500 ms and 30 s). HubSpot's wait (`Retry-After`, or a rate
    /// limit's window) replaces them when it is at most the longest, the
    /// rolling window or a second, whichever is longer; a longer one is not
    /// waited out: the call fails with it
    /// ([`HubSpotError::RateLimited`]'s `retry_after`), for the caller to
    /// schedule.
    pub fn retry_delays(mut self, min: Duration, max: Duration) -> Self {
        self.retry_min_delay = min;
        self.retry_max_delay = max;
        self
    }

    /// The app's budget of requests per rolling 10 seconds (default 100:
    /// OAuth and free/starter apps; 190 on paid plans).
    pub fn requests_per_10s(mut self, n: u32) -> Self {
        self.requests_per_10s = n;
        self
    }

    /// The length of the rolling window the 10-second budget counts in:
    /// 10 s at HubSpot (the default). A 429 naming `TEN_SECONDLY_ROLLING`
    /// without `Retry-After` waits this long. Shorter windows are for test
    /// servers that scale HubSpot's time down.
    pub fn rolling_window(mut self, window: Duration) -> Self {
        self.rolling_window = window;
        self
    }

    /// The app's budget of requests per day (default 250,000).
    pub fn requests_per_day(mut self, n: u32) -> Self {
        self.requests_per_day = n;
        self
    }

    /// The budget of search requests per second (default 5).
    pub fn search_requests_per_second(mut self, n: u32) -> Self {
        self.search_requests_per_second = n;
        self
    }

    /// Consecutive failures that open the breaker (default 5) and how long
    /// it stays open before one probe (default 30 s).
    pub fn breaker(mut self, threshold: u32, cooldown: Duration) -> Self {
        self.breaker_threshold = threshold;
        self.breaker_cooldown = cooldown;
        self
    }

    /// The association type ids of deal → contact and deal → company, when
    /// known; otherwise the client asks HubSpot's labels endpoint once.
    pub fn association_type_ids(mut self, deal_to_contact: u32, deal_to_company: u32) -> Self {
        self.deal_to_contact_type_id = Some(deal_to_contact);
        self.deal_to_company_type_id = Some(deal_to_company);
        self
    }

    /// Checks every field; all problems at once in [`HubSpotError::Config`],
    /// each naming its builder field.
    pub fn build(self) -> Result<HubSpotConfig, HubSpotError> {
        let mut errors = ValidationErrors::new();
        self.check(&mut errors, |f| f);
        if errors.is_empty() {
            self.finish().map_err(HubSpotError::Config)
        } else {
            Err(HubSpotError::Config(errors))
        }
    }

    fn check(&self, errors: &mut ValidationErrors, name: fn(&'static str) -> &'static str) {
        let mut push = |field: &'static str, code: &'static str, reason: String| {
            errors.push(FieldError::new(name(field), code, reason));
        };
        match &self.token {
            None => push("token", "required", "is required".into()),
            Some(t) => {
                if let Some((code, reason)) = token_problem(t.expose()) {
                    push("token", code, reason);
                }
            }
        }
        if let Err(reason) = parse_base_url(&self.base_url) {
            push("base_url", "invalid_format", reason);
        }
        if self.timeout.is_zero() {
            push("timeout", "out_of_range", "must be at least 1 ms".into());
        }
        if self.max_retries > HubSpotConfig::MAX_RETRIES {
            push(
                "max_retries",
                "out_of_range",
                format!("must be from 0 to {}", HubSpotConfig::MAX_RETRIES),
            );
        }
        if self.retry_min_delay > self.retry_max_delay {
            push(
                "retry_delays",
                "out_of_range",
                "the shortest delay is longer than the longest".into(),
            );
        }
        for (field, n) in [
            ("requests_per_10s", self.requests_per_10s),
            ("requests_per_day", self.requests_per_day),
            (
                "search_requests_per_second",
                self.search_requests_per_second,
            ),
            ("breaker_threshold", self.breaker_threshold),
        ] {
            if n == 0 {
                push(field, "out_of_range", "must be at least 1".into());
            }
        }
        if self.rolling_window.is_zero() {
            push(
                "rolling_window",
                "out_of_range",
                "must be at least 1 ms".into(),
            );
        }
        if self.breaker_cooldown.is_zero() {
            push(
                "breaker_cooldown",
                "out_of_range",
                "must be at least 1 ms".into(),
            );
        }
    }

    fn finish(self) -> Result<HubSpotConfig, ValidationErrors> {
        let base_url = parse_base_url(&self.base_url).map_err(|reason| {
            ValidationErrors::single(FieldError::new("base_url", "invalid_format", reason))
        })?;
        let token = self.token.ok_or_else(|| {
            ValidationErrors::single(FieldError::new("token", "required", "is required"))
        })?;
        Ok(HubSpotConfig {
            token,
            base_url,
            timeout: self.timeout,
            max_retries: self.max_retries,
            retry_min_delay: self.retry_min_delay,
            retry_max_delay: self.retry_max_delay,
            requests_per_10s: self.requests_per_10s,
            rolling_window: self.rolling_window,
            requests_per_day: self.requests_per_day,
            search_requests_per_second: self.search_requests_per_second,
            breaker_threshold: self.breaker_threshold,
            breaker_cooldown: self.breaker_cooldown,
            deal_to_contact_type_id: self.deal_to_contact_type_id,
            deal_to_company_type_id: self.deal_to_company_type_id,
        })
    }
}

/// Why a token cannot be used, without quoting it.
fn token_problem(token: &str) -> Option<(&'static str, String)> {
    let t = token.trim();
    if t.is_empty() {
        return Some(("required", "is empty".into()));
    }
    if looks_like_legacy_api_key(t) {
        return Some((
            "legacy_api_key",
            "looks like a legacy HubSpot API key (hapikey), which HubSpot retired in 2022; \
             use a private app's access token (pat-…) or a service key"
                .into(),
        ));
    }
    if t.len() != token.len() || !t.bytes().all(|b| b.is_ascii_graphic()) {
        return Some((
            "invalid_format",
            "must be printable ASCII without spaces (it goes into an HTTP header)".into(),
        ));
    }
    None
}

/// A bare UUID (the shape of the retired API keys), or one given as
/// `hapikey=…`.
fn looks_like_legacy_api_key(t: &str) -> bool {
    let lower = t.to_ascii_lowercase();
    if lower.contains("hapikey") {
        return true;
    }
    let groups: Vec<&str> = t.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The base URL, or why not: http(s), a host, no query, fragment or user info.
fn parse_base_url(raw: &str) -> Result<Url, String> {
    let url = Url::parse(raw.trim()).map_err(|e| format!("is not a URL ({e})"))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(format!("must be http or https, not {}", url.scheme()));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("has no host".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry a user name or password".into());
    }
    if url.query().is_some() {
        return Err("must not have a query (the token goes in a header, never in a URL)".into());
    }
    if url.fragment().is_some() {
        return Err("must not have a fragment".into());
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_uuid_is_a_legacy_key_and_a_private_app_token_is_not() {
        assert!(looks_like_legacy_api_key(
            "1b4e28ba-2fa1-11d2-883f-0016d3cca427"
        ));
        assert!(looks_like_legacy_api_key("hapikey=abc"));
        assert!(!looks_like_legacy_api_key(
            "pat-na1-1b4e28ba-2fa1-11d2-883f-0016d3cca427"
        ));
    }

    #[test]
    fn a_base_url_with_a_query_or_user_info_is_refused() {
        assert!(parse_base_url("https://api.hubapi.com").is_ok());
        assert!(parse_base_url("http://127.0.0.1:8080/prefix/").is_ok());
        assert!(parse_base_url("https://api.hubapi.com/?hapikey=x").is_err());
        assert!(parse_base_url("https://me:pw@api.hubapi.com").is_err());
        assert!(parse_base_url("ftp://api.hubapi.com").is_err());
        assert!(parse_base_url("api.hubapi.com").is_err());
    }
}
