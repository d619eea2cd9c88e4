/// Cheap extraction of a frame's tag and name from its first line, without
/// tokenizing the line.
enum FrameHead {
    /// The tag: the bytes before the first space (or the whole content), if it
    /// is a plausible tag (1…64 printable non-space bytes).
    static func tag(in bytes: UnsafeRawBufferPointer) -> String? {
        var end = 0
        while end < bytes.count, end < 65 {
            let byte = bytes[end]
            if byte == 0x20 || byte == 0x0D || byte == 0x0A { break }
            if byte < 0x21 || byte > 0x7E { return nil }
            end += 1
        }
        guard end > 0, end <= 64 else { return nil }
        return String(decoding: UnsafeRawBufferPointer(rebasing: bytes[0..<end]), as: UTF8.self)
    }

    /// Words of the line after the tag, upper-cased, at most `count`, each at
    /// most 32 bytes; stops at the first word that is not a plain atom.
    static func words(in bytes: UnsafeRawBufferPointer, after start: Int, count: Int) -> [String] {
        var words: [String] = []
        var i = start
        while words.count < count {
            while i < bytes.count && bytes[i] == 0x20 { i += 1 }
            let wordStart = i
            while i < bytes.count, i - wordStart <= 32 {
                let byte = bytes[i]
                if byte == 0x20 || byte == 0x0D || byte == 0x0A { break }
                guard isNameByte(byte) else { return words }
                i += 1
            }
            guard i > wordStart, i - wordStart <= 32 else { return words }
            var word = ""
            word.reserveCapacity(i - wordStart)
            for k in wordStart..<i { word.unicodeScalars.append(Unicode.Scalar(upper(bytes[k]))) }
            words.append(word)
        }
        return words
    }

    /// Bytes allowed in a command or response name: letters, digits, `-`, `_`, `.`.
    static func isNameByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
             UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "."):
            return true
        default:
            return false
        }
    }

    static func upper(_ byte: UInt8) -> UInt8 {
        byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z") ? byte - 0x20 : byte
    }

    static func equalsCaseInsensitive(_ bytes: UnsafeRawBufferPointer, _ word: StaticString) -> Bool {
        guard bytes.count == word.utf8CodeUnitCount else { return false }
        let expected = word.utf8Start
        for i in 0..<bytes.count where upper(bytes[i]) != expected[i] { return false }
        return true
    }
}
