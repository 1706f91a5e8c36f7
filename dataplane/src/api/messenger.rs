//! What the messenger is asked and what it answers: send a message, list a mailbox, watch the
//! inbox; messages by id, sender or recipient, time and text.

use std::fmt;

use serde::{Serialize, Serializer};

use super::RequestId;
use crate::identity::NodeKey;

/// A message's id: 16 random bytes the sender draws, so that a retry is known for what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(pub [u8; 16]);

impl fmt::Display for MessageId {
    /// 32 hexadecimal digits.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl Serialize for MessageId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// One of the messenger's two stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mailbox {
    /// The messages received.
    Inbox,
    /// The messages sent that their recipient acknowledged.
    Outbox,
}

impl fmt::Display for Mailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mailbox::Inbox => "inbox",
            Mailbox::Outbox => "outbox",
        })
    }
}

/// A request to the messenger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessengerRequest {
    /// Delivers `text` to `peer`; answered with [`MessengerReply::Sent`] once `peer` has
    /// stored it, or with why it could not be delivered within the send timeout.
    Send {
        /// The recipient.
        peer: NodeKey,
        /// The message.
        text: String,
    },
    /// The messages of a mailbox, oldest first; answered with [`MessengerReply::Messages`].
    List {
        /// Which one.
        mailbox: Mailbox,
        /// Only those from (inbox) or to (outbox) this node.
        peer: Option<NodeKey>,
    },
    /// Answered with [`MessengerReply::Watching`], then once more with
    /// [`MessengerReply::Arrived`] for each message stored in the inbox from then on, until
    /// [`MessengerRequest::Unwatch`] names this request, or [`MessengerReply::WatchEnded`].
    Watch,
    /// Ends a watch; not answered.
    Unwatch {
        /// The [`MessengerRequest::Watch`] request.
        watch: RequestId,
    },
}

/// What the messenger answers. It serializes as the data it holds, untagged.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum MessengerReply {
    /// The recipient stored the message.
    Sent(SentReply),
    /// A mailbox's messages.
    Messages(MessagesReply),
    /// A watch has begun.
    Watching {
        /// The mailbox watched: the inbox.
        watching: Mailbox,
    },
    /// A message was stored in the inbox while a watch runs.
    Arrived {
        /// The message.
        message: MessageRow,
    },
    /// A watch ended without being asked to.
    WatchEnded {
        /// Why.
        ended: WatchEnd,
    },
}

/// Why a watch ended by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WatchEnd {
    /// The messenger stopped: its section left the configuration.
    Stopped,
    /// The node is stopping.
    Stopping,
}

/// A message delivered.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SentReply {
    /// The recipient.
    pub peer: NodeKey,
    /// The message's id.
    pub id: MessageId,
    /// Streams opened to deliver it: more than one when a stream broke and the message was
    /// sent again.
    pub attempts: u32,
    /// How long the delivery took, from the request to the recipient's answer.
    pub delivery_ms: f64,
    /// Why the outbox does not list it, when it could not be written there.
    pub outbox_error: Option<String>,
}

/// A mailbox's messages.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MessagesReply {
    /// Which mailbox.
    pub mailbox: Mailbox,
    /// How many messages matched; only the newest [`MessagesReply::messages`] are listed.
    pub total: usize,
    /// The newest matching messages, oldest first.
    pub messages: Vec<MessageRow>,
}

/// One message of a mailbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MessageRow {
    /// Its id.
    pub id: MessageId,
    /// The sender (inbox) or the recipient (outbox).
    pub peer: NodeKey,
    /// When it was stored: received (inbox) or acknowledged (outbox), in milliseconds since
    /// the Unix epoch.
    pub at_ms: u64,
    /// The text.
    pub text: String,
}
