import Testing
@testable import IMAPWire

@Suite("Response codes")
struct ResponseCodeTests {
    private func tokenized(_ bytes: [UInt8], limits: IMAPLimits = .server) -> [IMAPToken]? {
        var tokenizer = IMAPTokenizer(text: FrameText(bytes: bytes, literalPositions: []), literals: [], limits: limits)
        return try? tokenizer.tokens()
    }

    /// 5,000 seeded argument lists of 0–24 bytes, from atoms' bytes, NIL,
    /// specials and controls: what the fast paths must agree with the tokenizer on.
    private func randomArguments(seed: UInt64) -> [[UInt8]] {
        let alphabet = Array("  aZ09-=.+\\*%NIL()\"[]{}\u{01}\u{7F}".utf8)
        var generator = SeededGenerator(seed: seed)
        return (0..<5_000).map { _ in
            let length = Int.random(in: 0...24, using: &generator)
            return (0..<length).map { _ in alphabet[Int.random(in: 0..<alphabet.count, using: &generator)] }
        }
    }

    @Test("plain atoms: what the tokenizer makes of the same bytes, on 5,000 seeded random argument lists")
    func plainAtomsMatchTokenizer() {
        var taken = 0
        for bytes in randomArguments(seed: 0x5EED_C0DE) {
            guard let fast = ResponseCode.plainAtoms(bytes, limits: .server) else { continue }
            taken += 1
            #expect(fast == tokenized(bytes), "\(String(decoding: bytes, as: UTF8.self))")
        }
        #expect(taken > 500, "the fast path was taken \(taken) times")
    }

    @Test("a capability list takes the fast path; NIL, lists and too many words do not")
    func plainAtomsCases() {
        let capabilities = Array("IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ AUTH=PLAIN".utf8)
        #expect(ResponseCode.plainAtoms(capabilities, limits: .server)?.count == 8)
        #expect(ResponseCode.plainAtoms(Array("A nil B".utf8), limits: .server) == nil)
        #expect(ResponseCode.plainAtoms(Array("(\\Seen \\Deleted)".utf8), limits: .server) == nil)
        var small = IMAPLimits.server
        small.maxTokensPerFrame = 3
        #expect(ResponseCode.plainAtoms(Array("A B C D".utf8), limits: small) == nil)
        #expect(tokenized(Array("A B C D".utf8), limits: small) == nil, "the tokenizer refuses it too")
        let code = ResponseCode(parsing: ArraySlice(Array("CAPABILITY IMAP4rev1 IDLE".utf8)), limits: .server)
        #expect(code.name == "CAPABILITY" && code.arguments == [.atom(Array("IMAP4rev1".utf8)), .atom(Array("IDLE".utf8))])
    }

    @Test("plain atom strings: the atoms of the tokens, on 5,000 seeded random argument lists; set arguments win")
    func plainAtomStringsMatchTokens() {
        var taken = 0
        for bytes in randomArguments(seed: 0xCAFE_5EED) {
            let code = ResponseCode(parsing: ArraySlice(Array("CAPABILITY ".utf8) + bytes), limits: .server)
            guard let strings = code.plainAtomStrings else { continue }
            taken += 1
            #expect(strings == tokenized(bytes)?.atoms, "\(String(decoding: bytes, as: UTF8.self))")
            #expect(CapabilityResponse(code)?.capabilities == strings)
        }
        #expect(taken > 500, "the fast path was taken \(taken) times")
        // Arguments set after parsing replace the parsed ones, for every reader.
        var code = ResponseCode(parsing: ArraySlice(Array("CAPABILITY IMAP4rev1 COMPRESS=DEFLATE".utf8)), limits: .server)
        code.arguments = [.atom(Array("IMAP4rev1".utf8))]
        #expect(code.plainAtomStrings == nil)
        #expect(CapabilityResponse(code)?.capabilities == ["IMAP4rev1"])
        let built = ResponseCode(name: "CAPABILITY", arguments: [.atom(Array("IDLE".utf8))])
        #expect(CapabilityResponse(built)?.capabilities == ["IDLE"])
        #expect(built != ResponseCode(name: "CAPABILITY", arguments: [.atom(Array("ID".utf8))]))
    }
}
