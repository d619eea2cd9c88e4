#!/usr/bin/env python3
"""End-to-end tests of Sluice in a mail system: the PROXY protocol in (from
a load balancer) and out (to Dovecot's `haproxy = yes` listener), HAProxy in
front of two instances, and OAuth 2.0 bearer logins (XOAUTH2, OAUTHBEARER)
checked by Dovecot's oauth2 passdb at an introspection endpoint this test
runs (DOVECOT_OAUTH2_PORT).

    tests/e2e/integration_e2e.py SLUICE_BINARY DOVECOT_DIR

Like proxy_e2e.py (whose helpers this reuses); DOVECOT_HAPROXY_PORT is the
private Dovecot's PROXY-protocol listener (scripts/dovecot-instance). What
address the server saw is read from Dovecot's own log (`rip=`). Ends with a
line "N passed, N failed".
"""
import base64
import http.server
import importlib.util
import json
import os
import threading
import re
import socket
import ssl
import struct
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location("proxy_e2e", os.path.join(HERE, "proxy_e2e.py"))
pe = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pe)

Sluice, check, write, free_port, read_until = pe.Sluice, pe.check, pe.write, pe.free_port, pe.read_until
DOVECOT_DIR, HOST, PORT = pe.DOVECOT_DIR, pe.HOST, pe.PORT
HAPROXY_PORT = int(os.environ["DOVECOT_HAPROXY_PORT"])
OAUTH2_PORT = int(os.environ["DOVECOT_OAUTH2_PORT"])
CERT, KEY = pe.CERT, pe.KEY
WORK = os.path.join(DOVECOT_DIR, "integration")
DOVECOT_LOG = os.path.join(DOVECOT_DIR, "dovecot.log")


def config(name, listener_extra="", upstream=None):
    port = free_port()
    upstream = upstream or f'{{ address: "{HOST}:{PORT}" }}'
    path = write(os.path.join(WORK, f"{name}.yaml"), f"""
listeners: [{{ address: "{HOST}:{port}"{listener_extra} }}]
upstream: {upstream}
""")
    return path, port


def proxy_v1(source, source_port, destination="127.0.0.1", destination_port=143):
    family = "TCP6" if ":" in source else "TCP4"
    return f"PROXY {family} {source} {destination} {source_port} {destination_port}\r\n".encode()


def proxy_v2(source, source_port, destination="127.0.0.1", destination_port=143):
    """Built from the specification's layout (not by the code under test)."""
    signature = b"\r\n\r\n\x00\r\nQUIT\n"
    body = socket.inet_aton(source) + socket.inet_aton(destination) + struct.pack("!HH", source_port, destination_port)
    tlv = b"\x04\x00\x02ab"  # PP2_TYPE_NOOP, to be skipped
    return signature + bytes([0x21, 0x11]) + struct.pack("!H", len(body) + len(tlv)) + body + tlv


def dovecot_log_offset():
    return os.path.getsize(DOVECOT_LOG) if os.path.exists(DOVECOT_LOG) else 0


def logins_since(offset, user="alice"):
    """Dovecot's login lines for `user` written after `offset`: their rip= values."""
    deadline = time.time() + 10
    while time.time() < deadline:
        with open(DOVECOT_LOG, "rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
        rips = re.findall(r"imap-login: (?:Info: )?Login: user=<" + re.escape(user) + r">.*?rip=([0-9a-f.:]+)", text)
        if rips:
            return rips
        time.sleep(0.1)
    return []


def login(port, header=b"", source=None, user="alice"):
    """Connects (from `source` if given), sends `header`, logs in; returns the socket and the login reply."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(20)
    if source:
        sock.bind((source, 0))
    sock.connect((HOST, port))
    if header:
        sock.sendall(header)
    greeting = read_until(sock, rb"\r\n")
    assert greeting.startswith(b"* OK"), greeting
    sock.sendall(f"a LOGIN {user} secret-{user}\r\n".encode())
    return sock, read_until(sock, rb"a (OK|NO|BAD)[^\r\n]*\r\n")


def closed_now(sock):
    """Whether the peer has already closed SOCK (EOF or reset within 0.2 s)."""
    sock.settimeout(0.2)
    try:
        return sock.recv(1) == b""
    except socket.timeout:
        return False
    except ConnectionResetError:
        return True
    finally:
        sock.settimeout(20)


def closed_without_greeting(sock, timeout=15):
    sock.settimeout(timeout)
    try:
        data = sock.recv(100)
    except ConnectionResetError:
        data = b""
    return data == b""


def proxy_protocol_tests():
    trusted = ', proxy_protocol: true, proxy_protocol_trusted: ["127.0.0.0/8"]'
    path, port = config("pp-in", trusted)
    with Sluice(config=path, port=port) as sluice:
        def v1_in():
            offset = dovecot_log_offset()
            sock, reply = login(port, proxy_v1("192.0.2.44", 5555))
            assert b"a OK" in reply, reply
            sock.close()
            assert logins_since(offset) == ["192.0.2.44"], logins_since(offset)
            assert "client.address=192.0.2.44:5555" in sluice.log_text()
        check("PROXY in: a v1 header from a trusted balancer: Dovecot logs the client's address (forwarded by ID)",
              v1_in)

        def v2_in():
            offset = dovecot_log_offset()
            sock, reply = login(port, proxy_v2("198.51.100.9", 6000))
            assert b"a OK" in reply, reply
            sock.close()
            assert logins_since(offset) == ["198.51.100.9"], logins_since(offset)
        check("PROXY in: a v2 header (with a TLV) from a trusted balancer: Dovecot logs the client's address", v2_in)

        def bytes_after_header():
            # The balancer forwards at once: the header and the client's first command in one segment.
            sock = socket.create_connection((HOST, port), timeout=20)
            sock.sendall(proxy_v1("192.0.2.50", 1) + b"a CAPABILITY\r\n")
            data = read_until(sock, rb"a OK[^\r\n]*\r\n")
            assert data.startswith(b"* OK") and b"* CAPABILITY" in data, data
            sock.close()
        check("PROXY in: bytes in the same segment after the header are the client's", bytes_after_header)

        def missing_header():
            sock = socket.create_connection((HOST, port), timeout=20)
            sock.sendall(b"a LOGIN alice secret-alice\r\n")
            assert closed_without_greeting(sock), "a connection without a header got an answer"
            sock.close()
            sock = socket.create_connection((HOST, port), timeout=20)
            assert closed_without_greeting(sock), "a silent connection was not closed"
            sock.close()
            assert "reason=\"no PROXY header within 5 s\"" in sluice.log_text(), sluice.log_text()[-1500:]
        check("PROXY in: no header (other bytes, or silence past 5 s) is closed without a greeting", missing_header)

    path, port = config("pp-untrusted", ', proxy_protocol: true, proxy_protocol_trusted: ["127.0.0.2/32"]')
    with Sluice(config=path, port=port) as sluice:
        def untrusted():
            sock = socket.create_connection((HOST, port), timeout=20)
            sock.sendall(proxy_v1("192.0.2.66", 1))
            assert closed_without_greeting(sock)
            sock.close()
            sluice.wait_for_log("PROXY protocol from an untrusted address")
        check("PROXY in: a header from an address not in proxy_protocol_trusted is closed without a greeting",
              untrusted)

    path, port = config("pp-limits", trusted)
    with open(path, "a") as f:
        f.write("limits: { max_connections_per_ip: 1 }\n")
    with Sluice(config=path, port=port) as sluice:
        def per_address_limit():
            first, _ = login(port, proxy_v1("192.0.2.70", 1))
            other, _ = login(port, proxy_v1("192.0.2.71", 1))
            sock = socket.create_connection((HOST, port), timeout=20)
            sock.sendall(proxy_v1("192.0.2.70", 2))
            refusal = read_until(sock, rb"\r\n")
            assert refusal.startswith(b"* BYE [UNAVAILABLE]"), refusal
            for s in (first, other, sock):
                s.close()
        check("PROXY in: per-address limits count the client's address, not the balancer's", per_address_limit)

    path, port = config("pp-total", trusted)
    with open(path, "a") as f:
        f.write("limits: { max_connections: 2 }\n")
    with Sluice(config=path, port=port) as sluice:
        def waiting_counts():
            # Two connections that never send their header fill a proxy of two (red team 3: they went uncounted).
            # The start-up probe's place is given back as the proxy processes its close:
            # retried until both waiting connections are held open.
            deadline = time.time() + 10
            while True:
                waiting = [socket.create_connection((HOST, port), timeout=20) for _ in range(2)]
                time.sleep(0.5)
                if not any(closed_now(s) for s in waiting):
                    break
                for s in waiting:
                    s.close()
                assert time.time() < deadline, "two connections waiting for their header were not both held"
                time.sleep(0.2)
            third = socket.create_connection((HOST, port), timeout=20)
            third.sendall(proxy_v1("192.0.2.80", 1))
            assert closed_without_greeting(third), "a third connection was served"
            third.close()
            for s in waiting:
                s.close()
            deadline = time.time() + 10
            while True:  # the places are given back as the closes are processed
                try:
                    sock, reply = login(port, proxy_v1("192.0.2.80", 2))
                    sock.close()
                except (AssertionError, OSError) as error:
                    reply = repr(error).encode()
                if b"a OK" in reply or time.time() > deadline:
                    break
                time.sleep(0.2)
            assert b"a OK" in reply, "the places are free again: " + repr(reply)
            assert 'reason=limit' in sluice.log_text(), sluice.log_text()[-1500:]
        check("PROXY in: connections still waiting for their header count toward max_connections", waiting_counts)

    for version in ("v1", "v2"):
        upstream = f'{{ address: "{HOST}:{HAPROXY_PORT}", proxy_protocol: {version}, forward_client_address: false }}'
        path, port = config(f"pp-out-{version}", upstream=upstream)
        with Sluice(config=path, port=port):
            def out(version=version):
                offset = dovecot_log_offset()
                sock, reply = login(port, source="127.0.0.9")
                assert b"a OK" in reply, reply
                sock.close()
                assert logins_since(offset) == ["127.0.0.9"], logins_since(offset)
            check(f"PROXY out ({version}): Dovecot's haproxy listener logs the client's own address (127.0.0.9)", out)

    upstream = f'{{ address: "{HOST}:{HAPROXY_PORT}", proxy_protocol: v2 }}'
    path, port = config("pp-both", trusted, upstream=upstream)
    with Sluice(config=path, port=port):
        def both():
            offset = dovecot_log_offset()
            sock, reply = login(port, proxy_v2("203.0.113.5", 7000))
            assert b"a OK" in reply, reply
            sock.close()
            assert logins_since(offset) == ["203.0.113.5"], logins_since(offset)
        check("PROXY in and out (with ID forwarding on): the balancer's client reaches Dovecot's log", both)


def haproxy_scale_out_tests():
    """docs/deployment.md's layout on loopback: HAProxy (TCP, send-proxy-v2)
    in front of two Sluice instances with proxy_protocol: true, each sending
    the PROXY header on to Dovecot's haproxy listener."""
    instances = []
    for name in ("sluice-a", "sluice-b"):
        upstream = f'{{ address: "{HOST}:{HAPROXY_PORT}", proxy_protocol: v2 }}'
        path, port = config(name, ', proxy_protocol: true, proxy_protocol_trusted: ["127.0.0.1/32"]', upstream=upstream)
        instances.append((path, port))
    front = free_port()
    haproxy_config = write(os.path.join(WORK, "haproxy.cfg"), f"""
global
    maxconn 1000
defaults
    mode tcp
    retries 1
    option redispatch
    timeout connect 5s
    timeout client 5m
    timeout server 5m
frontend imap
    bind {HOST}:{front}
    default_backend sluice
backend sluice
    balance roundrobin
    server a {HOST}:{instances[0][1]} send-proxy-v2
    server b {HOST}:{instances[1][1]} send-proxy-v2
""")
    a = Sluice(config=instances[0][0], port=instances[0][1])
    b = Sluice(config=instances[1][0], port=instances[1][1])
    haproxy_log = open(os.path.join(WORK, "haproxy.log"), "w")
    haproxy = subprocess.Popen(["haproxy", "-db", "-f", haproxy_config], stdout=haproxy_log, stderr=haproxy_log)
    try:
        deadline = time.time() + 10
        while True:
            try:
                socket.create_connection((HOST, front), timeout=0.5).close()
                break
            except OSError:
                assert haproxy.poll() is None and time.time() < deadline, open(haproxy_log.name).read()
                time.sleep(0.1)

        def spread_and_real_address():
            offset = dovecot_log_offset()
            for _ in range(6):
                sock, reply = login(front, source="127.0.0.9")
                assert b"a OK" in reply, reply
                sock.sendall(b"b LOGOUT\r\n")
                read_until(sock, rb"b OK[^\r\n]*\r\n")
                sock.close()
            rips = logins_since(offset)
            deadline = time.time() + 10
            while len(rips) < 6 and time.time() < deadline:
                time.sleep(0.1)
                rips = logins_since(offset)
            assert rips == ["127.0.0.9"] * 6, rips
            served = [instance.log_text().count("upstream login succeeded") for instance in (a, b)]
            # Round robin over both (HAProxy's own probe connection above may shift the order).
            assert sum(served) == 6 and min(served) >= 2, f"logins per instance: {served}"
            for instance in (a, b):
                assert "client.address=127.0.0.9:" in instance.log_text()
        check("scale-out: HAProxy (send-proxy-v2) spreads logins over two Sluice instances; Dovecot logs the "
              "client's own address (127.0.0.9) for every login", spread_and_real_address)

        def rolling_restart():
            # One instance drains (SIGTERM); HAProxy's next connection to it fails over to the other.
            a.stop()
            for _ in range(2):
                sock, reply = login(front, source="127.0.0.9")
                assert b"a OK" in reply, reply
                sock.close()
        check("scale-out: with one instance stopped, logins through HAProxy still succeed", rolling_restart)
    finally:
        haproxy.terminate()
        haproxy.wait(timeout=10)
        haproxy_log.close()
        for instance in (a, b):
            if instance.process.poll() is None:
                instance.stop()


# ---------------------------------------------------------------------------
# The nginx-compatible auth service (routing.http).

class AuthService(http.server.BaseHTTPRequestHandler):
    """An auth service as written for nginx's auth_http: reads nginx's headers, answers with Auth-Status."""
    requests = []
    mode = "ok"
    loop_port = 0
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        headers = {name: value for name, value in self.headers.items()}
        AuthService.requests.append(headers)
        user = headers.get("Auth-User", "")
        mode = AuthService.mode
        if mode == "slow":
            time.sleep(4)
        answer = {}
        status = 200
        if mode == "redirect" and self.path != "/elsewhere":
            # A redirect to a place that would say OK: followed, it would route the login.
            status = 302
            answer = {"Location": "/elsewhere"}
        elif mode == "garbage":
            answer = {"Content-Type": "text/plain"}
        elif mode == "error500":
            status = 500
        elif mode == "hostname":
            answer = {"Auth-Status": "OK", "Auth-Server": "localhost", "Auth-Port": str(PORT)}
        elif mode == "loop":
            # A misconfigured service that sends the login back to the proxy itself.
            answer = {"Auth-Status": "OK", "Auth-Server": "127.0.0.1", "Auth-Port": str(AuthService.loop_port)}
        elif user == "refused":
            answer = {"Auth-Status": "Invalid login or password", "Auth-Wait": "1", "Auth-Error-Code": "535 5.7.8"}
        else:
            answer = {"Auth-Status": "OK", "Auth-Server": "127.0.0.1", "Auth-Port": str(PORT)}
            if user.endswith("@old.example"):
                answer["Auth-User"] = user[: -len("@old.example")]
            if user == "bob":
                answer["X-Sluice-Groups"] = "locked, other"
            if user == "carol":
                answer["Auth-Pass"] = "secret-carol"  # the service knows the real password
        body = b"ok"
        try:
            self.send_response(status)
            for name, value in answer.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the slow case: Sluice gave up waiting

    def log_message(self, *args):
        pass


class RawAuthService:
    """An HTTP/1.1 auth service on a raw socket that counts its connections and the request
    targets; with `answers_per_connection` set, it closes a connection unanswered once that
    many requests on it were answered."""

    ANSWER = "HTTP/1.1 200 OK\r\nAuth-Status: OK\r\nAuth-Server: 127.0.0.1\r\nAuth-Port: {}\r\nContent-Length: 0\r\n\r\n"

    def __init__(self):
        self.connections = 0
        self.targets = []
        self.answers_per_connection = None
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((HOST, 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        answered, data = 0, b""
        with conn:
            while True:
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    data += chunk
                request, data = data.split(b"\r\n\r\n", 1)
                if self.answers_per_connection is not None and answered >= self.answers_per_connection:
                    return  # dropped unanswered
                self.targets.append(request.split(b" ")[1].decode())
                conn.sendall(self.ANSWER.format(PORT).encode())
                answered += 1

    def stop(self):
        self.listener.close()


def auth_service_tests():
    service_port = free_port()
    server = http.server.ThreadingHTTPServer((HOST, service_port), AuthService)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port, tls_port = free_port(), free_port()
        path = write(os.path.join(WORK, "auth-http.yaml"), f"""
listeners:
  - address: "{HOST}:{port}"
    tls: starttls
  - address: "{HOST}:{tls_port}"
    tls: implicit
tls: {{ certificates: [{{ cert: {CERT}, key: {KEY} }}] }}
routing:
  http:
    url: "http://{HOST}:{service_port}/auth"
    timeout: 2s
    headers: {{ X-Auth-Key: "secret-key" }}
auth_mechanisms: [PLAIN, LOGIN, XOAUTH2]
rules:
  - deny: [CREATE]
    users: ["group:locked"]
""")
        with Sluice(config=path, port=port) as sluice:
            def nginx_headers():
                AuthService.mode = "ok"
                AuthService.requests.clear()
                sock, reply = login(port)
                assert b"a OK" in reply, reply
                sock.close()
                request = AuthService.requests[-1]
                expected = {"Auth-Method": "plain", "Auth-User": "alice", "Auth-Pass": "secret-alice",
                            "Auth-Protocol": "imap", "Auth-Login-Attempt": "1", "Client-IP": "127.0.0.1",
                            "X-Auth-Key": "secret-key"}
                assert {k: request.get(k) for k in expected} == expected, request
                assert "Auth-SSL" not in request, request
                # Over TLS: Auth-SSL, the protocol and the cipher as the client's OpenSSL names them;
                # AUTHENTICATE PLAIN is Auth-Method plain too.
                for version in (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2):
                    context = pe.client_tls()
                    context.maximum_version = version
                    tls = context.wrap_socket(socket.create_connection((HOST, tls_port), timeout=20),
                                              server_hostname="127.0.0.1")
                    read_until(tls, rb"\r\n")
                    plain = base64.b64encode(b"\0alice\0pass word%").decode()
                    tls.sendall(f"a AUTHENTICATE PLAIN {plain}\r\n".encode())
                    read_until(tls, rb"a (OK|NO|BAD)[^\r\n]*\r\n")
                    cipher, protocol, _ = tls.cipher()
                    tls.close()
                    request = AuthService.requests[-1]
                    assert request.get("Auth-SSL") == "on" and request.get("Auth-SSL-Protocol") == protocol, request
                    assert request.get("Auth-SSL-Cipher") == cipher, (cipher, request)
                    assert request.get("Auth-Pass") == "pass%20word%25", "escaped as nginx escapes: " + repr(request)
                # STARTTLS on the plain listener: the same.
                sock = socket.create_connection((HOST, port), timeout=20)
                read_until(sock, rb"\r\n")
                sock.sendall(b"s STARTTLS\r\n")
                read_until(sock, rb"s OK[^\r\n]*\r\n")
                tls = pe.client_tls().wrap_socket(sock, server_hostname="127.0.0.1")
                tls.sendall(b"a LOGIN alice secret-alice\r\n")
                assert b"a OK" in read_until(tls, rb"a (OK|NO|BAD)[^\r\n]*\r\n")
                cipher, protocol, _ = tls.cipher()
                tls.close()
                request = AuthService.requests[-1]
                assert (request.get("Auth-SSL-Protocol"), request.get("Auth-SSL-Cipher")) == (protocol, cipher), request
                assert "secret-alice" not in sluice.log_text() and "pass word" not in sluice.log_text()
            check("auth service: nginx's request headers (method, user, escaped password, protocol, attempt, "
                  "client IP, TLS protocol and cipher for TLS 1.3, 1.2 and STARTTLS, extra headers)", nginx_headers)

            def rewrites_and_groups():
                AuthService.mode = "ok"
                sock = socket.create_connection((HOST, port), timeout=20)
                read_until(sock, rb"\r\n")
                sock.sendall(b"a LOGIN alice@old.example secret-alice\r\n")
                reply = read_until(sock, rb"a (OK|NO|BAD)[^\r\n]*\r\n")
                assert b"a OK" in reply, "Auth-User logs in upstream as alice: " + repr(reply)
                sock.close()
                sock = socket.create_connection((HOST, port), timeout=20)
                read_until(sock, rb"\r\n")
                sock.sendall(b"a LOGIN carol wrong-password\r\n")
                assert b"a OK" in read_until(sock, rb"a (OK|NO|BAD)[^\r\n]*\r\n"), "Auth-Pass replaces the password"
                sock.close()
                sock, reply = login(port, user="bob")
                sock.sendall(b"b CREATE Nope\r\n")
                assert b"b NO [NOPERM]" in read_until(sock, rb"b (OK|NO|BAD)[^\r\n]*\r\n"), "X-Sluice-Groups scopes rules"
                sock.close()
            check("auth service: Auth-User and Auth-Pass change the upstream login; X-Sluice-Groups scope rules",
                  rewrites_and_groups)

            def refusal():
                AuthService.mode = "ok"
                AuthService.requests.clear()
                sock = socket.create_connection((HOST, port), timeout=20)
                read_until(sock, rb"\r\n")
                sock.sendall(b"a LOGIN refused x\r\n")
                reply = read_until(sock, rb"a (OK|NO|BAD)[^\r\n]*\r\n")
                assert reply == b"a NO [AUTHENTICATIONFAILED] Invalid login or password\r\n", reply
                sock.sendall(b"b LOGIN alice secret-alice\r\n")
                assert b"b OK" in read_until(sock, rb"b (OK|NO|BAD)[^\r\n]*\r\n")
                sock.close()
                assert [r.get("Auth-Login-Attempt") for r in AuthService.requests] == ["1", "2"], AuthService.requests
                assert "auth.error_code=\"535 5.7.8\"" in sluice.log_text(), sluice.log_text()[-2000:]
            check("auth service: a refusal's text reaches the client (after Auth-Wait), Auth-Error-Code is logged, "
                  "the next attempt counts 2", refusal)

            def bearer():
                AuthService.mode = "ok"
                sock = socket.create_connection((HOST, port), timeout=20)
                read_until(sock, rb"\r\n")
                sock.sendall(f"a AUTHENTICATE XOAUTH2 {xoauth2('alice', 'tok-alice-Zm9vYmFy')}\r\n".encode())
                read_until(sock, rb"a (OK|NO|BAD)[^\r\n]*\r\n")
                sock.close()
                request = AuthService.requests[-1]
                assert request.get("Auth-Method") == "xoauth2" and request.get("Auth-Pass") == "tok-alice-Zm9vYmFy", request
            check("auth service: a bearer login is Auth-Method xoauth2 with the token as Auth-Pass", bearer)

            def unavailable():
                for mode in ("slow", "garbage", "error500", "hostname", "redirect"):
                    AuthService.mode = mode
                    sock, reply = None, None
                    sock = socket.create_connection((HOST, port), timeout=20)
                    read_until(sock, rb"\r\n")
                    sock.sendall(b"a LOGIN alice secret-alice\r\n")
                    reply = read_until(sock, rb"a (OK|NO|BAD)[^\r\n]*\r\n")
                    assert b"a NO [UNAVAILABLE]" in reply, (mode, reply)
                    sock.close()
                AuthService.mode = "ok"
            check("auth service: slow past the timeout, no Auth-Status, HTTP 500, a host name as Auth-Server, a "
                  "redirect (never followed, as nginx): NO [UNAVAILABLE], never a login", unavailable)

            def loop():
                AuthService.mode, AuthService.loop_port = "loop", port
                AuthService.requests.clear()
                sock = socket.create_connection((HOST, port), timeout=30)
                read_until(sock, rb"\r\n")
                sock.sendall(b"a LOGIN alice secret-alice\r\n")
                reply = read_until(sock, rb"a (OK|NO|BAD)[^\r\n]*\r\n")
                sock.close()
                AuthService.mode = "ok"
                assert reply.startswith(b"a NO [UNAVAILABLE] Too many proxy hops"), reply
                # The client's login and three more hops asked the service; the fifth proxy refused.
                hops = [r.get("Auth-Login-Attempt") for r in AuthService.requests]
                assert len(hops) == 4, AuthService.requests
                assert "x-proxy-ttl exhausted" in sluice.log_text(), sluice.log_text()[-2000:]
            check("auth service: a route back to the proxy itself ends after five hops (x-proxy-ttl) with "
                  "NO [UNAVAILABLE], not a connection storm", loop)


        server.shutdown()
        server.server_close()
        with Sluice(config=path, port=port):
            def down():
                sock = socket.create_connection((HOST, port), timeout=20)
                read_until(sock, rb"\r\n")
                sock.sendall(b"a LOGIN alice secret-alice\r\n")
                assert b"a NO [UNAVAILABLE]" in read_until(sock, rb"a (OK|NO|BAD)[^\r\n]*\r\n")
                sock.close()
            check("auth service: a service that is down gives NO [UNAVAILABLE]", down)
    finally:
        server.shutdown()


def auth_service_connection_tests():
    """The auth service's connections: kept alive and reused, and retried once when dropped."""
    raw = RawAuthService()
    port = free_port()
    path = write(os.path.join(WORK, "auth-raw.yaml"), f"""
threads: 1
listeners: [{{ address: "{HOST}:{port}" }}]
routing: {{ http: {{ url: "http://{HOST}:{raw.port}/auth?from=sluice", timeout: 2s }} }}
""")
    try:
        with Sluice(config=path, port=port):
            def reused():
                raw.connections, raw.answers_per_connection = 0, None
                for _ in range(5):
                    sock, reply = login(port)
                    assert b"a OK" in reply, reply
                    sock.close()
                assert raw.connections == 1, f"{raw.connections} connections for 5 logins on one event loop"
                assert raw.targets == ["/auth?from=sluice"] * 5, raw.targets
            check("auth service: logins on one event loop share one kept-alive connection to the service", reused)

            def stale():
                # The service answers one request per connection and drops the next one unanswered
                # (a kept-alive connection it closed meanwhile): the login is asked again, once, anew.
                raw.connections, raw.answers_per_connection = 0, 1
                for _ in range(3):
                    sock, reply = login(port)
                    assert b"a OK" in reply, reply
                    sock.close()
                assert raw.connections >= 3, raw.connections
            check("auth service: a kept-alive connection that the service dropped is retried once on a new one",
                  stale)
    finally:
        raw.stop()


# ---------------------------------------------------------------------------
# OAuth 2.0 bearer tokens.

TOKENS = {"tok-alice-Zm9vYmFy": "alice", "tok-bob-YmF6cXV4": "bob"}


class Introspection(http.server.BaseHTTPRequestHandler):
    """RFC 7662 token introspection, as Dovecot's oauth2 passdb asks it (POST token=…)."""
    seen = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode()
        token = dict(part.split("=", 1) for part in body.split("&") if "=" in part).get("token", "")
        Introspection.seen.append(token)
        user = TOKENS.get(token)
        answer = json.dumps({"active": True, "username": user} if user else {"active": False}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass


def xoauth2(user, token):
    return base64.b64encode(f"user={user}\x01auth=Bearer {token}\x01\x01".encode()).decode()


def oauthbearer(user, token):
    return base64.b64encode(f"n,a={user},\x01host=127.0.0.1\x01port=143\x01auth=Bearer {token}\x01\x01".encode()).decode()


def oauth_tests():
    server = http.server.ThreadingHTTPServer((HOST, OAUTH2_PORT), Introspection)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        path, port = config("oauth")
        with open(path, "a") as f:
            f.write("auth_mechanisms: [PLAIN, LOGIN, XOAUTH2, OAUTHBEARER]\n")
        with Sluice(config=path, port=port) as sluice:
            def offered():
                sock = socket.create_connection((HOST, port), timeout=20)
                greeting = read_until(sock, rb"\r\n")
                sock.close()
                assert b"AUTH=PLAIN AUTH=LOGIN AUTH=XOAUTH2 AUTH=OAUTHBEARER" in greeting, greeting
            check("OAuth: auth_mechanisms decides the AUTH= capabilities before login", offered)

            def logins():
                for name, encode in (("XOAUTH2", xoauth2), ("OAUTHBEARER", oauthbearer)):
                    for initial_response in (True, False):
                        Introspection.seen.clear()
                        sock = socket.create_connection((HOST, port), timeout=20)
                        read_until(sock, rb"\r\n")
                        message = encode("alice", "tok-alice-Zm9vYmFy")
                        if initial_response:
                            sock.sendall(f"a AUTHENTICATE {name} {message}\r\n".encode())
                        else:
                            sock.sendall(f"a AUTHENTICATE {name}\r\n".encode())
                            assert read_until(sock, rb"\r\n").startswith(b"+"), name
                            sock.sendall(message.encode() + b"\r\n")
                        reply = read_until(sock, rb"a (OK|NO|BAD)[^\r\n]*\r\n")
                        assert b"a OK" in reply, (name, initial_response, reply)
                        sock.sendall(b"b SELECT INBOX\r\n")
                        assert b"b OK [READ-WRITE]" in read_until(sock, rb"b (OK|NO|BAD)[^\r\n]*\r\n")
                        sock.close()
                        assert Introspection.seen == ["tok-alice-Zm9vYmFy"], Introspection.seen
                text = sluice.log_text()
                assert "tok-alice" not in text and "Zm9vYmFy" not in text, "a token reached the log"
                assert "imap.user=alice" in text
            check("OAuth: XOAUTH2 and OAUTHBEARER, with and without SASL-IR, through Sluice to Dovecot's oauth2 "
                  "passdb (the token checked at introspection); no token in Sluice's log", logins)

            def bad_token():
                for name, encode, answer in (("XOAUTH2", xoauth2, b""), ("OAUTHBEARER", oauthbearer, b"AQ==")):
                    sock = socket.create_connection((HOST, port), timeout=20)
                    read_until(sock, rb"\r\n")
                    sock.sendall(f"a AUTHENTICATE {name} {encode('alice', 'tok-wrong')}\r\n".encode())
                    challenge = read_until(sock, rb"\r\n")
                    assert challenge.startswith(b"+ ") and len(challenge) > 4, (name, challenge)
                    error = json.loads(base64.b64decode(challenge[2:].strip()))
                    assert "status" in error, error
                    sock.sendall(answer + b"\r\n")
                    reply = read_until(sock, rb"a (OK|NO|BAD)[^\r\n]*\r\n")
                    assert b"a NO [AUTHENTICATIONFAILED]" in reply, (name, reply)
                    # The connection goes on: a good login after a bad one.
                    sock.sendall(f"b AUTHENTICATE {name} {encode('bob', 'tok-bob-YmF6cXV4')}\r\n".encode())
                    assert b"b OK" in read_until(sock, rb"b (OK|NO|BAD)[^\r\n]*\r\n")
                    sock.close()
                assert "tok-wrong" not in sluice.log_text()
            check("OAuth: a bad token gets the server's SASL error challenge, then NO [AUTHENTICATIONFAILED]", bad_token)

            def malformed():
                sock = socket.create_connection((HOST, port), timeout=20)
                read_until(sock, rb"\r\n")
                bad = base64.b64encode(b"auth=Bearer x\x01\x01").decode()  # no user
                sock.sendall(f"a AUTHENTICATE XOAUTH2 {bad}\r\n".encode())
                assert b"a BAD" in read_until(sock, rb"a (OK|NO|BAD)[^\r\n]*\r\n")
                sock.close()
            check("OAuth: a bearer message without a user is refused with BAD, no upstream asked", malformed)

        path, port = config("oauth-off")
        with Sluice(config=path, port=port):
            def not_offered():
                sock = socket.create_connection((HOST, port), timeout=20)
                greeting = read_until(sock, rb"\r\n")
                assert b"XOAUTH2" not in greeting, greeting
                sock.sendall(f"a AUTHENTICATE XOAUTH2 {xoauth2('alice', 'tok-alice-Zm9vYmFy')}\r\n".encode())
                assert b"a NO [CANNOT]" in read_until(sock, rb"a (OK|NO|BAD)[^\r\n]*\r\n")
                sock.close()
            check("OAuth: off by default (PLAIN, LOGIN): XOAUTH2 neither offered nor taken", not_offered)

        port = free_port()
        path = write(os.path.join(WORK, "oauth-tls.yaml"), f"""
listeners: [{{ address: "{HOST}:{port}", tls: starttls-required }}]
tls: {{ certificates: [{{ cert: {CERT}, key: {KEY} }}] }}
upstream: {{ address: "{HOST}:{PORT}" }}
auth_mechanisms: [XOAUTH2, OAUTHBEARER]
""")
        with Sluice(config=path, port=port):
            def hidden_until_tls():
                sock = socket.create_connection((HOST, port), timeout=20)
                greeting = read_until(sock, rb"\r\n")
                assert b"LOGINDISABLED" in greeting and b"AUTH=" not in greeting, greeting
                sock.sendall(b"a STARTTLS\r\n")
                read_until(sock, rb"a OK[^\r\n]*\r\n")
                tls = pe.client_tls().wrap_socket(sock, server_hostname="127.0.0.1")
                tls.sendall(b"b CAPABILITY\r\n")
                capabilities = read_until(tls, rb"b OK[^\r\n]*\r\n")
                assert b"AUTH=XOAUTH2 AUTH=OAUTHBEARER" in capabilities and b"AUTH=PLAIN" not in capabilities, capabilities
                tls.sendall(f"c AUTHENTICATE OAUTHBEARER {oauthbearer('alice', 'tok-alice-Zm9vYmFy')}\r\n".encode())
                assert b"c OK" in read_until(tls, rb"c (OK|NO|BAD)[^\r\n]*\r\n")
                tls.close()
            check("OAuth: starttls-required hides every mechanism until TLS; then only the configured ones", hidden_until_tls)
    finally:
        server.shutdown()


def listening_sockets(port):
    """Listening TCP sockets on `port` (IPv4), from /proc/net/tcp."""
    with open("/proc/net/tcp") as f:
        rows = [line.split() for line in f.readlines()[1:]]
    return sum(1 for row in rows if row[1].endswith(f":{port:04X}") and row[3] == "0A")


def reuse_port_tests():
    port = free_port()
    path = write(os.path.join(WORK, "reuse-port.yaml"), f"""
threads: 2
listeners: [{{ address: "{HOST}:{port}", reuse_port: true }}]
upstream: {{ address: "{HOST}:{PORT}" }}
""")
    with Sluice(config=path, port=port) as sluice:
        def sockets_per_loop():
            deadline = time.time() + 10  # the proxy takes connections once the first socket is bound
            while listening_sockets(port) < 2 and time.time() < deadline:
                time.sleep(0.1)
            assert listening_sockets(port) == 2, listening_sockets(port)
            sessions = [login(port) for _ in range(8)]
            for sock, reply in sessions:
                assert b"a OK" in reply, reply
                sock.sendall(b"b NOOP\r\n")
                assert b"b OK" in read_until(sock, rb"b (OK|NO|BAD)[^\r\n]*\r\n")
                sock.close()
            assert 'listen.sockets=2' in sluice.log_text(), sluice.log_text()[-1000:]
        check("reuse_port: one listening socket per event loop (threads: 2), and logins through them", sockets_per_loop)


def main():
    os.makedirs(WORK, exist_ok=True)
    reuse_port_tests()
    auth_service_tests()
    auth_service_connection_tests()
    oauth_tests()
    proxy_protocol_tests()
    haproxy_scale_out_tests()
    print(f"{pe.results['passed']} passed, {pe.results['failed']} failed")
    sys.exit(1 if pe.results["failed"] else 0)


if __name__ == "__main__":
    main()
