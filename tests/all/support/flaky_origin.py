"""An HTTP/1.1 origin for the tests: serves one file with keep-alive and byte ranges, and
misbehaves on purpose on every Nth GET (HEAD is never faulted), the way real origins fail.

usage: flaky_origin.py READY_FILE FILE MODE EVERY [DELAY_MS]

MODE: none | 503 | reset (close without answering) | truncate (half the body, then close)
      | stall (answer nothing for 30 s) | ignore-range (a 200 with the whole file)
      | delay (no fault: every GET waits DELAY_MS first)
It writes its port to READY_FILE once listening, and logs one line per request to stderr:
`METHOD PATH RANGE FAULTED?` plus the request's headers as `header NAME: VALUE`.
"""

import os
import socket
import socketserver
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler

READY, PATH, MODE, EVERY = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
DELAY = int(sys.argv[5]) / 1000 if len(sys.argv) > 5 else 0
SIZE = os.path.getsize(PATH)
GETS = 0
LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def setup(self):
        super().setup()
        # Small answers must not wait for delayed ACKs.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def headers_out(self, status, length, extra=()):
        self.send_response(status)
        self.send_header("Content-Length", str(length))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", '"flaky-1"')
        for name, value in extra:
            self.send_header(name, value)
        self.end_headers()

    def record(self, faulted):
        line = f"{self.command} {self.path} {self.headers.get('Range', '-')} {faulted}\n"
        line += "".join(f"header {k}: {v}\n" for k, v in self.headers.items())
        sys.stderr.write(line)
        sys.stderr.flush()

    def do_HEAD(self):
        self.record(False)
        self.headers_out(200, SIZE)

    def send_file(self, offset, count):
        with open(PATH, "rb") as f:
            sent = 0
            while sent < count:
                n = os.sendfile(self.connection.fileno(), f.fileno(), offset + sent, count - sent)
                if n == 0:
                    break
                sent += n

    def do_GET(self):
        global GETS
        with LOCK:
            GETS += 1
            fault = MODE not in ("none", "delay") and GETS % EVERY == 0
        self.record(fault)
        if MODE == "delay":
            time.sleep(DELAY)
        start, end = 0, SIZE - 1
        ranged = self.headers.get("Range", "").startswith("bytes=")
        if ranged:
            first, last = self.headers["Range"][6:].split("-")
            start, end = int(first), min(int(last), SIZE - 1)
        if fault and MODE == "503":
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if fault and MODE == "reset":
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
            self.close_connection = True
            return
        if fault and MODE == "stall":
            time.sleep(30)
            self.close_connection = True
            return
        if fault and MODE == "ignore-range" or not ranged:
            self.headers_out(200, SIZE)
            self.send_file(0, SIZE)
            return
        count = end - start + 1
        self.headers_out(206, count, [("Content-Range", f"bytes {start}-{end}/{SIZE}")])
        if fault and MODE == "truncate":
            self.send_file(start, count // 2)
            self.close_connection = True
            return
        self.send_file(start, count)


class Server(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True


with Server(("127.0.0.1", 0), Handler) as server:
    with open(READY + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    os.rename(READY + ".tmp", READY)
    server.serve_forever()
