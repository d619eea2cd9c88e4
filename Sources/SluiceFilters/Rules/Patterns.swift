/// Who a rule applies to: login names matched by globs (`*@example.org`,
/// `archive*`, `bob`) or regular expressions written `/…/`.
public struct UserMatcher: Sendable {
    enum Pattern: Sendable {
        case glob(Glob)
        case regex(UncheckedRegex)
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
            if source.count >= 2, source.hasPrefix("/"), source.hasSuffix("/") {
                return .regex(try UncheckedRegex(String(source.dropFirst().dropLast())))
            }
            return .glob(Glob(source, caseInsensitive: true))
        }
        isEveryone = false
    }

    public func matches(_ user: String) -> Bool {
        if isEveryone { return true }
        return patterns.contains { pattern in
            switch pattern {
            case .glob(let glob): return glob.matches(user)
            case .regex(let regex): return regex.wholeMatch(user) != nil
            }
        }
    }
}

/// A glob: `*` any run of characters (hierarchy delimiters included), `?`
/// one character, everything else literally.
public struct Glob: Sendable, Hashable {
    private let pattern: [Character]
    private let caseInsensitive: Bool

    public init(_ pattern: String, caseInsensitive: Bool = false) {
        self.caseInsensitive = caseInsensitive
        self.pattern = Array(caseInsensitive ? pattern.lowercased() : pattern)
    }

    public var hasWildcards: Bool { pattern.contains("*") || pattern.contains("?") }

    public func matches(_ text: String) -> Bool {
        let text = Array(caseInsensitive ? text.lowercased() : text)
        // Iterative matching with one backtrack point for the last `*` (linear-ish, no recursion).
        var p = 0, t = 0
        var star: Int?, starText = 0
        while t < text.count {
            if p < pattern.count, pattern[p] == "?" || (pattern[p] != "*" && pattern[p] == text[t]) {
                p += 1
                t += 1
            } else if p < pattern.count, pattern[p] == "*" {
                star = p
                starText = t
                p += 1
            } else if let star {
                p = star + 1
                starText += 1
                t = starText
            } else {
                return false
            }
        }
        while p < pattern.count, pattern[p] == "*" { p += 1 }
        return p == pattern.count
    }
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
