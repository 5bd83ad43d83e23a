"""Misbehaving KMIP servers for KMIPClientTests.

    kmip_test_server.py MODE HOST PKI_DIR PORT_FILE

Listens on HOST (port chosen by the system), writes the port to PORT_FILE, and serves
until killed or until its parent exits. TLS modes use the PyKMIP servers' certificate
(PKI_DIR/server.crt), so only the behaviour differs from a real server:

    silent      accepts TCP and never says anything (the TLS handshake times out)
    backlog     never accepts, with a full backlog (the TCP connect times out)
    silent-tls  completes the TLS handshake, then never replies (the read times out)
    huge        replies with a header declaring 2 GiB, then nothing
    truncated   replies with a header declaring 64 bytes, sends 10, closes
    not-struct  replies with a header of item type 0x07 (Text String)
    one-shot    replies with a minimal successful ResponseMessage, then closes
    tls13-strict  TLS 1.3 only, client certificate required: a refused certificate is
                reported to the client after its handshake, on its first read
"""
import os
import socket
import ssl
import struct
import sys
import threading
import time

mode, host, pki, port_file = sys.argv[1:5]
parent = os.getppid()


def watch_parent():
    # An aborted test run must not leave servers behind.
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(0)


threading.Thread(target=watch_parent, daemon=True).start()

listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind((host, 0))
listener.listen(0 if mode == "backlog" else 16)
port = listener.getsockname()[1]
held = []
if mode == "backlog":
    # Fill the one-entry accept queue: later SYNs are dropped, so connects hang.
    for _ in range(2):
        s = socket.socket()
        s.setblocking(False)
        try:
            s.connect((host, port))
        except BlockingIOError:
            pass
        held.append(s)

tmp = port_file + ".tmp"
with open(tmp, "w") as f:
    f.write(str(port))
os.replace(tmp, port_file)

ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(os.path.join(pki, "server.crt"), os.path.join(pki, "server.key"))
ctx.load_verify_locations(os.path.join(pki, "ca.pem"))
ctx.verify_mode = ssl.CERT_OPTIONAL
if mode == "tls13-strict":
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.verify_mode = ssl.CERT_REQUIRED


def header(type_, length):
    # ResponseMessage tag 0x42007B.
    return bytes([0x42, 0x00, 0x7B, type_]) + struct.pack(">I", length)


def read_exactly(s, n):
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def serve(conn):
    try:
        if mode == "silent":
            held.append(conn)
            return
        tls = ctx.wrap_socket(conn, server_side=True)
        held.append(tls)
        if mode == "silent-tls":
            return
        while True:
            h = read_exactly(tls, 8)
            read_exactly(tls, struct.unpack(">I", h[4:])[0])
            if mode == "huge":
                tls.sendall(header(0x01, 0x80000000))
            elif mode == "truncated":
                tls.sendall(header(0x01, 64) + b"\x00" * 10)
                tls.close()
                return
            elif mode == "not-struct":
                tls.sendall(header(0x07, 8) + b"garbage!")
            elif mode == "one-shot":
                # ResultStatus (0x42007F, Enumeration) Success.
                status = bytes([0x42, 0x00, 0x7F, 0x05]) + struct.pack(">I", 4) + bytes(8)
                tls.sendall(header(0x01, len(status)) + status)
                tls.close()
                return
    except (OSError, EOFError, ssl.SSLError):
        pass


if mode == "backlog":
    while True:
        time.sleep(3600)
while True:
    c, _ = listener.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
