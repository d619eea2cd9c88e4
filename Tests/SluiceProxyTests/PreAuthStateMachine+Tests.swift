import IMAPWire
import NIOCore
import Testing
@testable import SluiceProxy

private func machine(_ security: ProxyConfiguration.ListenerSecurity = .plain) -> PreAuthStateMachine {
    PreAuthStateMachine(security: security, greeting: "Sluice ready.", maxBadCommands: 3)
}

private func login(_ user: String, _ password: String, tag: String = "a") -> PreAuthStateMachine.Action {
    .login(tag: tag, credentials: Credentials(user: Array(user.utf8), password: Array(password.utf8)))
}

@Suite("Pre-auth state machine")
struct PreAuthStateMachineTests {
    @Test("greeting and CAPABILITY announce AUTH= and STARTTLS per listener")
    func capabilities() throws {
        var plain = machine(.plain)
        #expect(plain.greeting() == "* OK [CAPABILITY IMAP4rev1 SASL-IR ID ENABLE IDLE LITERAL+ AUTH=PLAIN AUTH=LOGIN] Sluice ready.\r\n")
        var required = machine(.starttlsRequired)
        #expect(required.capabilities.contains("LOGINDISABLED") && required.capabilities.contains("STARTTLS"))
        #expect(!required.capabilities.contains("AUTH=PLAIN"))
        required.tlsEstablished()
        #expect(!required.capabilities.contains("LOGINDISABLED") && !required.capabilities.contains("STARTTLS"))
        #expect(machine(.implicit).capabilities.contains("AUTH=PLAIN"))
        let actions = try send("c1 CAPABILITY\r\n", to: &plain)
        guard case .send(let text) = actions.first else { Issue.record("no answer"); return }
        #expect(text.hasPrefix("* CAPABILITY IMAP4rev1 ") && text.hasSuffix("c1 OK Pre-login capabilities listed, post-login capabilities have more.\r\n"))
    }

    @Test("LOGIN with atoms, quoted strings and literals")
    func loginForms() throws {
        var m1 = machine()
        #expect(try send("a LOGIN alice secret\r\n", to: &m1) == [login("alice", "secret")])
        var m2 = machine()
        #expect(try send("a LOGIN \"al ice\" \"se\\\"cret\"\r\n", to: &m2) == [login("al ice", "se\"cret")])
        var m3 = machine()
        #expect(try send("a LOGIN {5}\r\nalice {6+}\r\nsecret\r\n", to: &m3) == [login("alice", "secret")])
        #expect(!m3.acceptsFrames)
    }

    @Test("AUTHENTICATE PLAIN with and without SASL-IR, and LOGIN")
    func authenticate() throws {
        let plain = Base64.encode(Array("\0alice\0secret".utf8))
        var ir = machine()
        #expect(try send("a AUTHENTICATE PLAIN \(plain)\r\n", to: &ir) == [login("alice", "secret")])
        var noIR = machine()
        #expect(try send("a AUTHENTICATE PLAIN\r\n\(plain)\r\n", to: &noIR) == [.send("+ \r\n"), login("alice", "secret")])
        var loginMechanism = machine()
        let actions = try send("a AUTHENTICATE LOGIN\r\n\(Base64.encode(Array("alice".utf8)))\r\n\(Base64.encode(Array("secret".utf8)))\r\n",
                               to: &loginMechanism)
        #expect(actions == [.send("+ VXNlcm5hbWU6\r\n"), .send("+ UGFzc3dvcmQ6\r\n"), login("alice", "secret")])
        var authzid = machine()
        #expect(try send("a AUTHENTICATE PLAIN \(Base64.encode(Array("alice\0alice\0secret".utf8)))\r\n", to: &authzid)
                == [login("alice", "secret")])
    }

    @Test("aborted, malformed and impersonating AUTHENTICATE are refused")
    func authenticateRefusals() throws {
        var aborted = machine()
        #expect(try send("a AUTHENTICATE PLAIN\r\n*\r\n", to: &aborted)
                == [.send("+ \r\n"), .send("a BAD Authentication aborted by client.\r\n")])
        var badBase64 = machine()
        #expect(try send("a AUTHENTICATE PLAIN !!!!\r\n", to: &badBase64) == [.send("a BAD Invalid BASE64.\r\n")])
        var other = machine()
        #expect(try send("a AUTHENTICATE PLAIN \(Base64.encode(Array("bob\0alice\0secret".utf8)))\r\n", to: &other)
                == [.send("a NO [AUTHORIZATIONFAILED] Logging in as another user is not supported.\r\n")])
        var unknown = machine()
        #expect(try send("a AUTHENTICATE GSSAPI\r\n", to: &unknown) == [.send("a NO [CANNOT] Unsupported authentication mechanism.\r\n")])
    }

    @Test("STARTTLS-required listeners refuse plaintext login until TLS")
    func privacyRequired() throws {
        var m = machine(.starttlsRequired)
        #expect(try send("a LOGIN alice secret\r\n", to: &m)
                == [.send("a NO [PRIVACYREQUIRED] Plaintext authentication is disallowed without TLS.\r\n")])
        #expect(try send("b STARTTLS\r\n", to: &m) == [.startTLS("b OK Begin TLS negotiation now.\r\n")])
        m.tlsEstablished()
        #expect(try send("c LOGIN alice secret\r\n", to: &m) == [login("alice", "secret", tag: "c")])
        var plain = machine(.plain)
        #expect(try send("a STARTTLS\r\n", to: &plain) == [.send("a BAD STARTTLS is not available here.\r\n")])
    }

    @Test("ENABLE, commands that need login, and unknown commands get BAD; too many end the connection")
    func badCommands() throws {
        var m = machine()
        let actions = try send("a ENABLE UTF8=ACCEPT\r\nb SELECT INBOX\r\nc XYZZY\r\n", to: &m)
        #expect(actions == [
            .send("a BAD ENABLE is only allowed after login.\r\n"),
            .send("b BAD SELECT is only allowed after login.\r\n"),
            .sendAndClose("c BAD Unknown command.\r\n* BYE Too many invalid commands.\r\n"),
        ])
    }

    @Test("NOOP, ID and LOGOUT")
    func simpleCommands() throws {
        var m = machine()
        let actions = try send("a NOOP\r\nb ID (\"name\" \"Thunderbird\")\r\nc LOGOUT\r\n", to: &m)
        #expect(actions == [
            .send("a OK NOOP completed.\r\n"),
            .send("* ID (\"name\" \"Sluice\")\r\nb OK ID completed.\r\n"),
            .sendAndClose("* BYE Logging out.\r\nc OK Logout completed.\r\n"),
        ])
        #expect(m.clientID?["name"] == "Thunderbird")
    }

    @Test("a refused login is answered with the upstream's code and counts as a bad command")
    func loginResult() throws {
        var m = machine()
        _ = try send("a LOGIN alice wrong\r\n", to: &m)
        #expect(m.loginFailed(response: "NO [AUTHENTICATIONFAILED] Authentication failed.")
                == .send("a NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"))
        #expect(m.acceptsFrames && m.badCommands == 1)
        _ = try send("b LOGIN alice secret\r\n", to: &m)
        #expect(m.loginSucceeded(capabilities: ["IMAP4rev1", "IDLE"]) == .send("b OK [CAPABILITY IMAP4rev1 IDLE] Logged in\r\n"))
        #expect(!m.acceptsFrames)
    }

    @Test("credentials never print the password")
    func redaction() {
        let credentials = Credentials(user: Array("alice".utf8), password: Array("hunter2".utf8))
        #expect(!String(describing: credentials).contains("hunter2"))
    }

    @Test("BASE64 round trips and rejects malformed input", arguments: ["", "a", "ab", "abc", "\0alice\0secret"])
    func base64(text: String) {
        #expect(Base64.decode(Array(Base64.encode(Array(text.utf8)).utf8)) == Array(text.utf8))
    }

    @Test("malformed BASE64", arguments: ["abc", "a===", "ab=c", "ab!c", "====", "YQ==YQ=="])
    func badBase64(text: String) {
        #expect(Base64.decode(Array(text.utf8)) == nil)
    }
}
