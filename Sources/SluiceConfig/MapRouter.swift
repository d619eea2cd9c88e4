import SluiceProxy
import NIOConcurrencyHelpers
import NIOCore
import SluiceFilters

/// A routing map file, parsed and with every upstream's TLS context built.
///
/// ```yaml
/// upstreams:
///   main: { address: "10.0.0.1:143" }
///   legacy: { address: "10.0.0.2:993", tls: implicit, ca: legacy-ca.pem }
/// users:                                  # exact login names
///   alice@old.example: { upstream: main, login: alice@new.example, groups: [staff] }
///   bob: main                             # shorthand: just the upstream
/// patterns:                               # regular expressions, tried in order
///   - match: '^(.+)@legacy\.example$'
///     upstream: legacy
///     login: '$1@example.org'             # $0 is the whole name, $1… the groups
/// fallback: main                          # optional; without it unknown users are refused
/// ```
///
/// Exact names win over patterns; a pattern must match the whole login name.
public struct RoutingMap: Sendable {
    struct Target: Sendable {
        var upstream: String
        /// The login name upstream; for patterns a template with `$n`.
        var login: String?
        /// Groups rules can be scoped to (`users: ["group:NAME"]`).
        var groups: [String] = []
    }

    struct Pattern: Sendable {
        var source: String
        var regex: UncheckedRegex
        var target: Target
    }

    var upstreams: [String: UpstreamEndpoint]
    var users: [String: Target]
    var patterns: [Pattern]
    var fallback: String?

    public static func load(file path: String) throws(ConfigurationErrors) -> RoutingMap {
        guard let text = readTextFile(path) else {
            throw ConfigurationErrors([ConfigurationIssue(file: path, line: nil, keyPath: "", message: "cannot read the file")])
        }
        return try parse(yaml: text, file: path)
    }

    public static func parse(yaml text: String, file: String? = nil) throws(ConfigurationErrors) -> RoutingMap {
        let issues = IssueCollector(file: file)
        var map = RoutingMap(upstreams: [:], users: [:], patterns: [], fallback: nil)
        let base = file.map(directory(of:))
        if let root = YAMLValue.parse(text, issues: issues), let fields = root.fields(["upstreams", "users", "patterns", "fallback"]) {
            var names = Set<String>()
            if let upstreams = fields["upstreams"]?.mapping() {
                for (name, value) in upstreams {
                    names.insert(name)
                    guard let upstream = readUpstream(value, issues: issues, baseDirectory: base) else { continue }
                    do {
                        map.upstreams[name] = try UpstreamEndpoint(upstream)
                    } catch {
                        value.report("cannot set up TLS for this upstream: \(error)")
                    }
                }
            } else if fields["upstreams"] == nil {
                issues.report("a routing map needs upstreams:", at: "upstreams", line: nil)
            }
            func target(_ value: YAMLValue, allowPatternKeys: Bool) -> (Target, YAMLValue?)? {
                if value.node.scalar != nil {
                    guard let name = value.string() else { return nil }
                    guard names.contains(name) else {
                        value.report("no upstream named \(name) under upstreams:")
                        return nil
                    }
                    return (Target(upstream: name, login: nil), nil)
                }
                let keys: Set<String> = allowPatternKeys ? ["match", "upstream", "login", "groups"] : ["upstream", "login", "groups"]
                guard let entry = value.fields(keys) else { return nil }
                guard let upstreamValue = entry["upstream"], let name = upstreamValue.string() else {
                    if entry["upstream"] == nil { value.report("needs upstream: NAME") }
                    return nil
                }
                guard names.contains(name) else {
                    upstreamValue.report("no upstream named \(name) under upstreams:")
                    return nil
                }
                let login = entry["login"].flatMap { $0.nonEmptyString() }
                let groups = entry["groups"].map { $0.listOrSingle().compactMap { $0.nonEmptyString() } } ?? []
                return (Target(upstream: name, login: login, groups: groups), entry["match"])
            }
            if let users = fields["users"]?.mapping() {
                for (user, value) in users {
                    if let (target, _) = target(value, allowPatternKeys: false) { map.users[user] = target }
                }
            }
            if let patterns = fields["patterns"]?.list() {
                for value in patterns {
                    guard let (target, matchValue) = target(value, allowPatternKeys: true) else { continue }
                    guard let matchValue, let source = matchValue.nonEmptyString() else {
                        if matchValue == nil { value.report("a pattern needs match: REGEX") }
                        continue
                    }
                    do {
                        let regex = try UncheckedRegex(source)
                        map.patterns.append(Pattern(source: source, regex: regex, target: target))
                    } catch {
                        matchValue.report("not a valid regular expression: \(error)")
                    }
                }
            }
            if let value = fields["fallback"], let name = value.string() {
                if names.contains(name) { map.fallback = name } else { value.report("no upstream named \(name) under upstreams:") }
            }
        }
        if !issues.issues.isEmpty { throw ConfigurationErrors(issues.issues) }
        return map
    }

    /// The route for `user`, or `nil` when the map does not know the user
    /// and has no fallback.
    public func route(user: String) -> Route? {
        if let target = users[user], let endpoint = upstreams[target.upstream] {
            return Route(upstream: endpoint, login: .asUser(target.login ?? user), upstreamName: target.upstream,
                         groups: target.groups)
        }
        for pattern in patterns {
            guard let groups = pattern.regex.wholeMatch(user), let endpoint = upstreams[pattern.target.upstream] else { continue }
            let login = pattern.target.login.map { LoginRewrite.substitute($0, groups: groups) } ?? user
            return Route(upstream: endpoint, login: .asUser(login), upstreamName: pattern.target.upstream,
                         groups: pattern.target.groups)
        }
        if let fallback, let endpoint = upstreams[fallback] {
            return Route(upstream: endpoint, login: .asUser(user), upstreamName: fallback)
        }
        return nil
    }
}

/// Routes with a `RoutingMap` file, re-read on `reload()` (SIGHUP).
public final class MapRouter: Router {
    public let file: String
    private let map: NIOLockedValueBox<RoutingMap>

    public init(file: String) throws(ConfigurationErrors) {
        self.file = file
        map = NIOLockedValueBox(try RoutingMap.load(file: file))
    }

    public func route(_ request: RouteRequest, on eventLoop: any EventLoop) -> EventLoopFuture<RouteDecision> {
        let map = self.map.withLockedValue { $0 }
        guard let route = map.route(user: request.credentials.userName) else {
            return eventLoop.makeSucceededFuture(.unknownUser)
        }
        return eventLoop.makeSucceededFuture(.route(route))
    }

    public func reload() throws {
        let fresh = try RoutingMap.load(file: file)
        map.withLockedValue { $0 = fresh }
    }
}
