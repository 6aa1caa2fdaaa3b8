#!/usr/bin/env python3
"""A login storm for bench/auth.sh: RATE failed Basic logins per second
against BASE/v2/, alternating USERS, a fresh wrong password each time, over
CONNS kept-alive TLS connections (reopened when the server closes them), so
the client costs far less CPU than one curl process per login would; several
connections because a failed LDAP login takes a search and a bind.

    storm.py BASE RATE CONNS USER [USER...]   # runs until killed; prints the count on SIGTERM
"""
import base64
import http.client
import os
import signal
import ssl
import sys
import threading
import time
import urllib.parse

COUNTS = {"sent": 0, "unexpected_status": 0}
LOCK = threading.Lock()


def stop(*_):
    with LOCK:
        print(" ".join(f"{k}={v}" for k, v in COUNTS.items()), flush=True)
    os._exit(0)


def main() -> None:
    base, rate, conns, users = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
    signal.signal(signal.SIGTERM, stop)
    for i in range(conns):
        threading.Thread(target=worker, args=(base, rate / conns, users, i), daemon=True).start()
    while True:
        time.sleep(3600)


def worker(base: str, rate: float, users: list, seed: int) -> None:
    url = urllib.parse.urlsplit(base)
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    sent = seed
    conn = None
    gap = 1.0 / rate
    next_at = time.monotonic() + gap * seed / 4
    while True:
        if conn is None:
            conn = http.client.HTTPSConnection(url.hostname, url.port, context=ctx, timeout=10)
        user = users[sent % len(users)]
        token = base64.b64encode(f"{user}:wrong-{sent}-{time.monotonic_ns()}".encode()).decode()
        try:
            conn.request("GET", "/v2/", headers={"Authorization": f"Basic {token}"})
            resp = conn.getresponse()
            resp.read()
            if resp.status != 401:
                with LOCK:
                    COUNTS["unexpected_status"] += 1
            if resp.getheader("connection", "").lower() == "close":
                conn.close()
                conn = None
        except (OSError, http.client.HTTPException):
            conn = None
        sent += 1
        with LOCK:
            COUNTS["sent"] += 1
        next_at += gap
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)


if __name__ == "__main__":
    main()
