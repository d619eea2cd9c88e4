#!/usr/bin/env python3
"""Adversarial end-to-end tests: a hostile client or a hostile upstream
against the real sluice binary, with outcomes checked on the real Dovecot.

    tests/e2e/adversarial_e2e.py SLUICE_BINARY DOVECOT_DIR

Like proxy_e2e.py (whose helpers this reuses): DOVECOT_DIR is a private
instance started by scripts/dovecot-instance, its ports come from
DOVECOT_PORT / DOVECOT_TLS_PORT. Each test is one attack from
../shared/reviews (the finding's id is in the test's name); after it the
proxy must still run and serve a fresh login. Where an attack could change
mail (create, delete, expunge, append), the result is read directly from
Dovecot, not from what the proxy said. Ends with a line "N passed, N failed".
"""
import base64
import importlib.util
import os
import re
import select
import socket
import ssl
import subprocess
import sys
import threading
import time
import traceback
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location("proxy_e2e", os.path.join(HERE, "proxy_e2e.py"))
pe = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pe)

Sluice, Client, check = pe.Sluice, pe.Client, pe.check
read_until, login_reply, direct_list, write, free_port = (pe.read_until, pe.login_reply, pe.direct_list, pe.write,
                                                          pe.free_port)
SLUICE, DOVECOT_DIR, HOST, PORT, TLS_PORT, CERT, KEY = (pe.SLUICE, pe.DOVECOT_DIR, pe.HOST, pe.PORT, pe.TLS_PORT,
                                                        pe.CERT, pe.KEY)
WORK = os.path.join(DOVECOT_DIR, "adversarial")
ALICE = "secret-alice"

warnings.filterwarnings("ignore", category=DeprecationWarning)  # ssl.TLSVersion.TLSv1_1 is deprecated, on purpose


# ---------------------------------------------------------------------------
# Helpers: Dovecot seen directly, the proxy's health, sockets.

def reseed():
    """Fresh mail for alice (without proxy_e2e's 50 MB message: nothing here needs it)."""
    env = dict(os.environ, DOVECOT_PORT=str(PORT), DOVECOT_TLS_PORT=str(TLS_PORT))
    env.pop("SLUICE_SEED_LARGE", None)
    subprocess.run([os.path.join(pe.ROOT, "scripts", "dovecot-instance"), "start", DOVECOT_DIR], env=env,
                   check=True, stdout=subprocess.DEVNULL)


def direct():
    return Client(PORT, "alice", ALICE)


def mailboxes():
    """alice's mailbox names as Dovecot lists them (hierarchy delimiter ".")."""
    listing = direct_list()
    return {name.strip(b'"') for name in re.findall(rb'\* LIST \([^)]*\) "\." ([^\r\n]*)\r\n', listing)}


def message_count(mailbox="INBOX"):
    c = direct()
    data = c.run(f'STATUS "{mailbox}" (MESSAGES)')
    c.close()
    match = re.search(rb"MESSAGES (\d+)", data)
    assert match, data
    return int(match.group(1))


def message(body):
    return b"From: mallory@example.org\r\nSubject: adversarial\r\n\r\n" + body + b"\r\n"


def fresh_mailbox(name, *bodies):
    """Creates `name` directly on Dovecot (deleting an old one first) holding one message per body."""
    c = direct()
    c.run(f'DELETE "{name}"')
    assert re.search(rb"t\d+ OK", c.run(f'CREATE "{name}"')), f"cannot create {name}"
    for body in bodies:
        data = message(body)
        reply = c.run(b'APPEND "%s" {%d+}\r\n' % (name.encode(), len(data)) + data)
        assert re.search(rb"t\d+ OK", reply), reply
    c.close()


def delete_mailbox(name):
    c = direct()
    c.run(f'DELETE "{name}"')
    c.close()


def dovecot_logins(user):
    """How many successful logins of `user` Dovecot has logged."""
    with open(os.path.join(DOVECOT_DIR, "dovecot.log"), errors="replace") as f:
        return f.read().count(f"Login: user=<{user}>")


def assert_serving(sluice, user="alice", password=ALICE, tls=None, settling=False):
    """The proxy process is alive and a fresh login through it works. `settling`: connections
    were just closed under a connection limit, whose places are given back as the proxy
    processes the closes; a login that does not succeed is retried for up to 10 s (a refused
    connection's * BYE is its greeting, and the reply to the LOGIN then is EOF or a reset)."""
    code = sluice.process.poll()
    assert code is None, f"sluice died (exit status {code}); log tail:\n{sluice.log_text()[-1500:]}"
    deadline = time.time() + 10
    while True:
        try:
            reply = login_reply(sluice, user, password, tls=tls)
        except OSError as error:
            if not settling:
                raise
            reply = str(error).encode()
        if not settling or re.search(rb"(^|\r\n)a OK", reply) or time.time() > deadline:
            break
        time.sleep(0.2)
    assert re.search(rb"(^|\r\n)a OK", reply), f"fresh login through the proxy failed: {reply[-300:]!r}"


def hold_greeted(port, count, bind=None):
    """COUNT connections, each greeted with * OK. Under a connection limit, places held by
    connections that just closed (the start-up probe's) are given back as the proxy processes
    the closes: the whole set is retried for up to 10 s."""
    deadline = time.time() + 10
    while True:
        held, greeting = [], b""
        for _ in range(count):
            s = connect(port, bind=bind)
            held.append(s)
            greeting = read_until(s, rb"\r\n")
            if not greeting.startswith(b"* OK"):
                break
        else:
            return held
        for s in held:
            s.close()
        assert time.time() < deadline, f"connection {len(held)} of {count} was not greeted: {greeting!r}"
        time.sleep(0.2)


def dovecot_accepts(*commands):
    """A control: sent directly, Dovecot answers each command OK, so a proxy that passed it on would let
    the attack through (the test can fail). Returns the replies."""
    c = direct()
    replies = [c.run(command) for command in commands]
    c.close()
    for command, reply in zip(commands, replies):
        assert re.match(rb"t\d+ OK", last_line(reply)), \
            f"control: Dovecot itself no longer accepts {command[:60]!r}: {last_line(reply)!r}"
    return replies


def last_line(reply):
    return reply.rstrip(b"\r\n").split(b"\r\n")[-1]


def assert_refused(reply, what):
    line = last_line(reply)
    assert re.match(rb"\S+ (NO|BAD)( |$)", line), f"{what}: expected a tagged NO or BAD, got {line[:200]!r}"


def collect(sock, pattern, limit):
    """Reads until `pattern` matches, EOF or `limit` seconds; never raises. Returns (data, matched, eof)."""
    data = b""
    deadline = time.time() + limit
    while not re.search(pattern, data):
        remaining = deadline - time.time()
        if remaining <= 0:
            return data, False, False
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(1 << 20)
        except socket.timeout:
            return data, False, False
        except OSError:
            return data, False, True
        if not chunk:
            return data, False, True
        data += chunk
    return data, True, False


def read_to_eof(sock, limit):
    """Everything until EOF; an AssertionError if EOF does not come within `limit` seconds."""
    data = b""
    deadline = time.time() + limit
    while True:
        remaining = deadline - time.time()
        assert remaining > 0, f"no EOF within {limit} s; got {data[-300:]!r}"
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(1 << 20)
        except socket.timeout:
            continue
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


def connect(port=None, bind=None, rcvbuf=None, timeout=10):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    if bind:
        s.bind((bind, 0))
    s.settimeout(timeout)
    s.connect((HOST, port))
    return s


class RssSampler:
    """Samples the proxy's RSS every 20 ms in a thread; `growth_mb()` is peak minus the baseline."""

    def __init__(self, sluice):
        self.sluice = sluice
        self.baseline = sluice.rss_kb()
        self.peak = self.baseline
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while self.running and self.sluice.process.poll() is None:
            try:
                self.peak = max(self.peak, self.sluice.rss_kb())
            except OSError:
                return
            time.sleep(0.02)

    def stop(self):
        self.running = False
        self.thread.join()
        return self.growth_mb()

    def growth_mb(self):
        return (self.peak - self.baseline) / 1024


# ---------------------------------------------------------------------------
# Configurations.

def config(name, body):
    """A configuration file WORK/NAME.yaml: a plain listener on a free port, then `body`. Returns (path, port)."""
    os.makedirs(WORK, exist_ok=True)
    port = free_port()
    path = write(os.path.join(WORK, f"{name}.yaml"), f'listeners: [{{ address: "{HOST}:{port}" }}]\n{body}\n')
    return path, port


def proxy(name, body):
    path, port = config(name, body)
    return Sluice(config=path, port=port)


# Every u-* login name is routed to alice's mailbox (password secret-alice),
# so each attack can run as a user that one rule, and only that rule, applies to.
ROUTING_MAP = f"""
upstreams:
  main: {{ address: "{HOST}:{PORT}" }}
patterns:
  - match: '^u-[a-z]+$'
    upstream: main
    login: alice
fallback: main
"""

RULES = """
routing:
  map: users.yaml
timeouts:
  login_failure_delay: 50ms
rules:
  - deny: [DELETE]
    users: ["u-deny"]
  - hide_mailboxes: ["Secret*"]
    users: ["u-hide"]
  - read_only: true
    users: ["u-ro"]
  - deny: [SEARCH]
    users: ["u-search"]
  - deny: [CREATE, DELETE]
    users: ["u-cd"]
  - deny: [FETCH]
    mailboxes: ["Secret*"]
    users: ["u-fetch"]
  - deny: [FETCH]
    mailboxes: ["Nothing*"]
    users: ["u-nothing"]
  - hide_mailboxes: ["INBOX.Private"]
    users: ["u-private"]
  - hide_mailboxes: ["Archive.2019"]
    users: ["u-child"]
  - deny: [FETCH, COPY, MOVE, STORE, EXPUNGE, SEARCH]
    mailboxes: ["Secret*"]
    users: ["u-reads"]
  - audit: { commands: [IDLE], file: "audit-idle.log" }
    users: ["u-audit"]
"""


def rules_proxy():
    os.makedirs(WORK, exist_ok=True)
    write(os.path.join(WORK, "users.yaml"), ROUTING_MAP)
    return proxy("rules", RULES)


def as_user(sluice, user):
    return Client(sluice.port, user, ALICE)


# ---------------------------------------------------------------------------
# A scripted upstream.

def plain_user(response):
    """The authentication identity of a SASL PLAIN response (base64)."""
    try:
        parts = base64.b64decode(response.strip()).split(b"\0")
        return parts[1] if len(parts) == 3 else b""
    except ValueError:
        return b""


class FakeUpstream:
    """An IMAP server on a free port. It greets with `greeting` (None: it never
    says a word), logs anyone in (LOGIN or AUTHENTICATE PLAIN), answers the
    proxy's `LIST "" ""` with delimiter ".", everything else with OK.
    `hook(conn, tag, verb, line, session)` runs first for every command line;
    when it returns True the line is taken as answered. `session` has `user`
    (bytes) and `logged_in`."""

    GREETING = b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR] fake ready\r\n"

    def __init__(self, hook=None, greeting=GREETING):
        self.hook = hook
        self.greeting = greeting
        self.running = True
        self.server = socket.socket()
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind((HOST, 0))
        self.server.listen(16)
        self.port = self.server.getsockname()[1]
        self.address = f"{HOST}:{self.port}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while self.running:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        try:
            with conn:
                self._conversation(conn)
        except OSError:
            pass

    def _conversation(self, conn):
        if self.greeting is None:
            while self.running and conn.recv(65536):
                pass
            return
        conn.sendall(self.greeting)
        session = {"user": b"", "logged_in": False}
        buffer = b""
        sasl_tag = None
        while self.running:
            chunk = conn.recv(65536)
            if not chunk:
                return
            buffer += chunk
            while b"\r\n" in buffer:
                line, buffer = buffer.split(b"\r\n", 1)
                if sasl_tag is not None:
                    session["user"] = plain_user(line)
                    tag, verb, sasl_tag = sasl_tag, b"AUTHENTICATE", None
                else:
                    tag, _, rest = line.partition(b" ")
                    words = rest.split(b" ")
                    verb = words[0].upper()
                    if verb == b"UID" and len(words) > 1:
                        verb = b"UID " + words[1].upper()
                    if verb == b"LOGIN" and len(words) > 1:
                        session["user"] = words[1].strip(b'"')
                    elif verb == b"AUTHENTICATE":
                        if len(words) < 3:
                            sasl_tag = tag
                            conn.sendall(b"+ \r\n")
                            continue
                        session["user"] = plain_user(words[2])
                if self.hook and self.hook(conn, tag, verb, line, session):
                    continue
                if verb in (b"LOGIN", b"AUTHENTICATE"):
                    session["logged_in"] = True
                    conn.sendall(tag + b" OK [CAPABILITY IMAP4rev1 IDLE] Logged in\r\n")
                elif verb == b"LIST" and line.endswith(b'"" ""'):
                    conn.sendall(b'* LIST (\\Noselect) "." ""\r\n' + tag + b" OK List done\r\n")
                elif verb == b"LOGOUT":
                    conn.sendall(b"* BYE bye\r\n" + tag + b" OK bye\r\n")
                    return
                else:
                    conn.sendall(tag + b" OK done\r\n")

    def stop(self):
        self.running = False
        self.server.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def logged_in(port):
    """A connection to the proxy at `port`, logged in as alice through a FakeUpstream: (socket, login reply)."""
    s = connect(port)
    read_until(s, rb"\r\n")
    s.sendall(b"a LOGIN alice pw\r\n")
    return s, read_until(s, rb"(^|\r\n)a OK[^\r\n]*\r\n")


def hold(conn):
    """Keeps a fake upstream's connection open, reading and ignoring, until the proxy closes it."""
    try:
        conn.settimeout(30)
        while conn.recv(65536):
            pass
    except OSError:
        pass


# ---------------------------------------------------------------------------
# S1: an escape right before a literal announcement crashed the tokenizer.

ESCAPED_LITERAL = b'"\\{1}\r\nZ""'          # the wire bytes "\{1}CRLF Z""
ESCAPED_LITERAL_PLUS = b'"\\{1+}\r\nZ""'


def tokenizer_tests():
    for name, line in [("a NOOP \"\\{1}", b"a NOOP " + ESCAPED_LITERAL + b"\r\n"),
                       ("a NOOP \"\\{1+}", b"a NOOP " + ESCAPED_LITERAL_PLUS + b"\r\n"),
                       ("a FETCH 1 BODY[\"\\{1}", b"a FETCH 1 BODY[" + ESCAPED_LITERAL + b"]\r\n")]:
        def before_login(line=line):
            with Sluice() as sluice:
                s = connect(sluice.port)
                read_until(s, rb"\r\n")
                s.sendall(line)
                collect(s, rb"(^|\r\n)a (OK|NO|BAD)[^\r\n]*\r\n", 2)
                s.close()
                assert_serving(sluice)
        check(f"S1: {name}... before login does not crash the proxy", before_login)

    for name, literal in [("{1}", ESCAPED_LITERAL), ("{1+}", ESCAPED_LITERAL_PLUS)]:
        def after_login(literal=literal):
            with rules_proxy() as sluice:
                c = as_user(sluice, "u-nothing")  # deny FETCH in Nothing*: every FETCH is parsed
                assert b"OK" in c.run("SELECT INBOX")
                c.sock.sendall(b"f FETCH 1 BODY[" + literal + b"]\r\n")
                collect(c.sock, rb"(^|\r\n)f (OK|NO|BAD)[^\r\n]*\r\n", 3)
                c.close()
                assert_serving(sluice)
        check(f"S1: FETCH 1 BODY[\"\\{name}...] after login, FETCH selected by a rule: the proxy survives",
              after_login)

    poison = (b"* SEARCH " + ESCAPED_LITERAL + b"\r\n")
    relay_poison = (poison + b"* ENABLED " + ESCAPED_LITERAL + b"\r\n"
                    + b'* LIST () "." ' + ESCAPED_LITERAL + b"\r\n"
                    + b"* STATUS " + ESCAPED_LITERAL + b" (MESSAGES 1)\r\n"
                    + b"* CAPABILITY IMAP4rev1 " + ESCAPED_LITERAL + b"\r\n")

    def hook(conn, tag, verb, line, session):
        if verb in (b"LOGIN", b"AUTHENTICATE") and session["user"] == b"poison":
            session["logged_in"] = True
            conn.sendall(poison + tag + b" OK [CAPABILITY IMAP4rev1] Logged in\r\n")
            return True
        if verb in (b"SEARCH", b"UID SEARCH") and session["user"] == b"poison-rules":
            conn.sendall(relay_poison + tag + b" OK [X " + ESCAPED_LITERAL + b"] Search done\r\n")
            return True
        return False

    def upstream_poison():
        with FakeUpstream(hook) as fake, proxy("s1-upstream", f"""
upstream: {{ address: "{fake.address}" }}
timeouts: {{ login_failure_delay: 50ms }}
rules:
  - audit: {{ commands: [SEARCH], file: "s1-audit.log" }}
    users: ["poison-rules"]
  - hide_mailboxes: ["Nothing*"]
    users: ["poison-rules"]
  - capabilities: {{ remove: ["XNOTHING"] }}
    users: ["poison-rules"]
""") as sluice:
            # During the upstream login.
            s = connect(sluice.port)
            read_until(s, rb"\r\n")
            s.sendall(b"a LOGIN poison pw\r\n")
            collect(s, rb"(^|\r\n)a (OK|NO|BAD)[^\r\n]*\r\n", 3)
            s.close()
            assert_serving(sluice, "alice", "pw")
            # After login, responses selected by the user's rules.
            s = connect(sluice.port)
            read_until(s, rb"\r\n")
            s.sendall(b"a LOGIN poison-rules pw\r\n")
            read_until(s, rb"(^|\r\n)a OK[^\r\n]*\r\n")
            s.sendall(b"b SELECT INBOX\r\nc SEARCH ALL\r\n")
            collect(s, rb"(^|\r\n)c (OK|NO|BAD)[^\r\n]*\r\n", 3)
            s.close()
            assert_serving(sluice, "alice", "pw")
    check("S1: upstream sends * SEARCH \"\\{1}... during login, and selected responses with it after: the proxy "
          "survives", upstream_poison)

    def parse_command():
        os.makedirs(WORK, exist_ok=True)
        inputs = [("client", b"a NOOP " + ESCAPED_LITERAL + b"\r\n"),
                  ("client", b"a NOOP " + ESCAPED_LITERAL_PLUS + b"\r\n"),
                  ("client", b"a FETCH 1 BODY[" + ESCAPED_LITERAL + b"]\r\n"),
                  ("server", b"* SEARCH " + ESCAPED_LITERAL + b"\r\n")]
        for index, (side, data) in enumerate(inputs):
            path = os.path.join(WORK, f"s1-{index}.{side}")
            with open(path, "wb") as f:
                f.write(data)
            out = subprocess.run([SLUICE, "parse", "--from", side, path], capture_output=True, timeout=30)
            assert out.returncode >= 0, f"sluice parse killed by signal {-out.returncode} on {data!r}"
            assert out.returncode in (0, 1), f"sluice parse exited {out.returncode} on {data!r}: {out.stderr!r}"
            assert out.returncode == 0 or out.stderr.strip(), f"exit 1 without a message on {data!r}"
    check("S1: sluice parse on escaped literal announcements exits normally (no signal)", parse_command)


# ---------------------------------------------------------------------------
# F1, F2: rules fail closed on what the proxy cannot parse.

SECRET_BODY = b"TOP-SECRET-BODY"


def fail_closed_tests():
    def deny_delete_unparseable():
        fresh_mailbox("Control")
        dovecot_accepts("DELETE Control x[")
        assert b"Control" not in mailboxes(), "control: DELETE Control x[ should delete Control on Dovecot"
        fresh_mailbox("Secret", SECRET_BODY)
        with rules_proxy() as sluice:
            c = as_user(sluice, "u-deny")
            assert_refused(c.run("DELETE Secret"), "DELETE Secret (the rule itself)")
            assert_refused(c.run("DELETE Secret x["), "DELETE Secret x[")
            c.close()
            assert b"Secret" in mailboxes(), "Secret was deleted on the server"
            assert message_count("Secret") == 1
            assert_serving(sluice)
    check("F1: deny [DELETE]: DELETE Secret x[ is refused; Secret still exists on the server", deny_delete_unparseable)

    def hide_unparseable():
        fresh_mailbox("Secret", SECRET_BODY)
        select_direct, _ = dovecot_accepts("SELECT Secret x[", "STATUS Secret (MESSAGES) x[")
        assert b"1 EXISTS" in select_direct, select_direct
        with rules_proxy() as sluice:
            c = as_user(sluice, "u-hide")
            assert_refused(c.run("SELECT Secret"), "SELECT Secret (the rule itself)")
            select_reply = c.run("SELECT Secret x[")
            assert_refused(select_reply, "SELECT Secret x[")
            assert b"EXISTS" not in select_reply, select_reply
            status = c.run("STATUS Secret (MESSAGES) x[")
            assert_refused(status, "STATUS Secret (MESSAGES) x[")
            assert b"* STATUS" not in status, status
            assert_refused(c.run("DELETE Secret x["), "DELETE Secret x[")
            c.close()
            assert b"Secret" in mailboxes(), "Secret was deleted on the server"
            assert_serving(sluice)
    check("F1: hide_mailboxes [Secret*]: SELECT/STATUS/DELETE Secret x[ are refused; Secret still exists",
          hide_unparseable)

    def read_only_unparseable():
        select_direct = dovecot_accepts("SELECT INBOX x[", "STORE 1 +FLAGS.SILENT () x[", "EXPUNGE x[")[0]
        assert b"READ-WRITE" in select_direct, select_direct
        before = message_count()
        with rules_proxy() as sluice:
            c = as_user(sluice, "u-ro")
            select_reply = c.run("SELECT INBOX x[")
            assert_refused(select_reply, "SELECT INBOX x[")
            assert b"READ-WRITE" not in select_reply, select_reply
            assert_refused(c.run("STORE 1 +FLAGS.SILENT (\\Deleted) x["), "STORE 1 +FLAGS.SILENT (\\Deleted) x[")
            assert_refused(c.run("EXPUNGE x["), "EXPUNGE x[")
            # Dovecot ignores trailing arguments of SELECT (a literal too): still only EXAMINE.
            trailing = c.run(b"SELECT INBOX {5+}\r\nhello")
            assert b"READ-WRITE" not in trailing, f"SELECT INBOX {{5+}}hello opened INBOX read-write: {trailing!r}"
            c.close()
            d = direct()
            d.run("EXAMINE INBOX")
            flags = d.run("FETCH 1 FLAGS")
            d.close()
            assert b"\\Deleted" not in flags, f"message 1 was flagged \\Deleted: {flags!r}"
            assert message_count() == before, "messages were expunged on the server"
            assert_serving(sluice)
    check("F1: read_only: SELECT INBOX x[, STORE ... x[, EXPUNGE x[ refused; nothing flagged or expunged",
          read_only_unparseable)

    def deny_search_nested():
        deep = dovecot_accepts("EXAMINE INBOX", "SEARCH " + "(" * 10_000 + "ALL" + ")" * 10_000)[1]
        assert b"* SEARCH 1" in deep, f"control: Dovecot should search 10,000 levels deep: {deep[:200]!r}"
        with rules_proxy() as sluice:
            c = as_user(sluice, "u-search")
            assert b"OK" in c.run("SELECT INBOX")
            assert_refused(c.run("SEARCH (ALL)"), "SEARCH (ALL) (the rule itself)")
            for depth in (40, 10_000):
                reply = c.run("SEARCH " + "(" * depth + "ALL" + ")" * depth)
                assert_refused(reply, f"SEARCH nested {depth} deep")
                assert b"* SEARCH" not in reply and b"* ESEARCH" not in reply, f"depth {depth}: {reply[:200]!r}"
            c.close()
            assert_serving(sluice)
    check("F1: deny [SEARCH]: SEARCH nested 40 and 10,000 levels is refused", deny_search_nested)

    def hidden_unparseable_list_response():
        fresh_mailbox("Secret[x")
        assert b"Secret[x" in mailboxes(), "Dovecot should list Secret[x directly"
        try:
            with rules_proxy() as sluice:
                c = as_user(sluice, "u-hide")
                listing = c.run('LIST "" "*"')
                pattern = c.run('LIST "" "Secret*"')
                c.close()
                assert re.search(rb"t\d+ OK", listing) and b"INBOX" in listing, listing
                assert b"Secret" not in listing, f"hidden mailbox listed: {listing!r}"
                assert b"Secret" not in pattern, f"hidden mailbox listed: {pattern!r}"
                assert_serving(sluice)
        finally:
            delete_mailbox("Secret[x")
    check("F2: hide_mailboxes [Secret*]: LIST does not show Secret[x (a name the LIST parser stumbled on)",
          hidden_unparseable_list_response)


# ---------------------------------------------------------------------------
# S2: bytes of a synchronizing literal sent without waiting for "+".

def smuggle(port, user, announce, payload, after, limit=5):
    """Sends, in one write, `announce {N}` + `payload` (N = its length) + `after` + `z NOOP`, without
    waiting for +; returns what came back until z's answer (`limit` seconds at most)."""
    c = Client(port, user, ALICE)
    c.sock.sendall(announce + b" {%d}\r\n" % len(payload) + payload + after + b"z NOOP\r\n")
    data, _, _ = collect(c.sock, rb"(^|\r\n)z (OK|NO|BAD)[^\r\n]*\r\n", limit)
    c.close()
    return data


def smuggling_tests():
    create = b"s1 CREATE Smuggled\r\n"
    delete = b"s1 DELETE Protected\r\n"
    # (name, announcing command, "literal", bytes after it, whether Dovecot runs the "literal" as a command)
    variants = [
        ("a XNOPE {N} + s1 CREATE Smuggled", b"a XNOPE", create, b"", True),
        ("a XNOPE {N} + s1 DELETE Protected", b"a XNOPE", delete, b"", True),
        ("a APPEND NoSuchFolder {N} + s1 DELETE Protected", b"a APPEND NoSuchFolder", delete, b"", True),
        ("a APPEND NoSuchFolder {N} + s1 CREATE Smuggled", b"a APPEND NoSuchFolder", create, b"", True),
        # Dovecot sends + for SELECT and reads the bytes as a name: a guard for the proxy's own handling.
        ("a SELECT {N} + s1 DELETE Protected (Dovecot takes it as the literal)", b"a SELECT", delete, b"\r\n",
         False),
    ]
    for user, rule in [("u-cd", "deny [CREATE, DELETE]"), ("u-ro", "read_only")]:
        for name, announce, payload, after, runs_directly in variants:
            def test(user=user, announce=announce, payload=payload, after=after, runs_directly=runs_directly):
                if runs_directly:  # control: straight to Dovecot, the "literal" runs as a command
                    delete_mailbox("Control")
                    control = payload.replace(b"Smuggled", b"Control").replace(b"DELETE Protected", b"CREATE Control")
                    data = smuggle(PORT, "alice", announce, control, after, limit=20)
                    created = b"Control" in mailboxes()
                    delete_mailbox("Control")
                    assert created and re.search(rb"(^|\r\n)s1 OK", data), f"control: Dovecot did not run it: {data!r}"
                boxes = mailboxes()
                if b"Smuggled" in boxes:
                    delete_mailbox("Smuggled")
                if b"Protected" not in boxes:
                    fresh_mailbox("Protected")
                with rules_proxy() as sluice:
                    data = smuggle(sluice.port, user, announce, payload, after)
                    time.sleep(0.3)
                    boxes = mailboxes()
                    assert b"Smuggled" not in boxes, f"Smuggled was created on the server; client saw {data!r}"
                    assert b"Protected" in boxes, f"Protected was deleted on the server; client saw {data!r}"
                    assert not re.search(rb"(^|\r\n)s1 OK", data), data
                    assert_serving(sluice)
            check(f"S2: {rule}: {name} in one write, not waiting for +: the server is unchanged", test)


# ---------------------------------------------------------------------------
# S5, S6: mailbox rules under pipelining, INBOX case, CATENATE.

def mailbox_rule_tests():
    def pipelined_select_fetch():
        fresh_mailbox("Secret", SECRET_BODY)
        with rules_proxy() as sluice:
            c = as_user(sluice, "u-fetch")
            assert b"OK" in c.run("SELECT Secret")
            assert_refused(c.run("FETCH 1 BODY[]"), "FETCH in Secret (the rule itself)")
            c.close()
            c = as_user(sluice, "u-fetch")
            c.sock.sendall(b"a SELECT Secret\r\nb FETCH 1 BODY[]\r\n")
            data = c.read_tagged("b")
            c.close()
            assert SECRET_BODY not in data, "the message in Secret was fetched"
            assert re.search(rb"(^|\r\n)b NO", data), data
            assert_serving(sluice)
    check("S5: deny [FETCH] in Secret*: SELECT Secret and FETCH pipelined in one write, the FETCH is refused",
          pipelined_select_fetch)

    def inbox_case():
        delimiter = dovecot_accepts('LIST "" ""')[0]
        assert b'"." ""' in delimiter, f"these tests assume Dovecot's hierarchy delimiter is '.': {delimiter!r}"
        fresh_mailbox("INBOX.Private", b"PRIVATE-BODY")
        assert b"INBOX.Private" in mailboxes()
        assert b"1 EXISTS" in dovecot_accepts("SELECT inbox.Private")[0], "control: Dovecot opens inbox.Private"
        with rules_proxy() as sluice:
            c = as_user(sluice, "u-private")
            assert_refused(c.run("SELECT INBOX.Private"), "SELECT INBOX.Private (the rule itself)")
            for name in ("inbox.Private", "Inbox.Private", '"iNbOx.Private"'):
                reply = c.run(f"SELECT {name}")
                assert_refused(reply, f"SELECT {name}")
                assert b"EXISTS" not in reply, f"SELECT {name} opened the hidden mailbox: {reply!r}"
                status = c.run(f"STATUS {name} (MESSAGES)")
                assert b"* STATUS" not in status, f"STATUS {name}: {status!r}"
            c.close()
            assert_serving(sluice)
    check("S6: hide_mailboxes [INBOX.Private]: SELECT/STATUS inbox.Private (other case) does not open it", inbox_case)

    def catenate():
        fresh_mailbox("INBOX.Private", b"PRIVATE-BODY")
        fresh_mailbox("Scratch")
        # The attack works directly on this Dovecot (it offers CATENATE), so the proxy must stop it.
        urls = ("/INBOX.Private/;UID=1", "/inbox.Private/;UID=1", "/INBOX%2EPrivate/;UID=1",
                "/INBOX.Private/;UID=1/;SECTION=TEXT")
        d = direct()
        capabilities = d.login_reply
        replies = [d.run(f'APPEND Scratch CATENATE (URL "{url}")') for url in urls]
        d.close()
        if b"CATENATE" in capabilities:
            for url, reply in zip(urls, replies):
                assert re.search(rb"t\d+ OK", reply), f"CATENATE from {url} should work directly: {reply!r}"
            assert message_count("Scratch") == len(urls)
        delete_mailbox("Scratch")
        before = message_count()
        with rules_proxy() as sluice:
            c = as_user(sluice, "u-private")
            for url in urls:
                reply = c.run(f'APPEND INBOX CATENATE (URL "{url}")')
                assert_refused(reply, f"APPEND INBOX CATENATE (URL {url})")
            c.close()
            assert message_count() == before, "a message was copied out of the hidden mailbox into INBOX"
            assert_serving(sluice)
    check("S6: hide_mailboxes [INBOX.Private]: APPEND INBOX CATENATE (URL \"/INBOX.Private/;UID=1\") is refused, "
          "nothing appended", catenate)

    def catenate_after_streamed_literal():
        # The URL comes after a literal too large to hold for the rules (it streams to the
        # server first): the rule sees the command again at the URL's part, and the server
        # is made to fail the whole command (review S13).
        fresh_mailbox("INBOX.Private", b"PRIVATE-BODY")
        big = b"X" * 70000
        before = message_count()
        with rules_proxy() as sluice:
            c = as_user(sluice, "u-private")
            for announce in (b"{%d+}" % len(big), b"{%d}" % len(big)):
                c.sock.sendall(b"m APPEND INBOX CATENATE (TEXT " + announce + b"\r\n")
                if not announce.endswith(b"+}"):
                    read_until(c.sock, rb"\+[^\r\n]*\r\n")
                c.sock.sendall(big + b' URL "/INBOX.Private/;UID=1")\r\nn NOOP\r\n')
                reply = read_until(c.sock, rb"n OK[^\r\n]*\r\n")
                assert b"m NO [NONEXISTENT]" in reply, reply
                assert b"m OK" not in reply and b"m BAD" not in reply, reply
            c.close()
            assert message_count() == before, "a message was appended with the hidden mailbox's content"
            assert_serving(sluice)
    check("S13: hide_mailboxes [INBOX.Private]: a CATENATE URL after a 70 KB streamed TEXT part is refused, "
          "nothing appended", catenate_after_streamed_literal)


# ---------------------------------------------------------------------------
# S3: a client that sends and never reads.

FLOOD_BYTES = 40 << 20


def flood(sluice, unit, login=None):
    """Sends `unit` over and over for up to 10 s (at most 40 MB) from a socket with a 4 KiB
    receive buffer that is never read; stops early when the proxy has taken nothing for 2 s
    (back-pressure) or closed. Returns the proxy's RSS growth in MB."""
    s = connect(sluice.port, rcvbuf=4096)
    read_until(s, rb"\r\n")
    if login:
        s.sendall(f"a LOGIN {login} {ALICE}\r\n".encode())
        read_until(s, rb"(^|\r\n)a OK[^\r\n]*\r\n")
    sampler = RssSampler(sluice)
    chunk = unit * (65536 // len(unit))
    s.setblocking(False)
    sent = 0
    start = last_progress = time.time()
    try:
        while sent < FLOOD_BYTES and time.time() - start < 10:
            offset = sent % len(chunk)
            try:
                sent += s.send(chunk[offset:])
                last_progress = time.time()
            except BlockingIOError:
                if time.time() - last_progress > 2:
                    break
                select.select([], [s], [], 0.05)
            except OSError:
                break  # the proxy closed the connection: fine
        time.sleep(1.0)  # what the proxy has read is processed
    finally:
        s.close()
        growth = sampler.stop()
    print(f"    sent {sent / 1e6:.1f} MB of {unit!r} in {time.time() - start:.1f} s without reading: "
          f"proxy RSS +{growth:.1f} MB", flush=True)
    return growth


def non_reading_client_tests():
    for name, unit, login in [("before login: a CAPABILITY", b"a CAPABILITY\r\n", None),
                              ("after login, no rule: a NOOP", b"a NOOP\r\n", "alice"),
                              ("after login, with a rule: a NOOP", b"a NOOP\r\n", "u-deny"),
                              ("after login: a DELETE x that a rule refuses", b"a DELETE x\r\n", "u-deny")]:
        def test(unit=unit, login=login):
            with rules_proxy() as sluice:
                growth = flood(sluice, unit, login)
                assert growth < 32, f"proxy memory grew by {growth:.1f} MB for a client that never reads"
                assert_serving(sluice)
        check(f"S3: {name} flood (40 MB, never read): proxy RSS grows < 32 MB", test)

    def many_small_answers():
        # 20 connections that never read, each flooding NOOPs before login: the answers
        # are small, and written one by one their bookkeeping held ~2 MB per connection
        # under the write high-water mark (red team 8 #1).
        with rules_proxy() as sluice:
            sampler = RssSampler(sluice)
            sockets = []
            for _ in range(20):
                s = connect(sluice.port, rcvbuf=4096)
                read_until(s, rb"\r\n")
                s.setblocking(False)
                sockets.append(s)
            chunk = b"n NOOP\r\n" * 8192
            deadline = time.time() + 8
            while time.time() < deadline:
                progress = False
                for s in sockets:
                    try:
                        s.send(chunk)
                        progress = True
                    except (BlockingIOError, OSError):
                        pass
                if not progress:
                    time.sleep(0.05)
            time.sleep(1.0)
            growth = sampler.stop()
            for s in sockets:
                s.close()
            print(f"    20 non-reading connections flooding NOOP before login: proxy RSS +{growth:.1f} MB", flush=True)
            assert growth < 20, f"proxy memory grew by {growth:.1f} MB (more than 1 MB per connection)"
            assert_serving(sluice)
    check("before login: 20 non-reading connections flooding NOOP hold < 1 MB each", many_small_answers)


# ---------------------------------------------------------------------------
# F7/S11: garbage from the upstream after login.

def upstream_garbage_tests():
    variants = [("* OK a\\x00b (NUL)", b"* 1 FETCH (FLAGS (\\Seen))\r\n* OK a\x00b\r\n"),
                ("* 1 FETCH (BODY[] {abc}", b"* 1 FETCH (FLAGS (\\Seen))\r\n* 1 FETCH (BODY[] {abc}\r\n"),
                ("a 20 MB line without CRLF", None)]
    for name, garbage in variants:
        def test(garbage=garbage):
            def hook(conn, tag, verb, line, session):
                if session["logged_in"] and verb == b"NOOP":
                    try:
                        if garbage is not None:
                            conn.sendall(garbage)
                        else:
                            conn.sendall(b"* OK ")
                            for _ in range(20):
                                conn.sendall(b"x" * (1 << 20))
                    except OSError:
                        pass
                    hold(conn)
                    return True
                return False
            with FakeUpstream(hook) as fake, \
                    proxy("f7", f'upstream: {{ address: "{fake.address}" }}\n'
                                f"timeouts: {{ login_failure_delay: 50ms }}") as sluice:
                s, _ = logged_in(sluice.port)
                s.sendall(b"b NOOP\r\n")
                data = read_to_eof(s, 20)
                s.close()
                assert re.search(rb"(^|\r\n)\* BYE [^\r\n]*\r\n$", data), \
                    f"no * BYE before EOF; last bytes {data[-200:]!r}"
                assert_serving(sluice, "alice", "pw")
        check(f"F7/S11: upstream sends {name} after login: the client gets * BYE before EOF", test)


# ---------------------------------------------------------------------------
# B.4: an untagged line longer than a piece is streamed, not held whole.

LONG_LINE_MESSAGES = 14000  # `* SEARCH 1 … 14000` is about 74 KB


def long_line_tests():
    def dovecot_search():
        c = direct()
        c.run('DELETE "Many"')
        assert re.search(rb"t\d+ OK", c.run('CREATE "Many"'))
        body = message(b"one of many")
        parts = [b'APPEND "Many"']
        for _ in range(LONG_LINE_MESSAGES):
            parts.append(b" {%d+}\r\n" % len(body) + body)
        reply = c.run(b"".join(parts))  # one MULTIAPPEND (RFC 3502)
        assert re.search(rb"t\d+ OK", last_line(reply)), reply[-200:]
        expected = re.search(rb"\* SEARCH [^\r\n]*\r\n", c.run("EXAMINE Many") + c.run("SEARCH ALL")).group(0)
        c.close()
        assert len(expected) > 70000, f"control: the SEARCH line is {len(expected)} bytes, not longer than a piece"
        try:
            with rules_proxy() as sluice:
                for user in ["alice", "u-hide", "u-reads"]:
                    client = as_user(sluice, user)
                    client.run("EXAMINE Many")
                    got = re.search(rb"\* SEARCH [^\r\n]*\r\n", client.run("SEARCH ALL"))
                    client.close()
                    assert got and got.group(0) == expected, \
                        f"{user}: the SEARCH line differs ({len(got.group(0)) if got else 0} of {len(expected)} bytes)"
                assert_serving(sluice)
        finally:
            delete_mailbox("Many")
    check(f"B.4: a {LONG_LINE_MESSAGES}-number * SEARCH line from Dovecot arrives whole and unchanged, "
          "without rules, under hide and under a mailbox-scoped deny", dovecot_search)

    def streamed_not_held():
        size = 12 << 20
        numbers = b" ".join(b"%d" % n for n in range(1, 2_000_000))[:size].rsplit(b" ", 1)[0]
        line = b"* SEARCH " + numbers + b"\r\n"

        def hook(conn, tag, verb, line_in, session):
            if session["logged_in"] and verb == b"SEARCH":
                for start in range(0, len(line), 65536):
                    conn.sendall(line[start:start + 65536])
                conn.sendall(tag + b" OK Search done\r\n")
                return True
            return False
        with FakeUpstream(hook) as fake, \
                proxy("longline", f'upstream: {{ address: "{fake.address}" }}\n'
                                  f'rules:\n  - hide_mailboxes: ["Secret*"]\n') as sluice:
            client = Client(sluice.port, "alice", "pw")
            sampler = RssSampler(sluice)
            reply = client.run("SEARCH ALL")
            growth = sampler.stop()
            client.close()
            print(f"    a {len(line) / 1e6:.1f} MB line through the proxy: RSS +{growth:.1f} MB", flush=True)
            assert reply.startswith(line), f"the line arrived changed ({len(reply)} bytes)"
            assert growth < 6, f"proxy RSS grew by {growth:.1f} MB for one {len(line) >> 20} MB line"
            assert_serving(sluice, "alice", "pw")
    check("B.4: a 12 MB * SEARCH line from the upstream reaches the client unchanged; proxy RSS grows < 6 MB",
          streamed_not_held)

    def cut_line_is_malformed():
        # Red team B.4 #2: a SEARCH line cut inside a number must not reach the client as a valid line.
        line = b"* SEARCH " + b" ".join(b"%d" % n for n in range(100000, 120000))

        def hook(conn, tag, verb, line_in, session):
            if session["logged_in"] and verb == b"SEARCH":
                conn.sendall(line[:100003])
                time.sleep(0.5)
                conn.close()
                return True
            return False
        with FakeUpstream(hook) as fake, \
                proxy("cutline", f'upstream: {{ address: "{fake.address}" }}\n') as sluice:
            s, _ = logged_in(sluice.port)
            s.sendall(b"b SEARCH ALL\r\n")
            data = read_to_eof(s, 20)
            s.close()
            lines = data.split(b"\r\n")
            search = [x for x in lines if x.startswith(b"* SEARCH")]
            assert search and re.search(rb"\* BYE [^\r\n]*\r\n$", data), data[-200:]
            assert search[0].endswith(b" ("), f"the cut line ends {search[0][-30:]!r}: it reads as a valid SEARCH"
            assert_serving(sluice, "alice", "pw")
    check("B.4 red team #2: a streamed line cut by the upstream's close ends in ' (' (malformed), then * BYE",
          cut_line_is_malformed)

    def transparent_deadline_mid_line():
        # Red team B.4 #4: the login deadline's BYE must start a line of its own.
        def stall(conn, tag, verb, line_in, session):
            return False
        fake = FakeUpstream(stall, greeting=b"* OK " + b"x" * 100_000)
        try:
            with proxy("transparent-deadline", f'mode: transparent\nupstream: {{ address: "{fake.address}" }}\n'
                                               f"timeouts: {{ login: 2s }}") as sluice:
                s = connect(sluice.port)
                data = read_to_eof(s, 20)
                s.close()
                assert re.search(rb"\r\n\* BYE Login time exceeded\.\r\n$", data), data[-120:]
                assert sluice.process.poll() is None, "sluice died"  # (this upstream never finishes a greeting)
        finally:
            fake.stop()
    check("B.4 red team #4: transparent mode, the login deadline inside a half-sent greeting: * BYE on a line of its own",
          transparent_deadline_mid_line)


# ---------------------------------------------------------------------------
# Red team (metrics): changing user inside a session, and a PREAUTH upstream.

def identity_tests():
    def unauthenticate():
        seen = []

        def hook(conn, tag, verb, line, session):
            seen.append(verb)
            if verb == b"LOGIN":
                session["logged_in"] = True
                conn.sendall(tag + b" OK [CAPABILITY IMAP4rev1 UNAUTHENTICATE IDLE] Logged in\r\n")
                return True
            return False
        with FakeUpstream(hook) as fake, \
                proxy("unauth", f'upstream: {{ address: "{fake.address}" }}\n'
                                f"rules:\n  - deny: [DELETE]\n    users: [bob]\n") as sluice:
            s, login = logged_in(sluice.port)
            s.sendall(b"u UNAUTHENTICATE\r\n")
            reply = read_until(s, rb"(^|\r\n)u (OK|NO|BAD)[^\r\n]*\r\n")
            s.close()
            assert b"UNAUTHENTICATE" not in login, f"the capability reached the client: {login!r}"
            assert b"u NO" in reply, reply
            assert b"UNAUTHENTICATE" not in seen, f"the upstream received UNAUTHENTICATE: {seen}"
    check("RFC 8437 UNAUTHENTICATE (a session changing user under the first one's rules) is not offered and refused",
          unauthenticate)

    def transparent_preauth():
        fake = FakeUpstream(greeting=b"* PREAUTH [CAPABILITY IMAP4rev1] logged in already\r\n")
        try:
            with proxy("transparent-preauth", f'mode: transparent\nupstream: {{ address: "{fake.address}" }}\n'
                                              f"rules: [ {{ read_only: true }} ]") as sluice:
                s = connect(sluice.port)
                data = read_to_eof(s, 20)
                s.close()
                assert b"PREAUTH" not in data and data.startswith(b"* BYE"), data[:200]
                assert sluice.process.poll() is None
        finally:
            fake.stop()
    check("transparent mode with rules: an upstream that greets with PREAUTH (no login to read) gets * BYE, "
          "nothing relayed", transparent_preauth)


# ---------------------------------------------------------------------------
# F5/F6: an upstream that stalls the login.

def upstream_login_tests():
    def never_greets():
        with FakeUpstream(greeting=None) as fake, \
                proxy("f5", f'upstream: {{ address: "{fake.address}" }}\n'
                            f"timeouts: {{ upstream_login: 2s, login_failure_delay: 50ms }}") as sluice:
            s = connect(sluice.port, timeout=20)
            read_until(s, rb"\r\n")
            s.sendall(b"a1 LOGIN u p\r\n")
            data, matched, _ = collect(s, rb"(^|\r\n)a1 (OK|NO|BAD)[^\r\n]*\r\n", 15)
            s.close()
            assert matched, f"no tagged answer to LOGIN within 15 s: {data!r}"
            assert re.search(rb"(^|\r\n)a1 NO \[UNAVAILABLE\]", data), data
            assert sluice.process.poll() is None
            s = connect(sluice.port)
            assert read_until(s, rb"\r\n").startswith(b"* OK"), "no greeting for the next client"
            s.close()
    check("F5: an upstream that never greets (upstream_login: 2s): LOGIN gets NO [UNAVAILABLE] within 15 s",
          never_greets)

    def endless_line_at_login():
        def hook(conn, tag, verb, line, session):
            try:
                conn.sendall(b"* OK ")
                for _ in range(10):
                    conn.sendall(b"A" * (1 << 20))
            except OSError:
                pass
            hold(conn)
            return True
        with FakeUpstream(hook) as fake, \
                proxy("f6", f'upstream: {{ address: "{fake.address}" }}\n'
                            f"timeouts: {{ upstream_login: 2s, login_failure_delay: 50ms }}") as sluice:
            sampler = RssSampler(sluice)
            s = connect(sluice.port, timeout=20)
            read_until(s, rb"\r\n")
            s.sendall(b"a1 LOGIN u p\r\n")
            data, matched, _ = collect(s, rb"(^|\r\n)a1 (OK|NO|BAD)[^\r\n]*\r\n", 15)
            s.close()
            time.sleep(0.3)
            growth = sampler.stop()
            print(f"    10 MB line during the upstream login: proxy RSS +{growth:.1f} MB", flush=True)
            assert matched, f"no tagged answer to LOGIN within 15 s: {data!r}"
            assert re.search(rb"(^|\r\n)a1 NO \[UNAVAILABLE\]", data), data
            assert growth < 8, f"proxy memory grew by {growth:.1f} MB"
            assert sluice.process.poll() is None
            s = connect(sluice.port)
            assert read_until(s, rb"\r\n").startswith(b"* OK"), "no greeting for the next client"
            s.close()
    check("F5/F6: an upstream that sends 10 MB without CRLF during login: NO [UNAVAILABLE] within 15 s, "
          "RSS grows < 8 MB", endless_line_at_login)

    def flood_while_logging_in():
        # The upstream holds the login; the client keeps sending. The proxy reads
        # nothing while a login is under way: the flood must back up in the kernel.
        answer = threading.Event()

        def hook(conn, tag, verb, line, session):
            if verb in (b"LOGIN", b"AUTHENTICATE"):
                answer.wait(20)
                conn.sendall(tag + b" OK [CAPABILITY IMAP4rev1 IDLE] Logged in\r\n")
                return True
            return False
        with FakeUpstream(hook) as fake, \
                proxy("flood-login", f'upstream: {{ address: "{fake.address}" }}\n'
                                     f"timeouts: {{ upstream_login: 30s }}") as sluice:
            sampler = RssSampler(sluice)
            s = connect(sluice.port, timeout=20)
            read_until(s, rb"\r\n")
            s.sendall(b"a1 LOGIN u p\r\n")
            s.setblocking(False)
            sent, deadline = 0, time.time() + 3
            while time.time() < deadline and sent < 64 << 20:
                try:
                    sent += s.send(b"b NOOP\r\n" * 8192)
                except BlockingIOError:
                    time.sleep(0.01)
            growth = sampler.growth_mb()
            answer.set()
            s.setblocking(True)
            s.settimeout(20)
            data, matched, _ = collect(s, rb"(^|\r\n)a1 (OK|NO|BAD)[^\r\n]*\r\n", 15)
            s.close()
            sampler.stop()
            print(f"    {sent / 1e6:.1f} MB sent while the login waited: proxy RSS +{growth:.1f} MB", flush=True)
            assert matched and re.search(rb"(^|\r\n)a1 OK", data), data
            assert sent < 32 << 20, f"the proxy took {sent} bytes while the login waited"
            assert growth < 8, f"proxy memory grew by {growth:.1f} MB"
            assert sluice.process.poll() is None
    check("a client flooding while its login waits upstream is not read (RSS grows < 8 MB); "
          "the login then completes", flood_while_logging_in)

    def framing_error_behind_login():
        # Bytes pipelined behind LOGIN that do not frame get the same answer as after
        # login (red team 8 #3: the session closed without a word).
        with FakeUpstream() as fake, proxy("behind-login", f'upstream: {{ address: "{fake.address}" }}') as sluice:
            s = connect(sluice.port, timeout=20)
            read_until(s, rb"\r\n")
            s.sendall(b"a LOGIN alice pw\r\nb NOOP\x00\r\n")
            data = read_to_eof(s, 1 << 16)
            s.close()
            assert re.search(rb"(^|\r\n)a OK", data), data
            assert re.search(rb"\r\nb BAD [^\r\n]*NUL", data) and b"* BYE" in data, data
            sluice.wait_for_log("reason.kind=client_framing_error")
    check("a framing error pipelined behind LOGIN gets BAD and BYE after the login's OK", framing_error_behind_login)

    def log_line_separators():
        # A user name with U+0085 (NEL), U+2028, DEL and a backslash: one log line, the value quoted and escaped.
        with FakeUpstream() as fake, proxy("log-escape", f'upstream: {{ address: "{fake.address}" }}') as sluice:
            s = connect(sluice.port, timeout=20)
            read_until(s, rb"\r\n")
            name = "a\u0085imap.user=root\u2028b\x7fc\\d".encode()
            s.sendall(b"a LOGIN {%d+}\r\n" % len(name) + name + b" pw\r\n")
            read_until(s, rb"(^|\r\n)a (OK|NO|BAD)[^\r\n]*\r\n")
            s.sendall(b"z LOGOUT\r\n")
            read_to_eof(s, 1 << 16)
            s.close()
            text = sluice.wait_for_log("reason.kind=logout")
            lines = [line for line in text.split("\n") if "imap.user=" in line]
            assert lines, text[-1500:]
            assert all(len(line.splitlines()) == 1 for line in lines), lines  # splitlines() splits on NEL and U+2028
            assert 'imap.user="a\\u0085imap.user=root\\u2028b\\x7fc\\\\d"' in text, lines[-1]
    check("log values: C1 controls, U+2028, DEL and backslashes are escaped inside quotes (no forged lines or fields)",
          log_line_separators)


# ---------------------------------------------------------------------------
# F3/S12: an absolute login deadline; connection limits.

def login_deadline_tests():
    def test():
        with proxy("f3", f'upstream: {{ address: "{HOST}:{PORT}" }}\n'
                         f"timeouts: {{ login: 3s, pre_auth: 60s, login_failure_delay: 50ms }}") as sluice:
            results = {}

            def until_closed(name, send):
                """Connects, calls send(sock, i) once a second, records (data, seconds to EOF)."""
                s = connect(sluice.port)
                start = time.time()
                data = read_until(s, rb"\r\n")
                i = 0
                s.settimeout(0.2)
                while time.time() - start < 12:
                    if time.time() - start >= i:
                        try:
                            send(s, i)
                        except OSError:
                            pass
                        i += 1
                    try:
                        chunk = s.recv(65536)
                    except socket.timeout:
                        continue
                    except OSError:
                        chunk = b""
                    if not chunk:
                        results[name] = (data, time.time() - start)
                        s.close()
                        return
                    data += chunk
                results[name] = (data, None)
                s.close()

            trickle = b"a1 LOGIN alice " + b"x" * 100
            threads = [threading.Thread(target=until_closed, args=(
                           "NOOP every second", lambda s, i: s.sendall(b"n%d NOOP\r\n" % i))),
                       threading.Thread(target=until_closed, args=(
                           "one byte a second", lambda s, i: s.sendall(trickle[i:i + 1])))]

            def logged_in_stays():
                s = connect(sluice.port)
                read_until(s, rb"\r\n")
                s.sendall(f"a LOGIN alice {ALICE}\r\n".encode())
                read_until(s, rb"(^|\r\n)a OK[^\r\n]*\r\n")
                time.sleep(5)
                s.sendall(b"b NOOP\r\n")
                results["logged in"] = read_until(s, rb"(^|\r\n)b (OK|NO|BAD)[^\r\n]*\r\n")
                s.close()
            threads.append(threading.Thread(target=logged_in_stays))
            for t in threads:
                t.start()
            for t in threads:
                t.join(20)
            for name in ("NOOP every second", "one byte a second"):
                data, closed_after = results[name]
                assert closed_after is not None and closed_after <= 10, \
                    f"{name}: not closed within 10 s (login: 3s); got {data[-200:]!r}"
                assert b"* BYE" in data, f"{name}: closed without * BYE: {data[-200:]!r}"
            assert re.search(rb"(^|\r\n)b OK", results.get("logged in", b"")), \
                f"a logged-in session was cut by the login deadline: {results.get('logged in')!r}"
            assert_serving(sluice)
    check("F3/S12: timeouts.login 3s: a NOOP every second and a 1 byte/s trickle get * BYE and EOF within 10 s; "
          "a logged-in session stays", test)


def connection_limit_tests():
    def max_connections():
        with proxy("limits-total", f'upstream: {{ address: "{HOST}:{PORT}" }}\n'
                                   f"limits: {{ max_connections: 5 }}\n"
                                   f"timeouts: {{ login_failure_delay: 50ms }}") as sluice:
            held = hold_greeted(sluice.port, 5)
            sixth = connect(sluice.port)
            data = read_to_eof(sixth, 20)
            sixth.close()
            assert data.startswith(b"* BYE [UNAVAILABLE]"), f"the 6th connection got {data!r}"
            held.pop().close()
            deadline = time.time() + 10
            while True:
                s = connect(sluice.port)
                greeting = read_until(s, rb"\r\n")
                s.close()
                if greeting.startswith(b"* OK"):
                    break
                assert time.time() < deadline, f"no greeting after a connection was closed: {greeting!r}"
                time.sleep(0.2)
            for s in held:
                s.close()
            assert_serving(sluice, settling=True)
    check("limits.max_connections 5: the 6th connection gets * BYE [UNAVAILABLE] and EOF; after one closes, "
          "a new one is greeted", max_connections)

    def open_file_limit():
        # F4: at the open-file limit accept4 fails with EMFILE; without a back-off an event
        # loop retried it in a tight loop (99 % CPU), and nothing was logged.
        port = free_port()
        path = write(os.path.join(WORK, "fd-limit.yaml"),
                     f'listeners: [{{ address: "{HOST}:{port}" }}]\nupstream: {{ address: "{HOST}:{PORT}" }}\n'
                     f"limits: {{ max_connections: 0 }}\n")
        log = open(os.path.join(WORK, "fd-limit.log"), "w")
        process = subprocess.Popen(["bash", "-c", f'ulimit -n 64 && exec "$0" run --config "$1"', SLUICE, path],
                                   stdout=log, stderr=log)
        held = []
        try:
            deadline = time.time() + 20
            while True:
                try:
                    socket.create_connection((HOST, port), timeout=0.2).close()
                    break
                except OSError:
                    assert process.poll() is None and time.time() < deadline, "sluice did not start"
                    time.sleep(0.05)
            for _ in range(80):  # more than the descriptors left: the rest wait in the backlog
                held.append(socket.create_connection((HOST, port), timeout=5))
            time.sleep(1)

            def cpu_ticks():
                with open(f"/proc/{process.pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                return int(fields[11]) + int(fields[12])  # utime + stime
            before = cpu_ticks()
            time.sleep(3)
            used = (cpu_ticks() - before) / os.sysconf("SC_CLK_TCK") / 3
            assert used < 0.5, f"the proxy used {used:.0%} of a CPU while at the open-file limit (busy accept loop)"
            with open(log.name) as f:
                assert "accepting connections failed" in f.read(), "no log line about the failing accepts"
            for s in held:
                s.close()
            held = []
            time.sleep(1.5)  # the back-off (1 s) passes; the backlog is served
            reply = login_reply(type("Listener", (), {"host": HOST, "port": port})(), "alice", ALICE)
            assert b"a OK" in reply, f"no login after the descriptors were freed: {reply!r}"
        finally:
            for s in held:
                s.close()
            process.terminate()
            process.wait(timeout=10)
            log.close()
    check("F4: at the open-file limit the proxy does not spin (< 50 % of a CPU), logs why, and serves again "
          "once descriptors are free", open_file_limit)

    def max_per_ip():
        with proxy("limits-ip", f'upstream: {{ address: "{HOST}:{PORT}" }}\n'
                                f"limits: {{ max_connections_per_ip: 2 }}\n"
                                f"timeouts: {{ login_failure_delay: 50ms }}") as sluice:
            held = hold_greeted(sluice.port, 2, bind="127.0.0.1")
            third = connect(sluice.port, bind="127.0.0.1")
            data = read_to_eof(third, 20)
            third.close()
            assert data.startswith(b"* BYE"), f"the 3rd connection from 127.0.0.1 got {data!r}"
            other = connect(sluice.port, bind="127.0.0.2")
            greeting = read_until(other, rb"\r\n")
            assert greeting.startswith(b"* OK"), f"127.0.0.2 was refused: {greeting!r}"
            other.sendall(f"a LOGIN alice {ALICE}\r\n".encode())
            assert re.search(rb"(^|\r\n)a OK", read_until(other, rb"(^|\r\n)a (OK|NO|BAD)[^\r\n]*\r\n"))
            other.close()
            for s in held:
                s.close()
            assert_serving(sluice, settling=True)
    check("limits.max_connections_per_ip 2: the 3rd from 127.0.0.1 gets * BYE; 127.0.0.2 is served", max_per_ip)


# ---------------------------------------------------------------------------
# S8, S7: TLS.

def can_offer_tls11():
    """Whether this Python/OpenSSL can speak TLS 1.1 at all: a handshake with itself."""
    try:
        server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_context.load_cert_chain(CERT, KEY)
        server_context.minimum_version = server_context.maximum_version = ssl.TLSVersion.TLSv1_1
        server_context.set_ciphers("DEFAULT:@SECLEVEL=0")
        listener = socket.socket()
        listener.bind((HOST, 0))
        listener.listen(1)
        outcome = {}

        def serve():
            conn, _ = listener.accept()
            try:
                outcome["server"] = server_context.wrap_socket(conn, server_side=True).version()
            except (ssl.SSLError, OSError):
                conn.close()
        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        s = tls11_context().wrap_socket(socket.create_connection(listener.getsockname(), timeout=5),
                                        server_hostname="localhost")
        version = s.version()
        s.close()
        thread.join(5)
        listener.close()
        return version == "TLSv1.1"
    except (ssl.SSLError, OSError, ValueError):
        return False


def tls11_context():
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = context.maximum_version = ssl.TLSVersion.TLSv1_1
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    return context


def tls_tests():
    if can_offer_tls11():
        def refuses_tls11():
            with Sluice("--listen-tls", "implicit") as sluice:
                raw = socket.create_connection((HOST, sluice.port), timeout=10)
                try:
                    s = tls11_context().wrap_socket(raw, server_hostname=HOST)
                    version = s.version()
                    s.close()
                    raise AssertionError(f"the listener completed a {version} handshake")
                except (ssl.SSLError, ConnectionError):
                    pass
                finally:
                    raw.close()
                assert_serving(sluice, tls=pe.client_tls())
        check("S8: an implicit-TLS listener refuses a TLS 1.1 handshake; TLS 1.2+ still works", refuses_tls11)
    else:
        def negotiates_at_least_12():
            with Sluice("--listen-tls", "implicit") as sluice:
                s = pe.client_tls().wrap_socket(socket.create_connection((HOST, sluice.port), timeout=10),
                                                server_hostname=HOST)
                version = s.version()
                s.close()
                assert version in ("TLSv1.2", "TLSv1.3"), version
                assert_serving(sluice, tls=pe.client_tls())
        check("S8: implicit TLS negotiates at least TLS 1.2 (this OpenSSL cannot offer TLS 1.1 to test a refusal)",
              negotiates_at_least_12)

    def starttls_window():
        with Sluice("--listen-tls", "starttls-required") as sluice:
            before = dovecot_logins("carol")
            s = connect(sluice.port, rcvbuf=4096)
            read_until(s, rb"\r\n")
            s.settimeout(3)
            try:
                # The STARTTLS OK must queue behind replies the kernel cannot take: on loopback the
                # proxy's send buffer holds about 3 MB, so 5,000 replies (0.5 MB) would not do.
                s.sendall(b"c CAPABILITY\r\n" * 60_000 + b"s STARTTLS\r\n")
                time.sleep(0.2)
                s.sendall(b"b LOGIN carol secret-carol\r\n")  # plaintext, after STARTTLS, its own write
            except socket.timeout:
                pass  # the proxy stopped reading: it never sees the LOGIN either
            time.sleep(1.5)
            log = sluice.log_text()
            logins = dovecot_logins("carol")
            s.close()
            assert "upstream login succeeded" not in log, "the plaintext LOGIN after STARTTLS was executed"
            assert logins == before, "Dovecot saw carol log in"
            assert_serving_starttls(sluice)
    check("S7: starttls-required, STARTTLS behind 60,000 unread CAPABILITYs, then plaintext LOGIN: never executed",
          starttls_window)

    def literal_login_before_tls():
        with Sluice("--listen-tls", "starttls-required") as sluice:
            s = connect(sluice.port)
            read_until(s, rb"\r\n")
            s.sendall(b"a LOGIN {5}\r\n")
            data, _, _ = collect(s, rb"(^|\r\n)a (OK|NO|BAD)[^\r\n]*\r\n", 20)
            s.close()
            assert data.startswith(b"a NO [PRIVACYREQUIRED]"), f"expected a NO [PRIVACYREQUIRED] first: {data!r}"
            assert not data.startswith(b"+") and b"\r\n+" not in data, f"a + invited the password: {data!r}"
            assert_serving_starttls(sluice)
    check("S15: starttls-required: a LOGIN {5} before STARTTLS gets NO [PRIVACYREQUIRED], never a +",
          literal_login_before_tls)


def assert_serving_starttls(sluice):
    """assert_serving for a starttls-required listener: alive, and STARTTLS then LOGIN work."""
    code = sluice.process.poll()
    assert code is None, f"sluice died (exit status {code}); log tail:\n{sluice.log_text()[-1500:]}"
    t = pe.client_tls().wrap_socket(starttls(sluice.port), server_hostname=HOST)
    t.sendall(f"a LOGIN alice {ALICE}\r\n".encode())
    reply = read_until(t, rb"(^|\r\n)a (OK|NO|BAD)[^\r\n]*\r\n")
    t.close()
    assert re.search(rb"(^|\r\n)a OK", reply), f"fresh login over STARTTLS failed: {reply!r}"


def starttls(port):
    s = connect(port)
    read_until(s, rb"\r\n")
    s.sendall(b"s STARTTLS\r\n")
    data, matched, _ = collect(s, rb"(^|\r\n)s OK[^\r\n]*\r\n", 10)
    if not matched:
        s.close()
        raise AssertionError(f"a fresh client's STARTTLS got no OK within 10 s: {data!r}")
    return s


# ---------------------------------------------------------------------------
# S4: rules in transparent mode; RFC 2971's largest ID.

def transparent_rules_test():
    def test():
        path, port = config("transparent-rules", f'mode: transparent\nupstream: {{ address: "{HOST}:{PORT}" }}\n'
                                                 f"rules: [ {{ read_only: true }} ]")
        out = subprocess.run([SLUICE, "check", "--config", path], capture_output=True, text=True, timeout=30)
        if out.returncode != 0:
            assert "rules" in out.stderr, f"sluice check refused the file without naming rules: {out.stderr}"
            return
        with Sluice(config=path, port=port) as sluice:
            c = Client(port, "alice", ALICE)
            reply = c.run("SELECT INBOX")
            c.close()
            assert b"READ-ONLY" in reply, f"read_only not applied in transparent mode: {last_line(reply)!r}"
            assert_serving(sluice)
    check("S4: mode transparent with rules [read_only]: SELECT INBOX is READ-ONLY, or sluice check refuses it "
          "naming rules", test)


# ---------------------------------------------------------------------------
# The second red team (after the first fixes): ways past the rules that the
# reviews did not name. Each is checked on the server.

def red_team_tests():
    def literal_plus_smuggling():
        # Dovecot reads only the arguments NOOP takes (none) and skips to the end of the
        # line; the bytes of the {n+} literal it never read then run as a command.
        fresh_mailbox("Doomed")
        d = direct()
        payload = b"c DELETE Doomed\r\n"
        reply = d.run(b"NOOP {%d+}\r\n" % len(payload) + payload, tag="a")
        reply += d.read_tagged("c")
        d.close()
        assert b"c OK" in reply, f"the control failed: Dovecot did not run the literal as a command: {reply!r}"
        fresh_mailbox("Doomed")
        with rules_proxy() as sluice:
            c = as_user(sluice, "u-deny")
            for command in (b"NOOP", b"CHECK", b"NOOP ~"):
                literal = b"{%d+}" % len(payload)
                if command.endswith(b"~"):
                    command, literal = command[:-1], b"~" + literal
                # After the literal the line goes on (here: ends); then a command of its own.
                c.sock.sendall(b"a " + command + b" " + literal + b"\r\n" + payload + b"\r\nz NOOP\r\n")
                reply = read_until(c.sock, rb"z OK[^\r\n]*\r\n")
                assert b"c OK" not in reply, f"{command} {literal}: the literal ran as a command: {reply!r}"
            c.close()
            assert b"Doomed" in mailboxes(), "Doomed was deleted through a {n+} literal"
            assert_serving(sluice)
    check("red team 1: a command inside a {n+} literal the server does not read never runs (deny [DELETE])",
          literal_plus_smuggling)

    def long_tag():
        fresh_mailbox("Doomed")
        tag = "X" * 70
        with rules_proxy() as sluice:
            c = as_user(sluice, "u-hide")
            c.sock.sendall(f"{tag} SELECT Secret\r\nz NOOP\r\n".encode())
            reply = read_until(c.sock, rb"z OK[^\r\n]*\r\n")
            assert b"READ-WRITE" not in reply and f"{tag} OK".encode() not in reply, reply
            c.close()
            c = as_user(sluice, "u-deny")
            c.sock.sendall(f"{tag} DELETE Doomed\r\nz NOOP\r\n".encode())
            reply = read_until(c.sock, rb"z OK[^\r\n]*\r\n")
            c.close()
            assert b"Doomed" in mailboxes(), f"Doomed was deleted by a command with a 70-byte tag: {reply!r}"
            assert_serving(sluice)
    check("red team 2: a command with a 70-byte tag is not forwarded past the rules", long_tag)

    def idle_continuation():
        fresh_mailbox("Doomed")
        with rules_proxy() as sluice:
            for between in (b"", b"DONE\r\n"):
                c = as_user(sluice, "u-deny")
                payload = b"c DELETE Doomed\r\n"
                c.sock.sendall(b"i IDLE\r\n" + between + b"b NOOP {%d}\r\n" % len(payload) + payload)
                time.sleep(1)
                try:
                    c.sock.sendall(b"DONE\r\nz NOOP\r\n")
                except OSError:
                    pass  # the proxy ended the session (a line other than DONE during IDLE)
                data, _, _ = collect(c.sock, rb"z OK[^\r\n]*\r\n", 5)
                assert b"c OK" not in data, f"the literal behind IDLE ran as a command: {data!r}"
                c.close()
            assert b"Doomed" in mailboxes(), "Doomed was deleted through IDLE's +"
            assert_serving(sluice)
    check("red team 4: IDLE's + does not release a literal announced behind IDLE", idle_continuation)

    def select_literal_name():
        fresh_mailbox("Secret", b"TOPSECRET")
        with rules_proxy() as sluice:
            c = as_user(sluice, "u-fetch")
            c.sock.sendall(b"b SELECT {6}\r\n")
            read_until(c.sock, rb"\+[^\r\n]*\r\n")
            c.sock.sendall(b"Secret\r\ng FETCH 1 BODY[]\r\n")
            reply = read_until(c.sock, rb"g (OK|NO|BAD)[^\r\n]*\r\n")
            c.close()
            assert b"TOPSECRET" not in reply, "the body of a message in Secret was fetched"
            assert b"g NO" in reply, reply
            assert_serving(sluice)
    check("red team 6: deny [FETCH] in Secret*: SELECT with the name as a literal, then FETCH, is refused",
          select_literal_name)

    def rename_parent():
        delete_mailbox("Renamed.2019")
        delete_mailbox("Renamed")
        fresh_mailbox("Archive")
        fresh_mailbox("Archive.2019", b"OLD")
        with rules_proxy() as sluice:
            c = as_user(sluice, "u-child")
            reply = c.run("RENAME Archive Renamed")
            c.close()
            assert_refused(reply, "RENAME Archive Renamed")
            names = mailboxes()
            assert b"Archive.2019" in names and b"Renamed.2019" not in names, names
            assert_serving(sluice)
        delete_mailbox("Archive.2019")
        delete_mailbox("Archive")
    check("red team 7: hide [Archive.2019]: RENAME Archive is refused (it would move the hidden child)",
          rename_parent)

    def transparent_pipelined():
        fresh_mailbox("Secret", b"TOPSECRET")
        path, port = config("transparent-hide", f'mode: transparent\nupstream: {{ address: "{HOST}:{PORT}" }}\n'
                                                'rules: [ { hide_mailboxes: ["Secret*"] } ]')
        with Sluice(config=path, port=port) as sluice:
            s = connect(port)
            read_until(s, rb"\r\n")
            s.sendall(f"l LOGIN alice {ALICE}\r\na SELECT Secret\r\nb FETCH 1 BODY[]\r\n".encode())
            reply = read_until(s, rb"b (OK|NO|BAD)[^\r\n]*\r\n")
            assert b"TOPSECRET" not in reply and b"a OK" not in reply, reply
            s.close()
            s = connect(port)
            read_until(s, rb"\r\n")
            s.sendall(("X" * 70 + f" LOGIN alice {ALICE}\r\nz NOOP\r\n").encode())
            reply = read_until(s, rb"z (OK|NO|BAD)[^\r\n]*\r\n")
            s.sendall(b"a SELECT Secret\r\n")
            reply = read_until(s, rb"(a (OK|NO|BAD)|\* BAD)[^\r\n]*\r\n")
            assert b"a OK" not in reply, f"a hidden mailbox opened after a login with a 70-byte tag: {reply!r}"
            s.close()
            assert sluice.process.poll() is None
    check("red team 3: transparent mode: commands pipelined behind LOGIN, and a LOGIN with a 70-byte tag, "
          "do not escape the rules", transparent_pipelined)

    def transparent_reused_tag():
        # 'a NOOP' then 'a LOGIN nobody x': the NOOP's 'a OK' must not count as the login's answer.
        fresh_mailbox("Doomed")
        path, port = config("transparent-deny", f'mode: transparent\nupstream: {{ address: "{HOST}:{PORT}" }}\n'
                                                'rules: [ { deny: [DELETE], users: [alice] } ]')
        with Sluice(config=path, port=port) as sluice:
            s = connect(port)
            read_until(s, rb"\r\n")
            s.sendall(b"a NOOP\r\na LOGIN nobody x\r\n")
            read_until(s, rb"a (NO|BAD)[^\r\n]*\r\n")
            s.sendall(f"b LOGIN alice {ALICE}\r\nc DELETE Doomed\r\n".encode())
            reply = read_until(s, rb"c (OK|NO|BAD)[^\r\n]*\r\n")
            s.close()
            assert b"c OK" not in reply, f"DELETE ran after a login behind a reused tag: {reply!r}"
            assert b"Doomed" in mailboxes(), "Doomed was deleted"
            assert sluice.process.poll() is None
    check("red team 3 #1: transparent mode: a reused tag before LOGIN does not choose the wrong user's rules",
          transparent_reused_tag)


def red_team_two_tests():
    def stray_continuation():
        # Dovecot answers "+ OK" to a {11} in the middle of a line, then BAD; that "+"
        # must not release the {17+} literal of the next command.
        d = direct()
        d.sock.sendall(b"a LIST {11} x\r\n")
        reply = read_until(d.sock, rb"a (OK|NO|BAD)[^\r\n]*\r\n")
        d.close()
        assert reply.startswith(b"+"), f"the control failed: Dovecot no longer sends + here: {reply!r}"
        fresh_mailbox("Doomed")
        with rules_proxy() as sluice:
            for first in (b"a LIST {11} x\r\nx NOOP {17+}\r\n", b"x LIST {11} x {17+}\r\n"):
                c = as_user(sluice, "u-deny")
                c.sock.sendall(first + b"c DELETE Doomed\r\n")
                data, _, _ = collect(c.sock, rb"c (OK|NO)[^\r\n]*\r\n", 5)
                assert b"c OK" not in data, f"the literal ran as a command: {data!r}"
                c.close()
            assert b"Doomed" in mailboxes(), "Doomed was deleted through a stray +"
            assert_serving(sluice)
    check("red team 2 #1: Dovecot's + for a mid-line {11} never releases a literal (deny [DELETE])",
          stray_continuation)

    def reused_tag_idle():
        fresh_mailbox("Doomed")
        with rules_proxy() as sluice:
            c = as_user(sluice, "u-deny")
            c.sock.sendall(b"a NOOP\r\na IDLE\r\nDONE\r\nb NOOP {17+}\r\nc DELETE Doomed\r\n\r\nz NOOP\r\n")
            data, _, _ = collect(c.sock, rb"z OK[^\r\n]*\r\n", 5)
            c.close()
            assert b"c OK" not in data, f"the literal ran as a command: {data!r}"
            assert b"Doomed" in mailboxes(), "Doomed was deleted through IDLE's + and a reused tag"
            assert_serving(sluice)
    check("red team 2 #2: a reused tag does not let IDLE's + release a literal", reused_tag_idle)

    def uid_close():
        fresh_mailbox("Secret", b"TOPSECRET")
        with rules_proxy() as sluice:
            c = as_user(sluice, "u-reads")
            c.run("SELECT Secret")
            c.sock.sendall(b"x UID CLOSE\r\ny FETCH 1 BODY.PEEK[]\r\nx2 UID UNSELECT\r\ny2 UID FETCH 1:* BODY.PEEK[TEXT]\r\n")
            data = read_until(c.sock, rb"y2 (OK|NO|BAD)[^\r\n]*\r\n")
            c.close()
            assert b"TOPSECRET" not in data, "a message of Secret was fetched behind UID CLOSE"
            assert b"y NO" in data and b"y2 NO" in data, data
            assert message_count("Secret") == 1
            assert_serving(sluice)
    check("red team 2 #3: deny reads in Secret*: FETCH behind a failing UID CLOSE/UNSELECT is refused", uid_close)

    def catenate_read():
        fresh_mailbox("Secret", b"TOPSECRET")
        fresh_mailbox("Doomed")
        with rules_proxy() as sluice:
            c = as_user(sluice, "u-reads")
            reply = c.run('APPEND Doomed CATENATE (URL "/Secret/;UID=1")')
            c.close()
            assert_refused(reply, "APPEND Doomed CATENATE (URL /Secret/;UID=1)")
            assert message_count("Doomed") == 0, "a message of Secret was copied out through CATENATE"
            assert_serving(sluice)
    check("red team 2 #5: deny reads in Secret*: CATENATE from Secret is refused, nothing copied", catenate_read)

    def refused_literal_then_command():
        # A selected command whose large literal the server refuses: the next command is a
        # command of its own, judged by the rules, not more arguments of the refused one.
        fresh_mailbox("Secret", b"TOPSECRET")
        with rules_proxy() as sluice:
            c = as_user(sluice, "u-hide")
            c.sock.sendall(b"a APPEND NoSuchBox {100000}\r\n")
            reply = read_until(c.sock, rb"(a (OK|NO|BAD)|\+)[^\r\n]*\r\n")
            assert reply.startswith(b"a NO"), f"expected the server to refuse the APPEND: {reply!r}"
            reply = c.run("SELECT Secret")
            c.close()
            assert b"NONEXISTENT" in reply, f"SELECT Secret after a refused APPEND: {reply!r}"
            assert_serving(sluice)
    check("review: a command after a refused streamed literal is judged as a command (hide Secret*)",
          refused_literal_then_command)

    def idle_selected_by_audit():
        with rules_proxy() as sluice:
            c = as_user(sluice, "u-audit")
            c.sock.sendall(b"i IDLE\r\n")
            read_until(c.sock, rb"\+[^\r\n]*\r\n")
            c.sock.sendall(b"DONE\r\n")
            reply = c.read_tagged("i")
            assert b"i OK" in reply, reply
            assert b"z OK" in c.run("NOOP", tag="z")
            c.close()
            assert_serving(sluice)
    check("review: IDLE selected by a rule (audit) still works", idle_selected_by_audit)


def largest_id_test():
    def test():
        with Sluice() as sluice:
            pairs = " ".join(f'"key{i:02d}{"k" * 25}" "{chr(ord("a") + i % 26) * 1024}"' for i in range(30))
            s = connect(sluice.port)
            read_until(s, rb"\r\n")
            s.sendall(f"a ID ({pairs})\r\n".encode())
            data, _, eof = collect(s, rb"(^|\r\n)a (OK|NO|BAD)[^\r\n]*\r\n", 10)
            assert b"* ID " in data and re.search(rb"(^|\r\n)a OK", data), \
                f"the largest RFC 2971 ID was not answered * ID / OK: {data[:300]!r}"
            s.sendall(f"b LOGIN alice {ALICE}\r\n".encode())
            assert re.search(rb"(^|\r\n)b OK", read_until(s, rb"(^|\r\n)b (OK|NO|BAD)[^\r\n]*\r\n"))
            s.close()
            assert_serving(sluice)
    check("RFC 2971: an ID of 30 pairs (30-octet keys, 1024-octet values) before login gets * ID and OK", test)


def guarded(name, function):
    """Runs a group; a failure outside its checks counts as one failed check."""
    try:
        function()
    except Exception:
        pe.results["failed"] += 1
        print(f"FAIL {name}: outside a check", flush=True)
        traceback.print_exc()


def main():
    started = time.time()
    os.makedirs(WORK, exist_ok=True)
    reseed()
    for name, group in [("tokenizer", tokenizer_tests), ("fail closed", fail_closed_tests),
                        ("smuggling", smuggling_tests), ("mailbox rules", mailbox_rule_tests),
                        ("non-reading clients", non_reading_client_tests),
                        ("upstream garbage", upstream_garbage_tests), ("long lines", long_line_tests),
                        ("identity", identity_tests),
                        ("upstream login", upstream_login_tests),
                        ("login deadline", login_deadline_tests), ("connection limits", connection_limit_tests),
                        ("TLS", tls_tests), ("transparent", transparent_rules_test), ("ID", largest_id_test),
                        ("red team", red_team_tests), ("red team 2", red_team_two_tests)]:
        guarded(name, group)
    guarded("reseed", pe.reseed)  # the mail the suites after this one expect (proxy_e2e's seed)
    print(f"(adversarial suite: {time.time() - started:.0f} s)", flush=True)
    print(f"{pe.results['passed']} passed, {pe.results['failed']} failed")
    sys.exit(1 if pe.results["failed"] else 0)


if __name__ == "__main__":
    main()
