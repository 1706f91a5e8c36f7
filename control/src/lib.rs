//! skywire's control plane: the viscript commands and their table (`command`), every text and
//! reply line for people (`render`), the control socket's line format (`protocol`), the control
//! thread that serves the socket and the Unix signals (`server`), the client that `visctl` uses
//! (`client`), a reload of the configuration file (`reload`), the app catalog (`catalog`), the launched apps' supervisor (`supervisor`), the
//! capabilities they are left with (`capability`), Viscript's signal protocol (`signal`) and
//! the client of the app socket through which launched apps use the mesh (`app_socket`).

pub mod app_socket;
pub mod capability;
pub mod catalog;
pub mod client;
pub mod command;
#[doc(hidden)]
pub mod fuzzing;
pub mod protocol;
pub mod reload;
pub mod render;
pub mod server;
pub mod signal;
pub mod supervisor;

pub use client::{ClientError, ControlClient};
pub use command::{
    Command, CommandError, CommandRole, CommandSpec, Parsed, Role, SyntaxError, COMMANDS,
};
pub use protocol::{Answer, MAX_LINE};
pub use server::{block_signals, ControlError, ControlOptions, ControlServer, Limits, Stopper};
