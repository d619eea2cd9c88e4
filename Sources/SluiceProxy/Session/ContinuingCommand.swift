import IMAPWire
import NIOCore

/// A command the rules selected whose first part went upstream with a
/// literal that streamed past them (APPEND's message). What follows that
/// literal — MULTIAPPEND's next message, CATENATE's next parts — is judged
/// part by part before it goes on (review S13: the rest used to stream
/// unseen, so a hidden mailbox's message could be CATENATEd out).
struct ContinuingCommand {
    /// The command so far: every line, and the literals the rules could read.
    var frame: CollectedFrame
    /// The first segment not yet sent upstream.
    var unsentFrom: Int
    /// The current literal is small enough to be held for the rules.
    var collectingLiteral = false

    init(frame: CollectedFrame) {
        self.frame = frame
        self.unsentFrom = frame.segments.count
    }

    /// What the upstream gets instead of a refused part: after a literal,
    /// ` NIL` CRLF fails APPEND, MULTIAPPEND and CATENATE as a whole (the
    /// server answers BAD and stores nothing; checked against Dovecot), so
    /// the parts it already has are discarded. The client sees the rule's
    /// answer instead of the server's.
    static let cancellation = ByteBuffer(string: " NIL\r\n")
}
