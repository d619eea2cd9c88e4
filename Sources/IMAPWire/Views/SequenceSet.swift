/// A set of message numbers or UIDs.
///
/// ```
/// sequence-set = (seq-number / seq-range) ["," sequence-set] / "$"   ; RFC 9051 §9, RFC 5182
/// seq-range    = seq-number ":" seq-number
/// seq-number   = nz-number / "*"
/// ```
public struct SequenceSet: Hashable, Sendable {
    public enum Bound: Hashable, Sendable {
        case number(UInt32)
        /// `*`: the largest number in use.
        case last
    }

    public enum Element: Hashable, Sendable {
        case single(Bound)
        case range(Bound, Bound)
    }

    public var elements: [Element]
    /// `$`: the saved search result (RFC 5182).
    public var isSavedResult: Bool

    public init(elements: [Element], isSavedResult: Bool = false) {
        self.elements = elements
        self.isSavedResult = isSavedResult
    }

    public init?(_ token: IMAPToken) {
        guard case .atom(let bytes) = token else { return nil }
        self.init(bytes)
    }

    public init?(_ bytes: [UInt8]) {
        if bytes == [UInt8(ascii: "$")] {
            self.init(elements: [], isSavedResult: true)
            return
        }
        var elements: [Element] = []
        for part in bytes.split(separator: UInt8(ascii: ","), omittingEmptySubsequences: false) {
            let bounds = part.split(separator: UInt8(ascii: ":"), omittingEmptySubsequences: false)
            guard bounds.count == 1 || bounds.count == 2 else { return nil }
            var parsed: [Bound] = []
            for bound in bounds {
                if bound.elementsEqual([UInt8(ascii: "*")]) {
                    parsed.append(.last)
                } else if let value = IMAPToken.atom(Array(bound)).number, value > 0, value <= UInt64(UInt32.max) {
                    parsed.append(.number(UInt32(value)))
                } else {
                    return nil
                }
            }
            elements.append(parsed.count == 1 ? .single(parsed[0]) : .range(parsed[0], parsed[1]))
        }
        self.init(elements: elements)
    }

    /// Whether `number` is in the set, given the largest number in use (for `*`).
    public func contains(_ number: UInt32, largest: UInt32) -> Bool {
        func value(_ bound: Bound) -> UInt32 {
            if case .number(let n) = bound { return n }
            return largest
        }
        return elements.contains { element in
            switch element {
            case .single(let bound): return value(bound) == number
            case .range(let a, let b): return (min(value(a), value(b))...max(value(a), value(b))).contains(number)
            }
        }
    }
}
