import IMAPWire
import NIOCore
import NIOSSL
import SluiceAuthHTTP
import SluiceFilters
import SluiceLua
import SluiceProxy

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Reads the YAML configuration file (keys documented in docs/configuration.md).
///
/// Validation happens here, where each value's line is known: types, ranges,
/// addresses, readable files, certificates that parse, a routing map that
/// loads. All problems are collected and thrown together.
extension ProxyConfiguration {
    public static let fileKeys: Set<String> = [
        "mode", "greeting", "auth_mechanisms", "listeners", "tls", "upstream", "routing", "timeouts", "limits", "log", "rules", "threads",
        "admin",
    ]

    /// Reads and validates the file at `path`.
    public static func load(file path: String) throws(ConfigurationErrors) -> ProxyConfiguration {
        guard let text = readTextFile(path) else {
            throw ConfigurationErrors([ConfigurationIssue(file: path, line: nil, keyPath: "", message: "cannot read the file")])
        }
        return try parse(yaml: text, file: path)
    }

    /// Parses configuration text; `file` names it in issues and anchors
    /// relative paths in it.
    public static func parse(yaml text: String, file: String? = nil) throws(ConfigurationErrors) -> ProxyConfiguration {
        let issues = IssueCollector(file: file)
        var configuration = ProxyConfiguration()
        if let root = YAMLValue.parse(text, issues: issues), let fields = root.fields(fileKeys) {
            let base = file.map(directory(of:))
            var reader = FileReader(issues: issues, baseDirectory: base)
            reader.read(fields, into: &configuration)
        }
        if !issues.issues.isEmpty { throw ConfigurationErrors(issues.issues) }
        return configuration
    }
}

/// Reads one file's sections into a configuration.
private struct FileReader {
    let issues: IssueCollector
    let baseDirectory: String?
    /// Read with `limits:`, used by `lua:` rules (not a setting of the proxy).
    var luaLimits = LuaLimits.default

    mutating func read(_ fields: [String: YAMLValue], into configuration: inout ProxyConfiguration) {
        if let value = fields["mode"], let mode = value.oneOf(ProxyConfiguration.Mode.self) { configuration.mode = mode }
        if let value = fields["auth_mechanisms"] {
            var names: [String] = []
            for item in value.listOrSingle() {
                guard let name = item.nonEmptyString()?.uppercased() else { continue }
                guard ProxyConfiguration.supportedAuthMechanisms.contains(name) else {
                    item.report("unknown mechanism \(name) (one of \(ProxyConfiguration.supportedAuthMechanisms.joined(separator: ", ")))")
                    continue
                }
                if !names.contains(name) { names.append(name) }
            }
            if names.isEmpty {
                value.report("auth_mechanisms needs at least one mechanism")
            } else {
                configuration.authMechanisms = names
            }
        }
        if let value = fields["greeting"], let greeting = value.string() {
            if greeting.contains(where: { $0 == "\r" || $0 == "\n" }) || greeting.utf8.count > 200 {
                value.report("must be one line of at most 200 bytes")
            } else {
                configuration.greeting = greeting
            }
        }
        if let value = fields["listeners"], let list = value.list() {
            if list.isEmpty { value.report("needs at least one listener") }
            configuration.listeners = list.compactMap(listener)
        }
        if let value = fields["tls"], let tls = value.fields(["certificates", "min_version"]) {
            if let certificates = tls["certificates"]?.list() {
                configuration.certificates = certificates.compactMap(certificate)
                if certificates.isEmpty { tls["certificates"]?.report("needs at least one certificate") }
            }
            if let version = tls["min_version"]?.oneOf(ProxyConfiguration.TLSVersion.self) {
                configuration.minimumTLSVersion = version
            }
        }
        if let value = fields["upstream"], let upstream = upstream(value) {
            configuration.routing = .static(upstream)
        }
        if let value = fields["routing"], let routing = value.fields(["map", "http"]) {
            if routing["map"] != nil, routing["http"] != nil {
                value.report("give either routing.map or routing.http, not both")
            } else if fields["upstream"] != nil, let chosen = routing["map"] ?? routing["http"] {
                chosen.report("give either upstream (every user to one server) or routing, not both")
            } else if let httpValue = routing["http"] {
                if let router = httpRouter(httpValue) { configuration.routing = .router(router) }
            } else if let mapValue = routing["map"], let path = readableFile(mapValue) {
                // Loaded now so its problems are reported with the file's own lines.
                do {
                    configuration.routing = .router(try MapRouter(file: path))
                } catch {
                    for issue in error.issues { issues.report(issue.description, at: mapValue.path, line: mapValue.line) }
                }
            }
        }
        if let value = fields["timeouts"], let timeouts = value.fields([
            "pre_auth", "login", "upstream_login", "idle", "connect", "login_failure_delay", "shutdown_grace",
        ]) {
            if let amount = timeouts["pre_auth"]?.positiveDuration() { configuration.preAuthTimeout = amount }
            if let amount = timeouts["login"]?.positiveDuration() { configuration.loginTimeout = amount }
            if let amount = timeouts["upstream_login"]?.positiveDuration() { configuration.upstreamLoginTimeout = amount }
            if let amount = timeouts["idle"]?.duration() {
                if amount < .seconds(1) { timeouts["idle"]?.report("must be at least 1s (RFC 3501 asks for 30m)") } else { configuration.idleTimeout = amount }
            }
            if let amount = timeouts["connect"]?.duration() { configuration.connectTimeout = amount }
            if let amount = timeouts["login_failure_delay"]?.duration() { configuration.loginFailureDelay = amount }
            if let amount = timeouts["shutdown_grace"]?.duration() { configuration.shutdownGracePeriod = amount }
        }
        if let value = fields["limits"], let limits = value.fields([
            "max_bad_commands", "write_buffer_high_water_mark", "write_buffer_low_water_mark",
            "max_line_length", "max_literal_size", "client_max_line_length", "server_max_line_length",
            "client_max_literal_size", "server_max_literal_size", "max_commands_in_flight", "max_connections",
            "max_connections_per_ip", "max_login_penalty", "lua_memory", "lua_instructions",
        ]) {
            if let count = limits["max_bad_commands"]?.int(in: 1...1000) { configuration.maxBadCommands = count }
            if let size = limits["lua_memory"]?.byteSize(in: (1 << 20)...(1 << 30)) { luaLimits.memory = size }
            if let count = limits["lua_instructions"]?.int(in: 1000...1_000_000_000) { luaLimits.instructions = count }
            if let count = limits["max_commands_in_flight"]?.int(in: 1...100_000) { configuration.maxCommandsInFlight = count }
            if let count = limits["max_connections"]?.int(in: 0...10_000_000) { configuration.maxConnections = count == 0 ? nil : count }
            if let count = limits["max_connections_per_ip"]?.int(in: 0...10_000_000) {
                configuration.maxConnectionsPerIP = count == 0 ? nil : count
            }
            if let amount = limits["max_login_penalty"]?.duration() { configuration.maxLoginPenalty = amount }
            if let size = limits["write_buffer_high_water_mark"]?.byteSize(in: 4096...(64 << 20)) {
                configuration.writeBufferHighWaterMark = size
            }
            if let size = limits["write_buffer_low_water_mark"]?.byteSize(in: 1024...(64 << 20)) {
                configuration.writeBufferLowWaterMark = size
            }
            // One key per direction: a server limit cuts responses, which the
            // client sees as a broken session (a 1 MiB literal limit stopped
            // mbsync at the first larger message).
            for key in ["max_line_length", "max_literal_size"] {
                limits[key]?.report("set per direction: client_\(key) (commands) and server_\(key) (responses)")
            }
            if let size = limits["client_max_line_length"]?.byteSize(in: 1024...(16 << 20)) {
                configuration.clientLimits.maxLineLength = size
                configuration.clientLimits.maxFrameTextLength = max(configuration.clientLimits.maxFrameTextLength, size)
            }
            if let size = limits["server_max_line_length"]?.byteSize(in: 1024...(64 << 20)) {
                configuration.serverLimits.maxLineLength = size
                configuration.serverLimits.maxFrameTextLength = max(configuration.serverLimits.maxFrameTextLength, size)
            }
            // Up to 4GiB as written; the protocol's largest literal is one byte less.
            let literalRange = 1024...(Int(IMAPLimits.absoluteMaxLiteralSize) + 1)
            if let size = limits["client_max_literal_size"]?.byteSize(in: literalRange) {
                configuration.clientLimits.maxLiteralSize = min(UInt64(size), IMAPLimits.absoluteMaxLiteralSize)
            }
            if let size = limits["server_max_literal_size"]?.byteSize(in: literalRange) {
                configuration.serverLimits.maxLiteralSize = min(UInt64(size), IMAPLimits.absoluteMaxLiteralSize)
            }
        }
        if let value = fields["rules"] {
            RulesReader.read(value, reading: RuleReading(baseDirectory: baseDirectory, luaLimits: luaLimits), into: &configuration)
        }
        if let value = fields["threads"], let count = value.int(in: ProxyConfiguration.threadRange) { configuration.threads = count }
        if let value = fields["log"], let log = value.fields(["format", "level"]) {
            if let format = log["format"]?.oneOf(ProxyConfiguration.LogFormat.self) { configuration.logFormat = format }
            if let level = log["level"]?.oneOf(ProxyConfiguration.LogLevel.self) { configuration.logLevel = level }
        }
        if let value = fields["admin"], let admin = value.fields(["listen", "allow_remote"]) {
            guard let listenValue = admin["listen"] else {
                value.report("admin needs listen: HOST:PORT")
                return
            }
            let allowRemote = admin["allow_remote"]?.bool() ?? false
            if let address = hostPort(listenValue) {
                if !allowRemote && !address.isLoopback {
                    listenValue.report("the admin listener serves metrics without authentication: use a loopback address, "
                        + "or set allow_remote: true")
                } else if configuration.listeners.contains(where: { $0.host == address.host && $0.port == address.port }) {
                    listenValue.report("is also an IMAP listener's address; the admin listener needs a port of its own")
                } else {
                    configuration.admin = address
                }
            }
        }
    }

    /// `routing.http`: the nginx-compatible auth service (docs/configuration.md).
    private func httpRouter(_ value: YAMLValue) -> HTTPAuthRouter? {
        guard let fields = value.fields(["url", "timeout", "headers", "upstream"]) else { return nil }
        guard let urlValue = fields["url"], let url = urlValue.nonEmptyString() else {
            value.report("routing.http needs url: http://HOST:PORT/PATH")
            return nil
        }
        guard url.hasPrefix("http://") || url.hasPrefix("https://") else {
            urlValue.report("expected an http:// or https:// URL, got \(url)")
            return nil
        }
        var settings = HTTPAuthRouter.Settings(url: url)
        if let timeout = fields["timeout"] {
            guard let amount = timeout.positiveDuration() else { return nil }
            settings.timeout = amount
        }
        if let headers = fields["headers"], let entries = headers.mapping() {
            for (name, entry) in entries {
                guard let text = entry.string() else { return nil }
                guard name.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F && $0 != UInt8(ascii: ":") }),
                      !text.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) else {
                    entry.report("a header name is a token and its value one line")
                    return nil
                }
                settings.headers.append(.init(name: name, value: text))
            }
        }
        if let template = fields["upstream"] {
            // The upstream keys without an address (the service gives it).
            guard let upstream = readUpstream(template, issues: issues, baseDirectory: baseDirectory,
                                              addressRequired: false) else { return nil }
            settings.upstream = upstream
        }
        do {
            return try HTTPAuthRouter(settings: settings)
        } catch {
            urlValue.report("not a usable URL: \(error)")
            return nil
        }
    }

    private func listener(_ value: YAMLValue) -> ProxyConfiguration.Listener? {
        guard let fields = value.fields(["address", "tls", "proxy_protocol", "proxy_protocol_trusted", "reuse_port"])
        else { return nil }
        guard let addressValue = fields["address"] else {
            value.report("a listener needs address: HOST:PORT")
            return nil
        }
        guard let address = hostPort(addressValue) else { return nil }
        let security = fields["tls"].map { $0.oneOf(ProxyConfiguration.ListenerSecurity.self) } ?? .plain
        guard let security else { return nil }
        var listener = ProxyConfiguration.Listener(host: address.host, port: address.port, security: security)
        if let flag = fields["proxy_protocol"] {
            guard let on = flag.bool() else { return nil }
            listener.proxyProtocol = on
        }
        if let flag = fields["reuse_port"] {
            guard let on = flag.bool() else { return nil }
            listener.reusePort = on
        }
        if let trusted = fields["proxy_protocol_trusted"] {
            for item in trusted.listOrSingle() {
                guard let text = item.nonEmptyString() else { return nil }
                guard let network = IPNetwork(text) else {
                    item.report("not an address or network (ADDRESS/BITS): \(text)")
                    return nil
                }
                listener.proxyProtocolTrusted.append(network)
            }
        }
        if listener.proxyProtocol, listener.proxyProtocolTrusted.isEmpty {
            (fields["proxy_protocol"] ?? value).report(
                "proxy_protocol needs proxy_protocol_trusted: [ADDRESS/BITS, …], the balancers allowed to send the header")
            return nil
        }
        if !listener.proxyProtocol, let trusted = fields["proxy_protocol_trusted"] {
            trusted.report("proxy_protocol_trusted applies only with proxy_protocol: true")
        }
        return listener
    }

    private func certificate(_ value: YAMLValue) -> ProxyConfiguration.Certificate? {
        guard let fields = value.fields(["cert", "key", "names"]) else { return nil }
        guard let certValue = fields["cert"], let keyValue = fields["key"] else {
            value.report("a certificate needs cert: FILE and key: FILE (PEM)")
            return nil
        }
        guard let cert = readableFile(certValue), let key = readableFile(keyValue) else { return nil }
        var names: [String] = []
        if let namesValue = fields["names"] {
            names = namesValue.listOrSingle().compactMap { $0.nonEmptyString()?.lowercased() }
        }
        do {
            try ProxyConfiguration.Certificate(certificateFile: cert, keyFile: key, serverNames: names).validate()
        } catch {
            value.report("cannot load the certificate and key: \(error)")
            return nil
        }
        return ProxyConfiguration.Certificate(certificateFile: cert, keyFile: key, serverNames: names)
    }

    func upstream(_ value: YAMLValue) -> ProxyConfiguration.Upstream? {
        readUpstream(value, issues: issues, baseDirectory: baseDirectory)
    }

    private func hostPort(_ value: YAMLValue) -> HostPort? {
        guard let text = value.string() else { return nil }
        do {
            return try HostPort(text)
        } catch {
            value.report(error.message)
            return nil
        }
    }

    private func readableFile(_ value: YAMLValue) -> String? {
        checkedFile(value, baseDirectory: baseDirectory)
    }
}

/// `address`, `tls`, `ca`, `verify`, `server_name`, `forward_client_address`:
/// shared by the main file and the routing map.
func readUpstream(_ value: YAMLValue, issues: IssueCollector, baseDirectory: String?,
                  addressRequired: Bool = true) -> ProxyConfiguration.Upstream? {
    guard let fields = value.fields([
        "address", "tls", "ca", "verify", "server_name", "forward_client_address", "tls_min_version", "proxy_protocol",
    ]) else { return nil }
    var upstream = ProxyConfiguration.Upstream(host: "", port: 0)
    if addressRequired {
        guard let addressValue = fields["address"] else {
            value.report("an upstream needs address: HOST:PORT")
            return nil
        }
        guard let text = addressValue.string() else { return nil }
        let address: HostPort
        do {
            address = try HostPort(text)
        } catch {
            addressValue.report(error.message)
            return nil
        }
        upstream = ProxyConfiguration.Upstream(host: address.host, port: address.port)
    } else if let addressValue = fields["address"] {
        addressValue.report("the auth service gives the address (Auth-Server, Auth-Port)")
        return nil
    }
    if let tls = fields["tls"] {
        guard let security = tls.oneOf(ProxyConfiguration.UpstreamSecurity.self) else { return nil }
        upstream.security = security
    }
    if let ca = fields["ca"] {
        guard let path = checkedFile(ca, baseDirectory: baseDirectory) else { return nil }
        upstream.caFile = path
    }
    if let verify = fields["verify"] {
        guard let flag = verify.bool() else { return nil }
        upstream.verifyCertificate = flag
    }
    if let name = fields["server_name"] {
        guard let text = name.nonEmptyString() else { return nil }
        upstream.serverName = text
    }
    if let forward = fields["forward_client_address"] {
        guard let flag = forward.bool() else { return nil }
        upstream.forwardClientAddress = flag
    }
    if let version = fields["tls_min_version"] {
        guard let parsed = version.oneOf(ProxyConfiguration.TLSVersion.self) else { return nil }
        upstream.minimumTLSVersion = parsed
    }
    if let version = fields["proxy_protocol"] {
        guard let parsed = version.oneOf(ProxyProtocol.Version.self) else { return nil }
        upstream.proxyProtocol = parsed
    }
    if upstream.security == .plain, fields["ca"] != nil || fields["server_name"] != nil {
        value.report("ca and server_name only apply with tls: starttls or implicit")
    }
    return upstream
}

/// A file path from the configuration, relative to the configuration's
/// directory, that must be readable.
func checkedFile(_ value: YAMLValue, baseDirectory: String?) -> String? {
    guard let text = value.nonEmptyString() else { return nil }
    let path = resolvePath(text, relativeTo: baseDirectory)
    guard access(path, R_OK) == 0 else {
        value.report("cannot read \(path)")
        return nil
    }
    return path
}

func directory(of path: String) -> String {
    guard let slash = path.lastIndex(of: "/") else { return "." }
    return slash == path.startIndex ? "/" : String(path[..<slash])
}

/// The whole file as UTF-8 text, or `nil` if it cannot be read.
func readTextFile(_ path: String) -> String? {
    guard let file = fopen(path, "rb") else { return nil }
    defer { fclose(file) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 64 * 1024)
    while true {
        let count = fread(&chunk, 1, chunk.count, file)
        if count > 0 { bytes.append(contentsOf: chunk[0..<count]) }
        if count < chunk.count { break }
        if bytes.count > 64 << 20 { return nil }  // no configuration is this large
    }
    if ferror(file) != 0 { return nil }
    return String(decoding: bytes, as: UTF8.self)
}

/// A path from a configuration file: absolute as written, otherwise relative
/// to the file's directory (or the working directory without one).
func resolvePath(_ path: String, relativeTo baseDirectory: String?) -> String {
    guard !path.hasPrefix("/"), let baseDirectory else { return path }
    return "\(baseDirectory)/\(path)"
}
