import Testing
@testable import SluiceProxy

@Suite("Capability rewriter")
struct CapabilityRewriterTests {
    @Test("names and prefixes removed whatever their case; near misses kept")
    func removal() {
        var rewriter = CapabilityRewriter()
        rewriter.removedNames.insert("STARTTLS")
        for removed in ["UNAUTHENTICATE", "unauthenticate", "Compress=DEFLATE", "COMPRESS=", "starttls"] {
            #expect(rewriter.isRemoved(removed), "\(removed)")
        }
        for kept in ["UNAUTHENTICATEX", "UNAUTH", "COMPRESS", "XCOMPRESS=DEFLATE", "IMAP4rev1", "", "STARTTL", "Ünauthenticate"] {
            #expect(!rewriter.isRemoved(kept), "\(kept)")
        }
        #expect(!rewriter.isRemoved(nil))
    }
}
