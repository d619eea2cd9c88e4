import SluiceFilters

/// `rewrite_login`: a login name matching `regex` (whole) is replaced by
/// `template` (`$1`…) before routing.
public struct LoginRewrite: Sendable {
    public var regex: UncheckedRegex
    public var template: String

    public init(regex: UncheckedRegex, template: String) {
        self.regex = regex
        self.template = template
    }

    public func apply(_ name: String) -> String? {
        guard let groups = regex.wholeMatch(name) else { return nil }
        return LoginRewrite.substitute(template, groups: groups)
    }

    /// `$0`…`$9` replaced by the match's groups (empty when a group did not
    /// take part); `$$` is a dollar sign.
    public static func substitute(_ template: String, groups: [Substring?]) -> String {
        var result = ""
        var iterator = template.makeIterator()
        while let character = iterator.next() {
            guard character == "$" else {
                result.append(character)
                continue
            }
            guard let next = iterator.next() else {
                result.append("$")
                break
            }
            if let digit = next.wholeNumberValue, next.isASCII {
                if digit < groups.count, let group = groups[digit] { result += group }
            } else if next == "$" {
                result.append("$")
            } else {
                result.append("$")
                result.append(next)
            }
        }
        return result
    }
}
