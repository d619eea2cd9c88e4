import NIOConcurrencyHelpers
import NIOCore
import NIOSSL

/// The listeners' certificates: chosen per connection by SNI, replaceable
/// at run time (SIGHUP) without touching sessions already established.
///
/// One server `NIOSSLContext` serves every listener; its context callback
/// picks the certificate and key for each handshake from the current set, so
/// a reload only swaps that set.
public final class CertificateStore: Sendable {
    struct Entry: Sendable {
        var names: [String]
        var chain: [NIOSSLCertificateSource]
        var key: NIOSSLPrivateKeySource

        init(_ certificate: ProxyConfiguration.Certificate) throws {
            let chain = try NIOSSLCertificate.fromPEMFile(certificate.certificateFile)
            guard !chain.isEmpty else { throw ProxyConfigurationError("\(certificate.certificateFile) holds no certificate") }
            self.chain = chain.map { .certificate($0) }
            key = .privateKey(try NIOSSLPrivateKey(file: certificate.keyFile, format: .pem))
            names = certificate.serverNames.map { $0.lowercased() }
        }

        func serves(_ name: String) -> Bool {
            names.contains { CertificateStore.matches(pattern: $0, name: name) }
        }
    }

    /// Whether a certificate name (lowercase) serves an SNI name (lowercase):
    /// equal, or `*.example.org` for exactly one more label.
    static func matches(pattern: String, name: String) -> Bool {
        if pattern.hasPrefix("*.") {
            let suffix = pattern.dropFirst(1)
            guard name.hasSuffix(suffix) else { return false }
            let label = name.dropLast(suffix.count)
            return !label.isEmpty && !label.contains(".")
        }
        return pattern == name
    }

    public let certificates: [ProxyConfiguration.Certificate]
    private let entries: NIOLockedValueBox<[Entry]>
    /// The context for every TLS listener and STARTTLS.
    public let context: NIOSSLContext

    public init(certificates: [ProxyConfiguration.Certificate],
                minimumVersion: ProxyConfiguration.TLSVersion = .tls12) throws {
        guard !certificates.isEmpty else { throw ProxyConfigurationError("no certificate configured") }
        self.certificates = certificates
        let loaded = try certificates.map(Entry.init)
        let entries = NIOLockedValueBox(loaded)
        self.entries = entries
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: loaded[0].chain, privateKey: loaded[0].key)
        configuration.minimumTLSVersion = minimumVersion.nio
        configuration.sslContextCallback = { values, promise in
            let current = entries.withLockedValue { $0 }
            let name = values.serverHostname?.lowercased()
            let entry = name.flatMap { name in current.first { $0.serves(name) } } ?? current[0]
            var override = NIOSSLContextConfigurationOverride()
            override.certificateChain = entry.chain
            override.privateKey = entry.key
            promise.succeed(override)
        }
        context = try NIOSSLContext(configuration: configuration)
    }

    /// Re-reads every certificate and key; on any failure nothing changes.
    public func reload() throws {
        let fresh = try certificates.map(Entry.init)
        entries.withLockedValue { $0 = fresh }
    }
}

/// TLS for client connections, built once at start-up.
public struct ProxyTLS: Sendable {
    public var store: CertificateStore?
    /// For client connections (implicit TLS and STARTTLS listeners).
    public var server: NIOSSLContext? { store?.context }

    public init(configuration: ProxyConfiguration) throws {
        if !configuration.certificates.isEmpty {
            store = try CertificateStore(certificates: configuration.certificates,
                                         minimumVersion: configuration.minimumTLSVersion)
        } else if configuration.listeners.contains(where: { $0.security != .plain }) {
            throw ProxyConfigurationError("a TLS listener needs a certificate (tls.certificates, or --cert and --key)")
        }
    }
}

/// A configuration that cannot work, with the reason.
public struct ProxyConfigurationError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

extension ProxyConfiguration.Certificate {
    /// Loads the certificate chain and key once, as a listener would; throws what is wrong with them.
    public func validate() throws {
        _ = try CertificateStore.Entry(self)
    }
}
