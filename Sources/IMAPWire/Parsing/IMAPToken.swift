/// One node of the structural token tree of a command or response.
///
/// The tree is syntax, not meaning: typed views (`LoginCommand`,
/// `ListResponse`, …) give meaning to it. Strings keep their bytes as sent
/// (8-bit bytes included); nothing is decoded until asked.
///
/// Not `indirect`: a list's array already holds its elements out of line,
/// and boxing every token cost an allocation per atom (a capability list
/// after login is ~40 of them; issue 14).
public enum IMAPToken: Hashable, Sendable {
    /// An atom, including numbers, flags (`\Seen`), sequence sets and FETCH
    /// items with sections (`BODY[HEADER.FIELDS (FROM)]<0.512>`).
    case atom([UInt8])
    /// A quoted string, unescaped.
    case quoted([UInt8])
    /// The `index`-th literal of the frame; `bytes` when the frame captured it.
    case literal(index: Int, size: UInt64, bytes: [UInt8]?)
    /// The atom `NIL` (case-insensitive). `"NIL"` is `.quoted`.
    case nilValue
    /// A parenthesized list.
    case list([IMAPToken])

    /// The atom's text, if this is an atom of valid UTF-8 (in practice ASCII).
    public var atom: String? {
        guard case .atom(let bytes) = self else { return nil }
        // ASCII needs no validation; the generic validating initializer cost
        // ~950 instructions an atom.
        if bytes.allSatisfy({ $0 < 0x80 }) { return String(decoding: bytes, as: UTF8.self) }
        return String(validating: bytes, as: UTF8.self)
    }

    /// The atom's text upper-cased (for case-insensitive keywords).
    public var keyword: String? { atom?.uppercased() }

    /// The bytes of an `astring`/`nstring`-like value: atom, quoted string or
    /// captured literal. `nil` for NIL, lists and uncaptured literals.
    public var stringBytes: [UInt8]? {
        switch self {
        case .atom(let bytes), .quoted(let bytes): return bytes
        case .literal(_, _, let bytes): return bytes
        case .nilValue, .list: return nil
        }
    }

    /// `stringBytes` as UTF-8 text, if valid.
    public var string: String? {
        stringBytes.flatMap { String(validating: $0, as: UTF8.self) }
    }

    /// The value of an atom made only of digits (RFC 3501 `number`, up to 64 bits).
    public var number: UInt64? {
        guard case .atom(let bytes) = self, !bytes.isEmpty, bytes.count <= 19 else { return nil }
        var value: UInt64 = 0
        for byte in bytes {
            guard byte >= 0x30 && byte <= 0x39 else { return nil }
            value = value * 10 + UInt64(byte - 0x30)
        }
        return value
    }

    /// The elements of a parenthesized list.
    public var list: [IMAPToken]? {
        guard case .list(let elements) = self else { return nil }
        return elements
    }

    public var isNil: Bool { self == .nilValue }
}

extension IMAPToken: CustomStringConvertible {
    /// A debugging rendering; literals show their size only, never content.
    public var description: String {
        switch self {
        case .atom(let bytes): return String(decoding: bytes, as: UTF8.self)
        case .quoted(let bytes): return "\"" + String(decoding: bytes, as: UTF8.self) + "\""
        case .literal(let index, let size, _): return "<literal #\(index) \(size) bytes>"
        case .nilValue: return "NIL"
        case .list(let elements): return "(" + elements.map(\.description).joined(separator: " ") + ")"
        }
    }
}
