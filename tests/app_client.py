#!/usr/bin/env python3
"""A client of skywired's app socket in Python (standard library only), written from the
README's description rather than from skywire's Rust code, so that tests prove the protocol
itself.

The socket is the Unix stream socket named by $SKYWIRE_APP_SOCKET (skywired sets it for the
apps it launches). Each connection starts with one request line:
  dial KEY PORT          a stream to PORT on the node KEY
  listen PORT [SERVICE]  this connection becomes the listener of PORT
  accept ID              this connection becomes incoming stream ID
answered by one line: "ok", or "error REASON: DETAIL". After "ok" to dial or accept, the
connection is the stream (bytes after the answer's newline are already the stream's; the end of
the stream is end of file; shutdown(SHUT_WR) ends this side). After "ok" to listen, the node
sends one line "incoming ID KEY PORT" for each stream that arrives.

Usage:
  app_client.py dial KEY PORT TEXT       send TEXT, end this side, print what comes back
  app_client.py listen PORT [SERVICE] [--streams N]
                                         accept N streams (1 unless given), one after the
                                         other; answer each with what it sent, upper-cased
  app_client.py ask LINE...              send one request line and print its answer

It prints "reply: TEXT", "listening", "incoming ID KEY PORT", "served ID: N bytes" and
"answer: LINE", and exits 0; 3 when a dial or listen is refused ("refused: REASON"); 4 when the
node breaks the protocol.
"""

import os
import socket
import sys


class Refused(Exception):
    pass


class ProtocolError(Exception):
    pass


def say(text):
    print(text, flush=True)


def connect():
    path = os.environ.get("SKYWIRE_APP_SOCKET")
    if not path:
        raise ProtocolError("SKYWIRE_APP_SOCKET is not set: run this as an app of skywired")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    return sock


def read_line(sock):
    """One line, read a byte at a time: what follows it belongs to the stream."""
    line = b""
    while True:
        byte = sock.recv(1)
        if not byte:
            raise ProtocolError("the connection ended before a whole line: %r" % line)
        if byte == b"\n":
            return line.decode()
        line += byte


def request(line):
    """A new connection that asked `line`; the answer must be ok."""
    sock = connect()
    sock.sendall(line.encode() + b"\n")
    answer = read_line(sock)
    if answer == "ok":
        return sock
    if answer.startswith("error "):
        sock.close()
        raise Refused(answer[len("error "):])
    raise ProtocolError("not an answer: %r" % answer)


def read_to_end(sock):
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


def dial(key, port, text):
    sock = request("dial %s %d" % (key, port))
    sock.sendall(text.encode())
    sock.shutdown(socket.SHUT_WR)
    say("reply: " + read_to_end(sock).decode())
    sock.close()


def listen(port, service, streams):
    line = "listen %d" % port if service is None else "listen %d %s" % (port, service)
    listener = request(line)
    say("listening")
    for _ in range(streams):
        incoming = read_line(listener)
        words = incoming.split(" ")
        if len(words) != 4 or words[0] != "incoming":
            raise ProtocolError("not an incoming line: %r" % incoming)
        say(incoming)
        stream = request("accept " + words[1])
        data = read_to_end(stream)
        stream.sendall(data.upper())
        stream.shutdown(socket.SHUT_WR)
        stream.close()
        say("served %s: %d bytes" % (words[1], len(data)))
    listener.close()


def ask(line):
    sock = connect()
    sock.sendall(line.encode() + b"\n")
    say("answer: " + read_line(sock))
    sock.close()


def main(args):
    try:
        if len(args) == 4 and args[0] == "dial":
            dial(args[1], int(args[2]), args[3])
        elif args and args[0] == "listen" and len(args) >= 2:
            rest = args[2:]
            streams = 1
            if "--streams" in rest:
                at = rest.index("--streams")
                streams = int(rest[at + 1])
                rest = rest[:at] + rest[at + 2:]
            listen(int(args[1]), rest[0] if rest else None, streams)
        elif len(args) >= 2 and args[0] == "ask":
            ask(" ".join(args[1:]))
        else:
            say(__doc__)
            return 2
    except Refused as refusal:
        say("refused: %s" % refusal)
        return 3
    except (ProtocolError, OSError) as error:
        say("protocol error: %s" % error)
        return 4
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
