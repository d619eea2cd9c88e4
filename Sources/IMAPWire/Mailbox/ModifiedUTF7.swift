/// Modified UTF-7, the mailbox-name encoding of RFC 3501 §5.1.3.
///
/// Printable US-ASCII except `&` stands for itself; `&` is written `&-`; any
/// other run of characters is UTF-16BE in modified BASE64 (`,` for `/`, no
/// padding) between `&` and `-`.
public enum ModifiedUTF7 {
    public struct DecodingError: Error, Hashable, Sendable {
        /// Offset of the offending byte in the encoded name.
        public var offset: Int
    }

    private static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,".utf8)

    private static let reverse: [Int8] = {
        var table = [Int8](repeating: -1, count: 256)
        for (index, byte) in alphabet.enumerated() { table[Int(byte)] = Int8(index) }
        return table
    }()

    /// Encodes a Unicode mailbox name.
    public static func encode(_ name: String) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(name.utf8.count)
        var pending: [UInt16] = []
        func flush() {
            guard !pending.isEmpty else { return }
            out.append(UInt8(ascii: "&"))
            var bits: UInt32 = 0
            var bitCount = 0
            for unit in pending {
                bits = (bits << 16) | UInt32(unit)
                bitCount += 16
                while bitCount >= 6 {
                    bitCount -= 6
                    out.append(alphabet[Int((bits >> UInt32(bitCount)) & 0x3F)])
                }
            }
            if bitCount > 0 { out.append(alphabet[Int((bits << UInt32(6 - bitCount)) & 0x3F)]) }
            out.append(UInt8(ascii: "-"))
            pending.removeAll(keepingCapacity: true)
        }
        for scalar in name.unicodeScalars {
            if scalar.value >= 0x20 && scalar.value <= 0x7E {
                flush()
                out.append(UInt8(scalar.value))
                if scalar == "&" { out.append(UInt8(ascii: "-")) }
            } else {
                pending.append(contentsOf: String(scalar).utf16)
            }
        }
        flush()
        return out
    }

    /// Decodes a modified UTF-7 mailbox name; throws on bytes that cannot
    /// appear in one (8-bit bytes, control characters, bad BASE64, unpaired
    /// surrogates, leftover bits).
    public static func decode(_ bytes: some Collection<UInt8>) throws(DecodingError) -> String {
        let bytes = Array(bytes)
        var result = String.UnicodeScalarView()
        var index = 0
        while index < bytes.count {
            let byte = bytes[index]
            guard byte >= 0x20 && byte <= 0x7E else { throw DecodingError(offset: index) }
            guard byte == UInt8(ascii: "&") else {
                result.append(Unicode.Scalar(byte))
                index += 1
                continue
            }
            let start = index
            index += 1
            if index < bytes.count && bytes[index] == UInt8(ascii: "-") {
                result.append("&")
                index += 1
                continue
            }
            var bits: UInt32 = 0
            var bitCount = 0
            var units: [UInt16] = []
            while true {
                guard index < bytes.count else { throw DecodingError(offset: start) }
                let byte = bytes[index]
                if byte == UInt8(ascii: "-") { break }
                let value = reverse[Int(byte)]
                guard value >= 0 else { throw DecodingError(offset: index) }
                bits = (bits << 6) | UInt32(value)
                bitCount += 6
                if bitCount >= 16 {
                    bitCount -= 16
                    units.append(UInt16(truncatingIfNeeded: bits >> UInt32(bitCount)))
                }
                index += 1
            }
            // Leftover bits must be padding zeros, fewer than 6 of them; "&-" was handled above.
            guard !units.isEmpty, bitCount < 6, bits & ((1 << UInt32(bitCount)) - 1) == 0 else {
                throw DecodingError(offset: start)
            }
            index += 1  // "-"
            var iterator = units.makeIterator()
            var decoder = UTF16()
            loop: while true {
                switch decoder.decode(&iterator) {
                case .scalarValue(let scalar): result.append(scalar)
                case .emptyInput: break loop
                case .error: throw DecodingError(offset: start)
                }
            }
        }
        return String(result)
    }
}
