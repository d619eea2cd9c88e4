import CoreMetrics

/// The kind of rule a filter is: the `rule` label of the rules' metrics,
/// a bounded set (a filter of one's own counts as `custom`).
public enum RuleKind: String, Sendable, CaseIterable {
    case deny
    case readOnly = "read_only"
    case hideMailboxes = "hide_mailboxes"
    case renameMailboxes = "rename_mailboxes"
    case capabilities
    case specialUse = "special_use"
    case audit
    /// The proxy refused a selected command it could not read (DESIGN principle 5).
    case failClosed = "fail_closed"
    /// A `lua:` rule (its script decided, or failed and the proxy refused).
    case lua
    case custom
}

/// A filter that names its kind for the metrics (built-in and Lua rules);
/// any other filter counts as `custom`.
public protocol RuleKindNaming: Filter {
    var ruleKind: RuleKind { get }
}

/// A built-in rule: it names its kind and counts its own rewrites.
protocol BuiltInRule: RuleKindNaming {}

/// `sluice_commands_refused_total` and `sluice_responses_rewritten_total`
/// by rule kind, created once (after the metrics backend is bootstrapped:
/// statics are created on first use, which is a session's first rule).
enum RuleMetrics {
    static let refused: [RuleKind: Counter] = Dictionary(uniqueKeysWithValues: RuleKind.allCases.map {
        ($0, Counter(label: "sluice_commands_refused_total", dimensions: [("rule", $0.rawValue)]))
    })
    static let rewritten: [RuleKind: Counter] = Dictionary(uniqueKeysWithValues: RuleKind.allCases.map {
        ($0, Counter(label: "sluice_responses_rewritten_total", dimensions: [("rule", $0.rawValue)]))
    })

    /// A built-in rule changed or removed a response the client would have seen.
    static func rewrote(_ kind: RuleKind) { rewritten[kind]?.increment() }

    static func kind(of filter: any Filter) -> RuleKind {
        (filter as? any RuleKindNaming)?.ruleKind ?? .custom
    }
}
