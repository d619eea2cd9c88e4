import SluiceFilters
import SluiceLua

/// `lua: FILE` → `LuaFilter` (the file relative to the configuration file;
/// docs/lua.md). The script is compiled and its top level run now, so a
/// script that does not load is a configuration error, `FILE:LINE: message`.
enum LuaRule: RuleReader {
    static let key = "lua"

    static func filter(from value: YAMLValue, entry: [String: YAMLValue], reading: RuleReading) -> (any Filter)? {
        guard let written = value.nonEmptyString() else {
            value.report("lua needs the path of a script, e.g. lua: filters/policy.lua")
            return nil
        }
        let path = resolvePath(written, relativeTo: reading.baseDirectory)
        guard let source = readTextFile(path) else {
            value.report("cannot read \(path)")
            return nil
        }
        do {
            return LuaFilter(script: try LuaScript(source: Array(source.utf8), name: path, limits: reading.luaLimits))
        } catch {
            value.report(error.description)
            return nil
        }
    }
}
