import NIOCore
import NIOSSL

/// TLS contexts, built once at start-up from the configuration.
public struct ProxyTLS: Sendable {
    /// For client connections (implicit TLS and STARTTLS listeners).
    public var server: NIOSSLContext?
    /// For the upstream connection (implicit TLS or STARTTLS upstreams).
    public var upstream: NIOSSLContext?
    /// SNI and name to verify; `nil` for an IP address (then the certificate
    /// must name the IP itself).
    public var upstreamServerName: String?

    public init(configuration: ProxyConfiguration) throws {
        if let certificate = configuration.certificate {
            let chain = try NIOSSLCertificate.fromPEMFile(certificate.certificateFile).map { NIOSSLCertificateSource.certificate($0) }
            let key = try NIOSSLPrivateKey(file: certificate.keyFile, format: .pem)
            server = try NIOSSLContext(configuration: .makeServerConfiguration(certificateChain: chain, privateKey: .privateKey(key)))
        } else if configuration.listeners.contains(where: { $0.security != .plain }) {
            throw ProxyConfigurationError("a TLS listener needs --cert and --key (certificate and key PEM files)")
        }
        let upstream = configuration.upstream
        if upstream.security != .plain {
            var client = TLSConfiguration.makeClientConfiguration()
            if let caFile = upstream.caFile {
                client.trustRoots = .file(caFile)
            }
            client.certificateVerification = upstream.verifyCertificate ? .fullVerification : .none
            self.upstream = try NIOSSLContext(configuration: client)
            let name = upstream.serverName ?? upstream.host
            upstreamServerName = ProxyTLS.isIPAddress(name) ? nil : name
        }
    }

    static func isIPAddress(_ host: String) -> Bool {
        (try? SocketAddress(ipAddress: host, port: 0)) != nil
    }
}

/// A configuration that cannot work, with the reason.
public struct ProxyConfigurationError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}
