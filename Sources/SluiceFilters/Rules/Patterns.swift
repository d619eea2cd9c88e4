/// Who a rule applies to: login names matched by globs (`*@example.org`,
/// `archive*`, `bob`) or regular expressions written `/…/`, or members of a
/// group the router named (`group:staff`).
public struct UserMatcher: Sendable {
    enum Pattern: Sendable {
        case glob(Glob)
        case regex(UncheckedRegex)
        case group(String)
    }

    private let patterns: [Pattern]
    public let isEveryone: Bool

    public static let everyone = UserMatcher(patterns: [], isEveryone: true)

    private init(patterns: [Pattern], isEveryone: Bool) {
        self.patterns = patterns
        self.isEveryone = isEveryone
    }

    /// Throws the regular expression's error for a bad `/…/` pattern.
    public init(_ sources: [String]) throws {
        patterns = try sources.map { source in
            if source.hasPrefix("group:") { return .group(String(source.dropFirst(6))) }
            if source.count >= 2, source.hasPrefix("/"), source.hasSuffix("/") {
                return .regex(try UncheckedRegex(String(source.dropFirst().dropLast())))
            }
            return .glob(Glob(source, caseInsensitive: true))
        }
        isEveryone = false
    }

    public func matches(_ user: String, groups: [String] = []) -> Bool {
        if isEveryone { return true }
        return patterns.contains { pattern in
            switch pattern {
            case .glob(let glob): return glob.matches(user)
            case .regex(let regex): return regex.wholeMatch(user) != nil
            case .group(let name): return groups.contains(name)
            }
        }
    }
}

/// A glob: `*` any run of characters (hierarchy delimiters included), `?`
/// one character, everything else literally. Matched on UTF-8 bytes
/// (`?` is one byte; fine for the ASCII wildcards names use), ASCII letters
/// folded when case-insensitive.
public struct Glob: Sendable, Hashable {
    private let pattern: [UInt8]
    private let caseInsensitive: Bool

    public init(_ pattern: String, caseInsensitive: Bool = false) {
        self.caseInsensitive = caseInsensitive
        self.pattern = Array(pattern.utf8).map { caseInsensitive ? Glob.lower($0) : $0 }
    }

    public func matches(_ text: String) -> Bool {
        var text = text
        return text.withUTF8 { matches(bytes: $0) }
    }

    public func matches(bytes text: UnsafeBufferPointer<UInt8>) -> Bool {
        let star = UInt8(ascii: "*"), any = UInt8(ascii: "?")
        // Iterative matching with one backtrack point for the last `*`.
        var p = 0, t = 0
        var starAt: Int?, starText = 0
        while t < text.count {
            let byte = caseInsensitive ? Glob.lower(text[t]) : text[t]
            if p < pattern.count, pattern[p] == any || (pattern[p] != star && pattern[p] == byte) {
                p += 1
                t += 1
            } else if p < pattern.count, pattern[p] == star {
                starAt = p
                starText = t
                p += 1
            } else if let starAt {
                p = starAt + 1
                starText += 1
                t = starText
            } else {
                return false
            }
        }
        while p < pattern.count, pattern[p] == star { p += 1 }
        return p == pattern.count
    }

    /// Whether some name starting with `prefix` could match: renaming a
    /// mailbox renames everything under it, so a rule must know whether a
    /// name it protects lies there (`Archive.2019` under `Archive.`).
    public func mayMatchNames(startingWith prefix: String) -> Bool {
        let star = UInt8(ascii: "*"), any = UInt8(ascii: "?")
        for (index, byte) in prefix.utf8.enumerated() {
            guard index < pattern.count else { return false }
            let p = pattern[index]
            if p == star { return true }
            if p == any { continue }
            if p != (caseInsensitive ? Glob.lower(byte) : byte) { return false }
        }
        return true
    }

    private static func lower(_ byte: UInt8) -> UInt8 { byte >= 0x41 && byte <= 0x5A ? byte + 0x20 : byte }
}

/// A compiled regular expression shared across event loops. `Regex` holds
/// no mutable state once built, but `Regex<AnyRegexOutput>` is not declared
/// Sendable; this wrapper states it.
public struct UncheckedRegex: @unchecked Sendable {
    public let regex: Regex<AnyRegexOutput>

    public init(_ source: String) throws {
        regex = try Regex(source)
    }

    /// The groups of a whole-string match ($0 first), or `nil`.
    public func wholeMatch(_ text: String) -> [Substring?]? {
        guard let match = try? regex.wholeMatch(in: text) else { return nil }
        return match.output.map { $0.substring }
    }
}
