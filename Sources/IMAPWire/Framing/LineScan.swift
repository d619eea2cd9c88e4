#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// What the framer needs to know about one complete line, found in one pass
/// over raw bytes (the line feed and NUL searches are `memchr`, the rest looks
/// only at the line's first words and last bytes).
struct LineScan {
    enum LiteralScan {
        case none
        case header(LiteralHeader, at: Int)
        case invalid(at: Int)
        case overflow(at: Int)
    }

    enum SecondWord { case idle, authenticate, other }

    /// Bytes of the line, line feed included.
    var lineLength: Int
    var nulOffset: Int?
    var firstByte: UInt8?
    /// Offsets of the first two spaces: the tag ends at the first, the next word at the second.
    var firstSpace: Int?
    var secondSpace: Int?
    /// The line is `DONE` (case-insensitive), IDLE's terminator.
    var isDone: Bool
    var secondWord: SecondWord
    /// For `* WORD …`: WORD is OK, NO, BAD, BYE or PREAUTH.
    var secondWordIsStatus: Bool
    var literal: LiteralScan

    var hasSpace: Bool { firstSpace != nil }

    /// Scans `bytes` for a line ending at the first line feed at or after `from`.
    ///
    /// One pass with `memchr` finds the line feed, a NUL, and the first two
    /// spaces (so the tag and name come free); the literal check looks only at
    /// the line's last bytes. Word comparisons are made only where `peer`
    /// needs them: client lines (IDLE, AUTHENTICATE, DONE) and server lines
    /// ending in `}` (is it a status response?).
    static func find(in bytes: UnsafeRawBufferPointer, from: Int, peer: IMAPPeer) -> LineScan? {
        guard let base = bytes.baseAddress, from < bytes.count,
              let lf = memchr(base + from, 0x0A, bytes.count - from)
        else { return nil }
        let lineLength = base.distance(to: UnsafeRawPointer(lf)) + 1
        var contentEnd = lineLength - 1
        if contentEnd > 0 && bytes[contentEnd - 1] == 0x0D { contentEnd -= 1 }

        var nulOffset: Int? = nil
        if let nul = memchr(base, 0, lineLength) {
            nulOffset = base.distance(to: UnsafeRawPointer(nul))
        }
        var firstSpace: Int? = nil
        var secondSpace: Int? = nil
        if let space = memchr(base, 0x20, contentEnd) {
            let first = base.distance(to: UnsafeRawPointer(space))
            firstSpace = first
            if first + 1 < contentEnd, let next = memchr(base + first + 1, 0x20, contentEnd - first - 1) {
                secondSpace = base.distance(to: UnsafeRawPointer(next))
            }
        }
        let line = UnsafeRawBufferPointer(start: base, count: contentEnd)
        let literal = literalAnnouncement(line)
        var scan = LineScan(
            lineLength: lineLength, nulOffset: nulOffset, firstByte: contentEnd > 0 ? bytes[0] : nil,
            firstSpace: firstSpace, secondSpace: secondSpace,
            isDone: false, secondWord: .other, secondWordIsStatus: false, literal: literal)
        switch peer {
        case .server:
            if case .none = literal { return scan }
            scan.secondWordIsStatus = secondWord(line, firstSpace: firstSpace, secondSpace: secondSpace).isStatus
        case .client:
            scan.isDone = FrameHead.equalsCaseInsensitive(line, "DONE")
            scan.secondWord = secondWord(line, firstSpace: firstSpace, secondSpace: secondSpace).word
        }
        return scan
    }

    /// Where a line whose line feed has not arrived may be cut (`IMAPFramer.streamsLongLines`).
    enum PieceCut {
        /// The first `LineScan.lineLength` bytes may go.
        case cut(LineScan)
        /// No cut in the first `upTo` bytes: they hold a `{` and no space or
        /// `(` at all (one giant word that could end in a literal
        /// announcement). The next attempt looks only at bytes after them.
        case none(upTo: Int)
        /// The line's first piece must hold its first two words (whether it
        /// is a status response decides how its end reads); they are longer
        /// than `maxHeadLength`: this line is not cut at all.
        case never
    }

    /// Longest first two words of a line that is cut into pieces.
    static let maxHeadLength = 1024

    /// The first bytes of a line whose line feed has not arrived, as far as
    /// they can be handed out without changing how the line's end is read:
    /// the cut never separates the last word from a `{` it might announce a
    /// literal with (`literalAnnouncement` reads the last word only), and the
    /// last 32 bytes stay (a whole announcement and its CR). A line's first
    /// piece holds its first two words.
    ///
    /// Linear overall: `known` bytes (from an earlier `.none(upTo:)`) are not
    /// looked at again, and what is cut is consumed.
    static func piece(in bytes: UnsafeRawBufferPointer, peer: IMAPPeer, startsLine: Bool, known: Int) -> PieceCut {
        guard let base = bytes.baseAddress, bytes.count > 32 else { return .none(upTo: known) }
        var firstSpace: Int? = nil
        var secondSpace: Int? = nil
        if startsLine {
            let head = min(bytes.count, maxHeadLength)
            guard let space = memchr(base, 0x20, head) else { return .never }
            let first = base.distance(to: UnsafeRawPointer(space))
            guard first + 1 < head, let next = memchr(base + first + 1, 0x20, head - first - 1) else { return .never }
            firstSpace = first
            secondSpace = base.distance(to: UnsafeRawPointer(next))
        }
        let end = bytes.count - 32
        var cut = end
        if bytes[cut - 1] == UInt8(ascii: "~") { cut -= 1 }
        // Back from the end to the last space or `(`: is there a `{` after it?
        var index = cut - 1
        var brace = false
        while index >= known && bytes[index] != 0x20 && bytes[index] != UInt8(ascii: "(") {
            if bytes[index] == UInt8(ascii: "{") { brace = true }
            index -= 1
        }
        if index < known {
            // No space or `(` in the new bytes, and the last word below `known`
            // holds a `{` (that is why they are known); without `known`, the
            // whole line was seen: one word.
            if known > 0 || brace { return .none(upTo: end) }
        } else if brace {
            cut = index + 1  // the word after the last space holds a `{`: cut before it
        }
        // Not inside the first two words; the last word holds a `{` then, so
        // bytes up to `end` need not be looked at again.
        if let secondSpace, cut <= secondSpace { return .none(upTo: end) }
        guard cut > 0 else { return .none(upTo: end) }
        var nulOffset: Int? = nil
        if let nul = memchr(base, 0, cut) { nulOffset = base.distance(to: UnsafeRawPointer(nul)) }
        var scan = LineScan(
            lineLength: cut, nulOffset: nulOffset, firstByte: bytes[0], firstSpace: firstSpace, secondSpace: secondSpace,
            isDone: false, secondWord: .other, secondWordIsStatus: false, literal: .none)
        if startsLine && peer == .server {
            let line = UnsafeRawBufferPointer(start: base, count: cut)
            scan.secondWordIsStatus = secondWord(line, firstSpace: firstSpace, secondSpace: secondSpace).isStatus
        }
        return .cut(scan)
    }

    private static func secondWord(
        _ line: UnsafeRawBufferPointer, firstSpace: Int?, secondSpace: Int?
    ) -> (word: SecondWord, isStatus: Bool) {
        guard let firstSpace, let base = line.baseAddress else { return (.other, false) }
        let start = firstSpace + 1
        let end = secondSpace ?? line.count
        let word = UnsafeRawBufferPointer(start: base + start, count: end - start)
        if FrameHead.equalsCaseInsensitive(word, "IDLE") { return (.idle, false) }
        if FrameHead.equalsCaseInsensitive(word, "AUTHENTICATE") { return (.authenticate, false) }
        let isStatus = FrameHead.equalsCaseInsensitive(word, "OK") || FrameHead.equalsCaseInsensitive(word, "NO")
            || FrameHead.equalsCaseInsensitive(word, "BAD") || FrameHead.equalsCaseInsensitive(word, "BYE")
            || FrameHead.equalsCaseInsensitive(word, "PREAUTH")
        return (.other, isStatus)
    }

    /// The literal announced at the end of a line's content, if any.
    ///
    /// ```
    /// literal  = "{" number ["+"] "}" CRLF      ; RFC 3501 §9, RFC 7888 §8
    /// literal8 = "~{" number ["+"] "}" CRLF     ; RFC 3516 §4.2
    /// ```
    /// A trailing word that opens with `{` but is not a valid announcement
    /// (`{abc}`, `{}`) is an error: `{` is not an ATOM-CHAR, so the peer meant a
    /// literal and nothing after it can be framed reliably. A word merely
    /// ending in `}` (a valid atom) is not a literal.
    static func literalAnnouncement(_ line: UnsafeRawBufferPointer) -> LiteralScan {
        let end = line.count
        guard end > 0, line[end - 1] == UInt8(ascii: "}") else { return .none }
        var i = end - 2
        var form = LiteralHeader.Form.synchronizing
        if i >= 0 && line[i] == UInt8(ascii: "+") {
            form = .nonSynchronizing
            i -= 1
        } else if i >= 0 && line[i] == UInt8(ascii: "-") {
            form = .minus
            i -= 1
        }
        let digitsEnd = i + 1
        while i >= 0 && line[i] >= UInt8(ascii: "0") && line[i] <= UInt8(ascii: "9") { i -= 1 }
        let digitsStart = i + 1
        if i >= 0 && line[i] == UInt8(ascii: "{") && digitsStart < digitsEnd {
            let isBinary = i > 0 && line[i - 1] == UInt8(ascii: "~")
            let at = isBinary ? i - 1 : i
            // More than 10 digits cannot fit in 32 bits; avoid overflowing UInt64.
            if digitsEnd - digitsStart > 10 { return .overflow(at: at) }
            var size: UInt64 = 0
            for k in digitsStart..<digitsEnd { size = size * 10 + UInt64(line[k] - UInt8(ascii: "0")) }
            if size > IMAPLimits.absoluteMaxLiteralSize { return .overflow(at: at) }
            return .header(LiteralHeader(size: size, form: form, isBinary: isBinary), at: at)
        }
        // Not a well-formed announcement: is the trailing word meant as one?
        var k = end - 1
        while k >= 0 && line[k] != 0x20 && line[k] != UInt8(ascii: "(") {
            if line[k] == UInt8(ascii: "{") { return .invalid(at: k) }
            k -= 1
        }
        return .none
    }
}
