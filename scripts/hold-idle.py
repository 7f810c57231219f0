#!/usr/bin/env python3
"""Holds idle client connections open for scripts/bench-memory.sh.

Usage: hold-idle.py MODE PORT SOURCE_IP COUNT
  MODE  h1   plain HTTP/1.1 keep-alive
        tls  HTTP/1.1 over TLS (ALPN http/1.1)
        h2   HTTP/2 over TLS (ALPN h2), frames written by hand: the
             preface, an empty SETTINGS, one GET on stream 1, and an ACK
             of the server's SETTINGS

Opens COUNT connections from SOURCE_IP to 127.0.0.1:PORT one after the
other; each sends `GET /none` and reads its whole answer (a 200), so every
connection has served one request before it is left idle. Then prints
"held COUNT" and, for each line read on stdin, the number of connections
still open (none closed by the server, nothing unread from it); exits when
stdin closes. Only the standard library, so a fresh machine needs nothing.
"""
import select
import socket
import ssl
import struct
import sys

REQUEST = b"GET /none HTTP/1.1\r\nHost: bench\r\n\r\n"
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, GOAWAY = 0x0, 0x1, 0x3, 0x4, 0x7
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4
# HPACK (RFC 7541): :method GET, :scheme https (static table, indexed),
# :path and :authority as literals without indexing, no Huffman coding.
H2_REQUEST = b"\x82\x87\x04\x05/none\x01\x09localhost"


def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def read_exactly(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed by the server")
        data += chunk
    return data


def h1_request(sock):
    sock.sendall(REQUEST)
    data = b""
    while b"\r\n\r\n" not in data or not data.endswith(b"ok\n"):
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed by the server")
        data += chunk
    if not data.startswith(b"HTTP/1.1 200"):
        raise ConnectionError(f"answered {data.split(b' ', 2)[:2]}")


def h2_request(sock):
    sock.sendall(PREFACE + frame(SETTINGS, 0, 0) + frame(HEADERS, END_STREAM | END_HEADERS, 1, H2_REQUEST))
    while True:
        length, kind, flags, stream = struct.unpack(">IBBI", b"\0" + read_exactly(sock, 9))
        payload = read_exactly(sock, length)
        if kind == SETTINGS and not flags & ACK:
            sock.sendall(frame(SETTINGS, ACK, 0))
        elif kind in (GOAWAY, RST_STREAM):
            raise ConnectionError(f"frame {kind}: {payload.hex()}")
        elif kind == HEADERS and stream == 1 and payload[:1] != b"\x88":
            # `:status 200` is static index 8; anything else is a refusal.
            raise ConnectionError(f"answered {payload[:8].hex()}")
        elif kind in (DATA, HEADERS) and stream == 1 and flags & END_STREAM:
            return


def tls_context(mode):
    """No certificate check (a throwaway one on loopback), and no CA
    store loaded: loading it took 0.1 s per connection."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"] if mode == "h2" else ["http/1.1"])
    return context


def connect(mode, port, source, context):
    sock = socket.create_connection(("127.0.0.1", port), source_address=(source, 0))
    if mode == "h1":
        h1_request(sock)
        return sock
    sock = context.wrap_socket(sock, server_hostname="localhost")
    if mode == "h2":
        if sock.selected_alpn_protocol() != "h2":
            raise ConnectionError("the server did not choose h2")
        h2_request(sock)
    else:
        h1_request(sock)
    return sock


def still_open(held):
    """Connections with nothing to read: not closed, no late frame."""
    poll = select.poll()
    for sock in held:
        poll.register(sock.fileno(), select.POLLIN)
    return len(held) - len(poll.poll(0))


def main():
    mode, port, source, count = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    if mode not in ("h1", "tls", "h2"):
        sys.exit(f"unknown mode {mode}")
    context = tls_context(mode) if mode != "h1" else None
    held = []
    for i in range(count):
        try:
            held.append(connect(mode, port, source, context))
        except (OSError, ConnectionError) as e:
            sys.exit(f"connection {i}: {e}")
    print("held", len(held), flush=True)
    for _ in sys.stdin:
        print(still_open(held), flush=True)


if __name__ == "__main__":
    main()
