#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The time for log and audit lines: ISO 8601 in UTC with milliseconds,
/// `2026-11-25T19:50:57.123Z`. UTC needs no time-zone file (glibc's
/// `localtime` consults /etc/localtime on every call).
public enum UTCTimestamp {
    public static func now() -> String {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        var time = tm()
        var seconds = now.tv_sec
        gmtime_r(&seconds, &time)
        var text = ""
        text.reserveCapacity(24)
        append(Int(time.tm_year) + 1900, digits: 4, to: &text)
        text += "-"
        append(Int(time.tm_mon) + 1, digits: 2, to: &text)
        text += "-"
        append(Int(time.tm_mday), digits: 2, to: &text)
        text += "T"
        append(Int(time.tm_hour), digits: 2, to: &text)
        text += ":"
        append(Int(time.tm_min), digits: 2, to: &text)
        text += ":"
        append(Int(time.tm_sec), digits: 2, to: &text)
        text += "."
        append(Int(now.tv_nsec) / 1_000_000, digits: 3, to: &text)
        text += "Z"
        return text
    }

    private static func append(_ value: Int, digits: Int, to text: inout String) {
        let decimal = String(value)
        if decimal.utf8.count < digits { text += String(repeating: "0", count: digits - decimal.utf8.count) }
        text += decimal
    }
}
