import NIOSSL

/// An error as words an operator can act on: TLS failures say what went
/// wrong and which setting changes it; anything else is its description.
enum ErrorText {
    static func describe(_ error: any Error) -> String {
        let text = "\(error)"
        if let ssl = error as? NIOSSLError, case .uncleanShutdown = ssl {
            return "connection closed without a TLS close_notify"
        }
        let explanations: [(String, String)] = [
            ("CERTIFICATE_VERIFY_FAILED", "the peer's certificate is not trusted (its CA is not in upstream.ca or the "
                + "system's store, or it has expired)"),
            ("hostnameValidationFailed", "the peer's certificate does not name this server (upstream.server_name)"),
            ("WRONG_VERSION_NUMBER", "the peer does not speak TLS here (plaintext on a TLS port, or the reverse)"),
            ("UNSUPPORTED_PROTOCOL", "no TLS version in common (tls.min_version / upstream.tls_min_version)"),
            ("NO_SHARED_CIPHER", "no TLS cipher in common"),
            ("HTTP_REQUEST", "the peer sent HTTP, not TLS"),
            ("EOF during handshake", "the peer closed the connection during the TLS handshake (a TCP health check does this)"),
        ]
        for (marker, explanation) in explanations where text.contains(marker) {
            return "\(explanation) [\(text)]"
        }
        return text
    }
}
