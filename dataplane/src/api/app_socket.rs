//! A launched app's connection to the node's app socket, as the control thread hands it over:
//! the connected descriptor, which the dataplane owns from then on, and the app it belongs to.

use std::fmt;
use std::os::fd::{AsRawFd as _, OwnedFd};

/// A launched app's id, as `start` answers it.
pub type AppId = u64;

/// A connection to the app socket from launched app `app` (or a process of its tree).
pub struct AppConnection {
    /// The app.
    pub app: AppId,
    /// The connected Unix stream socket.
    pub stream: OwnedFd,
}

impl fmt::Debug for AppConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppConnection")
            .field("app", &self.app)
            .field("fd", &self.stream.as_raw_fd())
            .finish()
    }
}

/// Two connections are the same when they are the same app's same descriptor.
impl PartialEq for AppConnection {
    fn eq(&self, other: &AppConnection) -> bool {
        self.app == other.app && self.stream.as_raw_fd() == other.stream.as_raw_fd()
    }
}

impl Eq for AppConnection {}
