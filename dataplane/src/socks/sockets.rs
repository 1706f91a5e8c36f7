//! The kernel sockets the SOCKS apps asked the driver for: who owns each id, the operations
//! waiting to be handed out (listen, connect, close), and the sockets whose reads, writes or
//! shutdown may be due, each queued once, in turn.

use std::collections::VecDeque;
use std::net::SocketAddr;

use crate::service::{SocketId, SocketOp};

/// Who a kernel socket belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Owner {
    /// The client app's listening socket.
    ClientListener,
    /// A client connection, by its index.
    Client(usize),
    /// A server connection's stream to its target, by the connection's index.
    Server(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Free,
    Owned(Owner),
    /// Closed by its owner; free once the driver has been told.
    Closing,
}

#[derive(Debug)]
enum Queued {
    Listen(SocketId, SocketAddr),
    Connect(SocketId, SocketAddr),
    Close(SocketId),
}

/// The apps' kernel sockets.
#[derive(Debug, Default)]
pub(super) struct Sockets {
    slots: Vec<Slot>,
    free: Vec<u32>,
    queued_ops: VecDeque<Queued>,
    io: VecDeque<SocketId>,
    in_io: Vec<bool>,
}

impl Sockets {
    /// A new id for `owner`; the driver learns of it from the operation that follows, or
    /// from the accept it answers.
    pub(super) fn open(&mut self, owner: Owner) -> SocketId {
        match self.free.pop() {
            Some(index) => {
                self.slots[index as usize] = Slot::Owned(owner);
                SocketId(index)
            }
            None => {
                self.slots.push(Slot::Owned(owner));
                self.in_io.push(false);
                SocketId((self.slots.len() - 1) as u32)
            }
        }
    }

    /// A new listener on `address` for `owner`.
    pub(super) fn listen(&mut self, owner: Owner, address: SocketAddr) -> SocketId {
        let socket = self.open(owner);
        self.queued_ops.push_back(Queued::Listen(socket, address));
        socket
    }

    /// A new stream to `address` for `owner`.
    pub(super) fn connect(&mut self, owner: Owner, address: SocketAddr) -> SocketId {
        let socket = self.open(owner);
        self.queued_ops.push_back(Queued::Connect(socket, address));
        socket
    }

    /// Closes `socket`: the driver is told, and the id is free after that.
    pub(super) fn close(&mut self, socket: SocketId) {
        if let Some(slot @ Slot::Owned(_)) = self.slots.get_mut(socket.index()) {
            *slot = Slot::Closing;
            self.queued_ops.push_back(Queued::Close(socket));
        }
    }

    /// Frees the id of a socket the driver holds nothing for (its listen failed).
    pub(super) fn forget(&mut self, socket: SocketId) {
        if let Some(slot @ Slot::Owned(_)) = self.slots.get_mut(socket.index()) {
            *slot = Slot::Free;
            self.free.push(socket.0);
        }
    }

    /// Who owns `socket`, while it is open.
    pub(super) fn owner(&self, socket: SocketId) -> Option<Owner> {
        match self.slots.get(socket.index()) {
            Some(Slot::Owned(owner)) => Some(*owner),
            _ => None,
        }
    }

    /// Queues `socket` for a look at its reads and writes, unless it is queued already.
    pub(super) fn wake(&mut self, socket: SocketId) {
        if let Some(queued @ false) = self.in_io.get_mut(socket.index()) {
            *queued = true;
            self.io.push_back(socket);
        }
    }

    /// The next listen, connect or close to hand out.
    pub(super) fn next_queued_op(&mut self) -> Option<SocketOp<'static>> {
        Some(match self.queued_ops.pop_front()? {
            Queued::Listen(socket, address) => SocketOp::Listen { socket, address },
            Queued::Connect(socket, address) => SocketOp::Connect { socket, address },
            Queued::Close(socket) => {
                if let Some(slot) = self.slots.get_mut(socket.index()) {
                    *slot = Slot::Free;
                    self.free.push(socket.0);
                }
                SocketOp::Close { socket }
            }
        })
    }

    /// The next socket whose reads and writes may be due.
    pub(super) fn next_woken(&mut self) -> Option<SocketId> {
        let socket = self.io.pop_front()?;
        if let Some(queued) = self.in_io.get_mut(socket.index()) {
            *queued = false;
        }
        Some(socket)
    }

    /// Whether operations wait to be handed out.
    pub(super) fn has_work(&self) -> bool {
        !self.queued_ops.is_empty() || !self.io.is_empty()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_reused_only_after_the_driver_was_told_to_close() {
        let mut sockets = Sockets::default();
        let address = "127.0.0.1:1".parse().unwrap();
        let first = sockets.connect(Owner::Server(0), address);
        assert!(matches!(
            sockets.next_queued_op(),
            Some(SocketOp::Connect { socket, .. }) if socket == first
        ));
        sockets.close(first);
        assert_eq!(sockets.owner(first), None);
        let second = sockets.open(Owner::Client(1));
        assert_ne!(second, first, "the close is not handed out yet");
        assert!(matches!(
            sockets.next_queued_op(),
            Some(SocketOp::Close { socket }) if socket == first
        ));
        assert_eq!(sockets.open(Owner::Client(2)), first);
        assert_eq!(sockets.owner(first), Some(Owner::Client(2)));
    }

    #[test]
    fn a_socket_is_queued_once_until_it_is_looked_at() {
        let mut sockets = Sockets::default();
        let socket = sockets.open(Owner::Client(0));
        sockets.wake(socket);
        sockets.wake(socket);
        assert_eq!(sockets.next_woken(), Some(socket));
        assert_eq!(sockets.next_woken(), None);
        sockets.wake(socket);
        assert!(sockets.has_work());
    }
}
