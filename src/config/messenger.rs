//! The `messenger` section: the built-in messenger's allow list and limits, checked into the
//! dataplane's settings. The section's presence runs the messenger; an empty one
//! (`messenger: {}`, or the heading alone) runs it with the defaults.

use std::ops::RangeInclusive;

use serde::{Deserialize, Deserializer};
use skywire_dataplane::messenger::{wire, Settings};

use super::locate::KeyPath;
use super::{Checker, ConfigError, Whole};

const MAX_TEXT_BYTES: RangeInclusive<u64> = 1..=wire::MAX_TEXT as u64;
const MAX_INBOX: RangeInclusive<u64> = 1..=1_000_000;
const PER_SENDER_PER_MINUTE: RangeInclusive<u64> = 1..=6_000;
const SEND_TIMEOUT_MS: RangeInclusive<u64> = 100..=600_000;
const MAX_STREAMS: RangeInclusive<u64> = 1..=1_024;

#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    default,
    expecting = "a mapping with allow, max_text_bytes, max_inbox, per_sender_per_minute, send_timeout_ms and max_streams"
)]
pub(super) struct RawMessenger {
    allow: Option<Vec<String>>,
    max_text_bytes: Option<Whole>,
    max_inbox: Option<Whole>,
    per_sender_per_minute: Option<Whole>,
    send_timeout_ms: Option<Whole>,
    max_streams: Option<Whole>,
}

/// The section as written: `None` when it is missing, the defaults when only its heading is
/// there (every key commented out makes it `null`).
pub(super) fn present<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<RawMessenger>, D::Error> {
    Option::<RawMessenger>::deserialize(deserializer).map(|raw| Some(raw.unwrap_or_default()))
}

impl Checker<'_> {
    pub(super) fn messenger(&self, raw: RawMessenger) -> Result<Settings, ConfigError> {
        let at = KeyPath::top("messenger");
        let defaults = Settings::default();
        let allow = match raw.allow {
            None => None,
            Some(keys) => Some(self.key_list(&at.key("allow"), keys, "a sender's public key")?),
        };
        let count = |key: &str, value, default: usize, allowed, unit| {
            self.number(&at.key(key), value, default as u64, allowed, unit)
                .map(|value| value as usize)
        };
        Ok(Settings {
            allow,
            max_text_bytes: count(
                "max_text_bytes",
                raw.max_text_bytes,
                defaults.max_text_bytes,
                MAX_TEXT_BYTES,
                "bytes",
            )?,
            max_inbox: count(
                "max_inbox",
                raw.max_inbox,
                defaults.max_inbox,
                MAX_INBOX,
                "messages",
            )?,
            per_sender_per_minute: count(
                "per_sender_per_minute",
                raw.per_sender_per_minute,
                defaults.per_sender_per_minute as usize,
                PER_SENDER_PER_MINUTE,
                "messages",
            )? as u32,
            send_timeout: self.millis_or(
                &at.key("send_timeout_ms"),
                raw.send_timeout_ms,
                defaults.send_timeout,
                SEND_TIMEOUT_MS,
            )?,
            max_streams: count(
                "max_streams",
                raw.max_streams,
                defaults.max_streams,
                MAX_STREAMS,
                "streams",
            )?,
        })
    }
}
