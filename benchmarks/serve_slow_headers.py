#!/usr/bin/env python3
"""`troika serve` under slow-header clients (issue 13, item 6).

Starts `troika serve --pool threads --port 0`, opens CONNECTIONS connections
that each send an unfinished request head of HEAD_BYTES bytes and hold it,
then times GET /healthz on fresh connections and reads the server's VmRSS and
VmHWM from /proc. Prints one summary line; nothing leaves 127.0.0.1.

    benchmarks/serve_slow_headers.py [--binary target/release/troika]
        [--connections 1000] [--head-bytes 31744] [--probes 200]

The default head is 1 KiB under the default head limit (32 KiB), the most a
client can make the server hold. Needs `ulimit -n` above CONNECTIONS + 100.
"""

import argparse
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time


def rss_kb(pid):
    fields = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0])
    return fields


def healthz(port):
    start = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        reply = b""
        while chunk := s.recv(4096):
            reply += chunk
    took = time.perf_counter() - start
    if not reply.startswith(b"HTTP/1.1 200"):
        sys.exit(f"/healthz answered {reply[:60]!r}")
    return took


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binary", default="target/release/troika")
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--head-bytes", type=int, default=32 * 1024 - 1024)
    parser.add_argument("--probes", type=int, default=200)
    args = parser.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = args.connections + 200
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))

    with tempfile.TemporaryDirectory() as work:
        config = os.path.join(work, "serve.toml")
        with open(config, "w") as f:
            f.write(f'[server]\ndata_dir = "{work}"\nlog_requests = false\n')
            f.write("[limits]\nheader_read_timeout_secs = 600\n")
        server = subprocess.Popen(
            [args.binary, "serve", "--port", "0", "--pool", "threads",
             "--workers", "2", "--config", config],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        try:
            first = server.stdout.readline().strip()
            port = int(first.rsplit(":", 1)[1])
            for _ in range(20):
                healthz(port)
            before = rss_kb(server.pid)
            head = (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Filler: "
                    + b"x" * max(0, args.head_bytes - 44))
            held = []
            for _ in range(args.connections):
                s = socket.create_connection(("127.0.0.1", port), timeout=30)
                s.sendall(head)
                held.append(s)
            # Let the server read what was sent: wait until its RSS stops growing.
            last = -1
            while True:
                now = rss_kb(server.pid)["VmRSS"]
                if now == last:
                    break
                last = now
                time.sleep(0.5)
            times = sorted(healthz(port) for _ in range(args.probes))
            after = rss_kb(server.pid)
            closed = 0
            for s in held:
                s.setblocking(False)
                try:
                    if s.recv(1, socket.MSG_PEEK) is not None:
                        closed += 1
                except BlockingIOError:
                    pass
                except OSError:
                    closed += 1
            print(
                f"{args.connections} connections holding {args.head_bytes}-byte heads "
                f"({closed} closed by the server): "
                f"VmRSS {before['VmRSS']} -> {after['VmRSS']} kB, VmHWM {after['VmHWM']} kB; "
                f"/healthz p50 {statistics.median(times) * 1000:.2f} ms, "
                f"p99 {times[int(len(times) * 0.99) - 1] * 1000:.2f} ms, "
                f"max {times[-1] * 1000:.2f} ms"
            )
            for s in held:
                s.close()
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
