import NIOCore
import Testing
@testable import SluiceProxy

@Suite("Session record")
struct SessionRecordTests {
    @Test("the end-of-session line: user, bytes, duration, reason text and a fixed kind")
    func endLine() {
        var record = SessionRecord()
        record.user = "alice"
        record.bytesFromClient = 26
        record.bytesFromUpstream = 593
        record.endReason = .clientFramingError(hint: "Line too long (limit 131072 bytes)")
        let metadata = record.endMetadata(now: record.started + .milliseconds(1500))
        #expect(metadata["imap.user"] == "alice")
        #expect(metadata["bytes.from_client"] == "26")
        #expect(metadata["bytes.from_upstream"] == "593")
        #expect(metadata["duration.seconds"] == "1.5")
        #expect(metadata["reason"] == "client framing error: Line too long (limit 131072 bytes)")
        #expect(metadata["reason.kind"] == "client_framing_error")
    }

    @Test("kinds never carry peer text", arguments: [
        EndReason.clientError("x\r\ny"), .upstreamUnavailable("connect failed: 10.0.0.1"), .upstreamFramingError(hint: "NUL"),
    ])
    func kindsAreFixed(reason: EndReason) {
        #expect(reason.kind.allSatisfy { $0.isLowercase || $0 == "_" })
    }
}
