#!/usr/bin/env python3
"""Quick proxy measurement: the same client directly against Dovecot and through Sluice.

    scripts/bench-proxy.py DIRECT_PORT SLUICE_PORT [ROUNDS] [SLUICE_WITH_RULES_PORT]

Needs a private Dovecot seeded with SLUICE_SEED_LARGE=1 (a 50 MB message last
in alice's INBOX). Measures, interleaved (direct, sluice, sluice, direct, …):
the 50 MB `FETCH * BODY.PEEK[]` in MB/s from command to tagged OK, and 2,000
round trips each of NOOP and `UID FETCH 1 (FLAGS)` with one command in
flight (p50/p99 µs). The client is Python, so absolute figures are
client-bound; the ratio and the added latency are the point. Not a test.

With a fourth port (Sluice running scripts/bench-rules.yaml), that column
is measured too, and `LIST "" "*"` for carol (seed with
SLUICE_SEED_FOLDERS=1000) through each, median of 30 per round.
"""
import re
import socket
import statistics
import sys
import time


def connect(port, user="alice"):
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    read_until(s, b"\r\n", b"")
    s.sendall(b"a LOGIN %s secret-%s\r\nb SELECT INBOX\r\n" % (user.encode(), user.encode()))
    read_until(s, b"b OK", b"")
    return s


def list_all(port, count=30):
    s = connect(port, "carol")
    samples = []
    for i in range(count):
        tag = b"L%d" % i
        start = time.perf_counter_ns()
        s.sendall(tag + b' LIST "" "*"\r\n')
        data = b""
        while (b"\r\n" + tag + b" ") not in data:
            data += s.recv(1 << 20)
        samples.append((time.perf_counter_ns() - start) / 1000)
    s.close()
    return statistics.median(samples), data.count(b"* LIST")


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
    ports = {"direct": int(sys.argv[1]), "sluice": int(sys.argv[2])}
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    if len(sys.argv) > 4:
        ports["rules"] = int(sys.argv[4])
    names = list(ports)
    results = {name: {"fetch": [], "noop": [], "flags": [], "list": []} for name in names}
    for round_index in range(rounds):
        order = names if round_index % 2 == 0 else list(reversed(names))
        for name in order:
            port = ports[name]
            results[name]["fetch"].append(fetch_large(port))
            results[name]["noop"].append(latency(port, b"NOOP"))
            results[name]["flags"].append(latency(port, b"UID FETCH 1 (FLAGS)"))
            if "rules" in ports:
                results[name]["list"].append(list_all(port))
    med = statistics.median
    columns = {"direct": "direct", "sluice": "through Sluice", "rules": "Sluice + rules"}
    print("| measure | " + " | ".join(columns[n] for n in names) + " | Sluice/direct | "
          + ("rules/direct |" if "rules" in ports else ""))
    print("| --- |" + " ---: |" * (len(names) + 1 + ("rules" in ports)))
    fetch = {n: med(results[n]["fetch"]) for n in names}
    row = f"| 50 MB FETCH, MB/s | " + " | ".join(f"{fetch[n]:.0f}" for n in names)
    row += f" | {fetch['sluice'] / fetch['direct']:.2f}× |"
    if "rules" in ports:
        row += f" {fetch['rules'] / fetch['direct']:.2f}× |"
    print(row)
    for key, label in (("noop", "NOOP"), ("flags", "UID FETCH 1 (FLAGS)")):
        for index, q in ((0, "p50"), (1, "p99")):
            value = {n: med([r[index] for r in results[n][key]]) for n in names}
            row = f"| {label} {q}, µs | " + " | ".join(f"{value[n]:.0f}" for n in names)
            row += f" | +{value['sluice'] - value['direct']:.0f} µs |"
            if "rules" in ports:
                row += f" +{value['rules'] - value['direct']:.0f} µs |"
            print(row)
    if "rules" in ports:
        value = {n: med([r[0] for r in results[n]["list"]]) for n in names}
        counts = {n: results[n]["list"][0][1] for n in names}
        row = f"| LIST \"\" \"*\" ({counts['direct']} mailboxes; rules show {counts['rules']}), µs | "
        row += " | ".join(f"{value[n]:.0f}" for n in names)
        row += f" | {value['sluice'] / value['direct']:.2f}× | {value['rules'] / value['direct']:.2f}× |"
        print(row)
        print(f"\nLIST with rules / LIST through Sluice without rules: {value['rules'] / value['sluice']:.2f}×")


if __name__ == "__main__":
    main()
