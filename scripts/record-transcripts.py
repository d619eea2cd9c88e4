#!/usr/bin/env python3
"""Records real IMAP conversations with a server, both directions, byte for byte.

    scripts/record-transcripts.py OUTDIR HOST PORT

For each scripted conversation NAME it writes OUTDIR/NAME.client (every byte
the client sent) and OUTDIR/NAME.server (every byte the server sent). The
client is a plain socket so the bytes are exactly what a client would send:
synchronizing literals wait for the server's "+", LITERAL+ does not.
Credentials are the test instance's (scripts/dovecot-instance).
"""
import base64
import os
import re
import socket
import sys
import time

LITERAL_AT_END = re.compile(rb"~?\{(\d+)\+?\}\r\n$")


class Recorder:
    def __init__(self, host, port, name, outdir, tls=None, starttls=None):
        """tls: an SSLContext for implicit TLS; starttls: one to upgrade
        with STARTTLS right after the greeting (the session then reads the
        greeting as usual)."""
        self.sock = socket.create_connection((host, port), timeout=20)
        if tls is not None:
            self.sock = tls.wrap_socket(self.sock, server_hostname=host)
        self.sent = bytearray()
        self.received = bytearray()
        self.buffer = bytearray()
        self.name = name
        self.outdir = outdir
        if starttls is not None:
            greeting = self.read_line()
            self.send(b"tls STARTTLS\r\n")
            while not self.read_line().startswith(b"tls OK"):
                pass
            assert not self.buffer, "server data after the STARTTLS OK"
            self.sock = starttls.wrap_socket(self.sock, server_hostname=host)
            self.buffer += greeting

    def send(self, data):
        self.sock.sendall(data)
        self.sent += data

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError(f"{self.name}: server closed the connection")
        self.received += chunk
        self.buffer += chunk

    def read_line(self):
        """One server line, literals included."""
        out = bytearray()
        while True:
            while b"\n" not in self.buffer:
                self._fill()
            index = self.buffer.index(b"\n") + 1
            line = bytes(self.buffer[:index])
            del self.buffer[:index]
            out += line
            match = LITERAL_AT_END.search(line)
            if not match or line.startswith((b"* OK", b"* NO", b"* BAD", b"* BYE", b"+")):
                return bytes(out)
            size = int(match.group(1))
            while len(self.buffer) < size:
                self._fill()
            out += self.buffer[:size]
            del self.buffer[:size]

    def until_tagged(self, tag):
        lines = []
        while True:
            line = self.read_line()
            lines.append(line)
            if line.startswith(tag.encode() + b" "):
                return lines

    def until_continuation(self):
        while True:
            line = self.read_line()
            if line.startswith(b"+"):
                return line

    def command(self, tag, *parts):
        """Sends a command; parts are bytes, or ("sync", data) / ("plus", data) literals."""
        line = tag.encode() + b" "
        for part in parts:
            if isinstance(part, tuple):
                kind, data = part
                if kind == "sync":
                    self.send(line + b"{%d}\r\n" % len(data))
                    self.until_continuation()
                elif kind == "binary":
                    self.send(line + b"~{%d+}\r\n" % len(data))
                else:
                    self.send(line + b"{%d+}\r\n" % len(data))
                line = data
            else:
                line += part
        self.send(line + b"\r\n")
        return self.until_tagged(tag)

    def close(self):
        self.sock.close()
        if self.outdir is None:
            return
        with open(os.path.join(self.outdir, self.name + ".client"), "wb") as f:
            f.write(self.sent)
        with open(os.path.join(self.outdir, self.name + ".server"), "wb") as f:
            f.write(self.received)


def message(subject, body=b"Hello from the recorder.\r\n"):
    return (b"From: recorder@example.org\r\nTo: alice@example.org\r\nSubject: " + subject.encode()
            + b"\r\nDate: Tue, 24 Nov 2026 12:00:00 +0000\r\n\r\n" + body)


def session_basic(r):
    r.read_line()
    r.command("a1", b"CAPABILITY")
    r.command("a2", b"LOGIN alice secret-alice")
    r.command("a3", b"CAPABILITY")
    r.command("a4", b'LIST "" "*"')
    r.command("a5", b'LSUB "" "*"')
    r.command("a6", b'LIST (SUBSCRIBED) "" "*" RETURN (CHILDREN)')
    r.command("a7", b"STATUS INBOX (MESSAGES UIDNEXT UIDVALIDITY UNSEEN)")
    r.command("a8", b"NAMESPACE")
    r.command("a9", b'ID ("name" "sluice-recorder" "version" "1")')
    r.command("a10", b"SELECT INBOX")
    r.command("a11", b"FETCH 1:* (FLAGS UID RFC822.SIZE)")
    r.command("a12", b"UID FETCH 1:* (BODYSTRUCTURE ENVELOPE INTERNALDATE)")
    r.command("a13", b"FETCH 1:3 BODY.PEEK[]")
    r.command("a14", b"FETCH 2 (BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)] BODY.PEEK[TEXT]<0.10>)")
    r.command("a15", b"UID SEARCH ALL")
    r.command("a16", b'SEARCH SUBJECT "Hello" NOT DELETED')
    if os.environ.get("SLUICE_RECORD_LARGE") == "1":
        r.command("a17", b"FETCH 4 BODY.PEEK[]")
    r.command("a18", b"FETCH 3 (BINARY.PEEK[1] BINARY.SIZE[1])")
    r.command("a19", b"CLOSE")
    r.command("a20", b"LOGOUT")


def session_literals(r):
    r.read_line()
    r.command("b1", b"LOGIN ", ("sync", b"alice"), b" ", ("sync", b"secret-alice"))
    r.command("b2", b"CREATE Scratch")
    r.command("b3", b"APPEND Scratch (\\Seen) ", ("sync", message("sync literal")))
    r.command("b4", b"APPEND Scratch ", ("plus", message("LITERAL+ {5}")))
    r.command("b5", b'APPEND Scratch (\\Flagged) "24-Nov-2026 12:00:00 +0000" ',
              ("plus", message("multi 1")), b" ", ("plus", message("multi 2")))
    r.command("b6", b"APPEND Scratch ", ("binary", message("binary literal8", b"bin\x00ary\r\n")))
    r.command("b7", b"APPEND Scratch ", ("plus", b""))
    r.command("b8", b"SELECT Scratch")
    r.command("b9", b"STORE 1:2 +FLAGS (\\Deleted)")
    r.command("b10", b"UID STORE 3 FLAGS.SILENT (\\Answered)")
    r.command("b11", b"EXPUNGE")
    r.command("b12", b"FETCH 1:* (UID FLAGS BODY.PEEK[])")
    r.command("b13", b"FETCH 1:* (BINARY.PEEK[])")
    r.command("b14", b"UID COPY 1:* INBOX")
    r.command("b15", b"UID MOVE 1:* Sent")
    r.command("b16", b'RENAME Scratch "Scratch Two"')
    r.command("b17", b'DELETE "Scratch Two"')
    r.command("b18", b"LOGOUT")


def session_idle(r, host, port):
    r.read_line()
    r.command("c1", b"LOGIN bob secret-bob")
    r.command("c2", b"SELECT INBOX")
    r.send(b"c3 IDLE\r\n")
    r.until_continuation()
    other = socket.create_connection((host, port), timeout=20)
    helper = Recorder.__new__(Recorder)
    helper.sock, helper.sent, helper.received, helper.buffer, helper.name = other, bytearray(), bytearray(), bytearray(), "helper"
    helper.read_line()
    helper.command("h1", b"LOGIN bob secret-bob")
    helper.command("h2", b"APPEND INBOX ", ("plus", message("arrives during IDLE")))
    helper.command("h3", b"LOGOUT")
    other.close()
    while b"EXISTS" not in r.read_line():
        pass
    r.send(b"DONE\r\n")
    r.until_tagged("c3")
    r.command("c4", b"FETCH 1:* (FLAGS ENVELOPE)")
    r.command("c5", b"STORE 1:* +FLAGS (\\Deleted)")
    r.command("c6", b"EXPUNGE")
    r.command("c7", b"LOGOUT")


def session_authenticate(r):
    r.read_line()
    r.send(b"d1 AUTHENTICATE PLAIN\r\n")
    r.until_continuation()
    r.send(base64.b64encode(b"\x00carol\x00secret-carol") + b"\r\n")
    r.until_tagged("d1")
    r.command("d2", b"NOOP")
    r.command("d3", b"ENABLE CONDSTORE")
    r.command("d4", b"SELECT INBOX (CONDSTORE)")
    r.command("d5", b"LOGOUT")


def session_sasl_ir(r):
    r.read_line()
    r.command("e1", b"AUTHENTICATE PLAIN " + base64.b64encode(b"\x00carol\x00secret-carol"))
    r.command("e2", b"LOGOUT")


def session_auth_login(r):
    r.read_line()
    r.send(b"f1 AUTHENTICATE LOGIN\r\n")
    r.until_continuation()
    r.send(base64.b64encode(b"carol") + b"\r\n")
    r.until_continuation()
    r.send(base64.b64encode(b"wrong-password") + b"\r\n")
    r.until_tagged("f1")
    r.send(b"f2 AUTHENTICATE PLAIN\r\n")
    r.until_continuation()
    r.send(b"*\r\n")
    r.until_tagged("f2")
    r.command("f3", b"LOGIN carol secret-carol")
    r.command("f4", b"LOGOUT")


def session_pipelined(r):
    r.read_line()
    r.command("g1", b"LOGIN alice secret-alice")
    r.send(b"g2 SELECT INBOX\r\ng3 NOOP\r\ng4 STATUS Sent (MESSAGES)\r\ng5 FETCH 1:2 (UID FLAGS)\r\n"
           b"g6 UID FETCH 1 BODY.PEEK[HEADER]\r\ng7 EXAMINE Sent\r\n")
    # Dovecot may answer pipelined commands out of order: wait for all six tags.
    seen = set()
    while len(seen) < 6:
        line = r.read_line()
        m = re.match(rb"(g\d) ", line)
        if m:
            seen.add(m.group(1))
    r.command("g8", b"LOGOUT")


def session_mailbox_names(r):
    r.read_line()
    r.command("h1", b"LOGIN alice secret-alice")
    r.command("h2", b'LIST "" "Entw*"')
    r.command("h3", b'STATUS "Entw&APw-rfe" (MESSAGES)')
    r.command("h4", b"SELECT Entw&APw-rfe")
    r.command("h5", b'CREATE "Quote\\"d & More"')
    r.command("h6", b'LIST "" "Quote*"')
    r.command("h7", b"DELETE ", ("plus", b'Quote"d &- More'))
    r.command("h8", b'SUBSCRIBE "Archive.2019"')
    r.command("h9", b'LSUB "" "Archive*"')
    r.command("h10", b"LOGOUT")


def session_errors(r):
    r.read_line()
    r.command("i1", b"XYZZY")
    r.command("i2", b"LOGIN alice wrong")
    r.command("i3", b"LOGIN alice secret-alice")
    r.command("i4", b"SELECT NoSuchMailbox")
    r.command("i5", b"FETCH 1 FLAGS")
    r.command("i6", b"SELECT INBOX")
    r.command("i7", b"FETCH 999 FLAGS")
    r.command("i8", b"SEARCH BOGUSKEY")
    r.command("i9", b"ENABLE UTF8=ACCEPT")
    r.command("i10", b"LOGOUT")


SESSIONS = {
    "basic": session_basic, "literals": session_literals, "authenticate": session_authenticate,
    "sasl-ir": session_sasl_ir, "auth-login": session_auth_login, "pipelined": session_pipelined,
    "mailbox-names": session_mailbox_names, "errors": session_errors,
}


def main():
    outdir, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    os.makedirs(outdir, exist_ok=True)
    sessions = [
        ("basic", session_basic), ("literals", session_literals), ("authenticate", session_authenticate),
        ("sasl-ir", session_sasl_ir), ("auth-login", session_auth_login), ("pipelined", session_pipelined),
        ("mailbox-names", session_mailbox_names), ("errors", session_errors),
    ]
    for name, run in sessions:
        recorder = Recorder(host, port, name, outdir)
        run(recorder)
        recorder.close()
    recorder = Recorder(host, port, "idle", outdir)
    session_idle(recorder, host, port)
    recorder.close()
    print(f"recorded {len(sessions) + 1} conversations in {outdir}")


if __name__ == "__main__":
    main()
