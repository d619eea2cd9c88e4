import IMAPWire
import Testing

@Suite("Modified UTF-7 and mailbox names")
struct ModifiedUTF7Tests {
    @Test("encode and decode", arguments: [
        ("~peter/mail/\u{53F0}\u{5317}/\u{65E5}\u{672C}\u{8A9E}", "~peter/mail/&U,BTFw-/&ZeVnLIqe-"),  // RFC 3501 §5.1.3
        ("Entw\u{FC}rfe", "Entw&APw-rfe"),
        ("Tom & Jerry", "Tom &- Jerry"),
        ("&", "&-"),
        ("INBOX", "INBOX"),
        ("\u{1F600}", "&2D3eAA-"),  // a surrogate pair
        ("caf\u{E9}-bar", "caf&AOk--bar"),
        ("", ""),
    ])
    func roundTrip(name: String, encoded: String) throws {
        #expect(ModifiedUTF7.encode(name) == Array(encoded.utf8))
        #expect(try ModifiedUTF7.decode(Array(encoded.utf8)) == name)
    }

    @Test("invalid encodings are refused", arguments: [
        "&Jjo!", "&U,BTFw", "caf\u{E9}", "a\tb", "&-&", "&AGE", "&2D0-", "&AA-", "&A-",
    ])
    func invalid(encoded: String) {
        #expect(throws: ModifiedUTF7.DecodingError.self) { try ModifiedUTF7.decode(Array(encoded.utf8)) }
    }

    @Test("random Unicode names survive a round trip")
    func randomRoundTrips() throws {
        var generator = SeededGenerator(seed: 42)
        let pool: [Unicode.Scalar] = ["a", "&", "-", " ", "/", ".", "~", "\u{E9}", "\u{53F0}", "\u{1F600}", "\u{10FFFF}", "\u{7F}", "\u{0}"]
        for _ in 0..<500 {
            var scalars = String.UnicodeScalarView()
            for _ in 0..<Int.random(in: 0...12, using: &generator) {
                scalars.append(pool[Int.random(in: 0..<pool.count, using: &generator)])
            }
            let name = String(scalars)
            #expect(try ModifiedUTF7.decode(ModifiedUTF7.encode(name)) == name)
        }
    }

    @Test("mailbox names in both encodings (RFC 6855)")
    func mailboxNames() {
        let name = MailboxName("Entw\u{FC}rfe", utf8: false)
        #expect(name.description == "Entw&APw-rfe")
        #expect(name.displayName(utf8: false) == "Entw\u{FC}rfe")
        let utf8 = MailboxName("Entw\u{FC}rfe", utf8: true)
        #expect(utf8.bytes == Array("Entw\u{FC}rfe".utf8))
        #expect(name.converted(fromUTF8: false) == utf8)
        #expect(utf8.converted(fromUTF8: true) == name)
        #expect(MailboxName(bytes: Array("iNbOx".utf8)).isInbox)
        #expect(!MailboxName(bytes: Array("INBOX.Sent".utf8)).isInbox)
    }
}
