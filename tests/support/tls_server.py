"""A local HTTPS API for the tests: answers every request with 200 and a
small JSON body, and appends each request it received, as one JSON line
(method, path, body, and whether the body was all its Content-Length
said), to LOG. Usage: tls_server.py CERT KEY ADDR PORT LOG"""

import http.server
import json
import ssl
import sys

CERT, KEY, ADDR, PORT, LOG = sys.argv[1:6]


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def handle_any(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode("utf-8", "replace")
        with open(LOG, "a") as log:
            complete = len(body.encode()) == length
            record = {"method": self.command, "path": self.path, "body": body, "complete": complete}
            log.write(json.dumps(record) + "\n")
        reply = b'{"data":{}}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = handle_any

    def log_message(self, *args):
        pass


class Server(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        # A client refused mid-request closes the connection: expected here.
        pass


server = Server((ADDR, int(PORT)), Handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(CERT, KEY)
server.socket = context.wrap_socket(server.socket, server_side=True)
print("ready", flush=True)
server.serve_forever()
