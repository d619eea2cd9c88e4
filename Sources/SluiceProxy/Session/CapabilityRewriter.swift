import IMAPWire
import NIOCore

/// Removes capabilities the relay cannot carry from capability lists on
/// their way to the client: `COMPRESS=…` always (the relay must keep parsing
/// the stream, which compression would hide), `UNAUTHENTICATE` always (RFC
/// 8437: a session is one user's, its rules, logs and metrics chosen at
/// login), and `STARTTLS` in transparent mode (the proxy cannot relay a TLS
/// handshake it does not terminate).
struct CapabilityRewriter: Sendable {
    /// Names removed exactly, as upper-case bytes. Arrays of two or three:
    /// walked faster than a set is hashed into.
    var removedNames: [[UInt8]] = [Array("UNAUTHENTICATE".utf8)]
    /// Names removed by prefix, as upper-case bytes, e.g. `COMPRESS=`.
    var removedPrefixes: [[UInt8]] = [Array("COMPRESS=".utf8)]

    /// The rewriter of a proxy in `mode` (one per configuration, shared by its sessions).
    init(mode: ProxyConfiguration.Mode) {
        if mode == .transparent { removedNames += [Array("STARTTLS".utf8), Array("LOGINDISABLED".utf8)] }
    }

    init() {}

    /// The segment rewritten without the removed capabilities, or `nil` when
    /// it carries no capability list (the common case: one cheap byte search).
    func rewrite(kind: FrameKind, line: ByteBuffer) -> ByteBuffer? {
        guard mayRewrite(kind: kind, line: line) else { return nil }
        let frame = Frame(kind: kind, line: line)
        guard let response = try? frame.response() else { return nil }
        let options = EncodingOptions(receiver: .client)
        switch response {
        case .data(var data) where data.name == "CAPABILITY":
            let kept = data.arguments.filter { !isRemoved($0.atom) }
            guard kept.count != data.arguments.count else { return nil }
            data.arguments = kept
            return IMAPEncoder.encode(data, options: options).bytes()
        case .status(var status):
            guard var code = status.text.code, code.name == "CAPABILITY", let arguments = code.arguments else { return nil }
            let kept = arguments.filter { !isRemoved($0.atom) }
            guard kept.count != arguments.count else { return nil }
            code.arguments = kept
            // The encoder writes `rawArguments` when no token is left: all were removed.
            code.rawArguments = []
            status.text.code = code
            return IMAPEncoder.encode(status, options: options).bytes()
        default:
            return nil
        }
    }

    /// Whether a response line (or its first piece) may carry a capability list.
    func mayRewrite(kind: FrameKind, line: ByteBuffer) -> Bool {
        (kind == .untaggedResponse || kind == .taggedResponse) && CapabilityRewriter.containsCapability(line)
    }

    /// Compared byte by byte, ignoring ASCII case: upper-casing and hashing
    /// each of the ~40 names after login cost ~400 instructions a name.
    func isRemoved(_ atom: String?) -> Bool {
        guard var atom else { return false }
        return atom.withUTF8 { name in
            removedNames.contains { CapabilityRewriter.matches(name, $0, wholeName: true) }
                || removedPrefixes.contains { CapabilityRewriter.matches(name, $0, wholeName: false) }
        }
    }

    /// Whether `name` is `expected` (or starts with it), ignoring ASCII
    /// case; `expected` is upper-case. Compared as bytes, not through
    /// `String.UTF8View`, which was several times slower.
    private static func matches(_ name: UnsafeBufferPointer<UInt8>, _ expected: [UInt8], wholeName: Bool) -> Bool {
        guard wholeName ? name.count == expected.count : name.count >= expected.count else { return false }
        for index in 0..<expected.count where upper(name[index]) != expected[index] { return false }
        return true
    }

    /// Whether the line may carry a capability list, looked for where the
    /// parser (`Frame.response()`) reads one, never in the rest of the line:
    /// words are split at spaces as its tokenizer splits them; the list is
    /// `CAPABILITY` data (the second word, or the third after a number) or a
    /// response code `[CAPABILITY` right after the second word and one space.
    /// It may say yes where the parser then finds nothing, never the other
    /// way round (a test compares the two). Lines are not scanned whole for
    /// the name: this runs on every line the server sends.
    static func containsCapability(_ bytes: ByteBuffer) -> Bool {
        bytes.withUnsafeReadableBytes { raw in
            var index = 0
            _ = nextWord(raw, &index)  // the tag, or "*"
            var name = nextWord(raw, &index)
            if !name.isEmpty, name.allSatisfy({ raw[$0] >= 0x30 && raw[$0] <= 0x39 }) { name = nextWord(raw, &index) }
            if !name.isEmpty, isCapability(raw, at: name.lowerBound, wholeWord: true) { return true }
            // A status's response code: one space, then "[".
            var code = name.upperBound
            if code < raw.count, raw[code] == 0x20 { code += 1 }
            return code < raw.count && raw[code] == UInt8(ascii: "[") && isCapability(raw, at: code + 1, wholeWord: false)
        }
    }

    /// The next word's bounds, the spaces before it skipped (as the tokenizer splits).
    private static func nextWord(_ raw: UnsafeRawBufferPointer, _ index: inout Int) -> Range<Int> {
        while index < raw.count, raw[index] == 0x20 { index += 1 }
        let start = index
        while index < raw.count, raw[index] != 0x20 { index += 1 }
        return start..<index
    }

    /// Whether CAPABILITY (any case) is at `start`; `wholeWord`: and ends there.
    private static func isCapability(_ raw: UnsafeRawBufferPointer, at start: Int, wholeWord: Bool) -> Bool {
        let needle: StaticString = "CAPABILITY"
        let end = start + needle.utf8CodeUnitCount
        guard end <= raw.count else { return false }
        for offset in 0..<needle.utf8CodeUnitCount where upper(raw[start + offset]) != needle.utf8Start[offset] {
            return false
        }
        return !wholeWord || end == raw.count || raw[end] == 0x20 || raw[end] == 0x0D || raw[end] == 0x0A
    }

    private static func upper(_ byte: UInt8) -> UInt8 { byte >= 0x61 && byte <= 0x7A ? byte - 0x20 : byte }
}
