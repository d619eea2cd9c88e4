import ExampleFilters
import SluiceFilters
import Testing
@testable import SluiceProxy

/// The custom filter of docs/filters.md, through a real proxy against Dovecot.
@Suite("Custom filter example (real Dovecot)", .enabled(if: dovecotPort != nil, "needs DOVECOT_PORT (scripts/test)"))
struct CustomFilterTests {
    @Test("APPEND over the limit to Sent is refused before the literal; smaller ones and other mailboxes pass")
    func maxAppendSize() async throws {
        var configuration = liveConfiguration(upstream: .init(host: "127.0.0.1", port: dovecotPort!))
        configuration.filters = FilterSet([.init(filter: MaxAppendSizeFilter(mailbox: "Sent", maxBytes: 1000))])
        try await withLiveProxy(configuration: configuration) { port in
            let client = try LineClient(port: port)
            #expect(try client.login("bob", "secret-bob").contains("a OK"))
            client.send("b CREATE Sent\r\n")
            _ = try client.readUntil(lineStarting: "b ")

            // Too large: refused at once; the client never gets "+" and never sends the literal.
            client.send("c APPEND Sent {2000}\r\n")
            let refused = try client.readUntil(lineStarting: "c ")
            #expect(refused == "c NO [TOOBIG] Messages over 1000 bytes cannot be stored in Sent.\r\n")

            // A LITERAL+ one is read and dropped; the session goes on.
            client.send("d APPEND Sent {1500+}\r\n" + String(repeating: "x", count: 1500) + "\r\ne NOOP\r\n")
            #expect(try client.readUntil(lineStarting: "d ").contains("d NO [TOOBIG]"))
            #expect(try client.readUntil(lineStarting: "e ").contains("e OK"))

            // Small enough: the upstream's "+" reaches the client and the message is stored.
            let message = "Subject: small\r\n\r\nhi\r\n"
            client.send("f APPEND Sent {\(message.utf8.count)}\r\n")
            #expect(try client.readUntil(lineStarting: "+").hasPrefix("+"))
            client.send(message + "\r\n")
            #expect(try client.readUntil(lineStarting: "f ").contains("f OK [APPENDUID"))

            // Another mailbox has no limit.
            let big = "Subject: big\r\n\r\n" + String(repeating: "y", count: 2000) + "\r\n"
            client.send("g APPEND INBOX {\(big.utf8.count)+}\r\n" + big + "\r\n")
            #expect(try client.readUntil(lineStarting: "g ").contains("g OK"))
            // MULTIAPPEND whose second message is too large (review S13): the filter sees the command
            // again after the first message streamed, the server is made to fail the whole command,
            // and nothing is stored.
            client.send("m APPEND Sent {5+}\r\nsmall {2000+}\r\n" + String(repeating: "z", count: 2000) + "\r\nn NOOP\r\n")
            #expect(try client.readUntil(lineStarting: "m ") == "m NO [TOOBIG] Messages over 1000 bytes cannot be stored in Sent.\r\n")
            #expect(try client.readUntil(lineStarting: "n ").contains("n OK"))
            client.send("h STATUS Sent (MESSAGES)\r\n")
            #expect(try client.readUntil(lineStarting: "h ").contains("(MESSAGES 1)"))
            client.send("i DELETE Sent\r\n")
            _ = try client.readUntil(lineStarting: "i ")
        }
    }
}
