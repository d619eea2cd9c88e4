import Foundation
import IMAPWire
import Testing

@Suite("FrameReport")
struct FrameReportTests {
    @Test("JSON lines carry offset, length, tag, name, literals and understood; lengths add up")
    func jsonLines() throws {
        let input = "a1 LOGIN {5}\r\nalice {6+}\r\nsecret\r\na2 IDLE\r\nDONE\r\na3 AUTHENTICATE PLAIN\r\nAGFsaWNl\r\na4 XYZZY\r\n"
        let frames = try decodeFrames(input, peer: .client)
        let objects = try frames.map { frame -> [String: Any] in
            let line = FrameReport(frame).json
            return try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        }
        #expect(objects.map { $0["offset"] as? Int } == [0, 34, 43, 49, 72, 82])
        #expect(objects.compactMap { $0["length"] as? Int }.reduce(0, +) == input.utf8.count)
        #expect(objects.map { $0["tag"] as? String } == ["a1", "a2", nil, "a3", nil, "a4"])
        #expect(objects[2]["tag"] is NSNull)
        #expect(objects.map { $0["name"] as? String } == ["LOGIN", "IDLE", "DONE", "AUTHENTICATE", nil, "XYZZY"])
        #expect(objects[0]["literals"] as? [Int] == [5, 6])
        #expect(objects.map { $0["understood"] as? Bool } == [true, true, true, true, true, false])
        #expect(objects.map { $0["kind"] as? String } == ["command", "command", "idle-done", "command", "sasl-response", "command"])
    }

    @Test("server frames: * and + tags, numbered names")
    func serverReport() throws {
        let frames = try decodeFrames("* 5 FETCH (BODY[] {2}\r\nhi)\r\n+ go\r\nx OK done\r\n", peer: .server)
        let reports = frames.map { FrameReport($0) }
        #expect(reports.map(\.tag) == ["*", "+", "x"])
        #expect(reports.map(\.name) == ["FETCH", nil, "OK"])
        #expect(reports[0].literals == [2])
        #expect(reports[0].json.contains("\"name\":\"FETCH\""))
    }

    @Test("tags with JSON special characters are escaped")
    func escaping() throws {
        let frame = try singleFrame("a\"\\b NOOP\r\n", peer: .client)
        let line = FrameReport(frame).json
        let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        #expect(object["tag"] as? String == "a\"\\b")
    }

    @Test("an incomplete frame is reported at the offset where it starts")
    func incomplete() {
        do {
            _ = try decodeFrames(bytes("a NOOP\r\nb APPEND x {10}\r\nabc"), peer: .client)
            Issue.record("no error")
        } catch let error as IMAPFramingError {
            #expect(error.kind == .incompleteFrame && error.offset == 8 && error.tag == "b")
        } catch {
            Issue.record("unexpected \(error)")
        }
    }
}
