import IMAPWire
import NIOCore
import Testing
@testable import SluiceProxy

/// Transparent mode's reading of the relayed login, as vectors: command
/// line in, relayed or refused, then the answer.
@Suite struct TransparentLoginObserverTests {
    static func line(_ text: String) throws -> LineSegment {
        var framer = IMAPFramer(peer: .client)
        var buffer = ByteBuffer(string: text)
        guard case .line(let segment)? = try framer.next(&buffer) else { throw TestError() }
        return segment
    }

    struct TestError: Error {}

    @Test("the user of LOGIN and of AUTHENTICATE PLAIN (its authorization identity when given)", arguments: [
        ("a LOGIN alice secret\r\n", "alice", LoginMechanism.login),
        ("a AUTHENTICATE PLAIN \(Array("\0bob\0pw".utf8).base64)\r\n", "bob", .plain),
        ("a AUTHENTICATE PLAIN \(Array("carol\0bob\0pw".utf8).base64)\r\n", "carol", .plain),
    ])
    func readsTheUser(text: String, user: String, mechanism: LoginMechanism) throws {
        var observer = TransparentLoginObserver(rulesConfigured: true)
        #expect(observer.commandRelayed(try Self.line(text), commandsInFlight: 1))
        #expect(observer.holdsClient)  // with rules, the next bytes wait for the answer
        #expect(observer.mechanism == mechanism)
        #expect(observer.answers(try Self.line("a OK done\r\n")))
        let (answer, released) = observer.answered(tag: "a", ok: true)
        #expect(answer == .loggedIn(user: user, mechanism) && released)
        #expect(!observer.holdsClient && observer.pending.isEmpty)
    }

    @Test("with rules: an unreadable login, or one behind other commands, is refused; without rules it passes")
    func refusals() throws {
        var strict = TransparentLoginObserver(rulesConfigured: true)
        #expect(!strict.commandRelayed(try Self.line("a LOGIN alice secret\r\n"), commandsInFlight: 2))
        #expect(!strict.commandRelayed(try Self.line("b AUTHENTICATE PLAIN\r\n"), commandsInFlight: 1))
        #expect(!strict.commandRelayed(try Self.line("c LOGIN {5}\r\n"), commandsInFlight: 1))
        var lenient = TransparentLoginObserver(rulesConfigured: false)
        #expect(lenient.commandRelayed(try Self.line("b AUTHENTICATE SCRAM-SHA-1\r\n"), commandsInFlight: 3))
        #expect(!lenient.holdsClient)
        #expect(lenient.mechanism == .other)  // SCRAM: not one of the label's named mechanisms
        #expect(lenient.answered(tag: "b", ok: true).answer == .loggedIn(user: nil, .other))
    }

    @Test("a refused login leaves the client unauthenticated; with rules an OK without a user ends the session")
    func answers() throws {
        var observer = TransparentLoginObserver(rulesConfigured: true)
        _ = observer.commandRelayed(try Self.line("a LOGIN alice wrong\r\n"), commandsInFlight: 1)
        #expect(observer.answered(tag: "a", ok: false).answer == .refused(.login))
        // Refused by the proxy (no user to read): its tag is not awaited, a later command's answer is no login's.
        #expect(!observer.commandRelayed(try Self.line("b AUTHENTICATE PLAIN\r\n"), commandsInFlight: 1))
        let answer = try Self.line("b OK x\r\n")
        #expect(!observer.answers(answer) && !observer.holdsClient)
    }
    /// Red team (metrics) #7: without rules a client may pipeline logins; the later one's tag must not
    /// replace the earlier's, or a successful login is taken for a failure and the session cut.
    @Test("pipelined logins without rules: each answer is matched by its own tag")
    func pipelinedLogins() throws {
        var observer = TransparentLoginObserver(rulesConfigured: false)
        #expect(observer.commandRelayed(try Self.line("a LOGIN alice wrong\r\n"), commandsInFlight: 1))
        #expect(observer.commandRelayed(try Self.line("b LOGIN alice right\r\n"), commandsInFlight: 2))
        let refusal = try Self.line("a NO bad\r\n")
        let success = try Self.line("b OK yes\r\n")
        #expect(observer.answers(refusal) && observer.answers(success))
        #expect(observer.answered(tag: "a", ok: false).answer == .refused(.login))
        #expect(observer.answered(tag: "b", ok: true).answer == .loggedIn(user: "alice", .login))
        #expect(observer.pending.isEmpty)
    }
}

extension Array where Element == UInt8 {
    /// Base64 for test vectors (RFC 4648).
    var base64: String {
        let table = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
        var out: [UInt8] = []
        var index = 0
        while index < count {
            let chunk = self[index..<Swift.min(index + 3, count)]
            var value = 0
            for (offset, byte) in chunk.enumerated() { value |= Int(byte) << (16 - 8 * offset) }
            for position in 0..<4 {
                out.append(position <= chunk.count ? table[(value >> (18 - 6 * position)) & 63] : UInt8(ascii: "="))
            }
            index += 3
        }
        return String(decoding: out, as: UTF8.self)
    }
}
