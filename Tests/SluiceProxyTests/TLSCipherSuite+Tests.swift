import NIOCore
import Testing
@testable import SluiceProxy

@Suite("TLSCipherSuite")
struct TLSCipherSuiteTests {
    /// A ServerHello record as RFC 8446 §4.1.3 lays it out (the start of RFC
    /// 8448's simple 1-RTT trace: no session id there, one here).
    func serverHello(suite: UInt16, sessionID: Int = 32, cutAfter: Int? = nil) -> ByteBuffer {
        var body: [UInt8] = [0x03, 0x03] + [UInt8](repeating: 0xA5, count: 32)
        body += [UInt8(sessionID)] + [UInt8](repeating: 0x5A, count: sessionID)
        body += [UInt8(suite >> 8), UInt8(suite & 0xFF), 0x00]  // cipher_suite, compression
        body += [0x00, 0x06, 0x00, 0x2B, 0x00, 0x02, 0x03, 0x04]  // extensions: supported_versions TLS 1.3
        let handshake: [UInt8] = [0x02, 0x00, UInt8(body.count >> 8), UInt8(body.count & 0xFF)] + body
        var record: [UInt8] = [0x16, 0x03, 0x03, UInt8(handshake.count >> 8), UInt8(handshake.count & 0xFF)] + handshake
        if let cutAfter { record = Array(record.prefix(cutAfter)) }
        return ByteBuffer(bytes: record)
    }

    @Test("the suite in a ServerHello, by OpenSSL's name, with and without a session id")
    func readsServerHello() {
        #expect(TLSCipherSuite(serverHello: serverHello(suite: 0x1302))?.name == "TLS_AES_256_GCM_SHA384")
        #expect(TLSCipherSuite(serverHello: serverHello(suite: 0xC02F, sessionID: 0))?.name == "ECDHE-RSA-AES128-GCM-SHA256")
        #expect(TLSCipherSuite(serverHello: serverHello(suite: 0x1301, sessionID: 0))?.name == "TLS_AES_128_GCM_SHA256")
        #expect(TLSCipherSuite(code: 0xFEFE).name == "0xFEFE")
    }

    @Test("anything but a whole ServerHello start reads as nothing")
    func refusesOthers() {
        let alert = ByteBuffer(bytes: [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28])
        #expect(TLSCipherSuite(serverHello: alert) == nil)
        // A ClientHello (type 1) has the same start.
        var clientHello = serverHello(suite: 0x1301)
        clientHello.setInteger(UInt8(1), at: 5)
        #expect(TLSCipherSuite(serverHello: clientHello) == nil)
        #expect(TLSCipherSuite(serverHello: serverHello(suite: 0x1301, cutAfter: 44 + 32)) == nil)
        var longSessionID = serverHello(suite: 0x1301)
        longSessionID.setInteger(UInt8(33), at: 43)
        #expect(TLSCipherSuite(serverHello: longSessionID) == nil)
        #expect(TLSCipherSuite(serverHello: ByteBuffer(string: "* OK plaintext\r\n")) == nil)
    }
}
