@testable import IMAPWire
import NIOCore
import Testing

@Suite("IMAPFramer scanning")
struct IMAPFramerScanTests {
    @Test("a line arriving a byte at a time is searched once per byte, not rescanned")
    func noRescan() throws {
        var framer = IMAPFramer(peer: .client)
        var buffer = ByteBuffer()
        let line = "a1 LOGIN " + String(repeating: "x", count: 5000) + "\r\n"
        var events = 0
        for byte in line.utf8 {
            buffer.writeInteger(byte)
            while try framer.next(&buffer) != nil { events += 1 }
        }
        #expect(events == 1)
        #expect(framer.bytesSearched == line.utf8.count)
        #expect(framer.scannedBytes == 0)
    }
}
