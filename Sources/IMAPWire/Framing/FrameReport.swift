/// A one-line description of a frame, as `sluice parse` prints it.
///
/// Never includes frame content beyond the tag and name: a transcript may
/// hold passwords and mail.
public struct FrameReport: Hashable, Sendable {
    public var offset: Int
    public var length: Int
    public var kind: FrameKind
    public var tag: String?
    public var name: String?
    public var literals: [UInt64]
    public var understood: Bool

    public init(_ frame: Frame, limits: IMAPLimits? = nil) {
        offset = frame.offset
        length = frame.length
        kind = frame.kind
        tag = frame.tag
        name = frame.name
        literals = frame.literals.map(\.header.size)
        understood = frame.isUnderstood(limits: limits)
    }

    public var kindName: String {
        switch kind {
        case .command: return "command"
        case .idleDone: return "idle-done"
        case .saslResponse: return "sasl-response"
        case .taggedResponse: return "tagged"
        case .untaggedResponse: return "untagged"
        case .continuationRequest: return "continuation"
        }
    }

    /// One JSON object: offset, length, kind, tag, name, literals, understood.
    public var json: String {
        var out = "{\"offset\":\(offset),\"length\":\(length),\"kind\":\"\(kindName)\""
        out += ",\"tag\":" + FrameReport.jsonString(tag)
        out += ",\"name\":" + FrameReport.jsonString(name)
        out += ",\"literals\":[" + literals.map(String.init).joined(separator: ",") + "]"
        out += ",\"understood\":\(understood)}"
        return out
    }

    /// One aligned text line.
    public var text: String {
        func pad(_ value: String, _ width: Int) -> String {
            value.count >= width ? value : value + String(repeating: " ", count: width - value.count)
        }
        var line = pad(String(offset), 10) + " " + pad(String(length), 9) + " " + pad(kindName, 13) + " "
        line += pad(tag ?? "-", 10) + " " + pad(name ?? "-", 16)
        if !literals.isEmpty { line += " literals=" + literals.map(String.init).joined(separator: ",") }
        line += understood ? "" : " (not understood)"
        while line.hasSuffix(" ") { line.removeLast() }
        return line
    }

    /// `value` as a JSON string literal (`null` for `nil`).
    public static func jsonString(_ value: String?) -> String {
        guard let value else { return "null" }
        var out = "\""
        for scalar in value.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20:
                let hex = String(scalar.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }
}
