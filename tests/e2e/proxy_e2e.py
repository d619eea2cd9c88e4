#!/usr/bin/env python3
"""End-to-end tests of the proxy: a real Dovecot, the real sluice binary, real TLS.

    tests/e2e/proxy_e2e.py SLUICE_BINARY DOVECOT_DIR

DOVECOT_DIR is a private instance started by scripts/dovecot-instance (its
ports come from DOVECOT_PORT / DOVECOT_TLS_PORT). Each conversation of
scripts/record-transcripts.py runs once directly against Dovecot and once
through Sluice, each time on freshly seeded mail; what the server said after
login must be the same byte for byte, apart from what differs between any two
runs (command timings, UIDVALIDITY, internal dates of appended mail). Then
the failure paths. Ends with a line "N passed, N failed".
"""
import importlib.util
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
spec = importlib.util.spec_from_file_location("recorder", os.path.join(ROOT, "scripts", "record-transcripts.py"))
recorder = importlib.util.module_from_spec(spec)
spec.loader.exec_module(recorder)

SLUICE = sys.argv[1]
DOVECOT_DIR = sys.argv[2]
PORT = int(os.environ["DOVECOT_PORT"])
TLS_PORT = int(os.environ["DOVECOT_TLS_PORT"])
CERT = os.path.join(DOVECOT_DIR, "cert.pem")
KEY = os.path.join(DOVECOT_DIR, "key.pem")
HOST = "127.0.0.1"

results = {"passed": 0, "failed": 0}


def check(name, function):
    try:
        function()
        results["passed"] += 1
        print(f"PASS {name}", flush=True)
    except Exception:
        results["failed"] += 1
        print(f"FAIL {name}", flush=True)
        traceback.print_exc()


def reseed():
    env = dict(os.environ, DOVECOT_PORT=str(PORT), DOVECOT_TLS_PORT=str(TLS_PORT), SLUICE_SEED_LARGE="1")
    subprocess.run([os.path.join(ROOT, "scripts", "dovecot-instance"), "start", DOVECOT_DIR], env=env,
                   check=True, stdout=subprocess.DEVNULL)


def free_port():
    s = socket.socket()
    s.bind((HOST, 0))
    port = s.getsockname()[1]
    s.close()
    return port


def client_tls():
    context = ssl.create_default_context(cafile=CERT)
    return context


class Sluice:
    """A sluice run process on a free port."""

    def __init__(self, *arguments, upstream=None, listen_host=HOST):
        self.port = free_port()
        self.host = listen_host
        self.log = open(os.path.join(DOVECOT_DIR, f"sluice-{self.port}.log"), "w")
        listen = f"[{listen_host}]:{self.port}" if ":" in listen_host else f"{listen_host}:{self.port}"
        command = [SLUICE, "run", "--listen", listen,
                   "--upstream", upstream or f"{HOST}:{PORT}", "--cert", CERT, "--key", KEY, *arguments]
        env = dict(os.environ, SLUICE_LOGIN_FAILURE_DELAY_MS="50")
        self.process = subprocess.Popen(command, stdout=self.log, stderr=self.log, env=env)
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                socket.create_connection((self.host, self.port), timeout=0.2).close()
                return
            except OSError:
                if self.process.poll() is not None:
                    raise RuntimeError(f"sluice exited: {open(self.log.name).read()}")
                time.sleep(0.05)
        raise RuntimeError("sluice did not start listening")

    def rss_kb(self):
        with open(f"/proc/{self.process.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise AssertionError("sluice did not stop on SIGTERM")
        self.log.close()
        assert code == 0, f"sluice exited with {code}"
        assert self.process.poll() is not None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.process.poll() is None:
            self.stop()


NOISE = [
    (re.compile(rb"\(\d+\.\d+ \+ [0-9.+ ]*secs\)"), b"(TIME)"),
    (re.compile(rb"(UIDVALIDITY|APPENDUID|COPYUID) \d+"), rb"\1 N"),
    (re.compile(rb'INTERNALDATE "[^"]*"'), b'INTERNALDATE "DATE"'),
    (re.compile(rb"SAVEDATE \S+"), b"SAVEDATE D"),
]


def after_login(server_bytes):
    """What the server said after the successful login's tagged OK, normalized."""
    match = re.search(rb"\r\n\S+ OK (\[CAPABILITY [^]\r\n]*\] )?Logged in\r\n", server_bytes)
    assert match, "no successful login in the conversation"
    rest = server_bytes[match.end():]
    for pattern, replacement in NOISE:
        rest = pattern.sub(replacement, rest)
    return rest


def converse(name, port, tls=None):
    r = recorder.Recorder(HOST, port, name, None, tls=tls)
    if name == "idle":
        recorder.session_idle(r, HOST, PORT)
    else:
        recorder.SESSIONS[name](r)
    r.close()
    return bytes(r.received)


def same_as_direct(name, sluice, tls=None, direct_port=None, direct_tls=None):
    def test():
        reseed()
        direct = after_login(converse(name, direct_port or PORT, direct_tls))
        reseed()
        proxied = after_login(converse(name, sluice.port, tls))
        if name == "pipelined":  # Dovecot may answer pipelined commands in another order
            direct, proxied = sorted(direct.split(b"\r\n")), sorted(proxied.split(b"\r\n"))
        assert direct == proxied, f"{name}: through the proxy differs from direct"
    return test


def read_until(sock, pattern, limit=10):
    data = b""
    deadline = time.time() + limit
    while not re.search(pattern, data):
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {pattern!r}; got {data[-300:]!r}")
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def login_reply(sluice, user, password, tls=None):
    s = socket.create_connection((sluice.host, sluice.port), timeout=10)
    if tls:
        s = tls.wrap_socket(s, server_hostname=HOST)
    read_until(s, rb"\r\n")
    s.sendall(f"a LOGIN {user} {password}\r\n".encode())
    reply = read_until(s, rb"a (OK|NO|BAD)[^\r\n]*\r\n")
    s.close()
    return reply


def main():
    # Results through the proxy equal results direct, per TLS combination.
    with Sluice() as sluice:
        for name in list(recorder.SESSIONS) + ["idle"]:
            check(f"plain -> plain upstream: {name}", same_as_direct(name, sluice))
    with Sluice("--listen-tls", "implicit") as sluice:
        for name in ["basic", "literals", "idle"]:
            check(f"implicit TLS -> plain upstream: {name}", same_as_direct(name, sluice, tls=client_tls()))
    with Sluice("--upstream-tls", "implicit", "--upstream-ca", CERT, upstream=f"{HOST}:{TLS_PORT}") as sluice:
        for name in ["basic", "literals", "authenticate"]:
            check(f"plain -> implicit TLS upstream: {name}", same_as_direct(name, sluice))
    with Sluice("--listen-tls", "implicit", "--upstream-tls", "implicit", "--upstream-ca", CERT,
                upstream=f"{HOST}:{TLS_PORT}") as sluice:
        for name in ["basic", "literals", "idle"]:
            check(f"implicit TLS -> implicit TLS upstream: {name}", same_as_direct(name, sluice, tls=client_tls()))
    with Sluice("--upstream-tls", "starttls", "--upstream-ca", CERT) as sluice:
        check("plain -> STARTTLS upstream: basic", same_as_direct("basic", sluice))

    reseed()
    with Sluice("--listen-tls", "starttls") as sluice:
        def starttls_discards_pipelined_plaintext():
            s = socket.create_connection((HOST, sluice.port), timeout=10)
            read_until(s, rb"STARTTLS[^\r\n]*\r\n")
            s.sendall(b"a STARTTLS\r\nb LOGIN alice secret-alice\r\n")
            read_until(s, rb"a OK [^\r\n]*\r\n")
            t = client_tls().wrap_socket(s, server_hostname=HOST)
            t.sendall(b"c CAPABILITY\r\nd NOOP\r\n")
            data = read_until(t, rb"d OK[^\r\n]*\r\n")
            assert b"\r\nb " not in b"\r\n" + data, "plaintext pipelined behind STARTTLS was executed"
            assert b"STARTTLS" not in data.split(b"\r\n")[0], "STARTTLS still offered after TLS"
            t.sendall(b"e LOGIN alice secret-alice\r\nf SELECT INBOX\r\n")
            read_until(t, rb"f OK \[READ-WRITE\][^\r\n]*\r\n")
            t.close()
        check("STARTTLS: pipelined plaintext is discarded, login works over TLS", starttls_discards_pipelined_plaintext)

    with Sluice("--listen-tls", "starttls-required") as sluice:
        def login_disabled_until_tls():
            reply = login_reply(sluice, "alice", "secret-alice")
            assert b"a NO [PRIVACYREQUIRED]" in reply, reply
        check("starttls-required: no plaintext login", login_disabled_until_tls)

    with Sluice() as sluice:
        check("wrong password", lambda: _assert(b"a NO [AUTHENTICATIONFAILED]" in login_reply(sluice, "alice", "wrong")))
        check("unknown user", lambda: _assert(b"a NO [AUTHENTICATIONFAILED]" in login_reply(sluice, "mallory", "x")))

        def too_many_bad_commands():
            s = socket.create_connection((HOST, sluice.port), timeout=10)
            read_until(s, rb"\r\n")
            s.sendall(b"".join(b"t%d XYZZY\r\n" % i for i in range(10)))
            data = read_until(s, rb"\* BYE [^\r\n]*\r\n")
            assert data.count(b" BAD ") == 5, data
            assert s.recv(100) == b"", "connection not closed after BYE"
        check("too many bad pre-auth commands end with BYE", too_many_bad_commands)

        def disconnect_mid_append():
            reseed()
            before = message_count()
            s = socket.create_connection((HOST, sluice.port), timeout=10)
            read_until(s, rb"\r\n")
            s.sendall(b"a LOGIN alice secret-alice\r\n")
            read_until(s, rb"a OK[^\r\n]*\r\n")
            s.sendall(b"b APPEND INBOX {100000+}\r\n" + b"x" * 50000)
            time.sleep(0.3)
            s.close()
            time.sleep(0.5)
            assert message_count() == before, "a partial message was stored"
        check("client disconnect in the middle of an APPEND literal stores nothing", disconnect_mid_append)

        def slow_reader_bounded_memory():
            reseed()
            s = socket.create_connection((HOST, sluice.port), timeout=30)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            read_until(s, rb"\r\n")
            s.sendall(b"a LOGIN alice secret-alice\r\nb SELECT INBOX\r\n")
            read_until(s, rb"b OK[^\r\n]*\r\n")
            baseline = sluice.rss_kb()
            s.sendall(b"c FETCH * BODY.PEEK[]\r\n")
            received, peak = 0, baseline
            while True:
                chunk = s.recv(65536)
                assert chunk, "connection closed during the FETCH"
                received += len(chunk)
                if received % (1 << 20) < 65536:
                    peak = max(peak, sluice.rss_kb())
                    time.sleep(0.01)  # a slow reader
                if chunk.endswith(b"\r\n") and re.search(rb"c OK [^\r\n]*\r\n$", chunk[-200:]):
                    break
            s.close()
            growth_mb = (peak - baseline) / 1024
            print(f"    50 MB FETCH, slow reader: proxy RSS {baseline / 1024:.1f} MB -> peak {peak / 1024:.1f} MB"
                  f" (+{growth_mb:.1f} MB)", flush=True)
            assert received > 50 * 1024 * 1024
            assert growth_mb < 16, f"proxy memory grew by {growth_mb:.1f} MB for a 50 MB message"
        check("a 50 MB FETCH to a slow reader keeps proxy memory bounded", slow_reader_bounded_memory)

    with Sluice(listen_host="::1") as sluice:
        check("IPv6 listener: login through [::1]",
              lambda: _assert(b"a OK [CAPABILITY" in login_reply(sluice, "alice", "secret-alice")))

    with Sluice(upstream=f"{HOST}:{free_port()}") as sluice:
        check("upstream down gives NO [UNAVAILABLE]",
              lambda: _assert(b"a NO [UNAVAILABLE]" in login_reply(sluice, "alice", "secret-alice")))
    with Sluice("--upstream-tls", "implicit", upstream=f"{HOST}:{TLS_PORT}") as sluice:
        check("untrusted upstream certificate is refused when verifying",
              lambda: _assert(b"a NO [UNAVAILABLE]" in login_reply(sluice, "alice", "secret-alice")))

    fake_port, stop_fake = fake_upstream_cutting_fetch()
    with Sluice(upstream=f"{HOST}:{fake_port}") as sluice:
        def upstream_disconnect_mid_fetch():
            s = socket.create_connection((HOST, sluice.port), timeout=10)
            read_until(s, rb"\r\n")
            s.sendall(b"a LOGIN alice pw\r\nb FETCH 1 BODY[]\r\n")
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
            assert b"{100000}" in data and len(data) < 100000, "the client was not cut off"
            # The proxy is still up and serves the next client.
            reply = login_reply(sluice, "alice", "pw")
            assert b"a OK" in reply, reply
        check("upstream disconnect in the middle of a FETCH literal; the proxy stays up", upstream_disconnect_mid_fetch)
    stop_fake()

    print(f"{results['passed']} passed, {results['failed']} failed")
    sys.exit(1 if results["failed"] else 0)


def _assert(condition):
    assert condition


def message_count():
    s = socket.create_connection((HOST, PORT), timeout=10)
    read_until(s, rb"\r\n")
    s.sendall(b"a LOGIN alice secret-alice\r\nb STATUS INBOX (MESSAGES)\r\n")
    data = read_until(s, rb"b OK[^\r\n]*\r\n")
    s.close()
    return int(re.search(rb"MESSAGES (\d+)", data).group(1))


def fake_upstream_cutting_fetch():
    """A server that logs anyone in, then dies 1000 bytes into a FETCH literal."""
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((HOST, 0))
    server.listen(8)
    running = [True]

    def serve(conn):
        with conn:
            conn.sendall(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR] fake ready\r\n")
            buffer = b""
            while running[0]:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                buffer += chunk
                while b"\r\n" in buffer:
                    line, buffer = buffer.split(b"\r\n", 1)
                    tag = line.split(b" ")[0]
                    if b" FETCH " in line:
                        conn.sendall(b"* 1 FETCH (BODY[] {100000}\r\n" + b"y" * 1000)
                        return
                    conn.sendall(tag + b" OK [CAPABILITY IMAP4rev1 IDLE] done\r\n")

    def accept():
        while running[0]:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()

    def stop():
        running[0] = False
        server.close()
    return server.getsockname()[1], stop


if __name__ == "__main__":
    main()
