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
import struct
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

    def __init__(self, *arguments, upstream=None, listen_host=HOST, config=None, port=None, as_user=None,
                 open_files=None):
        """With `config`, only the file and `arguments` are given (the file
        must listen on `port`); otherwise --listen/--upstream/--cert flags.
        `as_user` runs it as that unprivileged user (without TLS: the test
        key is root's); `open_files` starts it with that soft open-file limit."""
        self.port = port or free_port()
        self.host = listen_host
        self.log = open(os.path.join(DOVECOT_DIR, f"sluice-{self.port}.log"), "w")
        listen = f"[{listen_host}]:{self.port}" if ":" in listen_host else f"{listen_host}:{self.port}"
        if config:
            command = [SLUICE, "run", "--config", config, "--login-failure-delay", "50ms", *arguments]
        else:
            tls = [] if as_user else ["--cert", CERT, "--key", KEY]
            command = [SLUICE, "run", "--listen", listen, "--upstream", upstream or f"{HOST}:{PORT}",
                       "--login-failure-delay", "50ms", *tls, *arguments]
        env = dict(os.environ)
        account = None
        if as_user:
            import pwd
            account = pwd.getpwnam(as_user)

        def prepare():
            if open_files:
                import resource
                resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
            if account:
                os.setgroups([])
                os.setgid(account.pw_gid)
                os.setuid(account.pw_uid)
        self.process = subprocess.Popen(command, stdout=self.log, stderr=self.log, env=env, preexec_fn=prepare)
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

    def log_text(self):
        with open(self.log.name) as f:
            return f.read()

    def wait_for_log(self, text, timeout=10):
        """The log once it holds TEXT. A session's last lines are written after its
        sockets close, so a test that has just seen EOF must wait for them."""
        deadline = time.time() + timeout
        while text not in (log := self.log_text()):
            assert time.time() < deadline, f"not logged: {text!r}\n{log[-1500:]}"
            time.sleep(0.05)
        return log

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


def converse(name, port, tls=None, starttls=None):
    r = recorder.Recorder(HOST, port, name, None, tls=tls, starttls=starttls)
    if name == "idle":
        recorder.session_idle(r, HOST, PORT)
    else:
        recorder.SESSIONS[name](r)
    r.close()
    return bytes(r.received)


def same_as_direct(name, sluice, tls=None, direct_port=None, direct_tls=None, starttls=None):
    def test():
        reseed()
        direct = after_login(converse(name, direct_port or PORT, direct_tls))
        reseed()
        proxied = after_login(converse(name, sluice.port, tls, starttls))
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
    with Sluice("--listen-tls", "starttls-required") as sluice:
        for name in ["basic", "literals", "authenticate", "idle"]:
            check(f"STARTTLS -> plain upstream: {name}", same_as_direct(name, sluice, starttls=client_tls()))
    with Sluice("--listen-tls", "starttls", "--upstream-tls", "implicit", "--upstream-ca", CERT,
                upstream=f"{HOST}:{TLS_PORT}") as sluice:
        for name in ["basic", "literals"]:
            check(f"STARTTLS -> implicit TLS upstream: {name}", same_as_direct(name, sluice, starttls=client_tls()))

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
            assert received > 50_000_000
            assert growth_mb < 16, f"proxy memory grew by {growth_mb:.1f} MB for a 50 MB message"
        check("a 50 MB FETCH to a slow reader keeps proxy memory bounded", slow_reader_bounded_memory)

        def logout_behind_fetch_to_slow_reader():
            # The upstream answers LOGOUT and closes while the proxy still
            # holds the end of the FETCH for the client: all of it must arrive.
            s = socket.create_connection((HOST, sluice.port), timeout=30)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            read_until(s, rb"\r\n")
            s.sendall(b"a LOGIN alice secret-alice\r\nb SELECT INBOX\r\n")
            read_until(s, rb"b OK[^\r\n]*\r\n")
            s.sendall(b"c FETCH * BODY.PEEK[]\r\nd LOGOUT\r\n")
            time.sleep(1.0)  # the client reads nothing for a while
            data = bytearray()
            while True:
                chunk = s.recv(1 << 20)
                if not chunk:
                    break
                data += chunk
            s.close()
            tail = bytes(data[-300:])
            assert len(data) > 50_000_000, len(data)
            assert re.search(rb"\r\nc OK [^\r\n]*\r\n\* BYE [^\r\n]*\r\nd OK [^\r\n]*\r\n$", tail), tail
        check("FETCH and LOGOUT pipelined by a slow reader: the whole FETCH, BYE and OK arrive",
              logout_behind_fetch_to_slow_reader)

    with Sluice(listen_host="::1") as sluice:
        check("IPv6 listener: login through [::1]",
              lambda: _assert(b"a OK [CAPABILITY" in login_reply(sluice, "alice", "secret-alice")))

    # Production runs unprivileged: no socket option may need root (SO_DEBUG
    # did, by mistake, and every connection was closed without a word).
    with Sluice(as_user="nobody") as sluice:
        def unprivileged():
            reply = login_reply(sluice, "alice", "secret-alice")
            _assert(b"a OK [CAPABILITY" in reply, reply)
            status = open(f"/proc/{sluice.process.pid}/status").read()
            _assert(re.search(r"^Uid:\s+65534\s", status, re.M), "not running as nobody")
        check("runs as an unprivileged user (nobody): login works", unprivileged)

    with Sluice(open_files=256) as sluice:
        def raises_open_file_limit():
            limits = open(f"/proc/{sluice.process.pid}/limits").read()
            soft, hard = re.search(r"^Max open files\s+(\d+)\s+(\d+)", limits, re.M).groups()
            _assert(int(hard) > 256 and soft == hard, f"open-file limit {soft}/{hard}")
            _assert("open-file limit raised" in sluice.log_text(), "no log line for the raised limit")
        check("the open-file soft limit is raised to the hard limit at start", raises_open_file_limit)

    with Sluice() as sluice:
        def nodelay_both_sides():
            # The option is set on the listening socket only (accepted ones inherit it) and by the
            # upstream's bootstrap: read back from the proxy's own sockets of a logged-in session.
            s = socket.create_connection((HOST, sluice.port), timeout=10)
            read_until(s, rb"\r\n")
            s.sendall(b"a LOGIN alice secret-alice\r\n")
            _assert(b"a OK" in read_until(s, rb"a (OK|NO|BAD)[^\r\n]*\r\n"))
            options = tcp_nodelay_of(sluice.process.pid)
            ours = options.get((s.getpeername(), s.getsockname()))  # the proxy's end of this connection
            s.close()
            upstream = [value for (_, peer), value in options.items() if peer and peer[1] == PORT]
            _assert(ours == 1 and upstream == [1], f"TCP_NODELAY per connection: {options}")
        if pidfd_getfd_works():
            check("TCP_NODELAY on the client's connection (inherited from the listener) and the upstream's",
                  nodelay_both_sides)
        else:
            print("SKIP (not counted): TCP_NODELAY read-back needs pidfd_getfd (Linux 5.6, CAP_SYS_PTRACE)",
                  flush=True)

    with Sluice(upstream=f"{HOST}:{free_port()}") as sluice:
        check("upstream down gives NO [UNAVAILABLE]",
              lambda: _assert(b"a NO [UNAVAILABLE]" in login_reply(sluice, "alice", "secret-alice")))
    with Sluice("--upstream-tls", "implicit", upstream=f"{HOST}:{TLS_PORT}") as sluice:
        check("untrusted upstream certificate is refused when verifying",
              lambda: _assert(b"a NO [UNAVAILABLE]" in login_reply(sluice, "alice", "secret-alice")))

    for reset in (False, True):
        upstream_cut_mid_fetch_tests(reset)

    configuration_tests()
    routing_map_tests()
    sni_and_reload_tests()
    transparent_mode_tests()
    graceful_shutdown_tests()
    idle_timeout_tests()
    late_upstream_connect_tests()
    client_limit_tests()
    rules_tests()
    utf8_accept_tests()

    print(f"{results['passed']} passed, {results['failed']} failed")
    sys.exit(1 if results["failed"] else 0)


def pidfd_getfd(pidfd, target):
    """A duplicate of descriptor TARGET of the process behind PIDFD (SYS_pidfd_getfd, 438);
    raises OSError with the errno."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.syscall(438, pidfd, target, 0)
    if fd < 0:
        error = ctypes.get_errno()
        raise OSError(error, os.strerror(error))
    return fd


def pidfd_getfd_works():
    """Whether this kernel and these privileges let the tests read another process's sockets."""
    try:
        pidfd = os.pidfd_open(os.getpid())
    except (AttributeError, OSError):
        return False
    try:
        os.close(pidfd_getfd(pidfd, 0))
        return True
    except OSError:
        return False
    finally:
        os.close(pidfd)


def tcp_nodelay_of(pid):
    """{(local address, peer address or None): TCP_NODELAY} of process PID's TCP sockets,
    read through duplicates of its descriptors (pidfd_getfd, Linux 5.6; needs root).
    Descriptors closed or reused while they are listed are passed over."""
    pidfd = os.pidfd_open(pid)
    options = {}
    try:
        for name in os.listdir(f"/proc/{pid}/fd"):
            try:
                if not os.readlink(f"/proc/{pid}/fd/{name}").startswith("socket:"):
                    continue
                fd = pidfd_getfd(pidfd, int(name))
            except OSError:
                continue  # gone since it was listed
            try:
                sock = socket.socket(fileno=fd)
            except OSError:
                os.close(fd)  # no longer a socket
                continue
            try:
                if sock.type == socket.SOCK_STREAM and sock.family in (socket.AF_INET, socket.AF_INET6):
                    try:
                        peer = sock.getpeername()
                    except OSError:
                        peer = None
                    options[(sock.getsockname(), peer)] = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            finally:
                sock.close()
    finally:
        os.close(pidfd)
    return options


def _assert(condition, message=None):
    assert condition, message


def message_count():
    s = socket.create_connection((HOST, PORT), timeout=10)
    read_until(s, rb"\r\n")
    s.sendall(b"a LOGIN alice secret-alice\r\nb STATUS INBOX (MESSAGES)\r\n")
    data = read_until(s, rb"b OK[^\r\n]*\r\n")
    s.close()
    return int(re.search(rb"MESSAGES (\d+)", data).group(1))


def upstream_cut_mid_fetch_tests(reset):
    fake_port, stop_fake = fake_upstream_cutting_fetch(reset)
    how = "aborted (RST)" if reset else "closed"
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
            head, _, rest = data.partition(b"* 1 FETCH (BODY[] {100000}\r\n")
            assert rest, f"no FETCH literal: {data[:300]!r}"
            literal, after = rest[:100000], rest[100000:]
            assert literal == b"y" * 1000 + b" " * 99000, "the literal was not completed with padding"
            # The response is left without its ")" (visibly truncated), then BYE.
            assert re.fullmatch(rb"\r\n\* BYE \[UNAVAILABLE\][^\r\n]*\r\n", after), after
            assert b"b OK" not in data
            # The proxy is still up and serves the next client.
            reply = login_reply(sluice, "alice", "pw")
            assert b"a OK" in reply, reply
        check(f"upstream connection {how} in the middle of a FETCH literal: literal padded, * BYE; the proxy stays up",
              upstream_disconnect_mid_fetch)
    stop_fake()


def client_limit_tests():
    """A client that breaks a limit after login gets BAD and * BYE, also
    while a response to it is still streaming."""
    reseed()
    config, port = plain_proxy_config("limit-tests", "limits: { client_max_line_length: 4KiB }")
    with Sluice(config=config, port=port) as sluice:
        def logged_in(slow=False):
            s = socket.create_connection((HOST, sluice.port), timeout=30)
            if slow:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            read_until(s, rb"\r\n")
            s.sendall(b"a LOGIN alice secret-alice\r\nb SELECT INBOX\r\n")
            read_until(s, rb"b OK[^\r\n]*\r\n")
            return s

        def read_to_end(s):
            data = bytearray()
            while True:
                chunk = s.recv(1 << 20)
                if not chunk:
                    return bytes(data)
                data += chunk

        def long_line_after_login():
            s = logged_in()
            s.sendall(b"c NOOP " + b"x" * 5000 + b"\r\n")
            data = read_to_end(s)
            assert re.fullmatch(rb"c BAD [^\r\n]*\r\n\* BYE [^\r\n]*\r\n", data), data
        check("a client line over client_max_line_length after login gets BAD and * BYE", long_line_after_login)

        def long_line_during_fetch():
            s = logged_in(slow=True)
            s.sendall(b"c FETCH * BODY.PEEK[]\r\n")
            # The FETCH is under way (its literal has begun), held back by the slow reader.
            start = read_until(s, rb" FETCH \(BODY\[\] \{", limit=30)
            s.sendall(b"d NOOP " + b"x" * 5000 + b"\r\n")
            data = start + read_to_end(s)
            head, _, rest = data.partition(b" FETCH (BODY[] {")
            size = int(rest[:rest.index(b"}")])
            body = rest[rest.index(b"}\r\n") + 3:]
            assert len(body) >= size, (len(body), size)
            # The literal is completed (padding), the response left open, then the answers.
            assert re.fullmatch(rb"\r\nd BAD [^\r\n]*\r\n\* BYE [^\r\n]*\r\n", body[size:]), body[size:][:200]
        check("a client line over client_max_line_length during a large FETCH: literal completed, then BAD and * BYE",
              long_line_during_fetch)


def fake_upstream_cutting_fetch(reset=False):
    """A server that logs anyone in, then dies 1000 bytes into a FETCH literal
    (closing its connection, or with `reset` aborting it: an RST)."""
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
                        if reset:
                            time.sleep(0.2)  # let the proxy read the bytes first
                            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
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


def write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return path


def plain_proxy_config(name, extra):
    """A configuration file in DOVECOT_DIR/NAME: a plain listener on a free
    port in front of the test Dovecot, plus `extra` YAML. Returns (path, port)."""
    work = os.path.join(DOVECOT_DIR, name)
    os.makedirs(work, exist_ok=True)
    port = free_port()
    config = write(os.path.join(work, "sluice.yaml"), f"""
listeners: [{{ address: "{HOST}:{port}" }}]
upstream: {{ address: "{HOST}:{PORT}" }}
{extra}
""")
    return config, port


def configuration_tests():
    work = os.path.join(DOVECOT_DIR, "config-tests")
    os.makedirs(work, exist_ok=True)
    port = free_port()
    config = write(os.path.join(work, "sluice.yaml"), f"""
listeners:
  - address: "{HOST}:{port}"
    tls: starttls
tls:
  certificates:
    - cert: {CERT}
      key: {KEY}
upstream:
  address: "{HOST}:{TLS_PORT}"
  tls: implicit
  ca: {CERT}
timeouts:
  login_failure_delay: 50ms
  idle: 30m
limits:
  max_bad_commands: 3
log:
  format: json
""")
    with Sluice(config=config, port=port) as sluice:
        check("config file: STARTTLS listener to an implicit-TLS upstream, same as direct",
              same_as_direct("basic", sluice))

        def config_limits_apply():
            s = socket.create_connection((HOST, sluice.port), timeout=10)
            read_until(s, rb"\r\n")
            s.sendall(b"".join(b"t%d XYZZY\r\n" % i for i in range(10)))
            data = read_until(s, rb"\* BYE [^\r\n]*\r\n")
            assert data.count(b" BAD ") == 3, data
        check("config file: limits.max_bad_commands applies", config_limits_apply)
        login_reply(sluice, "alice", "secret-alice")
        c = Client(sluice.port, "bob", "secret-bob")
        c.run("LOGOUT")
        c.close()
        time.sleep(0.3)
    import json
    lines = [json.loads(line) for line in open(sluice.log.name) if line.startswith("{")]
    ended = [line for line in lines if line.get("message") == "session ended" and line.get("imap.user") == "alice"]
    check("config file: log.format json gives session lines with user, bytes, duration, reason",
          lambda: _assert(ended and {"bytes.from_client", "bytes.from_upstream", "duration.seconds", "reason",
                                     "client.address", "upstream.host"} <= set(ended[-1])))
    check("config file: JSON logs write numbers as numbers",
          lambda: _assert(ended and isinstance(ended[-1]["bytes.from_client"], int)
                          and isinstance(ended[-1]["duration.seconds"], (int, float))))
    logged_out = [line for line in lines if line.get("message") == "session ended" and line.get("imap.user") == "bob"]
    check("a session ended by LOGOUT logs reason logout (not 'upstream said BYE')",
          lambda: _assert(logged_out and logged_out[-1]["reason"] == "logout", logged_out))
    check("session log never contains the password",
          lambda: _assert("secret-alice" not in open(sluice.log.name).read()))

    bad = write(os.path.join(work, "bad.yaml"), f"""listeners:
  - address: "{HOST}:99999"
upstream:
  address: "{HOST}:{PORT}"
  tls: sometimes
  verfy: false
timeouts:
  idle: soon
tls:
  certificates:
    - cert: /nonexistent/cert.pem
      key: {KEY}
""")

    def check_reports_key_and_line():
        out = subprocess.run([SLUICE, "check", "--config", bad], capture_output=True, text=True)
        assert out.returncode == 1, out
        expected = [f"{bad}:2: listeners[0].address:", f"{bad}:5: upstream.tls: expected one of plain, starttls, implicit",
                    f"{bad}:6: upstream.verfy: unknown key", f"{bad}:8: timeouts.idle:",
                    f"{bad}:11: tls.certificates[0].cert: cannot read /nonexistent/cert.pem"]
        for line in expected:
            assert line in out.stderr, f"missing {line!r} in:\n{out.stderr}"
    check("sluice check: each problem with its key path and line, exit 1", check_reports_key_and_line)

    def check_accepts_good_file():
        out = subprocess.run([SLUICE, "check", "--config", config], capture_output=True, text=True)
        assert out.returncode == 0 and "OK" in out.stdout, out
        out = subprocess.run([SLUICE, "run", "--config", bad], capture_output=True, text=True, timeout=20)
        assert out.returncode != 0 and "upstream.tls" in out.stderr, out
    check("sluice check accepts a good file; run refuses a bad one", check_accepts_good_file)

    def flags_override_file():
        override_port = free_port()
        with Sluice("--listen", f"{HOST}:{override_port}", "--listen-tls", "plain", "--upstream", f"{HOST}:{PORT}",
                    config=config, port=override_port) as sluice:
            reply = login_reply(sluice, "alice", "secret-alice")
            assert b"a OK [CAPABILITY" in reply, reply
    check("flags override the file (--listen, --listen-tls, --upstream)", flags_override_file)


def routing_map_tests():
    work = os.path.join(DOVECOT_DIR, "map-tests")
    os.makedirs(work, exist_ok=True)
    port = free_port()
    users = os.path.join(work, "users.yaml")
    map_text = f"""
upstreams:
  main: {{ address: "{HOST}:{PORT}" }}
  secure: {{ address: "{HOST}:{TLS_PORT}", tls: implicit, ca: {CERT} }}
users:
  alice@old.example: {{ upstream: main, login: alice, groups: [archive] }}
  bob: main
patterns:
  - match: '^(.+)@secure\\.example$'
    upstream: secure
    login: '$1'
"""
    write(users, map_text)
    config = write(os.path.join(work, "sluice.yaml"), f"""
listeners: [{{ address: "{HOST}:{port}" }}]
routing:
  map: users.yaml
timeouts:
  login_failure_delay: 50ms
rules:
  - read_only: true
    users: ["group:archive"]
""")
    with Sluice(config=config, port=port) as sluice:
        check("map: exact name with login rewriting (alice@old.example -> alice)",
              lambda: _assert(b"a OK [CAPABILITY" in login_reply(sluice, "alice@old.example", "secret-alice")))
        check("map: exact name, own login", lambda: _assert(b"a OK [" in login_reply(sluice, "bob", "secret-bob")))

        def rules_scoped_to_map_group():
            c = Client(sluice.port, "alice@old.example", "secret-alice")
            assert b"OK [READ-ONLY]" in c.run("SELECT INBOX"), "the archive group is read-only"
            c.close()
            c = Client(sluice.port, "bob", "secret-bob")
            assert b"OK [READ-WRITE]" in c.run("SELECT INBOX"), "bob is in no group"
            c.close()
        check("map: a rule scoped to a group from the routing map", rules_scoped_to_map_group)
        check("map: regex to a TLS upstream with $1 rewriting",
              lambda: _assert(b"a OK [" in login_reply(sluice, "carol@secure.example", "secret-carol")))
        check("map: unknown user gets NO [AUTHENTICATIONFAILED]",
              lambda: _assert(b"a NO [AUTHENTICATIONFAILED]" in login_reply(sluice, "carol", "secret-carol")))

        def reload_on_sighup():
            write(users, map_text + "fallback: main\n")
            sluice.process.send_signal(signal.SIGHUP)
            deadline = time.time() + 10
            while "configuration reloaded" not in sluice.log_text():
                assert time.time() < deadline, "no reload logged"
                time.sleep(0.05)
            reply = login_reply(sluice, "carol", "secret-carol")
            assert b"a OK [" in reply, reply
            # A broken map is refused and the previous one stays in use.
            write(users, "upstreams: [\n")
            sluice.process.send_signal(signal.SIGHUP)
            deadline = time.time() + 10
            while "configuration reload failed" not in sluice.log_text():
                assert time.time() < deadline, "no failed reload logged"
                time.sleep(0.05)
            reply = login_reply(sluice, "carol", "secret-carol")
            assert b"a OK [" in reply, reply
        check("map: SIGHUP reloads the map (fallback added); a broken map keeps the old one", reload_on_sighup)

    bad_map = write(os.path.join(work, "bad-users.yaml"), """upstreams:
  main: { address: "127.0.0.1:143" }
users:
  alice: nowhere
patterns:
  - match: '([a-z'
    upstream: main
""")
    bad_config = write(os.path.join(work, "bad.yaml"), f"""listeners: [{{ address: "{HOST}:1" }}]
routing:
  map: bad-users.yaml
""")

    def map_problems_are_reported():
        out = subprocess.run([SLUICE, "check", "--config", bad_config], capture_output=True, text=True)
        assert out.returncode == 1, out
        assert f"{bad_map}:4: users.alice: no upstream named nowhere" in out.stderr, out.stderr
        assert f"{bad_map}:6: patterns[0].match: not a valid regular expression" in out.stderr, out.stderr
    check("sluice check reports routing map problems with the map's lines", map_problems_are_reported)


def make_certificate(directory, name):
    cert, key = os.path.join(directory, f"{name}.pem"), os.path.join(directory, f"{name}.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-keyout", key,
                    "-out", cert, "-subj", f"/CN={name}", "-addext", f"subjectAltName=DNS:{name}"],
                   check=True, capture_output=True)
    return cert, key


def peer_common_name(port, server_name):
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    s = context.wrap_socket(socket.create_connection((HOST, port), timeout=10), server_hostname=server_name)
    der = s.getpeercert(binary_form=True)
    s.close()
    text = subprocess.run(["openssl", "x509", "-inform", "DER", "-noout", "-subject", "-serial"], input=der,
                          capture_output=True, check=True).stdout.decode()
    return text


def sni_and_reload_tests():
    work = os.path.join(DOVECOT_DIR, "sni-tests")
    os.makedirs(work, exist_ok=True)
    a_cert, a_key = make_certificate(work, "a.test")
    b_cert, b_key = make_certificate(work, "b.test")
    port = free_port()
    config = write(os.path.join(work, "sluice.yaml"), f"""
listeners: [{{ address: "{HOST}:{port}", tls: implicit }}]
tls:
  certificates:
    - {{ cert: a.test.pem, key: a.test.key }}
    - {{ cert: b.test.pem, key: b.test.key, names: ["b.test", "*.b.test"] }}
upstream: {{ address: "{HOST}:{PORT}" }}
""")
    with Sluice(config=config, port=port) as sluice:
        def sni_selects_certificate():
            assert "CN = b.test" in peer_common_name(port, "b.test")
            assert "CN = b.test" in peer_common_name(port, "imap.b.test")
            assert "CN = a.test" in peer_common_name(port, "a.test")
            assert "CN = a.test" in peer_common_name(port, "other.example")  # the first is the default
        check("SNI chooses the certificate (exact and wildcard names; first is the default)", sni_selects_certificate)

        def reload_certificates():
            before = peer_common_name(port, "b.test")
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            s = context.wrap_socket(socket.create_connection((HOST, port), timeout=10), server_hostname="b.test")
            read_until(s, rb"\r\n")
            s.sendall(b"a LOGIN alice secret-alice\r\n")
            read_until(s, rb"a OK[^\r\n]*\r\n")
            make_certificate(work, "b.test")  # a new certificate and key in the same files
            sluice.process.send_signal(signal.SIGHUP)
            deadline = time.time() + 10
            while "configuration reloaded" not in sluice.log_text():
                assert time.time() < deadline, "no reload logged"
                time.sleep(0.05)
            after = peer_common_name(port, "b.test")
            assert "CN = b.test" in after and after != before, "the new certificate is not served"
            s.sendall(b"b NOOP\r\n")
            read_until(s, rb"b OK[^\r\n]*\r\n")  # the session from before the reload lives on
            s.close()
        check("SIGHUP reloads certificates; sessions established before continue", reload_certificates)


def transparent_mode_tests():
    config, port = plain_proxy_config("transparent-tests", "mode: transparent")
    with Sluice(config=config, port=port) as sluice:
        def greeting_is_upstreams():
            s = socket.create_connection((HOST, port), timeout=10)
            greeting = read_until(s, rb"\r\n")
            s.sendall(b"a CAPABILITY\r\n")
            capability = read_until(s, rb"a OK[^\r\n]*\r\n")
            s.sendall(b"b STARTTLS\r\n")
            refusal = read_until(s, rb"b (OK|NO|BAD)[^\r\n]*\r\n")
            s.close()
            assert b"Dovecot" in greeting, greeting
            assert b"* CAPABILITY IMAP4rev1" in capability, capability
            assert b"STARTTLS" not in greeting and b"STARTTLS" not in capability, capability
            assert b"b BAD" in refusal, refusal
        check("transparent: the upstream's greeting relays; STARTTLS hidden and refused", greeting_is_upstreams)
        check("transparent: login and session same as direct", same_as_direct("basic", sluice))
        check("transparent: wrong password gets the upstream's own NO",
              lambda: _assert(b"a NO [AUTHENTICATIONFAILED]" in login_reply(sluice, "alice", "wrong")))
    check("transparent: session log names the user",
          lambda: _assert(re.search(r"imap.user=alice .*session ended", open(sluice.log.name).read())))
    check("text log lines: UTC time with milliseconds, level, label, sorted metadata, message",
          lambda: _assert(re.search(r"(?m)^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z info sluice : "
                                    r"client\.address=127\.0\.0\.1:\d+ imap\.session\.id=\d+ \[SluiceProxy\] session started$",
                                    open(sluice.log.name).read())))


def graceful_shutdown_tests():
    reseed()
    sluice = Sluice("--log-json")
    idle = socket.create_connection((HOST, sluice.port), timeout=10)
    read_until(idle, rb"\r\n")
    idle.sendall(b"a LOGIN alice secret-alice\r\nb SELECT INBOX\r\n")
    read_until(idle, rb"b OK[^\r\n]*\r\n")
    busy = socket.create_connection((HOST, sluice.port), timeout=30)
    busy.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    read_until(busy, rb"\r\n")
    busy.sendall(b"a LOGIN alice secret-alice\r\nb SELECT INBOX\r\n")
    read_until(busy, rb"b OK[^\r\n]*\r\n")
    busy.sendall(b"c FETCH * BODY.PEEK[]\r\n")
    busy.recv(65536)  # the FETCH is under way; the rest waits in the socket buffers
    pre_auth = socket.create_connection((HOST, sluice.port), timeout=10)
    read_until(pre_auth, rb"\r\n")
    sluice.process.send_signal(signal.SIGTERM)

    def idle_session_gets_bye():
        data = read_until(idle, rb"\* BYE [^\r\n]*\r\n")
        assert data.startswith(b"* BYE"), data
        assert idle.recv(100) == b""
        data = read_until(pre_auth, rb"\* BYE [^\r\n]*\r\n")
        assert pre_auth.recv(100) == b""
    check("SIGTERM: idle and pre-auth sessions get * BYE at once", idle_session_gets_bye)

    def new_connections_refused():
        deadline = time.time() + 5
        while True:
            try:
                socket.create_connection((HOST, sluice.port), timeout=1).close()
            except OSError:
                return
            assert time.time() < deadline, "still accepting after SIGTERM"
            time.sleep(0.05)
    check("SIGTERM: no new connections", new_connections_refused)

    def in_flight_command_finishes():
        data = bytearray()
        while True:
            chunk = busy.recv(1 << 20)
            if not chunk:
                break
            data += chunk
        tail = bytes(data[-300:])
        assert len(data) > 50_000_000, len(data)
        assert re.search(rb"\r\nc OK [^\r\n]*\r\n\* BYE [^\r\n]*\r\n$", tail), tail
    check("SIGTERM: a command in flight finishes, then * BYE", in_flight_command_finishes)

    def exits_cleanly():
        assert sluice.process.wait(timeout=20) == 0
    check("SIGTERM: the proxy exits 0 once sessions are done", exits_cleanly)
    sluice.log.close()


def idle_timeout_tests():
    reseed()
    config, port = plain_proxy_config("idle-tests", "timeouts: { idle: 2s }")
    with Sluice(config=config, port=port) as sluice:
        def long_idle_outlives_timeout():
            idler = socket.create_connection((HOST, port), timeout=20)
            quiet = socket.create_connection((HOST, port), timeout=20)
            for s in (idler, quiet):
                read_until(s, rb"\r\n")
                s.sendall(b"a LOGIN bob secret-bob\r\nb SELECT INBOX\r\n")
                read_until(s, rb"b OK[^\r\n]*\r\n")
            idler.sendall(b"c IDLE\r\n")
            read_until(idler, rb"\+ [^\r\n]*\r\n")
            # The quiet session is closed after 2 s of silence ...
            data = read_until(quiet, rb"\* BYE [^\r\n]*\r\n")
            assert b"inactivity" in data, data
            assert quiet.recv(100) == b""
            # ... while the one in IDLE lives through several timeout periods.
            time.sleep(5)
            idler.sendall(b"DONE\r\nd NOOP\r\n")
            data = read_until(idler, rb"d OK[^\r\n]*\r\n")
            assert b"c OK" in data and b"BYE" not in data, data
            idler.close()
        check("idle timeout closes a silent session; a long IDLE outlives it", long_idle_outlives_timeout)

        def non_reader_is_cut_after_its_bye():
            # A client asks for the 50 MB message and reads nothing. The proxy
            # stops reading the server, the session falls silent, and its BYE
            # waits behind the FETCH, the rest of whose literal is padded; the
            # connection must not be held for a client that never reads: it is
            # cut once the drain limit (30 s) passes, what was queued dropped.
            reseed()

            def ended():  # the session's last line, written once its client connection is closed
                return sluice.log_text().count('reason="idle timeout"') > ended_before
            ended_before = sluice.log_text().count('reason="idle timeout"')
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            s.settimeout(60)
            s.connect((HOST, port))
            read_until(s, rb"\r\n")
            s.sendall(b"a LOGIN alice secret-alice\r\nb SELECT INBOX\r\n")
            read_until(s, rb"b OK[^\r\n]*\r\n")
            s.sendall(b"c FETCH * BODY.PEEK[]\r\n")
            # Within the limit the connection is held (the BYE came at ~2 s) ...
            time.sleep(2 + 20)
            assert not ended(), "cut before the drain limit"
            # ... and past it, cut; nothing is read until then.
            time.sleep(10 + 5)
            received, tail = 0, b""
            while True:
                try:
                    chunk = s.recv(1 << 20)
                except ConnectionResetError:
                    break  # a reset is a cut too
                if not chunk:
                    break
                received += len(chunk)
                tail = (tail + chunk)[-300:]
            s.close()
            assert received < 50_000_000, f"the whole FETCH arrived ({received} bytes): the connection was not cut"
            assert b"BYE" not in tail, tail  # the BYE queued behind the FETCH was dropped with it
            deadline = time.time() + 10
            while not ended():
                assert time.time() < deadline, sluice.log_text()[-1500:]
                time.sleep(0.05)
        check("a client that reads nothing is cut after its BYE has waited the drain limit", non_reader_is_cut_after_its_bye)

    # One timer keeps all of a session's deadlines: here it first fires at the
    # shortest timeout (upstream_login, 1 s), when nothing has passed, and must
    # fire again when the pre-auth and login deadlines pass together at 3 s.
    config, port = plain_proxy_config("pre-auth-timeout", "timeouts: { pre_auth: 3s, login: 3s, upstream_login: 1s }")
    with Sluice(config=config, port=port) as sluice:
        def silent_client_is_closed():
            started = time.monotonic()
            silent = socket.create_connection((HOST, port), timeout=20)
            read_until(silent, rb"\r\n")
            data = read_until(silent, rb"\* BYE [^\r\n]*\r\n")
            # Both limits passed at once: the inactivity is what the client hears.
            assert b"* BYE Disconnected for inactivity." in data, data
            assert silent.recv(100) == b""
            assert time.monotonic() - started < 15, "closed long after the 3 s limits"
            silent.close()
            # A client that logs in within the limits keeps its session past them.
            client = socket.create_connection((HOST, port), timeout=20)
            read_until(client, rb"\r\n")
            client.sendall(b"a LOGIN bob secret-bob\r\n")
            read_until(client, rb"a OK[^\r\n]*\r\n")
            time.sleep(4)
            client.sendall(b"b NOOP\r\n")
            data = read_until(client, rb"b OK[^\r\n]*\r\n")
            assert b"BYE" not in data, data
            client.close()
        check("pre-auth timeout: a silent client gets * BYE for inactivity once its limits pass; "
              "a logged-in one stays", silent_client_is_closed)


def connections_to(port):
    """Established TCP connections on this host whose remote end is `port`."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if int(fields[2].rsplit(":", 1)[1], 16) == port and fields[3] == "01":
                    count += 1
    return count


def late_upstream_connect_tests():
    """A connect that completes after its login failed must not serve the next one."""
    work = os.path.join(DOVECOT_DIR, "late-connect-tests")
    os.makedirs(work, exist_ok=True)
    # A server whose accept queue is full: the kernel drops the proxy's SYN,
    # and retransmits it (1 s, then 3 s after the first) until there is room.
    slow = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    slow.bind((HOST, 0))
    slow.listen(0)
    filler = socket.create_connection(slow.getsockname(), timeout=5)
    write(os.path.join(work, "users.yaml"), f"""
upstreams:
  main: {{ address: "{HOST}:{PORT}" }}
  slow: {{ address: "{HOST}:{slow.getsockname()[1]}" }}
users:
  alice: slow
  bob: main
""")
    port = free_port()
    config = write(os.path.join(work, "sluice.yaml"), f"""
listeners: [{{ address: "{HOST}:{port}" }}]
routing:
  map: users.yaml
timeouts:
  upstream_login: 1s
  login_failure_delay: 50ms
""")
    with Sluice(config=config, port=port) as sluice:
        def late_connect_is_dropped():
            c = socket.create_connection((HOST, port), timeout=20)
            read_until(c, rb"\r\n")
            c.sendall(b"a LOGIN alice secret-alice\r\n")
            data = read_until(c, rb"a (OK|NO|BAD)[^\r\n]*\r\n")
            assert b"a NO [UNAVAILABLE]" in data, data  # its upstream login timed out, the connect still pending
            c.sendall(b"b LOGIN bob secret-bob\r\nc SELECT INBOX\r\n")
            read_until(c, rb"c OK[^\r\n]*\r\n")
            # Room in the queue: alice's connect completes at its next SYN, while bob's session runs.
            slow.accept()[0].close()
            filler.close()
            slow.settimeout(10)
            late, _ = slow.accept()
            late.settimeout(10)
            received = b""
            try:
                late.sendall(b"* OK [CAPABILITY IMAP4rev1] late server ready\r\n")
                while chunk := late.recv(4096):
                    received += chunk
            except (ConnectionResetError, BrokenPipeError):
                pass  # closed by the proxy, as it should be
            late.close()
            assert received == b"", f"the late connection was used: {received!r}"
            c.sendall(b"d NOOP\r\n")
            data = read_until(c, rb"d OK[^\r\n]*\r\n")
            assert b"BYE" not in data and b"late server" not in data, data
            # The session's upstream is still bob's: when the client goes, the
            # proxy closes that connection (it closed the late one instead).
            c.close()
            deadline = time.time() + 10
            while connections_to(PORT) > 0:
                assert time.time() < deadline, "the proxy kept its connection to the server after the client left"
                time.sleep(0.05)
        check("a connect completing after its login failed is closed unused; the next login's session goes on",
              late_connect_is_dropped)
    slow.close()


class Client:
    """A line-level IMAP client for rule tests: send, read to the tagged reply."""

    def __init__(self, port, user=None, password=None):
        self.sock = socket.create_connection((HOST, port), timeout=20)
        self.greeting = read_until(self.sock, rb"\r\n")
        self.pending = b""
        self.counter = 0
        if user:
            self.login_reply = self.run(f"LOGIN {user} {password}")
            assert b" OK " in self.login_reply.split(b"\r\n")[-2] + b" ", self.login_reply

    def run(self, command, tag=None):
        """Sends `command` (str or bytes, without tag); returns everything up to and including the tagged line."""
        self.counter += 1
        tag = tag or f"t{self.counter}"
        data = command.encode() if isinstance(command, str) else command
        self.sock.sendall(tag.encode() + b" " + data + b"\r\n")
        return self.read_tagged(tag)

    def read_tagged(self, tag):
        pattern = re.compile(rb"(^|\r\n)" + re.escape(tag.encode()) + rb" (OK|NO|BAD)[^\r\n]*\r\n")
        data = self.pending
        deadline = time.time() + 20
        while not pattern.search(data):
            assert time.time() < deadline, f"no tagged reply for {tag}: {data[-300:]!r}"
            chunk = self.sock.recv(1 << 20)
            assert chunk, f"connection closed waiting for {tag}: {data[-300:]!r}"
            data += chunk
        match = pattern.search(data)
        self.pending = data[match.end():]
        return data[:match.end()]

    def close(self):
        self.sock.close()


def direct_list(user="alice", password=None):
    c = Client(PORT, user, password or f"secret-{user}")
    data = c.run('LIST "" "*"')
    c.close()
    return data


RULES = r"""
rules:
  - deny: [DELETE, EXPUNGE]
    reply: "NO [NOPERM] Not allowed here"
    users: ["*@example.org", "bob"]
  - read_only: true
    users: ["carol"]
  - rename_mailboxes:
      "Sent Items": "Sent"
      "Old.*": "Archive.*"
      "\u00c9bauches": "Entw\u00fcrfe"
  - hide_mailboxes: ["Calendar", "Journal*", "Team.Private"]
  - capabilities: { remove: ["QRESYNC", "CONDSTORE"], add: ["XSLUICE"] }
  - special_use: { "Sent": "\\Sent", "Trash": "\\Trash" }
  - audit: { commands: [DELETE, EXPUNGE, MOVE], file: "audit.log" }
  - rewrite_login: { match: '^(.+)@old\.example$', replace: '$1' }
"""


def rules_tests():
    reseed()
    work = os.path.join(DOVECOT_DIR, "rules-tests")
    os.makedirs(work, exist_ok=True)
    audit = os.path.join(work, "audit.log")
    if os.path.exists(audit):
        os.remove(audit)
    rules = write(os.path.join(work, "rules.yaml"), RULES)
    # A file that holds only rules; the flags give the rest.
    sluice = Sluice("--config", rules)
    port = sluice.port
    with sluice:
        def capabilities_rewritten():
            c = Client(port)
            assert b"XSLUICE" in c.greeting, c.greeting
            c.__init__(port, "alice", "secret-alice")
            login = c.login_reply
            data = c.run("CAPABILITY")
            c.close()
            for reply in (login, data):
                assert b"XSLUICE" in reply and b"CONDSTORE" not in reply and b"QRESYNC" not in reply, reply
            # The proxy's own LIST "" "" (to learn the delimiter) never reaches the client.
            assert b"* LIST" not in login + data, login + data
            assert b"CONDSTORE" in Client(PORT).greeting + direct_capabilities(), "Dovecot should offer CONDSTORE"
        check("rules: capabilities removed and added, before and after login", capabilities_rewritten)

        def enable_removed_extension():
            c = Client(port, "alice", "secret-alice")
            reply = c.run("ENABLE CONDSTORE")
            c.close()
            assert b"* ENABLED\r\n" in reply and re.search(rb"t\d+ OK", reply), reply
        check("rules: ENABLE of a removed extension is not passed on", enable_removed_extension)

        def login_rewritten():
            c = Client(port, "alice@old.example", "secret-alice")
            assert b"OK" in c.run("SELECT INBOX")
            c.close()
            assert b"NO [AUTHENTICATIONFAILED]" in login_reply(sluice, "alice@other.example", "secret-alice")
        check("rules: rewrite_login maps alice@old.example to alice before routing", login_rewritten)

        def list_renamed_hidden_special_use():
            c = Client(port, "alice", "secret-alice")
            listing = c.run('LIST "" "*"')
            c.close()
            names = re.findall(rb'\* LIST \(([^)]*)\) "\." (.*)\r\n', listing)
            shown = {name.strip(b'"'): attrs for attrs, name in names}
            assert b"Sent Items" in shown and b"Sent" not in shown, listing
            assert b"\\Sent" in shown[b"Sent Items"], listing
            assert b"Old" in shown and b"Old.2019" in shown and b"Archive" not in shown, listing
            assert b"Calendar" not in shown, listing
            assert b"&AMk-bauches" in shown and b"Entw&APw-rfe" not in shown, listing
            assert b"Calendar" in direct_list(), "the hidden mailbox exists upstream"
        check("rules: LIST renamed (incl. modified UTF-7), hidden, special-use added", list_renamed_hidden_special_use)

        def has_children_corrected():
            d = Client(PORT, "alice", "secret-alice")
            d.run("CREATE Team")
            d.run("CREATE Team.Private")
            direct = d.run('LIST "" "Team*"')
            d.close()
            assert b'(\\HasChildren) "." Team' in direct, direct
            c = Client(port, "alice", "secret-alice")
            proxied = c.run('LIST "" "*"')
            c.close()
            assert b'(\\HasNoChildren) "." Team\r\n' in proxied and b"Team.Private" not in proxied, proxied
        check("rules: a mailbox whose only children are hidden says \\HasNoChildren", has_children_corrected)

        def commands_renamed_both_ways():
            c = Client(port, "alice", "secret-alice")
            status = c.run('STATUS "Old.2019" (MESSAGES)')
            assert b'* STATUS "Old.2019" (MESSAGES 0)' in status, status
            select = c.run('SELECT "Sent Items"')
            assert b"1 EXISTS" in select and b"OK [READ-WRITE]" in select, select
            assert b"OK" in c.run('SELECT "&AMk-bauches"')
            assert b"NO [NONEXISTENT]" in c.run("SELECT Calendar")
            assert b"NO [NONEXISTENT]" in c.run('STATUS "Calendar" (MESSAGES)')
            # Create, rename, append to (sync and LITERAL+), delete under renamed names.
            assert re.search(rb"t\d+ OK", c.run('CREATE "Old.2020"'))
            assert re.search(rb"t\d+ OK", c.run('RENAME "Old.2020" "Old.2021"'))
            c.sock.sendall(b'ap1 APPEND "Old.2021" {20}\r\n')
            read_until(c.sock, rb"\+ [^\r\n]*\r\n")
            c.sock.sendall(b"Subject: one\r\n\r\nbody\r\n")
            assert b"ap1 OK" in c.read_tagged("ap1")
            assert b"OK" in c.run(b'APPEND "Sent Items" {20+}\r\nSubject: two\r\n\r\nbody')
            after = direct_list()
            assert b"Archive.2021" in after and b"Archive.2020" not in after, after
            assert b"Old" not in after
            d = Client(PORT, "alice", "secret-alice")
            counts = d.run('STATUS "Archive.2021" (MESSAGES)') + d.run('STATUS "Sent" (MESSAGES)')
            d.close()
            assert re.search(rb'STATUS "?Archive.2021"? \(MESSAGES 1\)', counts), counts
            assert re.search(rb'STATUS "?Sent"? \(MESSAGES 2\)', counts), counts
            assert re.search(rb"t\d+ OK", c.run('DELETE "Old.2021"'))
            c.close()
            assert b"Archive.2021" not in direct_list()
        check("rules: create, rename, append (sync and LITERAL+) and delete under renamed names", commands_renamed_both_ways)

        def pipelined_with_response_filters():
            c = Client(port, "alice", "secret-alice")
            c.sock.sendall(b'p1 LIST "" "*"\r\np2 STATUS "Sent Items" (MESSAGES)\r\np3 SELECT "Old"\r\n'
                           b'p4 LIST "" "Old.%"\r\np5 NOOP\r\n')
            data = c.read_tagged("p5")
            c.close()
            for tag in (b"p1", b"p2", b"p3", b"p4"):
                assert re.search(rb"(^|\r\n)" + tag + rb" OK", data), (tag, data)
            assert re.search(rb'\* STATUS "Sent Items" \(MESSAGES \d+\)', data), data
            assert b'"Old.2019"' in data and b"Archive" not in data and b"Calendar" not in data, data
        check("rules: a pipelined client with response filters active", pipelined_with_response_filters)

        def untouched_traffic_identical():
            def conversation(port):
                c = Client(port, "alice", "secret-alice")
                out = b""
                for command in ["SELECT INBOX", "FETCH 1:* (FLAGS UID RFC822.SIZE)", "UID SEARCH ALL",
                                "FETCH 4 BODY.PEEK[]", "FETCH 3 (BODYSTRUCTURE ENVELOPE)", "NOOP", "LOGOUT"]:
                    out += c.run(command)
                c.close()
                return re.sub(rb"(UIDVALIDITY|\(\d+\.\d+ \+ [0-9.+ ]*secs\))[^]\r\n]*", b"N", out)
            reseed()  # \Recent goes to the first session that selects the mailbox
            direct = conversation(PORT)
            reseed()
            proxied = conversation(port)
            if direct != proxied:
                import difflib
                print("\n".join(list(difflib.unified_diff(direct.decode(errors="replace").split("\r\n"),
                                                         proxied.decode(errors="replace").split("\r\n"), lineterm=""))[:40]))
            assert direct == proxied, "traffic no rule touches differs from direct"
        check("rules: traffic no rule touches is byte-identical to direct", untouched_traffic_identical)

        def deny_for_scoped_users():
            c = Client(port, "bob", "secret-bob")
            assert b'NO [NOPERM] Not allowed here' in c.run("DELETE Whatever")
            c.run("SELECT INBOX")
            assert b"NO [NOPERM] Not allowed here" in c.run("UID EXPUNGE 1")
            assert b"NO [NOPERM] Not allowed here" in c.run("EXPUNGE")
            c.close()
            c = Client(port, "alice", "secret-alice")
            c.run("SELECT INBOX")
            assert re.search(rb"t\d+ OK", c.run("EXPUNGE")), "alice is not denied"
            c.close()
        check("rules: deny applies to the users it names (UID forms too)", deny_for_scoped_users)

        def read_only_user():
            c = Client(port, "carol", "secret-carol")
            select = c.run("SELECT INBOX")
            assert b"OK [READ-ONLY]" in select, select
            for command in ["STORE 1 +FLAGS (\\Seen)", "EXPUNGE", "UID EXPUNGE 1", "COPY 1 Sent", "MOVE 1 Sent",
                            "UID MOVE 1 Sent", "CREATE New", "DELETE Sent", "RENAME Sent Other", "SUBSCRIBE Sent",
                            "UNSUBSCRIBE Sent", 'SETMETADATA INBOX (/private/comment "x")']:
                reply = c.run(command)
                assert b"NO [NOPERM]" in reply, (command, reply)
            # A synchronizing literal is refused before the client sends it ...
            c.sock.sendall(b"s1 APPEND INBOX {12}\r\n")
            reply = c.read_tagged("s1")
            assert b"s1 NO [NOPERM]" in reply and b"+ " not in reply, reply
            # ... a LITERAL+ one is read and dropped, and the session goes on.
            c.sock.sendall(b"s2 APPEND INBOX {12+}\r\nhello world!\r\ns3 NOOP\r\n")
            assert b"s2 NO [NOPERM]" in c.read_tagged("s2")
            assert b"s3 OK" in c.read_tagged("s3")
            c.close()
        check("rules: read-only user: SELECT is READ-ONLY, every mutating command refused, literals handled",
              read_only_user)

    def audit_lines():
        import json
        # Lines are written off the event loop: wait (briefly) for the last ones.
        deadline = time.time() + 10
        while True:
            lines = [json.loads(line) for line in open(audit)]
            deletes = [line for line in lines if line["command"] == "DELETE" and line["user"] == "alice"]
            if deletes or time.time() > deadline:
                break
            time.sleep(0.1)
        # The client's name (Old.2021, which the rename rule sends to the server as Archive.2021):
        # audit rules log what the client asked for, refused or answered alike (docs/filters.md).
        assert deletes and deletes[-1]["mailbox"] == "Old.2021" and deletes[-1]["result"] == "OK", lines
        assert all(line.get("session") for line in lines), lines
        assert any(line["command"] == "EXPUNGE" for line in lines), lines
        assert all({"time", "user", "client", "command", "result", "duration_ms"} <= set(line) for line in lines)
        assert "secret" not in open(audit).read()
    check("rules: audit log lines for chosen commands, no credentials", audit_lines)

    def audit_reopened_on_sighup():
        # logrotate moves the file away and sends SIGHUP: new lines go to a new file at the path.
        path = os.path.join(work, "audit-reopen.log")
        for name in (path, path + ".1"):
            if os.path.exists(name):
                os.remove(name)
        config = write(os.path.join(work, "audit-reopen.yaml"),
                       f'rules:\n  - audit: {{ commands: [NOOP], file: "{path}" }}\n')

        def wait_lines(name, count):
            deadline = time.time() + 10
            while time.time() < deadline:
                if os.path.exists(name) and len(open(name).read().splitlines()) >= count:
                    return open(name).read().splitlines()
                time.sleep(0.1)
            raise AssertionError(f"{name}: fewer than {count} audit lines")
        with Sluice("--config", config) as sluice:
            c = Client(sluice.port, "alice", "secret-alice")
            c.run("NOOP")
            wait_lines(path, 1)
            os.rename(path, path + ".1")
            sluice.process.send_signal(signal.SIGHUP)
            deadline = time.time() + 10
            while "configuration reloaded" not in sluice.log_text():
                assert time.time() < deadline, "no reload after SIGHUP"
                time.sleep(0.1)
            c.run("NOOP")
            c.close()
            assert len(wait_lines(path, 1)) == 1, "the line after SIGHUP is not in the new file"
            assert len(open(path + ".1").read().splitlines()) == 1, "the rotated file changed after SIGHUP"
    check("rules: audit log reopened on SIGHUP (logrotate)", audit_reopened_on_sighup)

    bad = write(os.path.join(work, "bad-rules.yaml"), """rules:
  - deny: [DELETE, EXPUNGEE]
  - read_only: true
    users: ["/([/"]
  - rename_mailboxes: { "A": "B", "C*": "D" }
  - hide_mailboxes: [Trash]
    deny: [MOVE]
  - special_use: { "Sent": "\\\\Sentt" }
""")

    def rules_check_errors():
        out = subprocess.run([SLUICE, "check", "--config", bad, "--listen", "127.0.0.1:1", "--upstream", "127.0.0.1:2"],
                             capture_output=True, text=True)
        assert out.returncode == 1, out
        for expected in [f"{bad}:2: rules[0].deny[1]: unknown command EXPUNGEE",
                         f"{bad}:4: rules[1].users: not a valid /regular expression/",
                         f"{bad}:5: rules[2].rename_mailboxes: C* → D: both sides end in *",
                         f"{bad}:6: rules[3]: one rule per entry",
                         f"{bad}:8: rules[4].special_use.Sent: expected one of"]:
            assert expected in out.stderr, f"missing {expected!r} in:\n{out.stderr}"
    check("sluice check: bad rules reported with key path and line", rules_check_errors)


def fake_utf8_upstream():
    """A server offering UTF8=ACCEPT (Debian's Dovecot 2.3 does not): it
    lists one mailbox with a UTF-8 name once enabled, and records the
    commands it receives."""
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((HOST, 0))
    server.listen(8)
    received = []

    def serve(conn):
        with conn:
            conn.sendall(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR LITERAL+ ENABLE UTF8=ACCEPT] fake\r\n")
            utf8 = False
            buffer = b""
            while True:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                buffer += chunk
                while b"\r\n" in buffer:
                    line, buffer = buffer.split(b"\r\n", 1)
                    received.append(line)
                    tag, _, rest = line.partition(b" ")
                    verb = rest.split(b" ")[0].upper()
                    if verb == b"ENABLE" and b"UTF8=ACCEPT" in rest.upper():
                        utf8 = True
                        conn.sendall(b"* ENABLED UTF8=ACCEPT\r\n" + tag + b" OK enabled\r\n")
                    elif verb == b"LIST" and rest.endswith(b'""'):
                        conn.sendall(b'* LIST (\\Noselect) "/" ""\r\n' + tag + b" OK list\r\n")
                    elif verb == b"LIST":
                        name = "Entwürfe".encode() if utf8 else b"Entw&APw-rfe"
                        conn.sendall(b'* LIST () "/" "' + name + b'"\r\n' + tag + b" OK list\r\n")
                    elif verb == b"LOGOUT":
                        conn.sendall(b"* BYE bye\r\n" + tag + b" OK bye\r\n")
                        return
                    else:
                        conn.sendall(tag + b" OK [CAPABILITY IMAP4rev1 LITERAL+ ENABLE UTF8=ACCEPT] done\r\n")

    def accept():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return server.getsockname()[1], received, server.close


def utf8_accept_tests():
    fake_port, received, stop_fake = fake_utf8_upstream()
    work = os.path.join(DOVECOT_DIR, "utf8-tests")
    os.makedirs(work, exist_ok=True)
    rules = write(os.path.join(work, "rules.yaml"), r"""
rules:
  - rename_mailboxes: { "\u00c9bauches": "Entw\u00fcrfe" }
""")
    with Sluice("--config", rules, upstream=f"{HOST}:{fake_port}") as sluice:
        def renamed_in_both_encodings():
            c = Client(sluice.port, "alice", "pw")
            before = c.run('LIST "" "*"')
            assert b'"&AMk-bauches"' in before, before  # modified UTF-7 before ENABLE
            assert b"* ENABLED UTF8=ACCEPT" in c.run("ENABLE UTF8=ACCEPT")
            after = c.run('LIST "" "*"')
            assert '"Ébauches"'.encode() in after, after  # UTF-8 after it
            assert b"OK" in c.run('SELECT "Ébauches"'.encode())
            c.close()
            assert any(line.endswith('SELECT "Entwürfe"'.encode()) for line in received), received
        check("UTF8=ACCEPT (fake upstream): renamed names in modified UTF-7, then in UTF-8, both ways",
              renamed_in_both_encodings)
    stop_fake()


def direct_capabilities():
    c = Client(PORT, "alice", "secret-alice")
    data = c.run("CAPABILITY")
    c.close()
    return data


if __name__ == "__main__":
    main()
