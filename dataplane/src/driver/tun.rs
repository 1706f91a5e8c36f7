//! The VPN apps' TUN devices: created by name (`TUNSETIFF` by hand, for the offload that
//! tun-tap cannot ask for), non-blocking so that the mio loop can read them until
//! `WouldBlock`, and gone when closed (the kernel removes a TUN device whose last descriptor
//! closes, and its addresses and routes with it, even when the daemon is killed).
//!
//! The device carries a `virtio_net_hdr` in front of every packet (`IFF_VNET_HDR`) and takes
//! TCP segmentation offload, so the kernel hands over one large TCP segment where it would
//! have sent dozens of packets; the VPN apps cut it up.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::time::Instant;

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use nix::libc;

use crate::api::vpn::VpnApp;
use crate::service::Service;
use crate::vpn::offload::VNET_HDR_LEN;
use crate::vpn::{TunError, TunName};

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const IFF_TUN: libc::c_short = 0x0001;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;
const TUN_F_CSUM: libc::c_uint = 0x01;
const TUN_F_TSO4: libc::c_uint = 0x02;
const TUN_F_TSO6: libc::c_uint = 0x04;

/// The server's TUN device.
pub(super) const TUN_SERVER: Token = Token(8);
/// The client's TUN device.
pub(super) const TUN_CLIENT: Token = Token(9);
/// Frames read from one TUN device per wake-up before the loop looks at its other work and
/// sends what they became: a frame can be a 64 KiB segment, dozens of datagrams.
const TUN_BUDGET: usize = 8;
/// Room for the largest frame a TUN device hands out: a 64 KiB segment and its header.
const TUN_BUFFER: usize = 65_536 + VNET_HDR_LEN;

/// `struct ifreq` as `TUNSETIFF` reads it: the name, then the flags.
#[repr(C)]
struct IfReq {
    name: [u8; 16],
    flags: libc::c_short,
    _rest: [u8; 22],
}

/// A TUN device of this process.
#[derive(Debug)]
struct TunDevice {
    file: File,
    name: TunName,
}

impl TunDevice {
    /// Creates the device (no packet-info header, a `virtio_net_hdr` instead, TCP
    /// segmentation offload on, non-blocking), link down, no address.
    fn create(name: &TunName) -> Result<TunDevice, TunError> {
        let create_error = |source: io::Error| match source.raw_os_error() {
            Some(libc::EPERM | libc::EACCES) => TunError::Permission {
                name: name.to_string(),
            },
            Some(libc::EBUSY) => TunError::Busy {
                name: name.to_string(),
            },
            _ => TunError::Create {
                name: name.to_string(),
                source,
            },
        };
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open("/dev/net/tun")
            .map_err(create_error)?;
        let mut request = IfReq {
            name: [0; 16],
            flags: IFF_TUN | IFF_NO_PI | IFF_VNET_HDR,
            _rest: [0; 22],
        };
        // TunName guarantees at most 15 bytes: the name stays NUL-terminated.
        request.name[..name.as_str().len()].copy_from_slice(name.as_str().as_bytes());
        // SAFETY: TUNSETIFF reads and writes one `struct ifreq`, which IfReq lays out.
        if unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF, &mut request) } < 0 {
            return Err(create_error(io::Error::last_os_error()));
        }
        let offloads = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6;
        // SAFETY: TUNSETOFFLOAD takes its flags by value.
        if unsafe { libc::ioctl(file.as_raw_fd(), TUNSETOFFLOAD, offloads) } < 0 {
            // Frames still carry the header, with nothing to undo.
            log::info!(
                "TUN {name}: no segmentation offload ({}), packets come one by one",
                io::Error::last_os_error()
            );
        }
        Ok(TunDevice {
            file,
            name: name.clone(),
        })
    }
}

/// The two apps' devices, and the buffer frames are read into.
#[derive(Debug, Default)]
pub(super) struct Tuns {
    server: Option<TunDevice>,
    client: Option<TunDevice>,
    buf: Vec<u8>,
    /// Whether a device may have frames left after its budget ran out: server, client.
    backlog: [bool; 2],
}

impl Tuns {
    fn slot(&mut self, app: VpnApp) -> &mut Option<TunDevice> {
        match app {
            VpnApp::Server => &mut self.server,
            VpnApp::Client => &mut self.client,
        }
    }

    /// Creates `app`'s device and watches it.
    pub(super) fn open(
        &mut self,
        registry: &Registry,
        app: VpnApp,
        name: &TunName,
    ) -> Result<(), TunError> {
        let device = TunDevice::create(name)?;
        let token = match app {
            VpnApp::Server => TUN_SERVER,
            VpnApp::Client => TUN_CLIENT,
        };
        registry
            .register(
                &mut SourceFd(&device.file.as_raw_fd()),
                token,
                Interest::READABLE,
            )
            .map_err(|source| TunError::Register {
                name: name.to_string(),
                source,
            })?;
        if self.buf.is_empty() {
            self.buf = vec![0; TUN_BUFFER];
        }
        *self.slot(app) = Some(device);
        Ok(())
    }

    /// Closes `app`'s device: the kernel removes it.
    pub(super) fn close(&mut self, registry: &Registry, app: VpnApp) {
        if let Some(device) = self.slot(app).take() {
            let _ = registry.deregister(&mut SourceFd(&device.file.as_raw_fd()));
        }
    }

    /// Marks `app`'s device readable.
    pub(super) fn set_readable(&mut self, app: VpnApp) {
        self.backlog[slot_index(app)] = true;
    }

    /// Whether a device has frames left to read.
    pub(super) fn has_backlog(&self) -> bool {
        self.backlog.iter().any(|more| *more)
    }

    /// Reads the devices that are readable into the service, up to a budget each.
    pub(super) fn read(&mut self, now: Instant, service: &mut Service) {
        for app in [VpnApp::Server, VpnApp::Client] {
            let index = slot_index(app);
            if self.backlog[index] {
                self.backlog[index] = self.read_device(now, service, app);
            }
        }
    }

    /// Reads up to [`TUN_BUDGET`] frames of `app`'s device; says whether more may be waiting.
    fn read_device(&mut self, now: Instant, service: &mut Service, app: VpnApp) -> bool {
        let Tuns {
            server,
            client,
            buf,
            ..
        } = self;
        let Some(device) = (match app {
            VpnApp::Server => server.as_ref(),
            VpnApp::Client => client.as_ref(),
        }) else {
            return false;
        };
        for _ in 0..TUN_BUDGET {
            let len = match io::Read::read(&mut &device.file, buf) {
                Ok(len) => len,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return false,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => {
                    log::warn!("TUN {} read: {error}", device.name);
                    return false;
                }
            };
            service.handle_tun_frame(now, app, &mut buf[..len]);
        }
        true
    }

    /// Writes one frame to `app`'s device; a full or failing device drops it, as a network
    /// card would.
    pub(super) fn write(&self, app: VpnApp, frame: &[u8]) {
        let device = match app {
            VpnApp::Server => self.server.as_ref(),
            VpnApp::Client => self.client.as_ref(),
        };
        if let Some(device) = device {
            if let Err(error) = io::Write::write(&mut &device.file, frame) {
                log::debug!("TUN {} write: {error}", device.name);
            }
        }
    }
}

fn slot_index(app: VpnApp) -> usize {
    match app {
        VpnApp::Server => 0,
        VpnApp::Client => 1,
    }
}
