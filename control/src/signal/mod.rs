//! Viscript's signal protocol: the framing, the messages, the server that launched apps connect
//! to (driven by the control thread's mio loop) and the client library an app uses to answer
//! ping, resource usage and shutdown.

pub mod client;
mod events;
pub mod frame;
pub mod message;
pub mod owner;
pub mod server;

use mio::Token;

pub use client::{ClientConfig, ClientError, SignalClient, SignalClientHandle};
pub use events::{SignalError, SignalEvent, SignalReply, SignalServerError};
pub use frame::{Decoder, Frame, FrameError, MAX_BODY};
pub use message::Request;
pub use server::{ListenerState, RequestHandle, SignalServer, SignalServerOptions};

/// An app's id: given by the supervisor when it is started, sequential, never reused in a
/// daemon's life, passed to the app in `SIGNAL_CLIENT_ID`.
pub type AppId = u64;

/// The signal server's port when the config names none.
pub const DEFAULT_PORT: u16 = 7999;

/// Environment variable telling an app to be a signal client (`true`).
pub const ENV_CLIENT: &str = "SIGNAL_CLIENT";
/// Environment variable with the app's id.
pub const ENV_CLIENT_ID: &str = "SIGNAL_CLIENT_ID";
/// Environment variable with the server's address (`127.0.0.1:PORT`).
pub const ENV_SERVER_ADDRESS: &str = "SIGNAL_SERVER_ADDRESS";

/// A block of consecutive mio tokens handed to one component of the control thread's loop,
/// which uses no token outside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenRange {
    first: usize,
    len: usize,
}

impl TokenRange {
    /// The `len` tokens from `first` on.
    pub const fn new(first: Token, len: usize) -> TokenRange {
        TokenRange {
            first: first.0,
            len,
        }
    }

    /// How many tokens.
    pub const fn len(&self) -> usize {
        self.len
    }

    /// Whether the range is empty.
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether `token` is in the range.
    pub fn contains(&self, token: Token) -> bool {
        self.index_of(token).is_some()
    }

    /// The `index`th token of the range.
    pub fn get(&self, index: usize) -> Option<Token> {
        (index < self.len).then(|| Token(self.first + index))
    }

    /// Where `token` is in the range.
    pub fn index_of(&self, token: Token) -> Option<usize> {
        let index = token.0.checked_sub(self.first)?;
        (index < self.len).then_some(index)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn token_range() {
        let range = TokenRange::new(Token(10), 3);
        assert_eq!(range.get(0), Some(Token(10)));
        assert_eq!(range.get(3), None);
        assert_eq!(range.index_of(Token(12)), Some(2));
        assert!(!range.contains(Token(9)));
        assert!(!range.contains(Token(13)));
    }
}
