import Foundation
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
