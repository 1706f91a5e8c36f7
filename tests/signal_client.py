#!/usr/bin/env python3
"""A Viscript signal client in Python (standard library only), written from the protocol's
description rather than from skywire's Rust code, so that tests prove the wire format itself.

Framing (all integers big-endian):
  DATA  [0x01][seq u32][len u32][body]   answered by ACK [0x80][seq u32]
  PING  [0x81][unix ms u64]              answered by PONG [0x82][the same 8 bytes]
A body is [op u8][JSON]; a reply's op is the request's op | 0x80.
  client -> server: 0x00 register {"Id": N}, echoed back with op 0x80
  server -> client: 0x00 resource usage (null -> JSON object), 0x01 ping (null -> null),
                    0x02 shutdown (null -> {"Pid": N}, then the client exits)

It prints one line per event on stdout ("registered 3", "pong ok", "ping", "resource usage",
"shutdown", "refused") and exits 0 after a shutdown, 3 when the registration is refused
(the server closes the connection without echoing it), 4 on a protocol error.

Usage: signal_client.py [--id N] [--address HOST:PORT] [--reconnect-once] [--ignore-shutdown]
The id and address default to $SIGNAL_CLIENT_ID and $SIGNAL_SERVER_ADDRESS.
"""

import json
import os
import socket
import struct
import sys
import time

DATA, ACK, PING, PONG = 0x01, 0x80, 0x81, 0x82
REPLY = 0x80
OP_REGISTER = 0x00
OP_RESOURCE_USAGE, OP_PING, OP_SHUTDOWN = 0x00, 0x01, 0x02
KEEPALIVE_SECONDS = 5


def say(text):
    print(text, flush=True)


class ProtocolError(Exception):
    pass


class Connection:
    def __init__(self, address):
        host, port = address.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        self.sock.settimeout(1.0)
        self.buffer = b""
        self.seq = 0
        self.pings = []

    def send_data(self, op, value):
        self.seq += 1
        body = bytes([op]) + json.dumps(value, separators=(",", ":")).encode()
        self.sock.sendall(struct.pack(">BII", DATA, self.seq, len(body)) + body)
        return self.seq

    def send_ping(self):
        ms = int(time.time() * 1000)
        self.pings.append(ms)
        self.sock.sendall(struct.pack(">BQ", PING, ms))

    def _fill(self):
        """Reads more bytes; False at end of stream, None on a read timeout."""
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            return None
        except ConnectionResetError:
            return False
        if not chunk:
            return False
        self.buffer += chunk
        return True

    def next_frame(self):
        """The next frame as a tuple, None on a quiet second, False at end of stream."""
        while True:
            frame = self._parse()
            if frame is not None:
                return frame
            filled = self._fill()
            if not filled:
                return filled

    def _parse(self):
        if not self.buffer:
            return None
        kind = self.buffer[0]
        if kind == DATA:
            if len(self.buffer) < 9:
                return None
            _, seq, length = struct.unpack(">BII", self.buffer[:9])
            if length > 64 * 1024:
                raise ProtocolError("body of %d bytes" % length)
            if len(self.buffer) < 9 + length:
                return None
            body = self.buffer[9:9 + length]
            self.buffer = self.buffer[9 + length:]
            # Every DATA frame is acknowledged.
            self.sock.sendall(struct.pack(">BI", ACK, seq))
            if not body:
                raise ProtocolError("empty body")
            return ("data", body[0], json.loads(body[1:].decode()))
        if kind == ACK:
            if len(self.buffer) < 5:
                return None
            (seq,) = struct.unpack(">I", self.buffer[1:5])
            self.buffer = self.buffer[5:]
            return ("ack", seq)
        if kind in (PING, PONG):
            if len(self.buffer) < 9:
                return None
            (ms,) = struct.unpack(">Q", self.buffer[1:9])
            self.buffer = self.buffer[9:]
            return ("ping" if kind == PING else "pong", ms)
        raise ProtocolError("unknown frame type 0x%02x" % kind)


def register(address, app_id):
    """Connects and registers; the connection, or None when the server refused."""
    conn = Connection(address)
    reg_seq = conn.send_data(OP_REGISTER, {"Id": app_id})
    acked = False
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        frame = conn.next_frame()
        if frame is False:
            return None
        if frame is None:
            continue
        if frame[0] == "ack" and frame[1] == reg_seq:
            acked = True
        elif frame[0] == "data" and frame[1] == OP_REGISTER | REPLY:
            if frame[2] != {"Id": app_id}:
                raise ProtocolError("registration echo %r" % (frame[2],))
            return conn
    raise ProtocolError("no answer to the registration (acked: %s)" % acked)


def main(argv):
    app_id = os.environ.get("SIGNAL_CLIENT_ID")
    address = os.environ.get("SIGNAL_SERVER_ADDRESS", "127.0.0.1:7999")
    reconnect_once = ignore_shutdown = False
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg == "--id":
            app_id = args.pop(0)
        elif arg == "--address":
            address = args.pop(0)
        elif arg == "--reconnect-once":
            reconnect_once = True
        elif arg == "--ignore-shutdown":
            ignore_shutdown = True
        else:
            print("unknown argument %r" % arg, file=sys.stderr)
            return 2
    if app_id is None:
        print("no app id: set SIGNAL_CLIENT_ID or pass --id", file=sys.stderr)
        return 2
    app_id = int(app_id)

    conn = register(address, app_id)
    if conn is None:
        say("refused")
        return 3
    say("registered %d" % app_id)
    if reconnect_once:
        # As Viscript's client does after a drop: a new connection with the same id.
        newer = register(address, app_id)
        if newer is None:
            say("refused")
            return 3
        conn.sock.close()
        conn = newer
        say("registered again %d" % app_id)

    answered = 0
    conn.send_ping()
    next_keepalive = time.monotonic() + KEEPALIVE_SECONDS
    while True:
        if time.monotonic() >= next_keepalive:
            conn.send_ping()
            next_keepalive = time.monotonic() + KEEPALIVE_SECONDS
        frame = conn.next_frame()
        if frame is False:
            say("disconnected")
            return 1
        if frame is None:
            continue
        if frame[0] == "pong":
            if frame[1] not in conn.pings:
                raise ProtocolError("pong with %d, not a ping's value" % frame[1])
            conn.pings.remove(frame[1])
            say("pong ok")
        elif frame[0] == "ping":
            raise ProtocolError("the server sent a PING (servers only answer them)")
        elif frame[0] == "data":
            op, value = frame[1], frame[2]
            if value is not None:
                raise ProtocolError("request op 0x%02x with %r, not null" % (op, value))
            if op == OP_PING:
                answered += 1
                conn.send_data(OP_PING | REPLY, None)
                say("ping")
            elif op == OP_RESOURCE_USAGE:
                answered += 1
                conn.send_data(OP_RESOURCE_USAGE | REPLY, {"Client": "python", "Answered": answered})
                say("resource usage")
            elif op == OP_SHUTDOWN:
                conn.send_data(OP_SHUTDOWN | REPLY, {"Pid": os.getpid()})
                say("shutdown")
                if not ignore_shutdown:
                    conn.sock.close()
                    return 0
            else:
                say("unknown op 0x%02x" % op)


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except ProtocolError as err:
        print("protocol error: %s" % err, file=sys.stderr, flush=True)
        sys.exit(4)
