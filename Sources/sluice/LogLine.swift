import Glibc
import Synchronization

/// One log line, built as bytes and written with one `write(2)`.
///
/// Appending UTF-8 to a byte array is a copy; appending to a `String` grew
/// and re-validated it each time, and the text handler's three lines per
/// session cost ~117,000 instructions per login (callgrind, issue 14).
struct LogLine {
    private(set) var bytes: [UInt8] = []

    init() {
        bytes.reserveCapacity(320)
    }

    mutating func append(_ text: String) {
        var text = text
        text.withUTF8 { bytes.append(contentsOf: $0) }
    }

    mutating func append(_ byte: UInt8) {
        bytes.append(byte)
    }

    /// `value` as is, or quoted (logfmt) when it holds a space, `=`, `"`, a
    /// backslash or a control character, so that `reason="client closed the
    /// connection"` stays one field and no value reads as another field or
    /// line. Control characters are escaped: C0, DEL, and the C1 controls
    /// and U+2028/U+2029, which some readers take as line ends (red team 8:
    /// a user name with U+0085 made a second line for them).
    mutating func appendLogfmt(_ value: String) {
        // One pass over the UTF-8 for the common value (printable ASCII, no
        // space, `=`, quote or backslash), copied as it is.
        var value = value
        let plain = value.withUTF8 { utf8 in
            guard !utf8.isEmpty, !utf8.contains(where: { $0 >= 0x80 || LogLine.needsQuoting($0) }) else { return false }
            bytes.append(contentsOf: utf8)
            return true
        }
        if plain { return }
        guard value.isEmpty || value.utf8.contains(where: LogLine.needsQuoting)
                || value.unicodeScalars.contains(where: LogLine.isWideControl) else {
            bytes.append(contentsOf: value.utf8)
            return
        }
        bytes.append(UInt8(ascii: "\""))
        for scalar in value.unicodeScalars {
            switch scalar {
            case "\"": append("\\\"")
            case "\\": append("\\\\")
            case "\n": append("\\n")
            case "\r": append("\\r")
            case "\t": append("\\t")
            default:
                if scalar.value < 0x20 || scalar.value == 0x7F {
                    append("\\x")
                    bytes.append(LogLine.hexDigits[Int(scalar.value >> 4)])
                    bytes.append(LogLine.hexDigits[Int(scalar.value & 0xF)])
                } else if LogLine.isWideControl(scalar) {
                    append("\\u")
                    for shift in stride(from: 12, through: 0, by: -4) {
                        bytes.append(LogLine.hexDigits[Int((scalar.value >> UInt32(shift)) & 0xF)])
                    }
                } else {
                    bytes.append(contentsOf: String(scalar).utf8)
                }
            }
        }
        bytes.append(UInt8(ascii: "\""))
    }

    private static func needsQuoting(_ byte: UInt8) -> Bool {
        byte == 0x20 || byte == 0x3D || byte == 0x22 || byte == 0x5C || byte < 0x20 || byte == 0x7F
    }

    /// C1 controls (U+0080–U+009F) and the line and paragraph separators.
    private static func isWideControl(_ scalar: Unicode.Scalar) -> Bool {
        (0x80...0x9F).contains(scalar.value) || scalar.value == 0x2028 || scalar.value == 0x2029
    }

    private static let hexDigits = Array("0123456789abcdef".utf8)

    /// `2026-12-01T05:09:16.477Z`: the date and time to the second are
    /// formatted once a second (`gmtime_r` and the digits were ~8,000
    /// instructions a line), the milliseconds each time.
    mutating func appendTimestamp() {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        let second = Int(now.tv_sec)
        let prefix = LogLine.secondPrefix.withLock { cached -> [UInt8] in
            if cached.second != second { cached = (second, LogLine.formatSecond(second)) }
            return cached.text
        }
        bytes.append(contentsOf: prefix)
        let milliseconds = Int(now.tv_nsec) / 1_000_000
        bytes.append(UInt8(ascii: "."))
        appendDigits(milliseconds, count: 3)
        bytes.append(UInt8(ascii: "Z"))
    }

    private static let secondPrefix = Mutex<(second: Int, text: [UInt8])>((-1, []))

    private static func formatSecond(_ second: Int) -> [UInt8] {
        var seconds = time_t(second)
        var time = tm()
        gmtime_r(&seconds, &time)
        var line = LogLine()
        line.appendDigits(Int(time.tm_year) + 1900, count: 4)
        line.append(UInt8(ascii: "-"))
        line.appendDigits(Int(time.tm_mon) + 1, count: 2)
        line.append(UInt8(ascii: "-"))
        line.appendDigits(Int(time.tm_mday), count: 2)
        line.append(UInt8(ascii: "T"))
        line.appendDigits(Int(time.tm_hour), count: 2)
        line.append(UInt8(ascii: ":"))
        line.appendDigits(Int(time.tm_min), count: 2)
        line.append(UInt8(ascii: ":"))
        line.appendDigits(Int(time.tm_sec), count: 2)
        return line.bytes
    }

    /// `value` (≥ 0) in decimal, zero-padded to `count` digits.
    private mutating func appendDigits(_ value: Int, count: Int) {
        var divisor = 1
        for _ in 1..<count { divisor *= 10 }
        var rest = value
        while divisor > 0 {
            bytes.append(UInt8(ascii: "0") + UInt8(truncatingIfNeeded: (rest / divisor) % 10))
            rest %= divisor
            divisor /= 10
        }
    }

    /// The line and its newline to standard error, in as few `write`s as it takes.
    mutating func writeToStandardError() {
        bytes.append(UInt8(ascii: "\n"))
        bytes.withUnsafeBytes { raw in
            guard var base = raw.baseAddress else { return }
            var left = raw.count
            while left > 0 {
                let written = write(2, base, left)
                if written <= 0 { return }
                base += written
                left -= written
            }
        }
    }
}
