#!/usr/bin/env python3
"""End-to-end tests of Lua rules (docs/lua.md) and of reloading on SIGHUP:
the real sluice binary between the tests and the real Dovecot.

    tests/e2e/lua_e2e.py SLUICE_BINARY DOVECOT_DIR

Like proxy_e2e.py (whose helpers this reuses). Each example script of
examples/lua runs through Sluice and what it did is read from Dovecot
directly; the sandbox tests make a script misbehave on purpose (an endless
loop, allocation without end, os.execute, io.open, runtime errors) and check
that it fails closed, that the proxy stays up, and that a session running at
the same time is served. Ends with a line "N passed, N failed".
"""
import importlib.util
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location("proxy_e2e", os.path.join(HERE, "proxy_e2e.py"))
pe = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pe)

Sluice, Client, check, write, free_port = pe.Sluice, pe.Client, pe.check, pe.write, pe.free_port
SLUICE, DOVECOT_DIR, HOST, PORT = pe.SLUICE, pe.DOVECOT_DIR, pe.HOST, pe.PORT
EXAMPLES = os.path.join(pe.ROOT, "examples", "lua")
WORK = os.path.join(DOVECOT_DIR, "lua")
ALICE = "secret-alice"
UNAVAILABLE = b"NO [UNAVAILABLE]"


def reseed():
    """Fresh mail (without the 50 MB message: nothing here needs it)."""
    env = dict(os.environ)
    env.pop("SLUICE_SEED_LARGE", None)
    subprocess.run([os.path.join(pe.ROOT, "scripts", "dovecot-instance"), "start", DOVECOT_DIR], env=env,
                   check=True, stdout=subprocess.DEVNULL)


def direct():
    return Client(PORT, "alice", ALICE)


def config(name, rules, limits=""):
    """A configuration in WORK/NAME.yaml with `rules` (YAML list items); returns (path, port)."""
    port = free_port()
    path = write(os.path.join(WORK, f"{name}.yaml"), f"""
listeners: [{{ address: "{HOST}:{port}" }}]
upstream: {{ address: "{HOST}:{PORT}" }}
{limits}
rules:
{rules}
""")
    return path, port


def lua_rule(script, users=None):
    scope = f"\n    users: {users}" if users else ""
    return f"  - lua: {script}{scope}\n"


def script(name, text):
    return write(os.path.join(WORK, name), text)


def mailbox_names(client):
    data = client.run('LIST "" "*"')
    return [m.group(1).strip(b'"').decode() for m in re.finditer(rb'^\* LIST \([^)]*\) "[^"]*" (.+?)\r$', data, re.M)]


def message_count(mailbox):
    c = direct()
    data = c.run(f'STATUS "{mailbox}" (MESSAGES)')
    c.close()
    match = re.search(rb"MESSAGES (\d+)", data)
    assert match, data
    return int(match.group(1))


def wait_for_log(sluice, text, timeout=10):
    deadline = time.time() + timeout
    while text not in sluice.log_text():
        assert time.time() < deadline, f"not logged: {text!r}\n{sluice.log_text()[-2000:]}"
        time.sleep(0.05)


def append(client, mailbox, size, tag):
    """APPEND of a SIZE-byte message with a synchronizing literal; the tagged reply."""
    body = b"Subject: x\r\n\r\n" + b"y" * max(0, size - 14)
    client.sock.sendall(f'{tag} APPEND "{mailbox}" {{{len(body)}}}\r\n'.encode())
    first = pe.read_until(client.sock, rb"\r\n")
    if not first.startswith(b"+"):
        return first
    client.sock.sendall(body + b"\r\n")
    return client.read_tagged(tag)


# ---------------------------------------------------------------------------
# The four examples, each checked on the server.

def example_tests():
    reseed()
    d = direct()
    for name in ("Archive.Big", "Sent Messages", "Private", "Private.Notes", "Doomed"):
        d.run(f'CREATE "{name}"')
    d.close()
    rules = "".join(lua_rule(os.path.join(EXAMPLES, name)) for name in
                    ("refuse-large-appends.lua", "hide-and-rename.lua", "xstats.lua", "audit-deletions.lua"))
    path, port = config("examples", rules)
    with Sluice(config=path, port=port) as sluice:
        def large_appends():
            before = (message_count("Archive"), message_count("Archive.Big"), message_count("INBOX"))
            c = Client(port, "alice", ALICE)
            assert b" OK " in append(c, "Archive", 2000, "a1"), "a small message is archived"
            reply = append(c, "Archive.Big", 2 << 20, "a2")
            assert b"a2 NO [TOOBIG]" in reply, reply
            assert b" OK " in append(c, "INBOX", 2 << 20, "a3"), "a large message elsewhere is fine"
            # MULTIAPPEND (LITERAL+): small, then large: the whole command fails, nothing is stored.
            small, large = b"Subject: s\r\n\r\nsmall", b"Subject: l\r\n\r\n" + b"z" * (2 << 20)
            c.sock.sendall(b"a4 APPEND Archive {%d+}\r\n%s {%d+}\r\n%s\r\n" % (len(small), small, len(large), large))
            reply = c.read_tagged("a4")
            assert b"a4 NO [TOOBIG]" in reply, reply
            # CATENATE with a large part.
            c.sock.sendall(b"a5 APPEND Archive CATENATE (TEXT {%d+}\r\n%s)\r\n" % (len(large), large))
            reply = c.read_tagged("a5")
            assert b"a5 NO" in reply, reply
            c.close()
            after = (message_count("Archive"), message_count("Archive.Big"), message_count("INBOX"))
            assert after == (before[0] + 1, before[1], before[2] + 1), (before, after)
        check("example refuse-large-appends: over 1 MB to Archive refused (APPEND, MULTIAPPEND, CATENATE), "
              "counted on the server", large_appends)

        def hide_and_rename():
            c = Client(port, "alice", ALICE)
            names = mailbox_names(c)
            for hidden in ("Private", "Private.Notes", "Calendar", "Sent Messages"):
                assert hidden not in names, names
            assert "Sent" in names and names.count("Sent") == 1, names
            status = c.run('STATUS "Sent" (MESSAGES)')
            assert b'* STATUS "Sent"' in status or b"* STATUS Sent" in status, status
            assert b" OK " in c.run('SELECT "Sent"'), "Sent selects the server's Sent Messages"
            assert b" OK " in append(c, "Sent", 100, "h1")
            assert b"NO [NONEXISTENT]" in c.run('SELECT "Private.Notes"')
            assert b"NO [NONEXISTENT]" in c.run('CREATE "Private.New"')
            assert b"NO [NONEXISTENT]" in c.run('DELETE "Calendar"')
            c.close()
            assert message_count("Sent Messages") == 1, "the append went to the server's Sent Messages"
            d = direct()
            names = mailbox_names(d)
            d.close()
            assert "Private.New" not in names and "Calendar" in names, names
        check("example hide-and-rename: hidden folders vanish and cannot be reached; Sent is the server's "
              "Sent Messages both ways", hide_and_rename)

        def xstats():
            c = Client(port, "alice", ALICE)
            c.run("NOOP")
            c.run("NOOP")
            c.run("SELECT INBOX")
            c.run("FETCH 1 FLAGS")
            reply = c.run("XSTATS")
            assert b"* XSTATS (FETCH 1 NOOP 2 SELECT 1 XSTATS 1)\r\n" in reply, reply
            assert reply.endswith(b" OK Counted by the proxy\r\n"), reply
            other = Client(port, "alice", ALICE)
            reply = other.run("XSTATS")
            assert b"* XSTATS (XSTATS 1)\r\n" in reply, "another session counts on its own: " + repr(reply)
            other.close()
            c.close()
        check("example xstats: a per-session counter answered by the proxy's own XSTATS", xstats)

        def audit_deletions():
            c = Client(port, "alice", ALICE)
            assert b" OK " in c.run('DELETE "Doomed"')
            c.run("SELECT INBOX")
            c.run("STORE 1 +FLAGS (\\Deleted)")
            c.run("EXPUNGE")
            c.close()
            wait_for_log(sluice, "alice from 127.0.0.1 deletes mailbox Doomed")
            wait_for_log(sluice, "alice from 127.0.0.1 flags 1 \\Deleted in INBOX")
            wait_for_log(sluice, "alice from 127.0.0.1 expunges INBOX")
            d = direct()
            names = mailbox_names(d)
            d.close()
            assert "Doomed" not in names, names
            assert "lua.script=" + os.path.join(EXAMPLES, "audit-deletions.lua") in sluice.log_text()
            assert ALICE not in sluice.log_text(), "the password is never logged"
        check("example audit-deletions: a log line per deletion, the mailbox gone on the server", audit_deletions)


# ---------------------------------------------------------------------------
# The sandbox: each misbehaving script fails closed; the proxy and other sessions go on.

MISBEHAVING = """
commands = { "DELETE", "XLOOP", "XGROW", "XEXEC", "XOPEN", "XERROR" }
responses = { "STATUS" }
function on_command(cmd, session)
  if cmd.name == "XLOOP" then while true do end end
  if cmd.name == "XGROW" then
    local t = {}
    for i = 1, 1e9 do t[i] = string.rep("x", 4096) .. i end
  end
  if cmd.name == "XEXEC" then os.execute("touch /tmp/sluice-lua-escaped") end
  if cmd.name == "XOPEN" then io.open("/etc/passwd") end
  if cmd.name == "XERROR" then error("deliberate") end
end
function on_response(resp, session)
  if resp.mailbox == "Archive" then return resp.no_such_field.x end
end
"""


def sandbox_tests():
    reseed()
    marker = "/tmp/sluice-lua-escaped"
    if os.path.exists(marker):
        os.remove(marker)
    admin_port = free_port()
    path, port = config("sandbox", lua_rule(script("misbehaving.lua", MISBEHAVING)),
                        limits="limits: { lua_memory: 8MiB, lua_instructions: 2000000 }\n"
                               f'admin: {{ listen: "{HOST}:{admin_port}" }}')
    with Sluice(config=path, port=port) as sluice:
        # A second session does round trips all along; every one must be answered.
        stop = threading.Event()
        latencies = []
        failures = []

        def bystander():
            try:
                c = Client(port, "bob", "secret-bob")
                while not stop.is_set():
                    started = time.time()
                    reply = c.run("NOOP")
                    latencies.append(time.time() - started)
                    assert b" OK " in reply, reply
                c.close()
            except Exception as error:  # reported by the check below
                failures.append(repr(error))
        thread = threading.Thread(target=bystander)
        thread.start()
        try:
            def each_fails_closed():
                c = Client(port, "alice", ALICE)
                for command, limit in (("XLOOP", "lua_instructions"), ("XGROW", "lua_memory"),
                                       ("XEXEC", None), ("XOPEN", None), ("XERROR", None)):
                    for _ in range(3):
                        reply = c.run(command)
                        assert UNAVAILABLE in reply, (command, reply)
                    if limit:
                        wait_for_log(sluice, f"over limits.{limit}")
                # The script still runs for what it lets through.
                assert b" OK " in c.run("CREATE Kept") and b" OK " in c.run("DELETE Kept")
                c.close()
                assert not os.path.exists(marker), "os.execute ran"
                wait_for_log(sluice, "misbehaving.lua:10: global 'os' is not defined")
                wait_for_log(sluice, "misbehaving.lua:11: global 'io' is not defined")
                wait_for_log(sluice, "misbehaving.lua:12: deliberate")
            check("sandbox: endless loop, allocation without end, os.execute, io.open and an error in on_command "
                  "each refuse the command with NO [UNAVAILABLE], logged with file and line", each_fails_closed)

            def response_error_ends_session():
                c = Client(port, "alice", ALICE)
                c.sock.sendall(b"s1 STATUS Archive (MESSAGES)\r\n")
                data = b""
                deadline = time.time() + 10
                while True:
                    assert time.time() < deadline, data
                    chunk = c.sock.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                assert b"* BYE [UNAVAILABLE]" in data, data
                assert b"* STATUS" not in data, "the response the script failed on reached the client"
                wait_for_log(sluice, "misbehaving.lua:15:")
            check("sandbox: an error in on_response ends the session with BYE; the response is not shown",
                  response_error_ends_session)
        finally:
            stop.set()
            thread.join(timeout=30)

        def others_served():
            assert not failures, failures
            assert len(latencies) > 10, latencies
            print(f"    bystander: {len(latencies)} NOOPs during the attacks, slowest "
                  f"{max(latencies) * 1000:.1f} ms, median {sorted(latencies)[len(latencies) // 2] * 1000:.1f} ms")
            c = Client(port, "alice", ALICE)
            assert b" OK " in c.run("NOOP")
            c.close()
            assert sluice.process.poll() is None
        check("sandbox: a session running at the same time got every answer; the proxy still serves logins",
              others_served)

        def counted():
            import urllib.request
            text = urllib.request.urlopen(f"http://{HOST}:{admin_port}/metrics", timeout=10).read().decode()
            values = {m.group(1): float(m.group(2)) for m in re.finditer(r"^(sluice_\S+) (\S+)$", text, re.M)}
            # 5 failing commands × 3, and the response: each counted once.
            assert values.get("sluice_lua_errors_total") == 16, [l for l in text.splitlines() if "lua" in l]
            assert values.get('sluice_commands_refused_total{rule="lua"}') == 15, \
                [l for l in text.splitlines() if "refused" in l]
        check("sandbox: sluice_lua_errors_total and sluice_commands_refused_total{rule=\"lua\"} count each failure",
              counted)


# ---------------------------------------------------------------------------
# sluice check and SIGHUP.

def check_tests():
    def syntax_error():
        path, _ = config("check-syntax", lua_rule(script("broken.lua", 'commands = { "NOOP" }\n'
                                                                       'function on_command(cmd)\n  return 1 +\nend\n')))
        out = subprocess.run([SLUICE, "check", "--config", path], capture_output=True, text=True)
        assert out.returncode != 0, out
        assert re.search(r"broken\.lua:4: unexpected symbol near 'end'", out.stderr), out.stderr
        assert re.search(r"check-syntax\.yaml:\d+: rules\[0\]\.lua", out.stderr), out.stderr
    check("sluice check: a script's syntax error as FILE:LINE: message, with the rule's line", syntax_error)

    def missing_global():
        path, _ = config("check-global", lua_rule(script("typo.lua", 'commands = { "NOOP" }\n'
                                                                     'local limit = maxsize * 2\n'
                                                                     'function on_command(cmd) end\n')))
        out = subprocess.run([SLUICE, "check", "--config", path], capture_output=True, text=True)
        assert out.returncode != 0 and "typo.lua:2: global 'maxsize' is not defined" in out.stderr, out.stderr
    check("sluice check: a script touching a missing global at load time", missing_global)


def reload_tests():
    reseed()
    policy = script("policy.lua", 'commands = { "XVERSION" }\n'
                                  'function on_command(cmd) return sluice.answer({ "XVERSION 1" }, "OK", "v") end\n')
    path, port = config("reload", lua_rule(policy))
    with Sluice(config=path, port=port) as sluice:
        def script_changed():
            before = Client(port, "alice", ALICE)
            assert b"* XVERSION 1" in before.run("XVERSION")
            write(policy, 'commands = { "XVERSION" }\n'
                          'function on_command(cmd) return sluice.answer({ "XVERSION 2" }, "OK", "v") end\n')
            sluice.process.send_signal(signal.SIGHUP)
            wait_for_log(sluice, "configuration reloaded")
            after = Client(port, "alice", ALICE)
            assert b"* XVERSION 2" in after.run("XVERSION"), "the next session runs the new script"
            assert b"* XVERSION 1" in before.run("XVERSION"), "a running session keeps its script"
            before.close()
            after.close()
        check("reload: a changed script applies to the next session; running sessions keep theirs", script_changed)

        def broken_script_kept():
            write(policy, 'commands = { "XVERSION" }\nfunction on_command(cmd\n')
            sluice.process.send_signal(signal.SIGHUP)
            wait_for_log(sluice, "policy.lua:")
            assert "configuration reload failed; keeping the running configuration" in sluice.log_text()
            c = Client(port, "alice", ALICE)
            assert b"* XVERSION 2" in c.run("XVERSION"), "the previous script stays"
            c.close()
        check("reload: a script that does not compile keeps the previous one, and the log says why",
              broken_script_kept)

        def rule_added():
            write(policy, 'commands = { "XVERSION" }\n'
                          'function on_command(cmd) return sluice.answer({ "XVERSION 3" }, "OK", "v") end\n')
            with open(path, "a") as f:
                f.write("  - deny: [CREATE]\n")
            sluice.process.send_signal(signal.SIGHUP)
            deadline = time.time() + 10
            while sluice.log_text().count("configuration reloaded") < 2:
                assert time.time() < deadline, sluice.log_text()[-2000:]
                time.sleep(0.05)
            c = Client(port, "alice", ALICE)
            assert b"NO [NOPERM]" in c.run("CREATE Nope"), "the added rule applies"
            assert b"* XVERSION 3" in c.run("XVERSION")
            c.close()
            d = direct()
            assert "Nope" not in mailbox_names(d)
            d.close()
        check("reload: a rule added to the file applies to the next session", rule_added)

        def broken_file_kept():
            text = open(path).read()
            write(path, text + "  - deny: [NOT-A-COMMAND]\n")
            sluice.process.send_signal(signal.SIGHUP)
            wait_for_log(sluice, "unknown command NOT-A-COMMAND")
            c = Client(port, "alice", ALICE)
            assert b"NO [NOPERM]" in c.run("CREATE Nope2"), "the previous configuration stays"
            c.close()
            write(path, text)
        check("reload: a configuration file that does not load changes nothing, and the log names the problem",
              broken_file_kept)


def main():
    os.makedirs(WORK, exist_ok=True)
    example_tests()
    sandbox_tests()
    check_tests()
    reload_tests()
    print(f"{pe.results['passed']} passed, {pe.results['failed']} failed")
    sys.exit(1 if pe.results["failed"] else 0)


if __name__ == "__main__":
    main()
