import SluiceProxy
import NIOCore
import Yams

/// Collects configuration issues while a file is read.
final class IssueCollector {
    let file: String?
    private(set) var issues: [ConfigurationIssue] = []

    init(file: String?) { self.file = file }

    func report(_ message: String, at path: String, line: Int?) {
        issues.append(ConfigurationIssue(file: file, line: line, keyPath: path, message: message))
    }
}

/// A YAML node with its key path, read into typed values.
///
/// Every accessor reports a wrong type or value (with the key path and line)
/// and returns `nil`, so one pass over a file finds all its problems.
/// `mapping(keys:)` reports keys the caller does not know: a misspelt key
/// is an error, not a silently ignored setting.
struct YAMLValue {
    let node: Node
    let path: String
    let issues: IssueCollector

    var line: Int? { node.mark?.line }

    /// Parses `text`; a syntax error is reported with its line.
    static func parse(_ text: String, issues: IssueCollector) -> YAMLValue? {
        do {
            guard let node = try Yams.compose(yaml: text) else {
                issues.report("the file is empty", at: "", line: nil)
                return nil
            }
            return YAMLValue(node: node, path: "", issues: issues)
        } catch let error as YamlError {
            issues.report("not valid YAML: \(YAMLValue.summary(of: error))", at: "", line: YAMLValue.line(of: error))
            return nil
        } catch {
            issues.report("not valid YAML: \(error)", at: "", line: nil)
            return nil
        }
    }

    func report(_ message: String) {
        issues.report(message, at: path, line: line)
    }

    private func child(_ node: Node, key: String) -> YAMLValue {
        YAMLValue(node: node, path: path.isEmpty ? key : "\(path).\(key)", issues: issues)
    }

    /// The entries of a mapping, in file order; unknown keys are reported.
    func mapping(keys known: Set<String>? = nil) -> [(key: String, value: YAMLValue)]? {
        guard let mapping = node.mapping else {
            report("expected a mapping (key: value), got \(kind)")
            return nil
        }
        var entries: [(key: String, value: YAMLValue)] = []
        var seen = Set<String>()
        for (keyNode, valueNode) in mapping {
            guard let key = keyNode.scalar?.string else {
                issues.report("keys must be plain strings", at: path, line: keyNode.mark?.line)
                continue
            }
            let value = child(valueNode, key: key)
            if let known, !known.contains(key) {
                issues.report("unknown key (expected one of: \(known.sorted().joined(separator: ", ")))",
                              at: value.path, line: keyNode.mark?.line)
                continue
            }
            if !seen.insert(key).inserted {
                issues.report("duplicate key", at: value.path, line: keyNode.mark?.line)
                continue
            }
            entries.append((key, value))
        }
        return entries
    }

    /// A mapping's values by key (for sections with a fixed set of keys).
    func fields(_ known: Set<String>) -> [String: YAMLValue]? {
        guard let entries = mapping(keys: known) else { return nil }
        return Dictionary(entries.map { ($0.key, $0.value) }, uniquingKeysWith: { first, _ in first })
    }

    func list() -> [YAMLValue]? {
        guard let sequence = node.sequence else {
            report("expected a list, got \(kind)")
            return nil
        }
        return sequence.enumerated().map { index, node in
            YAMLValue(node: node, path: "\(path)[\(index)]", issues: issues)
        }
    }

    /// A list, or a single value taken as a list of one.
    func listOrSingle() -> [YAMLValue] {
        if node.sequence != nil { return list() ?? [] }
        return [self]
    }

    func string() -> String? {
        guard let scalar = node.scalar else {
            report("expected a string, got \(kind)")
            return nil
        }
        return scalar.string
    }

    func nonEmptyString() -> String? {
        guard let value = string() else { return nil }
        if value.isEmpty { report("must not be empty") }
        return value.isEmpty ? nil : value
    }

    func int(in range: ClosedRange<Int>) -> Int? {
        guard let text = string() else { return nil }
        guard let value = Int(text), range.contains(value) else {
            report("expected a whole number from \(range.lowerBound) to \(range.upperBound), got \(text)")
            return nil
        }
        return value
    }

    func bool() -> Bool? {
        guard let text = string() else { return nil }
        switch text.lowercased() {
        case "true", "yes", "on": return true
        case "false", "no", "off": return false
        default:
            report("expected true or false, got \(text)")
            return nil
        }
    }

    func oneOf<T: RawRepresentable>(_ type: T.Type) -> T? where T.RawValue == String, T: CaseIterable {
        guard let text = string() else { return nil }
        guard let value = T(rawValue: text) else {
            report("expected one of \(T.allCases.map(\.rawValue).joined(separator: ", ")), got \(text)")
            return nil
        }
        return value
    }

    /// A duration above zero (a zero timeout would end every session at once).
    func positiveDuration() -> TimeAmount? {
        guard let amount = duration() else { return nil }
        guard amount > .zero else {
            report("must be more than 0s")
            return nil
        }
        return amount
    }

    /// `500ms`, `30s`, `10m`, `1h`, or a bare number of seconds.
    func duration() -> TimeAmount? {
        guard let text = string() else { return nil }
        if let amount = ProxyConfiguration.duration(text) { return amount }
        report("expected a duration such as 500ms, 30s, 10m or 1h, got \(text)")
        return nil
    }

    /// `64KiB`, `1MiB`, `1GiB` or a bare number of bytes.
    func byteSize(in range: ClosedRange<Int>) -> Int? {
        guard let text = string() else { return nil }
        let units: [(String, Int)] = [("KiB", 1 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30), ("K", 1 << 10), ("M", 1 << 20), ("G", 1 << 30)]
        var value: Int?
        for (suffix, multiplier) in units where text.hasSuffix(suffix) {
            if let number = Int(text.dropLast(suffix.count)), number >= 0, number <= Int.max / multiplier {
                value = number * multiplier
            }
            break
        }
        if value == nil { value = Int(text) }
        guard let value, range.contains(value) else {
            report("expected a size from \(range.lowerBound) to \(range.upperBound) bytes (e.g. 256KiB), got \(text)")
            return nil
        }
        return value
    }

    private var kind: String {
        switch node {
        case .mapping: return "a mapping"
        case .sequence: return "a list"
        case .scalar(let scalar): return "\"\(scalar.string)\""
        case .alias: return "an alias"
        }
    }

    private static func line(of error: YamlError) -> Int? {
        switch error {
        case .scanner(_, _, let mark, _), .parser(_, _, let mark, _), .composer(_, _, let mark, _): return mark.line
        case .duplicatedKeysInMapping(_, let context): return context.mark.line
        default: return nil
        }
    }

    private static func summary(of error: YamlError) -> String {
        switch error {
        case .scanner(let context, let problem, _, _), .parser(let context, let problem, _, _),
             .composer(let context, let problem, _, _):
            return context.map { "\($0.text) \(problem)" } ?? problem
        case .duplicatedKeysInMapping(let duplicates, _):
            return "duplicate keys: \(duplicates.joined(separator: ", "))"
        default:
            return "\(error)"
        }
    }
}
