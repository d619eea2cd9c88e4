import NIOCore

/// The cipher suite a TLS handshake settled on, named as OpenSSL and nginx
/// name it (`TLS_AES_256_GCM_SHA384`, `ECDHE-RSA-AES128-GCM-SHA256`): the
/// auth service's `Auth-SSL-Cipher`.
///
/// swift-nio-ssl does not expose the negotiated cipher, so it is read from
/// the proxy's own ServerHello (RFC 8446 §4.1.3, RFC 5246 §7.4.1.3), the one
/// handshake message every TLS version sends in clear, by `ServerHelloReader`.
struct TLSCipherSuite: Hashable, Sendable {
    /// The IANA code point.
    let code: UInt16

    /// OpenSSL's name (what nginx sends); the IANA code in hex for a suite
    /// outside the table, which BoringSSL's server does not choose today.
    var name: String {
        TLSCipherSuite.names[code] ?? "0x" + String(code, radix: 16, uppercase: true)
    }

    init(code: UInt16) {
        self.code = code
    }

    /// The suite in a ServerHello at the start of `record`, the first TLS
    /// record a server writes; `nil` for anything else (an alert, a record
    /// cut short).
    init?(serverHello record: ByteBuffer) {
        var bytes = record
        // TLSPlaintext: type 22 (handshake), legacy version, length.
        guard bytes.readInteger(as: UInt8.self) == 22, bytes.readInteger(as: UInt16.self) != nil,
              bytes.readInteger(as: UInt16.self) != nil,
              // Handshake: type 2 (server_hello), a 24-bit length.
              bytes.readInteger(as: UInt8.self) == 2, bytes.readSlice(length: 3) != nil,
              // legacy_version, random, legacy_session_id_echo<0..32>.
              bytes.readSlice(length: 2 + 32) != nil,
              let sessionIDLength = bytes.readInteger(as: UInt8.self), sessionIDLength <= 32,
              bytes.readSlice(length: Int(sessionIDLength)) != nil,
              let code = bytes.readInteger(as: UInt16.self) else { return nil }
        self.code = code
    }

    /// The suites BoringSSL offers a server (TLS 1.3 and 1.2), by OpenSSL's names.
    static let names: [UInt16: String] = [
        0x1301: "TLS_AES_128_GCM_SHA256",
        0x1302: "TLS_AES_256_GCM_SHA384",
        0x1303: "TLS_CHACHA20_POLY1305_SHA256",
        0xC02B: "ECDHE-ECDSA-AES128-GCM-SHA256",
        0xC02C: "ECDHE-ECDSA-AES256-GCM-SHA384",
        0xC02F: "ECDHE-RSA-AES128-GCM-SHA256",
        0xC030: "ECDHE-RSA-AES256-GCM-SHA384",
        0xCCA8: "ECDHE-RSA-CHACHA20-POLY1305",
        0xCCA9: "ECDHE-ECDSA-CHACHA20-POLY1305",
        0xC009: "ECDHE-ECDSA-AES128-SHA",
        0xC00A: "ECDHE-ECDSA-AES256-SHA",
        0xC013: "ECDHE-RSA-AES128-SHA",
        0xC014: "ECDHE-RSA-AES256-SHA",
        0x009C: "AES128-GCM-SHA256",
        0x009D: "AES256-GCM-SHA384",
        0x002F: "AES128-SHA",
        0x0035: "AES256-SHA",
        0x000A: "DES-CBC3-SHA",
    ]
}
