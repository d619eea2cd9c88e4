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

    /// The first bytes of a line whose line feed has not arrived, as far as
    /// they can be handed out without changing how the line's end is read:
    /// the cut never separates the last word from a `{` it might announce a
    /// literal with (`literalAnnouncement` reads the last word only), and the
    /// last 32 bytes stay (a whole announcement and its CR). `nil` when no such
    /// cut exists (one giant word holding a `{`).
    static func piece(in bytes: UnsafeRawBufferPointer, peer: IMAPPeer, startsLine: Bool) -> LineScan? {
        guard let base = bytes.baseAddress, bytes.count > 32 else { return nil }
        var cut = bytes.count - 32
        if bytes[cut - 1] == UInt8(ascii: "~") { cut -= 1 }
        var index = cut - 1
        while index >= 0 && bytes[index] != 0x20 && bytes[index] != UInt8(ascii: "(") {
            if bytes[index] == UInt8(ascii: "{") {
                // The word this `{` is in may end the line: cut before the word.
                while index >= 0 && bytes[index] != 0x20 && bytes[index] != UInt8(ascii: "(") { index -= 1 }
                guard index >= 0 else { return nil }
                cut = index + 1
                break
            }
            index -= 1
        }
        guard cut > 0 else { return nil }
        var nulOffset: Int? = nil
        if let nul = memchr(base, 0, cut) { nulOffset = base.distance(to: UnsafeRawPointer(nul)) }
        var scan = LineScan(
            lineLength: cut, nulOffset: nulOffset, firstByte: bytes[0], firstSpace: nil, secondSpace: nil,
            isDone: false, secondWord: .other, secondWordIsStatus: false, literal: .none)
        guard startsLine else { return scan }
        if let space = memchr(base, 0x20, cut) {
            let first = base.distance(to: UnsafeRawPointer(space))
            scan.firstSpace = first
            if first + 1 < cut, let next = memchr(base + first + 1, 0x20, cut - first - 1) {
                scan.secondSpace = base.distance(to: UnsafeRawPointer(next))
            }
        }
        if peer == .server {
            let line = UnsafeRawBufferPointer(start: base, count: cut)
            scan.secondWordIsStatus = secondWord(line, firstSpace: scan.firstSpace, secondSpace: scan.secondSpace).isStatus
        }
        return scan
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
