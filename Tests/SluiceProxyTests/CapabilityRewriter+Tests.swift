import IMAPWire
import NIOCore
import Testing
@testable import SluiceProxy

@Suite("Capability rewriter")
struct CapabilityRewriterTests {
    @Test("names and prefixes removed whatever their case; near misses kept")
    func removal() {
        var rewriter = CapabilityRewriter()
        rewriter.removedNames.append(Array("STARTTLS".utf8))
        for removed in ["UNAUTHENTICATE", "unauthenticate", "Compress=DEFLATE", "COMPRESS=", "starttls"] {
            #expect(rewriter.isRemoved(removed), "\(removed)")
        }
        for kept in ["UNAUTHENTICATEX", "UNAUTH", "COMPRESS", "XCOMPRESS=DEFLATE", "IMAP4rev1", "", "STARTTL", "Ünauthenticate"] {
            #expect(!rewriter.isRemoved(kept), "\(kept)")
        }
        #expect(!rewriter.isRemoved(nil))
    }

    @Test("message data is looked at by its name only; status lines and CAPABILITY data anywhere")
    func mayRewrite() {
        let rewriter = CapabilityRewriter()
        let may = { (kind: FrameKind, line: String) in rewriter.mayRewrite(kind: kind, line: ByteBuffer(string: line)) }
        #expect(!may(.untaggedResponse, "* 5 FETCH (FLAGS (\\Seen) X-CAPABILITY 1)\r\n"))
        #expect(!may(.untaggedResponse, "* 12 EXISTS\r\n"))
        #expect(may(.untaggedResponse, "* 5 capability COMPRESS=DEFLATE\r\n"))
        #expect(may(.untaggedResponse, "* 12  CAPABILITY IMAP4rev1\r\n"))
        #expect(!may(.untaggedResponse, "* 7\tCAPABILITY\r\n"))  // one word to the parser: no list
        #expect(!may(.untaggedResponse, "* OK see [CAPABILITY IMAP4rev1]\r\n"))  // a code only right after OK
        #expect(!may(.taggedResponse, "a1 OK UID FETCH completed, CAPABILITY unchanged\r\n"))
        #expect(may(.untaggedResponse, "* OK [CAPABILITY IMAP4rev1] hi\r\n"))
        #expect(may(.untaggedResponse, "* Capability IMAP4rev1\r\n"))
        #expect(may(.taggedResponse, "a1 OK [capability IMAP4rev1 COMPRESS=DEFLATE] Logged in\r\n"))
        #expect(!may(.taggedResponse, "a1 OK done\r\n"))
        #expect(!may(.continuationRequest, "+ CAPABILITY\r\n"))
        // What the filter lets through is still rewritten.
        let rewritten = rewriter.rewrite(kind: .untaggedResponse, line: ByteBuffer(string: "* 5 CAPABILITY IMAP4rev1 COMPRESS=DEFLATE\r\n"))
        #expect(rewritten.map { !String(buffer: $0).uppercased().contains("COMPRESS") } == true)
    }

    @Test("a capability list left empty is written empty, not as the server sent it")
    func emptiedList() {
        var rewriter = CapabilityRewriter()
        rewriter.removedNames.append(Array("STARTTLS".utf8))
        for (kind, line) in [(FrameKind.taggedResponse, "a1 OK [CAPABILITY COMPRESS=DEFLATE] done\r\n"),
                             (.untaggedResponse, "* OK [CAPABILITY STARTTLS] hi\r\n"),
                             (.untaggedResponse, "* CAPABILITY COMPRESS=DEFLATE UNAUTHENTICATE\r\n")] {
            let rewritten = rewriter.rewrite(kind: kind, line: ByteBuffer(string: line)).map { String(buffer: $0) }
            #expect(rewritten != nil, "\(line)")
            for removed in ["COMPRESS", "STARTTLS", "UNAUTHENTICATE"] {
                #expect(rewritten?.uppercased().contains(removed) == false, "\(line) → \(rewritten ?? "nil")")
            }
        }
    }

    /// The cheap check must say yes wherever the parser finds a list: a
    /// list it missed would reach the client unrewritten (COMPRESS offered).
    @Test("the cheap check never misses a list the parser reads, in lines built from awkward pieces")
    func cheapCheckCoversTheParser() {
        let rewriter = CapabilityRewriter()
        let starts = ["*", "a1", "*  ", " *", "A.b", "x"]
        let middles = ["", "5", "12 ", "4294967296", "OK", "ok", "NO", "BAD", "BYE", "PREAUTH", "Fetch", "7\t", "OK "]
        let names = ["CAPABILITY", "capability", "CaPaBiLiTy", "CAPABILITYX", "[CAPABILITY", "[capability", " [CAPABILITY",
                     "[CAPABILITY]", "X-CAPABILITY", "(CAPABILITY", "CAPABILIT", "\"CAPABILITY\""]
        let ends = ["", " IMAP4rev1 COMPRESS=DEFLATE", " IMAP4rev1] done", "] x", " IMAP4rev1 COMPRESS=DEFLATE]", "\tX"]
        var checked = 0, parserFound = 0
        for start in starts {
            for middle in middles {
                for name in names {
                    for end in ends {
                        for kind in [FrameKind.untaggedResponse, .taggedResponse] {
                            let line = start + " " + middle + (middle.isEmpty ? "" : " ") + name + end + "\r\n"
                            let frame = Frame(kind: kind, line: ByteBuffer(string: line))
                            let parsed: Bool
                            switch try? frame.response() {
                            case .data(let data)?: parsed = data.name == "CAPABILITY"
                            case .status(let status)?: parsed = status.text.code?.name == "CAPABILITY"
                            default: parsed = false
                            }
                            checked += 1
                            if parsed { parserFound += 1 }
                            if parsed {
                                #expect(rewriter.mayRewrite(kind: kind, line: ByteBuffer(string: line)), "\(line)")
                            }
                        }
                    }
                }
            }
        }
        // The pieces must produce lists the parser reads, or the test proves nothing.
        #expect(parserFound > 100, "\(parserFound) of \(checked)")
    }
}
