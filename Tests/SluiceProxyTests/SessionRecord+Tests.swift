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
        // Numbers stay numbers (JSON logs write them unquoted).
        #expect(metadata["bytes.from_client"].map { "\($0)" } == "26")
        #expect(metadata["bytes.from_upstream"].map { "\($0)" } == "593")
        #expect(metadata["duration.seconds"].map { "\($0)" } == "1.5")
        if case .stringConvertible(let bytes)? = metadata["bytes.from_client"] { #expect(bytes is Int) } else {
            Issue.record("bytes.from_client is not a number")
        }
        #expect(metadata["reason"] == "client framing error")
        #expect(metadata["reason.detail"] == "Line too long (limit 131072 bytes)")
        #expect(metadata["reason.kind"] == "client_framing_error")
    }

    @Test("kinds never carry peer text", arguments: [
        EndReason.clientError("x\r\ny"), .upstreamUnavailable("connect failed: 10.0.0.1"), .upstreamFramingError(hint: "NUL"),
    ])
    func kindsAreFixed(reason: EndReason) {
        #expect(reason.kind.allSatisfy { $0.isLowercase || $0 == "_" })
        #expect(!reason.name.contains(":") && !reason.name.contains("10.0.0.1"))
    }

    @Test("normal endings read as normal", arguments: [
        (EndReason.logout, "logout"), (.clientClosed, "client closed"), (.idleTimeout, "idle timeout"),
    ])
    func plainNames(reason: EndReason, name: String) {
        #expect(reason.name == name)
        #expect(reason.detail == nil)
    }
}
