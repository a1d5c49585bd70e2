#!/usr/bin/env python3
"""Time from starting mupdated to its first accepted connection and to its
greeting, and how many connection attempts were refused meanwhile.

Usage: docs/robustness/startup-probe.py CONFIG PORT LOG MUPDATED_BINARY
Connects every 5 ms until accepted, then waits for `* OK MUPDATE`; prints
`accepted_ms=... greeted_ms=... refused=... pid=...` and leaves the server
running (the caller stops it by that PID).
"""
import socket, subprocess, sys, time

cfg, port, log, binary = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
t0 = time.monotonic()
p = subprocess.Popen([binary, "--config", cfg, "--log", "info"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(log, "w"))
refused = 0
while True:
    s = socket.socket()
    try:
        s.connect(("127.0.0.1", port))
        break
    except OSError:
        refused += 1; s.close(); time.sleep(0.005)
accepted = time.monotonic() - t0
buf = b""
s.settimeout(300)
while b"* OK MUPDATE" not in buf:
    d = s.recv(4096)
    if not d:
        break
    buf += d
greeted = time.monotonic() - t0
print(f"accepted_ms={accepted * 1000:.0f} greeted_ms={greeted * 1000:.0f} refused={refused} pid={p.pid}", flush=True)
