import IMAPWire
import NIOCore

/// Removes capabilities the relay cannot carry from capability lists on
/// their way to the client: `COMPRESS=…` always (the relay must keep parsing
/// the stream, which compression would hide), `UNAUTHENTICATE` always (RFC
/// 8437: a session is one user's, its rules, logs and metrics chosen at
/// login), and `STARTTLS` in transparent mode (the proxy cannot relay a TLS
/// handshake it does not terminate).
struct CapabilityRewriter {
    /// Names removed exactly (uppercased).
    var removedNames: Set<String> = ["UNAUTHENTICATE"]
    /// Names removed by prefix (uppercased), e.g. `COMPRESS=`.
    var removedPrefixes: [String] = ["COMPRESS="]

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
        guard let atom else { return false }
        let name = atom.utf8
        return removedNames.contains { CapabilityRewriter.matches(name, $0.utf8, wholeName: true) }
            || removedPrefixes.contains { CapabilityRewriter.matches(name, $0.utf8, wholeName: false) }
    }

    /// Whether `name` is `upper` (or starts with it), ignoring ASCII case;
    /// `upper` is upper-cased.
    private static func matches(_ name: String.UTF8View, _ upper: String.UTF8View, wholeName: Bool) -> Bool {
        guard wholeName ? name.count == upper.count : name.count >= upper.count else { return false }
        return zip(name, upper).allSatisfy { ($0 >= 0x61 && $0 <= 0x7A ? $0 - 0x20 : $0) == $1 }
    }

    private static let needle = Array("CAPABILITY".utf8)

    private static func containsCapability(_ bytes: ByteBuffer) -> Bool {
        let needle = CapabilityRewriter.needle
        return bytes.withUnsafeReadableBytes { raw in
            guard raw.count >= needle.count else { return false }
            for start in 0...(raw.count - needle.count) where upper(raw[start]) == needle[0] {
                var match = true
                for offset in 1..<needle.count where upper(raw[start + offset]) != needle[offset] {
                    match = false
                    break
                }
                if match { return true }
            }
            return false
        }
    }

    private static func upper(_ byte: UInt8) -> UInt8 { byte >= 0x61 && byte <= 0x7A ? byte - 0x20 : byte }
}
