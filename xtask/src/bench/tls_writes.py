"""TLS writes through the system libssl (python's ssl): a loopback TLS
server thread that discards, and a client that makes 64-byte SSL_write
calls for a fixed time in 5 slices. Prints {"tls": {"ns_per_op",
"cpu_ns_per_op", "writes"}} of the median slice. With --read PATH it reads
that file first (a credential: the session is then tainted)."""

import argparse
import json
import socket
import ssl
import statistics
import threading
import time

parser = argparse.ArgumentParser()
parser.add_argument("--cert", required=True)
parser.add_argument("--key", required=True)
parser.add_argument("--millis", type=int, default=400)
parser.add_argument("--read")
args = parser.parse_args()

if args.read:
    with open(args.read) as credential:
        credential.read()

server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
server_context.load_cert_chain(args.cert, args.key)
listener = socket.create_server(("127.0.0.1", 0))
port = listener.getsockname()[1]


def serve():
    conn, _ = listener.accept()
    with server_context.wrap_socket(conn, server_side=True) as tls:
        while tls.recv(65536):
            pass


threading.Thread(target=serve, daemon=True).start()
client_context = ssl._create_unverified_context()
raw = socket.create_connection(("127.0.0.1", port))
raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
tls = client_context.wrap_socket(raw, server_hostname="example.org")
payload = b"x" * 64
for _ in range(200):
    tls.sendall(payload)

slices = []
for _ in range(5):
    start, cpu_start, writes = time.perf_counter_ns(), time.thread_time_ns(), 0
    deadline = start + args.millis * 1_000_000 // 5
    while time.perf_counter_ns() < deadline:
        tls.sendall(payload)
        writes += 1
    wall = time.perf_counter_ns() - start
    cpu = time.thread_time_ns() - cpu_start
    slices.append((wall / writes, cpu / writes, writes))
wall, cpu, writes = sorted(slices)[len(slices) // 2]
tls.close()
print(json.dumps({"tls": {"ns_per_op": wall, "cpu_ns_per_op": cpu, "writes": writes}}))
