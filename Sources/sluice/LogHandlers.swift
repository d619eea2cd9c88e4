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
        var line = LogLine()
        line.appendTimestamp()
        line.append(" ")
        line.append(event.level.rawValue)
        line.append(" ")
        line.append(label)
        line.append(" :")
        for (key, value) in merged(metadata, event.metadata) {
            line.append(" ")
            line.append(key)
            line.append("=")
            line.appendLogfmt(text(of: value))
        }
        line.append(" [")
        line.append(event.source)
        line.append("] ")
        line.append(event.message.description)
        line.writeToStandardError()
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

/// The handler's metadata with the event's on top, sorted by key: an array
/// built from both (a merged dictionary cost ~10,000 instructions a line).
private func merged(_ base: Logger.Metadata, _ extra: Logger.Metadata?) -> [(key: String, value: Logger.Metadata.Value)] {
    var fields: [(key: String, value: Logger.Metadata.Value)] = []
    fields.reserveCapacity(base.count + (extra?.count ?? 0))
    if let extra, !extra.isEmpty {
        for field in base where extra[field.key] == nil { fields.append(field) }
        for field in extra { fields.append(field) }
    } else {
        for field in base { fields.append(field) }
    }
    fields.sort { $0.key < $1.key }
    return fields
}

/// A metadata value's text, without going through string interpolation.
private func text(of value: Logger.Metadata.Value) -> String {
    switch value {
    case .string(let text): return text
    case .stringConvertible(let convertible): return convertible.description
    default: return value.description
    }
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
    return FrameReport.jsonString(text(of: value))
}
