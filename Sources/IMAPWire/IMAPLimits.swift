/// Every limit a peer's bytes can run into, with its default, in one place.
///
/// Each limit stops a specific attack on a proxy that buffers protocol text:
/// without them a peer could make the proxy hold an unbounded line, announce an
/// unbounded literal, or nest lists until the parser's stack overflows.
public struct IMAPLimits: Hashable, Sendable {
    /// Longest line segment (text up to and including its line terminator, or up
    /// to a literal announcement) that is buffered.
    public var maxLineLength: Int
    /// Total line text of one frame (all segments between its literals); stops a
    /// frame made of endless tiny literals from growing without bound.
    public var maxFrameTextLength: Int
    /// Largest literal a peer may announce. Literal bytes stream, so this guards
    /// the receiver (quota, disk), not the proxy's memory.
    public var maxLiteralSize: UInt64
    /// Most literals in one frame (MULTIAPPEND, CATENATE and FETCH carry several).
    public var maxLiteralsPerFrame: Int
    /// Deepest nesting of parenthesized lists the parser follows (BODYSTRUCTURE
    /// of nested multiparts is the deepest legitimate use).
    public var maxNestingDepth: Int
    /// Most tokens the parser produces for one frame.
    public var maxTokensPerFrame: Int

    public init(
        maxLineLength: Int,
        maxFrameTextLength: Int,
        maxLiteralSize: UInt64,
        maxLiteralsPerFrame: Int,
        maxNestingDepth: Int,
        maxTokensPerFrame: Int
    ) {
        self.maxLineLength = maxLineLength
        self.maxFrameTextLength = maxFrameTextLength
        self.maxLiteralSize = maxLiteralSize
        self.maxLiteralsPerFrame = maxLiteralsPerFrame
        self.maxNestingDepth = maxNestingDepth
        self.maxTokensPerFrame = maxTokensPerFrame
    }

    /// Defaults for bytes sent by clients (commands). Dovecot itself refuses
    /// command lines over 64 KiB (`imap_max_line_length`); we allow a little
    /// more so that the upstream, not the proxy, is the stricter party.
    public static let client = IMAPLimits(
        maxLineLength: 128 * 1024,
        maxFrameTextLength: 1024 * 1024,
        maxLiteralSize: 256 * 1024 * 1024,
        maxLiteralsPerFrame: 1024,
        maxNestingDepth: 32,
        maxTokensPerFrame: 100_000
    )

    /// Defaults for bytes sent by servers (responses). A `* SEARCH` of a large
    /// mailbox is one long line, so lines may be much longer than commands.
    public static let server = IMAPLimits(
        maxLineLength: 16 * 1024 * 1024,
        maxFrameTextLength: 32 * 1024 * 1024,
        maxLiteralSize: UInt64(UInt32.max),
        maxLiteralsPerFrame: 4096,
        maxNestingDepth: 64,
        maxTokensPerFrame: 4_000_000
    )

    /// A client before login. Credentials are small, but the line must fit a
    /// maximal RFC 2971 `ID`: 30 pairs of a 30-octet field and a 1,024-octet
    /// value, quoted (about 32 KiB; Dovecot's imaptest `id` test sends it).
    public static let preAuth = IMAPLimits(
        maxLineLength: 40 * 1024,
        maxFrameTextLength: 48 * 1024,
        maxLiteralSize: 8 * 1024,
        maxLiteralsPerFrame: 64,
        maxNestingDepth: 4,
        maxTokensPerFrame: 256
    )

    /// The upstream until its login completed: greeting, CAPABILITY, ID and
    /// the login's answer are a few hundred bytes each. A hostile upstream
    /// must not make the proxy buffer megabytes per waiting client (review F6).
    public static let upstreamLogin = IMAPLimits(
        maxLineLength: 64 * 1024,
        maxFrameTextLength: 128 * 1024,
        maxLiteralSize: 64 * 1024,
        maxLiteralsPerFrame: 64,
        maxNestingDepth: 8,
        maxTokensPerFrame: 4096
    )

    /// Bytes of commands and responses one session may hold for its filters
    /// at a time (frames a rule selected, collected whole before it runs).
    /// Past it the command is refused (`BAD`) or the response cut with a BYE
    /// (review S10: before, a MULTIAPPEND of 1,024 collected literals could
    /// hold 64 MiB).
    public static let maxCollectedBytes = 4 * 1024 * 1024

    /// Most bytes of an untagged server line a streaming framer holds
    /// (`IMAPFramer.streamsLongLines`): a longer line (a `* SEARCH` of a large
    /// mailbox, a hostile upstream's 16 MiB line) goes on in pieces of about
    /// this size, so a session holds this much of it, not all of it.
    public static let streamedLinePiece = 64 * 1024

    /// Largest literal collected inside a frame a rule selected (a LITERAL+
    /// mailbox name, a small CATENATE part); a larger one streams (a command)
    /// or leaves the response unread by rules (a mailbox listing with a
    /// larger literal is dropped, never passed unread).
    public static let maxCollectedLiteralSize: UInt64 = 64 * 1024

    /// Responses a hiding rule holds per LIST/LSUB until its tagged answer
    /// (to correct `\HasChildren`); past it, or past `maxCollectedBytes`,
    /// held ones are released (already filtered) and the rest pass filtered
    /// one by one.
    public static let maxHeldListResponses = 10_000

    /// Audit-log bytes queued for the disk before new lines are dropped (and
    /// counted): a slow or failing audit sink must not grow memory.
    public static let maxPendingAuditBytes = 8 << 20

    /// Client addresses the login penalty remembers (oldest forgotten first):
    /// the map is keyed by peer addresses, so it must be bounded.
    public static let maxPenalizedAddresses = 65_536

    /// The largest literal size any IMAP peer may announce: RFC 3501 `number`
    /// is a 32-bit unsigned integer.
    public static let absoluteMaxLiteralSize = UInt64(UInt32.max)
}
