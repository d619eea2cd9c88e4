import SluiceFilters
import SluiceLua

/// Reads one kind of `rules:` entry into the built-in filter it becomes.
///
/// Each kind is one file in this folder, named after its key and reading
/// exactly what docs/configuration.md lists for it; the filter it builds
/// lives in SluiceFilters/Rules. The readers are here rather than beside
/// the filters so that a program embedding SluiceFilters does not link
/// Yams (docs/design-notes.md, "Configuration apart from the proxy").
/// Adding a rule: its filter, its reader, and one line in `RulesReader.readers`.
protocol RuleReader {
    /// The rule's key in an entry (`deny`).
    static var key: String { get }
    /// Keys an entry of this kind may have besides its own and `users`.
    static var extraKeys: Set<String> { get }
    /// The filter for `value` (the value under `key`; `entry` is the whole
    /// entry), or `nil` after reporting what is wrong at its line.
    static func filter(from value: YAMLValue, entry: [String: YAMLValue], reading: RuleReading) -> (any Filter)?
}

extension RuleReader {
    static var extraKeys: Set<String> { [] }
}

/// What reading a rule needs besides its entry.
struct RuleReading {
    /// The configuration file's directory: relative paths start there.
    var baseDirectory: String?
    /// `limits.lua_memory` and `limits.lua_instructions`, for `lua:` rules.
    var luaLimits: LuaLimits
}
