import Foundation
import IMAPWire
import NIOCore
import Testing
@testable import SluiceProxy

/// OAuth 2.0 bearer logins (XOAUTH2, OAUTHBEARER RFC 7628) before login and
/// upstream. The messages are written out by hand from the formats, not by
/// the code under test.
@Suite("Bearer logins")
struct BearerLoginTests {
    private func base64(_ text: String) -> String { Data(text.utf8).base64EncodedString() }

    private func actions(_ text: String, mechanisms: [String]) throws -> (PreAuthStateMachine, [PreAuthStateMachine.Action]) {
        var machine = PreAuthStateMachine(security: .plain, greeting: "ready", maxBadCommands: 5, mechanisms: mechanisms)
        let actions = try send(text, to: &machine)
        return (machine, actions)
    }

    private func bearer(_ user: String, _ token: String, _ mechanism: BearerMechanism, tag: String = "a") -> PreAuthStateMachine.Action {
        .login(tag: tag, credentials: Credentials(user: Array(user.utf8), password: Array(token.utf8), bearer: mechanism))
    }

    @Test("XOAUTH2 and OAUTHBEARER with and without SASL-IR give the user and the token")
    func preAuth() throws {
        let all = ["PLAIN", "LOGIN", "XOAUTH2", "OAUTHBEARER"]
        let xoauth2 = base64("user=alice@example.org\u{1}auth=Bearer ya29.token\u{1}\u{1}")
        #expect(try actions("a AUTHENTICATE XOAUTH2 \(xoauth2)\r\n", mechanisms: all).1 == [bearer("alice@example.org", "ya29.token", .xoauth2)])
        #expect(try actions("a AUTHENTICATE XOAUTH2\r\n\(xoauth2)\r\n", mechanisms: all).1
            == [.send("+ \r\n"), bearer("alice@example.org", "ya29.token", .xoauth2)])
        // RFC 7628 §4.1's example, with a user whose name needs =2C and =3D.
        let oauthbearer = base64("n,a=us=2Cer=3Dx@example.com,\u{1}host=server.example.com\u{1}port=143\u{1}auth=Bearer vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==\u{1}\u{1}")
        #expect(try actions("a AUTHENTICATE OAUTHBEARER \(oauthbearer)\r\n", mechanisms: all).1
            == [bearer("us,er=x@example.com", "vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==", .oauthbearer)])
        #expect(String(describing: Credentials(user: [0x61], password: Array("secret".utf8), bearer: .xoauth2)).contains("secret") == false)
    }

    @Test("malformed messages get BAD; a mechanism not in auth_mechanisms gets NO [CANNOT]")
    func refusals() throws {
        let all = ["PLAIN", "XOAUTH2", "OAUTHBEARER"]
        for message in ["auth=Bearer x\u{1}\u{1}", "user=alice\u{1}\u{1}", "user=alice\u{1}auth=Basic abc\u{1}\u{1}",
                        "user=alice\u{1}auth=Bearer \u{1}\u{1}"] {
            let answer = try actions("a AUTHENTICATE XOAUTH2 \(base64(message))\r\n", mechanisms: all).1
            guard case .send(let text)? = answer.first, text.hasPrefix("a BAD") else { Issue.record("\(message): \(answer)"); continue }
        }
        for message in ["n,,\u{1}auth=Bearer x\u{1}\u{1}", "p=tls-unique,a=alice,\u{1}auth=Bearer x\u{1}\u{1}",
                        "n,a=al=5Bice,\u{1}auth=Bearer x\u{1}\u{1}"] {
            let answer = try actions("a AUTHENTICATE OAUTHBEARER \(base64(message))\r\n", mechanisms: all).1
            guard case .send(let text)? = answer.first, text.hasPrefix("a BAD") else { Issue.record("\(message): \(answer)"); continue }
        }
        let (machine, answer) = try actions("a AUTHENTICATE LOGIN\r\n", mechanisms: ["XOAUTH2"])
        #expect(answer == [.send("a NO [CANNOT] Unsupported authentication mechanism.\r\n")])
        #expect(machine.capabilities.filter { $0.hasPrefix("AUTH=") } == ["AUTH=XOAUTH2"])
    }

    @Test("a refused token: the client gets the server's challenge, answers it, then the NO")
    func challenge() throws {
        let message = base64("user=alice\u{1}auth=Bearer bad\u{1}\u{1}")
        var (machine, _) = try actions("a AUTHENTICATE XOAUTH2 \(message)\r\n", mechanisms: ["XOAUTH2"])
        #expect(machine.loginFailed(response: "NO [AUTHENTICATIONFAILED] Authentication failed.", challenge: "eyJzdGF0dXMiOiI0MDEifQ==")
            == .send("+ eyJzdGF0dXMiOiI0MDEifQ==\r\n"))
        #expect(machine.isAwaitingSASL)
        var decoder = IMAPFrameDecoder(peer: .client)
        decoder.framer.authenticationResumed()
        var buffer = ByteBuffer(string: "\r\n")
        let frame = try #require(try decoder.next(&buffer))
        #expect(machine.receive(frame) == .send("a NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"))
        #expect(!machine.isAwaitingSASL)
    }

    @Test("upstream: the same mechanism and token (SASL-IR when offered); the error challenge is answered and kept")
    func upstream() throws {
        let credentials = UpstreamCredentials(.asUser("alice"), clientPassword: Array("tok".utf8), bearer: .oauthbearer)
        var machine = UpstreamLoginStateMachine(credentials: credentials, useStartTLS: false)
        var decoder = IMAPFrameDecoder(peer: .server)
        func receive(_ text: String) throws -> [UpstreamLoginStateMachine.Action] {
            var buffer = ByteBuffer(string: text)
            var actions: [UpstreamLoginStateMachine.Action] = []
            while let frame = try decoder.next(&buffer) { actions.append(machine.receive(frame)) }
            return actions
        }
        let greeting = try receive("* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN AUTH=OAUTHBEARER] ready\r\n")
        guard case .send(let login)? = greeting.last else { Issue.record("\(greeting)"); return }
        #expect(String(buffer: login) == "sluice1 AUTHENTICATE OAUTHBEARER \(base64("n,a=alice,\u{1}auth=Bearer tok\u{1}\u{1}"))\r\n")
        let challenge = try receive("+ eyJzdGF0dXMiOiI0MDEifQ==\r\n")
        guard case .send(let answer)? = challenge.last else { Issue.record("\(challenge)"); return }
        #expect(String(buffer: answer) == "AQ==\r\n", "RFC 7628 §3.2.3: %x01")
        #expect(machine.saslChallenge == "eyJzdGF0dXMiOiI0MDEifQ==")
        let refusal = try receive("sluice1 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n")
        guard case .failed(let response, _)? = refusal.last else { Issue.record("\(refusal)"); return }
        #expect(response == "NO [AUTHENTICATIONFAILED] Authentication failed.")

        var plainOnly = UpstreamLoginStateMachine(credentials: credentials, useStartTLS: false)
        var buffer = ByteBuffer(string: "* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] ready\r\n")
        var server = IMAPFrameDecoder(peer: .server)
        guard case .failed = plainOnly.receive(try #require(try server.next(&buffer))) else {
            Issue.record("a token went to a server without OAUTHBEARER")
            return
        }
    }
}
