#!/usr/bin/env python3
"""Writes sample maildirs for the private test Dovecot.

alice: INBOX with a handful of messages (plain, multipart, non-ASCII header,
one of 3 MB), and folders Sent, Archive.2019, Entwürfe (modified UTF-7 on
disk: Entw&APw-rfe) and Calendar. bob and carol: empty INBOX.
"""
import os
import sys
import time

root = sys.argv[1]


def maildir(path):
    for sub in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(path, sub), exist_ok=True)


def message(index, subject, body, extra_headers=""):
    return (
        f"From: Sender {index} <sender{index}@example.org>\r\n"
        f"To: alice@example.org\r\n"
        f"Subject: {subject}\r\n"
        f"Date: Mon, 2 Nov 2026 10:{index % 60:02d}:00 +0000\r\n"
        f"Message-ID: <seed-{index}@example.org>\r\n"
        f"{extra_headers}"
        f"\r\n{body}"
    ).encode()


def put(folder, index, data, flags=""):
    name = f"1795000000.seed{index:04d}.sluice:2,{flags}"  # padded: Dovecot numbers in name order
    path = os.path.join(folder, "cur", name)
    with open(path, "wb") as f:
        f.write(data)
    # A fixed internal date, so that runs on fresh mail compare equal.
    os.utime(path, (1795000000 + index, 1795000000 + index))


users = {"alice": True, "bob": False, "carol": False}
for user, with_mail in users.items():
    home = os.path.join(root, user, "Maildir")
    maildir(home)
    if not with_mail:
        continue
    put(home, 1, message(1, "Hello", "Hi Alice,\r\nthis is the first message.\r\n"), "S")
    put(home, 2, message(2, "Meeting {5} (literal-looking subject)", "Bring \"quotes\" and \\backslashes\\.\r\n"))
    put(home, 3, message(
        3, "=?UTF-8?Q?Gr=C3=BC=C3=9Fe?=",
        "--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nGr\xc3\xbc\xc3\x9fe\r\n"
        "--b1\r\nContent-Type: multipart/alternative; boundary=b2\r\n\r\n"
        "--b2\r\nContent-Type: text/plain\r\n\r\nplain\r\n--b2\r\nContent-Type: text/html\r\n\r\n<p>html</p>\r\n--b2--\r\n"
        "--b1--\r\n",
        "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b1\r\n"), "F")
    line = ("0123456789" * 7 + "\r\n")
    put(home, 4, message(4, "Large", line * (3 * 1024 * 1024 // len(line))))
    put(home, 5, message(5, "Empty body", ""))
    if os.environ.get("SLUICE_SEED_LARGE") == "1":
        put(home, 7, message(7, "Fifty megabytes", line * (50 * 1024 * 1024 // len(line))))
    for folder in (".Sent", ".Archive", ".Archive.2019", ".Entw&APw-rfe", ".Calendar"):
        maildir(os.path.join(home, folder))
    put(os.path.join(home, ".Sent"), 6, message(6, "Sent one", "sent\r\n"), "S")

# SLUICE_SEED_BENCH=1: the benchmark's mail (scripts/bench-compare): dave's
# INBOX holds 100 × 10 KB (UIDs 1-100), 20 × 1 MB (101-120), 2 × 50 MB
# (121-122); user0001…user0200 get empty mailboxes.
if os.environ.get("SLUICE_SEED_BENCH") == "1":
    home = os.path.join(root, "dave", "Maildir")
    maildir(home)
    line = ("0123456789" * 7 + "\r\n")
    uid = 0
    for count, size in ((100, 10 * 1024), (20, 1024 * 1024), (2, 50 * 1024 * 1024)):
        for _ in range(count):
            uid += 1
            put(home, uid, message(uid, "Bench %d" % uid, line * (size // len(line))))
    for index in range(1, 201):
        maildir(os.path.join(root, "user%04d" % index, "Maildir"))

# SLUICE_SEED_FOLDERS=N gives carol N empty folders (LIST benchmarks).
for index in range(int(os.environ.get("SLUICE_SEED_FOLDERS", "0"))):
    maildir(os.path.join(root, "carol", "Maildir", ".Folder%04d" % (index + 1)))
    with open(os.path.join(home, "subscriptions"), "w") as f:
        f.write("Sent\nArchive\nArchive.2019\n")
