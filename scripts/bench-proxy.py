#!/usr/bin/env python3
"""Quick proxy measurement: the same client directly against Dovecot and through Sluice.

    scripts/bench-proxy.py DIRECT_PORT SLUICE_PORT [ROUNDS]

Needs a private Dovecot seeded with SLUICE_SEED_LARGE=1 (a 50 MB message last
in alice's INBOX). Measures, interleaved (direct, sluice, sluice, direct, …):
the 50 MB `FETCH * BODY.PEEK[]` in MB/s from command to tagged OK, and 2,000
round trips each of NOOP and `UID FETCH 1 (FLAGS)` with one command in
flight (p50/p99 µs). The client is Python, so absolute figures are
client-bound; the ratio and the added latency are the point. Not a test.
"""
import re
import socket
import statistics
import sys
import time


def connect(port):
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    read_until(s, b"\r\n", b"")
    s.sendall(b"a LOGIN alice secret-alice\r\nb SELECT INBOX\r\n")
    read_until(s, b"b OK", b"")
    return s


def read_until(s, marker, pending):
    data = pending
    while marker not in data:
        chunk = s.recv(1 << 20)
        if not chunk:
            raise EOFError
        data += chunk
    return data


def fetch_large(port):
    s = connect(port)
    start = time.perf_counter()
    s.sendall(b"f FETCH * BODY.PEEK[]\r\n")
    total = 0
    tail = b""
    while True:
        chunk = s.recv(1 << 20)
        total += len(chunk)
        tail = (tail + chunk)[-300:]
        if re.search(rb"\r\nf OK [^\r\n]*\r\n$", tail):
            break
    elapsed = time.perf_counter() - start
    s.close()
    return total / elapsed / 1e6


def latency(port, command, count=2000):
    s = connect(port)
    samples = []
    for i in range(count):
        tag = b"l%d" % i
        start = time.perf_counter_ns()
        s.sendall(tag + b" " + command + b"\r\n")
        data = b""
        while (b"\r\n" + tag + b" ") not in (b"\r\n" + data):
            data += s.recv(65536)
        samples.append((time.perf_counter_ns() - start) / 1000)
    s.close()
    samples.sort()
    return samples[len(samples) // 2], samples[int(len(samples) * 0.99)]


def main():
    direct, sluice = int(sys.argv[1]), int(sys.argv[2])
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    results = {"direct": {"fetch": [], "noop": [], "flags": []}, "sluice": {"fetch": [], "noop": [], "flags": []}}
    for round_index in range(rounds):
        order = [("direct", direct), ("sluice", sluice)]
        if round_index % 2:
            order.reverse()
        for name, port in order:
            results[name]["fetch"].append(fetch_large(port))
            results[name]["noop"].append(latency(port, b"NOOP"))
            results[name]["flags"].append(latency(port, b"UID FETCH 1 (FLAGS)"))
    med = lambda values: statistics.median(values)
    print("| measure | direct | through Sluice | ratio / overhead |")
    print("| --- | ---: | ---: | ---: |")
    d, p = med(results["direct"]["fetch"]), med(results["sluice"]["fetch"])
    print(f"| 50 MB FETCH, MB/s | {d:.0f} | {p:.0f} | {p / d:.2f}× |")
    for key, label in (("noop", "NOOP"), ("flags", "UID FETCH 1 (FLAGS)")):
        for index, q in ((0, "p50"), (1, "p99")):
            d = med([r[index] for r in results["direct"][key]])
            p = med([r[index] for r in results["sluice"][key]])
            print(f"| {label} {q}, µs | {d:.0f} | {p:.0f} | +{p - d:.0f} µs |")


if __name__ == "__main__":
    main()
