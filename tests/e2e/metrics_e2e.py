#!/usr/bin/env python3
"""The admin listener against a real Dovecot, through the real proxy:
after a known sequence of sessions every counter of /metrics has exactly
the value the sequence implies, read with an independent parser
(prometheus_client's, from PyPI); /health, /ready (503 during a drain),
404, and the refusal of a non-loopback admin address.

    DOVECOT_PORT=… DOVECOT_TLS_PORT=… tests/e2e/metrics_e2e.py SLUICE DOVECOT_DIR
"""
import base64
import http.client
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import proxy_e2e as pe  # noqa: E402  (reads SLUICE and DOVECOT_DIR from argv)

HOST, PORT, CERT, KEY = pe.HOST, pe.PORT, pe.CERT, pe.KEY
ALICE = "secret-alice"
WORK = os.path.join(pe.DOVECOT_DIR, "metrics")
BODY_SIZE = 100_000


def scrape(port, path="/metrics"):
    """(status, body) of GET http://127.0.0.1:port/path."""
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}{path}", timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def samples(text):
    """{(name, frozenset(labels)): value} from the exposition, parsed by prometheus_client."""
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return values


def value(values, name, **labels):
    return values.get((name, frozenset(labels.items())), 0.0)


def known_message():
    """A message of exactly BODY_SIZE bytes in a fresh mailbox "Metrics", appended directly."""
    body = b"From: metrics@example.org\r\nSubject: known size\r\n\r\n"
    body += b"x" * (BODY_SIZE - len(body) - 2) + b"\r\n"
    assert len(body) == BODY_SIZE
    c = pe.Client(PORT, "alice", ALICE)
    c.run('DELETE "Metrics"')
    assert re.search(rb"t\d+ OK", c.run('CREATE "Metrics"'))
    reply = c.run(b'APPEND "Metrics" {%d+}\r\n' % len(body) + body)
    assert re.search(rb"t\d+ OK", reply), reply
    c.close()


def configuration(listen_port, tls_port, admin_port, dead_port):
    os.makedirs(WORK, exist_ok=True)
    if os.path.exists(os.path.join(WORK, "audit.log")):
        os.remove(os.path.join(WORK, "audit.log"))
    pe.write(os.path.join(WORK, "users.yaml"), f"""
upstreams:
  main: {{ address: "{HOST}:{PORT}" }}
  dead: {{ address: "{HOST}:{dead_port}" }}
users:
  u-dead: {{ upstream: dead, login: alice }}
fallback: main
""")
    path = os.path.join(WORK, "sluice.yaml")
    pe.write(path, f"""
listeners:
  - address: "{HOST}:{listen_port}"
  - address: "{HOST}:{tls_port}"
    tls: implicit
tls:
  certificates:
    - cert: "{CERT}"
      key: "{KEY}"
routing:
  map: users.yaml
admin:
  listen: "{HOST}:{admin_port}"
timeouts:
  login_failure_delay: 50ms
  shutdown_grace: 20s
rules:
  - deny: [DELETE]
  - audit: {{ commands: [DELETE, COMPRESS], file: audit.log }}
  - rename_mailboxes: {{ Renamed: Calendar }}
  - hide_mailboxes: ["Entw*"]
""")
    return path


def session(port, tls=False):
    s = socket.create_connection((HOST, port), timeout=10)
    if tls:
        context = ssl.create_default_context(cafile=CERT)
        s = context.wrap_socket(s, server_hostname=HOST)
    pe.read_until(s, rb"\r\n")
    return s


def command(s, line, tag="a"):
    s.sendall(tag.encode() + b" " + line + b"\r\n")
    return pe.read_until(s, rb"(^|\r\n)" + tag.encode() + rb" (OK|NO|BAD)[^\r\n]*\r\n", limit=20)


def main():
    known_message()
    listen_port, tls_port, admin_port, dead_port = pe.free_port(), pe.free_port(), pe.free_port(), pe.free_port()
    config = configuration(listen_port, tls_port, admin_port, dead_port)
    sluice = pe.Sluice(config=config, port=listen_port)
    try:
        def health_and_404():
            assert scrape(admin_port, "/health") == (200, "ok\n")
            assert scrape(admin_port, "/ready") == (200, "ready\n")
            status, _ = scrape(admin_port, "/nothing")
            assert status == 404, status
            status, body = scrape(admin_port, "/metrics")
            assert status == 200 and "sluice_sessions_total" in body, body[:300]
        pe.check("admin: /health 200, /ready 200, /metrics 200, anything else 404", health_and_404)

        def counters():
            # 1. LOGIN ok, 2. AUTHENTICATE PLAIN ok over implicit TLS, 3. a wrong password,
            # 4. a user routed to a dead upstream, 5. a framing error before login,
            # 6. a failed TLS handshake; in session 1 a DELETE the rule refuses and a FETCH of BODY_SIZE bytes.
            one = session(listen_port)
            assert b"a OK" in command(one, b"LOGIN alice " + ALICE.encode())
            refused = command(one, b"DELETE Metrics", tag="d")
            assert b"d NO" in refused, refused
            # Refused by the proxy itself: COMPRESS (no rule), a tag it cannot read (fail closed).
            assert b"c NO" in command(one, b"COMPRESS DEFLATE", tag="c")
            one.sendall(b"d+3 DELETE Metrics\r\n")
            assert b"* BAD" in pe.read_until(one, rb"\* BAD[^\r\n]*\r\n")
            renamed = command(one, b'LIST "" Renamed', tag="r")
            assert b'"Renamed"' in renamed or b" Renamed\r\n" in renamed, renamed
            hidden = command(one, b'LIST "" Entw*', tag="h")
            assert b"* LIST" not in hidden, hidden
            command(one, b"SELECT Metrics", tag="s")
            fetched = command(one, b"FETCH 1 BODY.PEEK[]", tag="f")
            assert b"{%d}" % BODY_SIZE in fetched, fetched[:200]

            two = session(tls_port, tls=True)
            plain = base64.b64encode(b"\0alice\0" + ALICE.encode())
            assert b"a OK" in command(two, b"AUTHENTICATE PLAIN " + plain)

            three = session(listen_port)
            assert b"a NO" in command(three, b"LOGIN alice wrong-password")
            four = session(listen_port)
            assert b"a NO [UNAVAILABLE]" in command(four, b"LOGIN u-dead " + ALICE.encode())
            five = session(listen_port)
            five.sendall(b"a NOOP x\0y\r\n")
            assert b"* BYE" in pe.read_until(five, rb"\* BYE[^\r\n]*\r\n")
            raw = socket.create_connection((HOST, tls_port), timeout=10)
            raw.sendall(b"\x16\x03\x01\x00\x05hello-not-tls" * 4)
            raw.recv(100)
            raw.close()

            # While session one is still open: bytes are counted as they flow, not at the end.
            expected = [
                # 4 sessions, and the connection with which the test waited for the listener.
                ("sluice_sessions_total", {"listener": f"{HOST}:{listen_port}"}, 5),
                ("sluice_sessions_total", {"listener": f"{HOST}:{tls_port}"}, 2),
                ("sluice_logins_total", {"result": "ok", "mechanism": "login"}, 1),
                ("sluice_logins_total", {"result": "ok", "mechanism": "plain"}, 1),
                ("sluice_logins_total", {"result": "rejected", "mechanism": "login"}, 1),
                ("sluice_logins_total", {"result": "unavailable", "mechanism": "login"}, 1),
                ("sluice_logins_total", {"result": "aborted", "mechanism": "login"}, 0),
                ("sluice_login_duration_seconds_count", {"result": "ok"}, 2),
                ("sluice_login_duration_seconds_count", {"result": "rejected"}, 1),
                ("sluice_upstream_connect_duration_seconds_count", {"upstream": "main"}, 3),
                ("sluice_upstream_connect_duration_seconds_count", {"upstream": "dead"}, 0),
                ("sluice_commands_refused_total", {"rule": "deny"}, 1),
                ("sluice_commands_refused_total", {"rule": "read_only"}, 0),
                ("sluice_commands_refused_total", {"rule": "fail_closed"}, 1),
                ("sluice_responses_rewritten_total", {"rule": "rename_mailboxes"}, 1),
                ("sluice_responses_rewritten_total", {"rule": "hide_mailboxes"}, 1),
                ("sluice_framing_errors_total", {"side": "client"}, 1),
                ("sluice_framing_errors_total", {"side": "upstream"}, 0),
                ("sluice_tls_handshakes_total", {"side": "client", "result": "ok"}, 1),
                ("sluice_tls_handshakes_total", {"side": "client", "result": "failed"}, 1),
                ("sluice_connections_refused_total", {"reason": "limit"}, 0),
                ("sluice_config_reloads_total", {"result": "ok"}, 0),
            ]
            # Polled: the failed TLS handshake is counted after NIOSSL has written its alert.
            deadline = time.time() + 10
            while True:
                values = samples(scrape(admin_port)[1])
                wrong = {}
                for name, labels, want in expected:
                    got = value(values, name, **labels)
                    if got != want:
                        wrong[f"{name}{labels}"] = (got, want)
                if not wrong or time.time() > deadline:
                    break
                time.sleep(0.1)
            assert not wrong, f"(got, expected): {wrong}"
            active = value(values, "sluice_sessions_active", listener=f"{HOST}:{listen_port}")
            assert active >= 1, f"session one is open, sessions_active = {active}"
            down = value(values, "sluice_bytes_total", direction="upstream_to_client")
            up = value(values, "sluice_bytes_total", direction="client_to_upstream")
            # Every upstream byte of the FETCH, plus greetings, capabilities and answers (a few KB).
            assert BODY_SIZE < down < BODY_SIZE + 20_000, f"upstream_to_client = {down}"
            assert 0 < up < 5_000, f"client_to_upstream = {up}"
            for s in (one, two, three, four, five):
                s.close()
            # The audit rule, listed after the deny, recorded every refusal of what it names.
            deadline = time.time() + 10  # audit lines are written on their own queue
            while True:
                audit = [line for line in open(os.path.join(WORK, "audit.log")).read().splitlines() if line]
                if len(audit) >= 3 or time.time() > deadline:
                    break
                time.sleep(0.1)
            results = [(re.search(r'"command":"([^"]+)"', x).group(1), re.search(r'"result":"([^"]+)"', x).group(1))
                       for x in audit]
            assert results == [("DELETE", "NO"), ("COMPRESS", "NO"), ("DELETE", "BAD")], audit
            for family in ("process_resident_memory_bytes", "process_open_fds", "process_cpu_seconds_total"):
                assert value(values, family) > 0, f"{family} missing or zero"

            # All closed: nothing active; a SIGHUP reload is counted.
            sluice.process.send_signal(signal.SIGHUP)
            deadline = time.time() + 10
            while time.time() < deadline:
                values = samples(scrape(admin_port)[1])
                if (value(values, "sluice_sessions_active", listener=f"{HOST}:{listen_port}") == 0
                        and value(values, "sluice_sessions_active", listener=f"{HOST}:{tls_port}") == 0
                        and value(values, "sluice_config_reloads_total", result="ok") == 1):
                    break
                time.sleep(0.1)
            assert value(values, "sluice_sessions_active", listener=f"{HOST}:{listen_port}") == 0
            assert value(values, "sluice_sessions_active", listener=f"{HOST}:{tls_port}") == 0
            assert value(values, "sluice_config_reloads_total", result="ok") == 1
        pe.check("metrics: after a known sequence every counter has exactly its value "
                 "(parsed by prometheus_client); bytes counted while the session runs", counters)

        def admin_flood_is_bounded():
            # Red team (metrics) #1: pipelined GET /metrics from a client that never reads.
            sampler_before = sluice.rss_kb()
            flood = socket.create_connection((HOST, admin_port), timeout=10)
            flood.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            flood.setblocking(False)
            request = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" * 200
            sent, start = 0, time.time()
            while time.time() - start < 8 and sent < 20_000_000:
                try:
                    sent += flood.send(request)
                except BlockingIOError:
                    time.sleep(0.05)
                except OSError:
                    break
            growth = (sluice.rss_kb() - sampler_before) / 1024
            s = session(listen_port)  # the IMAP side still answers
            assert b"a OK" in command(s, b"LOGIN alice " + ALICE.encode())
            assert b"n OK" in command(s, b"NOOP", tag="n")
            s.close()
            flood.close()
            print(f"    sent {sent / 1e6:.1f} MB of pipelined requests, never read: RSS +{growth:.1f} MB", flush=True)
            assert growth < 64, f"proxy RSS grew by {growth:.0f} MB"
        pe.check("admin: pipelined requests from a client that never reads: RSS bounded, IMAP still served",
                 admin_flood_is_bounded)

        def admin_connection_cap():
            held = [socket.create_connection((HOST, admin_port), timeout=10) for _ in range(64)]
            time.sleep(0.3)
            extra = socket.create_connection((HOST, admin_port), timeout=10)
            extra.settimeout(20)
            try:
                closed = extra.recv(10) == b""
            except ConnectionResetError:
                closed = True
            for s in held + [extra]:
                s.close()
            assert closed, "a 65th admin connection was kept"
            # The places are given back as the closes are processed: served again within a deadline.
            deadline = time.time() + 10
            while True:
                try:
                    status = scrape(admin_port, "/health")[0]
                except (OSError, http.client.HTTPException):
                    status = None
                if status == 200 or time.time() > deadline:
                    break
                time.sleep(0.1)
            assert status == 200, status
        pe.check("admin: at most 64 connections; the next is closed, and the listener serves again after",
                 admin_connection_cap)

        def ready_during_drain():
            # A command in flight keeps the drain going (up to the 20 s grace): /ready is 503 meanwhile.
            # (An APPEND half way through its literal: IDLE would count as quiet and get its BYE at once.)
            s = session(listen_port)
            assert b"a OK" in command(s, b"LOGIN alice " + ALICE.encode())
            message = b"Subject: drain\r\n\r\n" + b"y" * 80 + b"\r\n"
            s.sendall(b"p APPEND Metrics {%d}\r\n" % len(message))
            pe.read_until(s, rb"\+[^\r\n]*\r\n")
            s.sendall(message[:10])
            sluice.process.send_signal(signal.SIGTERM)
            deadline = time.time() + 10
            status = None
            while time.time() < deadline:
                status, _ = scrape(admin_port, "/ready")
                if status == 503:
                    break
                time.sleep(0.05)
            assert status == 503, f"/ready during the drain: {status}"
            assert scrape(admin_port, "/health")[0] == 200
            time.sleep(0.5)
            assert scrape(admin_port, "/ready")[0] == 503, "the drain ended while a command was in flight"
            s.sendall(message[10:] + b"\r\n")  # the APPEND completes; the session gets its BYE, the process stops
            reply = pe.read_until(s, rb"\* BYE[^\r\n]*\r\n", limit=20)
            assert b"p OK" in reply, reply
            s.close()
            assert sluice.process.wait(timeout=20) == 0
        pe.check("admin: /ready answers 503 while the proxy drains, /health still 200", ready_during_drain)
    finally:
        if sluice.process.poll() is None:
            sluice.process.kill()

    def non_loopback():
        path = os.path.join(WORK, "remote.yaml")
        pe.write(path, f'listeners: [{{ address: "{HOST}:1" }}]\nupstream: {{ address: "{HOST}:{PORT}" }}\n'
                       f'admin:\n  listen: "0.0.0.0:9143"\n')
        result = subprocess.run([pe.SLUICE, "check", "--config", path], capture_output=True, text=True)
        assert result.returncode != 0, result.stdout
        message = result.stdout + result.stderr
        assert "admin.listen" in message and ":4" in message, message
        result = subprocess.run([pe.SLUICE, "run", "--listen", f"{HOST}:1", "--upstream", f"{HOST}:{PORT}",
                                 "--admin-listen", "0.0.0.0:9143"], capture_output=True, text=True, timeout=20)
        assert result.returncode != 0 and "--admin-listen" in result.stderr, result.stderr
        pe.write(path, f'listeners: [{{ address: "{HOST}:1" }}]\nupstream: {{ address: "{HOST}:{PORT}" }}\n'
                       f'admin:\n  listen: "0.0.0.0:9143"\n  allow_remote: true\n')
        result = subprocess.run([pe.SLUICE, "check", "--config", path], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr
    pe.check("admin: a non-loopback address is refused (naming admin.listen and its line) "
             "unless allow_remote: true", non_loopback)

    c = pe.Client(PORT, "alice", ALICE)
    c.run('DELETE "Metrics"')
    c.close()
    print(f"{pe.results['passed']} passed, {pe.results['failed']} failed")
    sys.exit(1 if pe.results["failed"] else 0)


if __name__ == "__main__":
    main()
