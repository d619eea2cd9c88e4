import Foundation
import IMAPWire
import Logging
import NIOCore
import Testing
@testable import SluiceFilters

@Suite("Audit log")
struct AuditLogTests {
    private func temporaryPath() -> String {
        NSTemporaryDirectory() + "sluice-audit-\(UInt64.random(in: 0...UInt64.max)).log"
    }

    private func lines(_ path: String) throws -> [String] {
        try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").map(String.init)
    }

    @Test("lines are written whole and in order")
    func writesInOrder() throws {
        let path = temporaryPath()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let log = try AuditLog(path: path)
        for index in 0..<1000 { log.write("{\"n\":\(index)}") }
        log.flush()
        #expect(try lines(path) == (0..<1000).map { "{\"n\":\($0)}" })
    }

    @Test("reopen after the file was moved away (logrotate) writes to a new file at the path")
    func reopen() throws {
        let path = temporaryPath()
        let rotated = path + ".1"
        defer {
            try? FileManager.default.removeItem(atPath: path)
            try? FileManager.default.removeItem(atPath: rotated)
        }
        let log = try AuditLog(path: path)
        log.write("before")
        log.flush()
        try FileManager.default.moveItem(atPath: path, toPath: rotated)
        log.write("still old")
        try log.reopen()
        log.write("after")
        log.flush()
        #expect(try lines(rotated) == ["before", "still old"])
        #expect(try lines(path) == ["after"])
    }

    @Test("a path that cannot be opened is an error naming it; reopening keeps the old file")
    func unopenable() throws {
        #expect(throws: RuleError.self) { try AuditLog(path: "/nonexistent-dir/audit.log") }
        let path = temporaryPath()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let log = try AuditLog(path: path)
        try FileManager.default.removeItem(atPath: path)
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: false)
        defer { try? FileManager.default.removeItem(atPath: path) }
        #expect(throws: RuleError.self) { try log.reopen() }
        log.write("to the unlinked file, not lost to a crash")
        log.flush()
        #expect(log.droppedLines == 0)
    }
}

/// An audit rule records what the proxy refused, whichever rule refused it
/// and wherever the audit rule is listed (issue 12, first hour #4).
@Suite("Audit rule and refusals")
struct AuditRefusalTests {
    private func frame(_ text: String) throws -> Frame {
        var decoder = IMAPFrameDecoder(peer: .client)
        var buffer = ByteBuffer(string: text)
        return try #require(try decoder.next(&buffer))
    }

    @Test("deny listed before audit: the refusal is audited; an unparseable command too", arguments: [true, false])
    func auditSeesRefusals(auditFirst: Bool) throws {
        let path = NSTemporaryDirectory() + "sluice-audit-\(UInt64.random(in: 0...UInt64.max)).log"
        defer { try? FileManager.default.removeItem(atPath: path) }
        let log = try AuditLog(path: path)
        let deny = DenyCommandsFilter(names: ["DELETE"], mailboxes: [], reply: .no("NOPERM", "Not allowed here."))
        let audit = AuditFilter(names: ["DELETE"], log: log)
        let filters: [any Filter] = auditFirst ? [audit, deny] : [deny, audit]
        var logger = Logger(label: "test")
        logger[metadataKey: "imap.session.id"] = "42"
        let set = FilterSet(filters.map { FilterSet.Entry(filter: $0) })
        let engine = try #require(set.engine(user: "u", clientAddress: nil, upstreamCapabilities: [], logger: logger))
        guard case .respond(let refusal) = engine.process(command: try frame("a DELETE Secret\r\n"), streamedLiteral: nil),
              case .respond(let bad) = engine.process(command: try frame("b DELETE Secret x[\r\n"), streamedLiteral: nil)
        else {
            Issue.record("a DELETE was not refused")
            return
        }
        #expect(String(buffer: refusal).hasPrefix("a NO"))
        #expect(String(buffer: bad).hasPrefix("b BAD"))
        log.flush()
        let lines = try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n")
        #expect(lines.count == 2)
        #expect(lines.first?.contains(#""command":"DELETE""#) == true && lines.first?.contains(#""result":"NO""#) == true)
        #expect(lines.last?.contains(#""result":"BAD""#) == true)
        #expect(lines.allSatisfy { $0.contains(#""session":"42""#) && $0.contains(#""answered_by":"proxy""#) })
    }
}
