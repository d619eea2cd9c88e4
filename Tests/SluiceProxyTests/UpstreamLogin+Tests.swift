import IMAPWire
import NIOCore
import Testing
@testable import SluiceProxy

/// Feeds server text to the machine; returns the actions (one per frame).
private func receive(_ text: String, _ machine: inout UpstreamLoginStateMachine) throws -> [UpstreamLoginStateMachine.Action] {
    var decoder = IMAPFrameDecoder(peer: .server)
    var buffer = ByteBuffer(string: text)
    var actions: [UpstreamLoginStateMachine.Action] = []
    while let frame = try decoder.next(&buffer) { actions.append(machine.receive(frame)) }
    return actions
}

private func sent(_ action: UpstreamLoginStateMachine.Action?) -> String? {
    if case .send(let bytes)? = action { return String(buffer: bytes) }
    return nil
}

@Suite("Upstream login")
struct UpstreamLoginTests {
    let credentials = UpstreamCredentials(.asUser("alice"), clientPassword: Array("pw".utf8))

    @Test("with filters, the proxy's own LIST \"\" \"\" learns the delimiter; its responses are consumed")
    func learnsDelimiter() throws {
        var machine = UpstreamLoginStateMachine(credentials: credentials, useStartTLS: false, learnDelimiter: true)
        let greeting = try receive("* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR] ready\r\n", &machine)
        #expect(sent(greeting.last) == "sluice1 AUTHENTICATE PLAIN AGFsaWNlAHB3\r\n")
        let login = try receive("sluice1 OK [CAPABILITY IMAP4rev1 MOVE] Logged in\r\n", &machine)
        #expect(sent(login.last) == "sluice2 LIST \"\" \"\"\r\n")
        let list = try receive("* LIST (\\Noselect) \".\" \"\"\r\nsluice2 OK List completed\r\n", &machine)
        guard case .succeeded(let capabilities, let delimiter)? = list.last else {
            Issue.record("not logged in: \(list)")
            return
        }
        #expect(capabilities == ["IMAP4rev1", "MOVE"])
        #expect(delimiter == UInt8(ascii: "."))
        if case UpstreamLoginStateMachine.Action.none? = list.first {} else { Issue.record("the LIST response was not consumed") }
    }

    @Test("without filters no extra command; a master login uses user*master and the master's password")
    func masterLogin() throws {
        let master = UpstreamCredentials(.masterUser(user: "bob", masterUser: "admin", masterPassword: Array("mpw".utf8),
                                                     separator: "*"), clientPassword: Array("ignored".utf8))
        var machine = UpstreamLoginStateMachine(credentials: master, useStartTLS: false)
        let greeting = try receive("* OK [CAPABILITY IMAP4rev1] ready\r\n", &machine)
        #expect(sent(greeting.last) == "sluice1 LOGIN \"bob*admin\" mpw\r\n")  // * is not an atom character
        let login = try receive("sluice1 OK [CAPABILITY IMAP4rev1 IDLE] Logged in\r\n", &machine)
        guard case .succeeded(let capabilities, let delimiter)? = login.last else {
            Issue.record("not logged in")
            return
        }
        #expect(capabilities == ["IMAP4rev1", "IDLE"] && delimiter == nil)
    }

    @Test("the client's address goes first in an ID pipelined with the login; the ID's answers are consumed")
    func forwardsClientAddress() throws {
        let forward = ForwardedAddresses(clientIP: "192.0.2.7", clientPort: 50123, localIP: "2001:db8::1", localPort: 993)
        var machine = UpstreamLoginStateMachine(credentials: credentials, useStartTLS: false, forward: forward)
        let greeting = try receive("* OK [CAPABILITY IMAP4rev1 ID AUTH=PLAIN SASL-IR] ready\r\n", &machine)
        #expect(sent(greeting.last) == "sluice1 ID (\"x-originating-ip\" \"192.0.2.7\" \"x-originating-port\" \"50123\" "
                + "\"x-connected-ip\" \"2001:db8::1\" \"x-connected-port\" \"993\" \"x-proxy-ttl\" \"4\")\r\n"
                + "sluice2 AUTHENTICATE PLAIN AGFsaWNlAHB3\r\n")
        let answers = try receive("* ID (\"name\" \"Dovecot\")\r\nsluice1 OK ID completed.\r\n"
                                  + "sluice2 OK [CAPABILITY IMAP4rev1 IDLE] Logged in\r\n", &machine)
        #expect(answers.count == 3)
        guard case .succeeded(let capabilities, _)? = answers.last else {
            Issue.record("not logged in: \(answers)")
            return
        }
        #expect(capabilities == ["IMAP4rev1", "IDLE"])

        // A refused ID does not stop the login; a server without ID gets none.
        var refused = UpstreamLoginStateMachine(credentials: credentials, useStartTLS: false, forward: forward)
        _ = try receive("* OK [CAPABILITY IMAP4rev1 ID AUTH=PLAIN SASL-IR] ready\r\n", &refused)
        let after = try receive("sluice1 BAD not now\r\nsluice2 NO [AUTHENTICATIONFAILED] Bad password\r\n", &refused)
        guard case .failed(let response, _)? = after.last else {
            Issue.record("login not refused: \(after)")
            return
        }
        #expect(response == "NO [AUTHENTICATIONFAILED] Bad password")
        var noID = UpstreamLoginStateMachine(credentials: credentials, useStartTLS: false, forward: forward)
        let plain = try receive("* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR] ready\r\n", &noID)
        #expect(sent(plain.last) == "sluice1 AUTHENTICATE PLAIN AGFsaWNlAHB3\r\n")
    }

    @Test("during the login, other tags and untagged data pass unparsed; an untagged CAPABILITY, any case, is taken")
    func passesOverWhatItDoesNotWait() throws {
        var machine = UpstreamLoginStateMachine(credentials: credentials, useStartTLS: false)
        _ = try receive("* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR] ready\r\n", &machine)
        let answers = try receive("* ID (\"name\" \"Dovecot\")\r\n* OK [ALERT] CAPABILITY soon\r\n* 3 EXISTS\r\n"
                                  + "other OK [CAPABILITY WRONG] not ours\r\n* capability IMAP4rev1 Move\r\n"
                                  + "sluice1 OK Logged in\r\n", &machine)
        #expect(sent(answers.last) == "sluice2 CAPABILITY\r\n")
        let capability = try receive("* 1 EXISTS\r\n* CAPABILITY IMAP4rev1 IDLE\r\nsluice1 OK stale tag\r\n"
                                     + "sluice2 OK Capability completed\r\n", &machine)
        guard case .succeeded(let capabilities, _)? = capability.last else {
            Issue.record("not logged in: \(capability)")
            return
        }
        #expect(capabilities == ["IMAP4rev1", "IDLE"])
        #expect(capability.dropLast().allSatisfy { if case .none = $0 { true } else { false } })
    }

    @Test("STARTTLS: only its own tagged answer counts; untagged data and other tags pass; a BYE does not log in")
    func startTLSPassesOver() throws {
        var machine = UpstreamLoginStateMachine(credentials: credentials, useStartTLS: true)
        let greeting = try receive("* OK [CAPABILITY IMAP4rev1 STARTTLS] ready\r\n", &machine)
        #expect(sent(greeting.last) == "sluice1 STARTTLS\r\n")
        let noise = try receive("* OK still here\r\n* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\nother OK no\r\n", &machine)
        #expect(noise.allSatisfy { if case .none = $0 { true } else { false } })
        let ok = try receive("sluice1 OK Begin TLS negotiation now\r\n", &machine)
        guard case .startTLS? = ok.last else {
            Issue.record("no TLS after the answer: \(ok)")
            return
        }

        // A BYE during the login is not a login: only the tagged answer ends it.
        var login = UpstreamLoginStateMachine(credentials: credentials, useStartTLS: false)
        _ = try receive("* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR] ready\r\n", &login)
        let bye = try receive("* BYE shutting down\r\n", &login)
        #expect(bye.allSatisfy { if case .none = $0 { true } else { false } })
        let refused = try receive("sluice1 NO [UNAVAILABLE] try later\r\n", &login)
        guard case .failed(let response, _)? = refused.last else {
            Issue.record("not refused: \(refused)")
            return
        }
        #expect(response == "NO [UNAVAILABLE] try later")
    }

    @Test("the client's own ID fields go first; x- fields, oversized, non-ASCII and surplus fields stay behind")
    func forwardsClientID() throws {
        typealias Field = IDParameters.Field
        var fields = [
            Field(key: "name", value: "Thunderbird"),
            Field(key: "X-Originating-IP", value: "198.51.100.66"),  // would be taken as the proxy's word
            Field(key: "x-session-id", value: "forged"),
            Field(key: "os", value: nil),
            Field(key: "support-url", value: "mailto:\"help\"\\desk"),
            Field(key: String(repeating: "k", count: 31), value: "too long a name"),
            Field(key: "command", value: String(repeating: "v", count: 1025)),
            Field(key: "vendor", value: "Müller"),
            Field(key: "line", value: "a\r\nb"),
        ]
        let kept = ForwardedAddresses.forwardable(fields)
        #expect(kept == [fields[0], fields[3], fields[4]])
        let forward = ForwardedAddresses(clientIP: "192.0.2.7", clientPort: 50123, localIP: "192.0.2.1", localPort: 143,
                                         clientFields: kept)
        #expect(forward.idParameters == "(\"name\" \"Thunderbird\" \"os\" NIL \"support-url\" \"mailto:\\\"help\\\"\\\\desk\" "
                + "\"x-originating-ip\" \"192.0.2.7\" \"x-originating-port\" \"50123\" "
                + "\"x-connected-ip\" \"192.0.2.1\" \"x-connected-port\" \"143\" \"x-proxy-ttl\" \"4\")")
        // RFC 2971: 30 pairs at most, five of them the proxy's.
        fields = (1...40).map { Field(key: "f\($0)", value: "v") }
        #expect(ForwardedAddresses.forwardable(fields).count == 25)
    }

    @Test("x-proxy-ttl: one less goes upstream; 1 or less refuses; a larger, negative or garbled value counts as 5")
    func proxyHops() throws {
        func id(_ value: String?) -> IDParameters {
            IDParameters(fields: [.init(key: "name", value: "Sluice"), .init(key: "X-Proxy-TTL", value: value)])
        }
        #expect(ProxyHops.left(after: nil) == 5 && !ProxyHops.exhausted(after: nil))
        #expect(ProxyHops.left(after: id("3")) == 3 && !ProxyHops.exhausted(after: id("2")))
        #expect(ProxyHops.exhausted(after: id("1")) && ProxyHops.exhausted(after: id("0")))
        for garbled in ["99", "-1", "", "1e3", "00002x", nil] {
            #expect(ProxyHops.left(after: id(garbled)) == 5, "\(garbled ?? "NIL")")
        }
        let client = try SocketAddress(ipAddress: "192.0.2.7", port: 50123)
        let local = try SocketAddress(ipAddress: "192.0.2.1", port: 143)
        let forward = try #require(ForwardedAddresses(client: client, local: local, clientID: id("3")))
        #expect(forward.proxyTTL == 2 && forward.idParameters.hasSuffix("\"x-proxy-ttl\" \"2\")"))
        #expect(!forward.idParameters.contains("X-Proxy-TTL"), "the client's own field is not passed on")
    }
}
