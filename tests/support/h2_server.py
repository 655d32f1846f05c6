"""A local HTTPS API over HTTP/2 for the tests (Debian's python3-h2):
answers every request with 200 and a small JSON body, and appends each
request whose stream ended, as one JSON line (method, path, body,
complete), to LOG. Usage: h2_server.py CERT KEY ADDR PORT LOG"""

import json
import socket
import ssl
import sys
import threading

import h2.config
import h2.connection
import h2.events

CERT, KEY, ADDR, PORT, LOG = sys.argv[1:6]
LOCK = threading.Lock()


def record(request):
    with LOCK, open(LOG, "a") as log:
        log.write(json.dumps(request) + "\n")


def serve(sock):
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    streams = {}
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.RequestReceived):
                    headers = {k.decode(): v.decode() for k, v in event.headers}
                    streams[event.stream_id] = {
                        "method": headers.get(":method"),
                        "path": headers.get(":path"),
                        "body": b"",
                    }
                elif isinstance(event, h2.events.DataReceived):
                    streams[event.stream_id]["body"] += event.data
                    conn.acknowledge_received_data(len(event.data), event.stream_id)
                elif isinstance(event, h2.events.StreamEnded):
                    request = streams.pop(event.stream_id)
                    request["body"] = request["body"].decode("utf-8", "replace")
                    request["complete"] = True
                    record(request)
                    reply = b'{"data":{}}'
                    conn.send_headers(
                        event.stream_id,
                        [(":status", "200"), ("content-type", "application/json"),
                         ("content-length", str(len(reply)))],
                    )
                    conn.send_data(event.stream_id, reply, end_stream=True)
            sock.sendall(conn.data_to_send())
    except (OSError, ssl.SSLError, h2.exceptions.ProtocolError):
        # A client refused mid-request closes the connection: expected here.
        return
    finally:
        sock.close()


context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(CERT, KEY)
context.set_alpn_protocols(["h2"])
listener = socket.create_server((ADDR, int(PORT)))
print("ready", flush=True)
while True:
    client, _ = listener.accept()
    try:
        tls = context.wrap_socket(client, server_side=True)
    except (OSError, ssl.SSLError):
        client.close()
        continue
    threading.Thread(target=serve, args=(tls,), daemon=True).start()
