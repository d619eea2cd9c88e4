import IMAPWire
import NIOCore

/// Removes COMPRESS=… from capability lists on their way to the client: the
/// relay must keep parsing the stream, which compression would hide.
enum CapabilityRewriter {
    /// The segment rewritten without COMPRESS capabilities, or `nil` when it
    /// carries none (the common case: only a cheap byte search is made).
    static func withoutCompress(_ segment: LineSegment) -> ByteBuffer? {
        guard segment.kind == .untaggedResponse || segment.kind == .taggedResponse,
              containsCompress(segment.bytes)
        else { return nil }
        let frame = Frame(kind: segment.kind, segments: [segment.bytes], literals: [], offset: 0,
                          length: segment.bytes.readableBytes)
        guard let response = try? frame.response() else { return nil }
        let options = EncodingOptions(receiver: .client)
        switch response {
        case .data(var data) where data.name == "CAPABILITY":
            data.arguments = data.arguments.filter { !isCompress($0.atom) }
            return IMAPEncoder.encode(data, options: options).bytes()
        case .status(var status):
            guard var code = status.text.code, code.name == "CAPABILITY", let arguments = code.arguments else { return nil }
            code.arguments = arguments.filter { !isCompress($0.atom) }
            status.text.code = code
            return IMAPEncoder.encode(status, options: options).bytes()
        default:
            return nil
        }
    }

    private static func isCompress(_ atom: String?) -> Bool {
        atom?.uppercased().hasPrefix("COMPRESS=") ?? false
    }

    private static func containsCompress(_ bytes: ByteBuffer) -> Bool {
        let needle = Array("COMPRESS=".utf8)
        return bytes.withUnsafeReadableBytes { raw in
            guard raw.count >= needle.count else { return false }
            for start in 0...(raw.count - needle.count) {
                var match = true
                for offset in 0..<needle.count where FrameHeadUpper.upper(raw[start + offset]) != needle[offset] {
                    match = false
                    break
                }
                if match { return true }
            }
            return false
        }
    }
}

private enum FrameHeadUpper {
    static func upper(_ byte: UInt8) -> UInt8 { byte >= 0x61 && byte <= 0x7A ? byte - 0x20 : byte }
}
