//! What the service asks of whoever drives it (the mio driver, or the simulator) and what it
//! hears back: kernel TCP sockets named by id, name lookups, changes to the host (TUN
//! devices, addresses, routes, the lease file), and the messenger's logs. Plain data: the
//! service never holds a descriptor, runs a program or opens a file.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use crate::api::messenger::{Mailbox, MessageId, MessageRow};
use crate::api::vpn::VpnApp;
use crate::identity::NodeKey;
use crate::vpn::{Prefix, TunError, TunName};

/// A kernel TCP socket (a listener or a stream) that the driver holds for the service. Ids
/// are small and reused, but only after the driver was told to close the old socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SocketId(pub(crate) u32);

impl SocketId {
    /// The id as an index, for a driver's table of sockets.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// An operation on a kernel socket, for the driver to do at once. Each but [`SocketOp::Close`]
/// is answered with a [`SocketEvent`] for the same socket, before the next operation is asked
/// for: the buffers it lends are valid until then.
#[derive(Debug)]
pub enum SocketOp<'a> {
    /// Listen for TCP connections on `address`; answered with [`SocketEvent::Listening`].
    /// Connections are announced with `Service::handle_accepted`.
    Listen {
        /// The new listener.
        socket: SocketId,
        /// Where to listen.
        address: SocketAddr,
    },
    /// Open a TCP connection to `address`; answered with [`SocketEvent::Connected`] once it is
    /// made or has failed.
    Connect {
        /// The new stream.
        socket: SocketId,
        /// Where to connect.
        address: SocketAddr,
    },
    /// Read into `buf`; answered with [`SocketEvent::Read`].
    Read {
        /// The stream.
        socket: SocketId,
        /// Where the bytes go (the service's own buffer, lent).
        buf: &'a mut [u8],
    },
    /// Write `bytes`; answered with [`SocketEvent::Written`].
    Write {
        /// The stream.
        socket: SocketId,
        /// What to write (lent).
        bytes: &'a [u8],
    },
    /// Send a FIN: nothing more will be written; answered with [`SocketEvent::Shut`].
    Shutdown {
        /// The stream.
        socket: SocketId,
    },
    /// Close the socket and forget it; not answered.
    Close {
        /// The socket.
        socket: SocketId,
    },
}

/// What happened on a kernel socket: the answer to an operation, or readiness.
#[derive(Debug)]
pub enum SocketEvent {
    /// The listener is bound to this address (the real port when 0 was asked), or why not.
    Listening(io::Result<SocketAddr>),
    /// The connection is made, or why not.
    Connected(io::Result<()>),
    /// How many bytes a read put into the lent buffer; 0 when the peer closed its side.
    Read(io::Result<usize>),
    /// How many bytes of the lent ones a write took.
    Written(io::Result<usize>),
    /// The FIN went out, or why not.
    Shut(io::Result<()>),
    /// Reading may find bytes, the end of the stream, or an error.
    Readable,
    /// Writing may take bytes.
    Writable,
}

/// An address of one of the host's network interfaces, as the driver read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceAddress {
    /// The interface's name.
    pub interface: String,
    /// The address.
    pub address: IpAddr,
    /// The length of the prefix that is on-link with it.
    pub prefix_len: u8,
}

/// Identifies a name lookup and its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LookupId(pub(crate) u64);

/// A name to resolve, off the dataplane thread; answered with `Service::handle_resolved`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookup {
    /// Pairs the answer with the question.
    pub id: LookupId,
    /// The host name.
    pub name: String,
    /// The port to put in the addresses.
    pub port: u16,
}

/// A change to the host that the VPN apps need: slow or privileged work for the driver, off
/// the dataplane thread where it runs a program or waits on the disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostOp {
    /// Create the TUN device `name` for `app`, link down, no address; its frames then go to
    /// `Service::handle_tun_frame`. Answered with [`HostResult::TunOpened`].
    OpenTun {
        /// The app it is for.
        app: VpnApp,
        /// The device's name.
        name: TunName,
    },
    /// Give `app`'s device `addresses` (after removing those it had, when `replace`) and
    /// `mtu`, and bring it up. Answered with [`HostResult::TunConfigured`].
    ConfigureTun {
        /// The app.
        app: VpnApp,
        /// Its device.
        name: TunName,
        /// Addresses with their prefix lengths.
        addresses: Vec<(IpAddr, u8)>,
        /// The MTU.
        mtu: u16,
        /// Whether the device's addresses go first.
        replace: bool,
    },
    /// Send `routes` (those of the families the tunnel has an address for) through the VPN
    /// client's device `name`, keeping the node's own marked datagrams on the underlay.
    /// Answered with [`HostResult::RoutesInstalled`]; on failure nothing stays installed.
    InstallRoutes {
        /// The client's device.
        name: TunName,
        /// What to route through it.
        routes: Vec<Prefix>,
        /// Whether the tunnel has an IPv4 address.
        ipv4: bool,
        /// Whether the tunnel has an IPv6 address.
        ipv6: bool,
    },
    /// Remove what [`HostOp::InstallRoutes`] installed. Answered with
    /// [`HostResult::RoutesRemoved`].
    RemoveRoutes,
    /// Close `app`'s device: the kernel removes it, with its addresses and routes. Not
    /// answered.
    CloseTun {
        /// The app.
        app: VpnApp,
    },
    /// Put `mark` (0: none) on the node's UDP datagrams, so that policy routing keeps them out
    /// of the tunnel. Not answered.
    MarkDatagrams(u32),
    /// Read the VPN server's lease file. Answered with [`HostResult::LeasesLoaded`].
    LoadLeases {
        /// The file.
        file: PathBuf,
    },
    /// Replace the lease file's contents so that a crash leaves the old or the new, never a
    /// mix. Answered with [`HostResult::LeasesSaved`].
    SaveLeases {
        /// The file.
        file: PathBuf,
        /// Its new contents.
        text: String,
    },
}

/// The answer to a [`HostOp`].
#[derive(Debug)]
pub enum HostResult {
    /// Answers [`HostOp::OpenTun`].
    TunOpened {
        /// The app.
        app: VpnApp,
        /// Whether the device exists now.
        result: Result<(), TunError>,
    },
    /// Answers [`HostOp::ConfigureTun`].
    TunConfigured {
        /// The app.
        app: VpnApp,
        /// Whether the device is configured.
        result: Result<(), TunError>,
    },
    /// Answers [`HostOp::InstallRoutes`].
    RoutesInstalled(Result<(), TunError>),
    /// Answers [`HostOp::RemoveRoutes`].
    RoutesRemoved,
    /// Answers [`HostOp::LoadLeases`]: the file's contents, `None` when there is none.
    LeasesLoaded {
        /// The file.
        file: PathBuf,
        /// What was read.
        text: io::Result<Option<String>>,
    },
    /// Answers [`HostOp::SaveLeases`].
    LeasesSaved {
        /// The file.
        file: PathBuf,
        /// Whether it was written.
        result: io::Result<()>,
    },
}

impl HostOp {
    /// The app the change is for.
    pub fn app(&self) -> VpnApp {
        match self {
            HostOp::OpenTun { app, .. }
            | HostOp::ConfigureTun { app, .. }
            | HostOp::CloseTun { app } => *app,
            HostOp::InstallRoutes { .. } | HostOp::RemoveRoutes | HostOp::MarkDatagrams(_) => {
                VpnApp::Client
            }
            HostOp::LoadLeases { .. } | HostOp::SaveLeases { .. } => VpnApp::Server,
        }
    }

    /// Whether the driver answers it with a [`HostResult`].
    pub fn is_answered(&self) -> bool {
        !matches!(self, HostOp::CloseTun { .. } | HostOp::MarkDatagrams(_))
    }
}

impl HostResult {
    /// The app the answer is for.
    pub fn app(&self) -> VpnApp {
        match self {
            HostResult::TunOpened { app, .. } | HostResult::TunConfigured { app, .. } => *app,
            HostResult::RoutesInstalled(_) | HostResult::RoutesRemoved => VpnApp::Client,
            HostResult::LeasesLoaded { .. } | HostResult::LeasesSaved { .. } => VpnApp::Server,
        }
    }
}

/// A write or read of the messenger's logs, for the driver to do off the dataplane thread (it
/// waits on the disk). Each is answered with a [`StoreResult`], in the order asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreOp {
    /// Read `mailbox`'s log and cut off a torn tail (`messenger::records::parse` says where);
    /// no file is an empty log. Answered with [`StoreResult::Loaded`].
    Load {
        /// Which log.
        mailbox: Mailbox,
        /// Its file.
        file: PathBuf,
    },
    /// Append `message`, stamped with the wall clock, to `mailbox`'s log and wait until it is
    /// on the disk (fsync): only then is it answered, with [`StoreResult::Appended`]. A write
    /// that fails leaves the log as it was.
    Append {
        /// Which log.
        mailbox: Mailbox,
        /// Its file.
        file: PathBuf,
        /// The message; its `at_ms` is set when it is written.
        message: MessageRow,
    },
}

/// The answer to a [`StoreOp`].
#[derive(Debug)]
pub enum StoreResult {
    /// Answers [`StoreOp::Load`].
    Loaded {
        /// Which log.
        mailbox: Mailbox,
        /// Its records, and how many bytes of torn tail were cut off; or why it could not be
        /// read.
        result: io::Result<(Vec<MessageRow>, usize)>,
    },
    /// Answers [`StoreOp::Append`].
    Appended {
        /// Which log.
        mailbox: Mailbox,
        /// The message's sender (inbox) or recipient (outbox), to find what waits for it.
        peer: NodeKey,
        /// Its id.
        id: MessageId,
        /// The message as written, with its time; or why it could not be.
        result: io::Result<MessageRow>,
    },
}
