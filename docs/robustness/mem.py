#!/usr/bin/env python3
"""Memory that unauthenticated connections cost a running mupdated.

Usage: docs/robustness/mem.py BIN_DIR MODE N
  BIN_DIR  folder holding the mupdated binary (e.g. target/debug)
  MODE     literal: each connection announces a 1 MiB literal before login
           and pushes 1 MiB; partial: each holds a 7,000-byte half line
  N        connections

Starts mupdated on a free loopback port with a fresh data folder, reads its
VmRSS before and 2 s after the connections sent their bytes, prints the
growth, and kills exactly the process it started.
"""
import os, socket, subprocess, sys, tempfile, time

bin_dir, mode, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
work = tempfile.mkdtemp(prefix="mupdated-mem-")
probe = socket.socket(); probe.bind(("127.0.0.1", 0)); port = probe.getsockname()[1]; probe.close()
config = os.path.join(work, "mem.toml")
with open(config, "w") as f:
    f.write(f'listen = ["127.0.0.1:{port}"]\ndata_dir = "{work}/data"\nmax_connections = {n + 100}\n'
            f'max_unauthenticated = {n + 50}\nmax_connections_per_peer = {n + 50}\n'
            '[[users]]\nname = "mupdater"\npassword = "secret"\nrole = "admin"\n')
p = subprocess.Popen([os.path.join(bin_dir, "mupdated"), "--config", config, "--log", "warn"], stderr=subprocess.DEVNULL)
try:
    time.sleep(1.5)
    def rss():
        for line in open(f"/proc/{p.pid}/status"):
            if line.startswith("VmRSS"):
                return int(line.split()[1])
    before = rss()
    socks = []
    for _ in range(n):
        s = socket.socket(); s.connect(("127.0.0.1", port)); s.setblocking(False); socks.append(s)
    time.sleep(0.5)
    for s in socks:
        try:
            if mode == "literal":
                s.send(b'A1 AUTHENTICATE "PLAIN" {1048576+}\r\n'); s.send(b"x" * 65536)
            else:
                s.send(b'A1 AUTHENTICATE "PLAIN" "' + b"x" * 7000)
        except OSError:
            pass
    if mode == "literal":
        for _ in range(16):
            for s in socks:
                try: s.send(b"x" * 65536)
                except OSError: pass
    time.sleep(2)
    after = rss()
    print(f"{mode} x{n}: RSS {before} KiB -> {after} KiB (+{(after - before) / 1024:.1f} MiB)")
finally:
    p.kill(); p.wait()
