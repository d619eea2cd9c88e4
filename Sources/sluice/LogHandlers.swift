import IMAPWire
import Logging
import SluiceFilters
import Synchronization

/// Writes one line per log event to standard error, laid out like
/// swift-log's `StreamLogHandler` (`time level label : key=value … [source]
/// message`; a value with spaces is quoted, control characters escaped), but
/// rendering metadata once per line and writing UTC (docs/design-notes.md,
/// "Our own text log handler").
struct TextLogHandler: LineLogHandler {
    let label: String
    var logLevel: Logger.Level {
        get { LogLevelSetting.level }
        set { LogLevelSetting.level = newValue }
    }
    var metadata: Logger.Metadata = [:]

    func log(event: LogEvent) {
        var line = UTCTimestamp.now() + " \(event.level) " + label + " :"
        for (key, value) in merged(metadata, event.metadata) {
            line += " " + key + "=" + logfmtValue("\(value)")
        }
        line += " [" + event.source + "] " + event.message.description
        printError(line)
    }
}

/// Writes one JSON object per log line to standard error.
struct JSONLogHandler: LineLogHandler {
    let label: String
    var logLevel: Logger.Level {
        get { LogLevelSetting.level }
        set { LogLevelSetting.level = newValue }
    }
    var metadata: Logger.Metadata = [:]

    func log(event: LogEvent) {
        var line = "{\"time\":" + FrameReport.jsonString(UTCTimestamp.now()) + ",\"level\":\"\(event.level)\",\"message\":"
            + FrameReport.jsonString(event.message.description)
        for (key, value) in merged(metadata, event.metadata) {
            line += "," + FrameReport.jsonString(key) + ":" + jsonValue(value)
        }
        printError(line + "}")
    }
}

/// The level every handler logs at (`log.level`): one value for the
/// process, so that a reload changes it for loggers already made.
enum LogLevelSetting {
    private static let index = Atomic<Int>(Logger.Level.allCases.firstIndex(of: .info) ?? 0)

    static var level: Logger.Level {
        get { Logger.Level.allCases[index.load(ordering: .relaxed)] }
        set { index.store(Logger.Level.allCases.firstIndex(of: newValue) ?? 0, ordering: .relaxed) }
    }
}

/// What both handlers share: a line per event to standard error, with the
/// handler's metadata under the event's.
protocol LineLogHandler: LogHandler {}

extension LineLogHandler {
    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }
}

/// A value as it is, or quoted (logfmt) when it holds a space, `=` or `"`,
/// so that `reason="client closed the connection"` stays one field.
private func logfmtValue(_ value: String) -> String {
    guard value.isEmpty || value.utf8.contains(where: { $0 == 0x20 || $0 == 0x3D || $0 == 0x22 || $0 < 0x20 }) else {
        return value
    }
    var quoted = "\""
    for scalar in value.unicodeScalars {
        switch scalar {
        case "\"": quoted += "\\\""
        case "\\": quoted += "\\\\"
        case "\n": quoted += "\\n"
        case "\r": quoted += "\\r"
        case "\t": quoted += "\\t"
        default:
            if scalar.value < 0x20 {
                let hex = String(scalar.value, radix: 16)
                quoted += "\\x" + (hex.count < 2 ? "0" + hex : hex)
            } else {
                quoted.unicodeScalars.append(scalar)
            }
        }
    }
    return quoted + "\""
}

/// The handler's metadata with the event's on top, sorted by key.
private func merged(_ base: Logger.Metadata, _ extra: Logger.Metadata?) -> [(key: String, value: Logger.Metadata.Value)] {
    var fields = base
    if let extra { fields.merge(extra) { $1 } }
    return fields.sorted { $0.key < $1.key }
}

/// A metadata value in JSON: numbers given as numbers (`.stringConvertible`
/// of an integer or a finite floating-point value) stay numbers, everything
/// else is a string.
private func jsonValue(_ value: Logger.Metadata.Value) -> String {
    if case .stringConvertible(let convertible) = value {
        switch convertible {
        case let number as Int: return "\(number)"
        case let number as Int64: return "\(number)"
        case let number as UInt64: return "\(number)"
        case let number as Double where number.isFinite: return "\(number)"
        default: break
        }
    }
    return FrameReport.jsonString("\(value)")
}
