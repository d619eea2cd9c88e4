import Foundation
import SluiceFilters
import Testing

@Suite("UTC timestamps for log and audit lines")
struct UTCTimestampTests {
    @Test("ISO 8601 in UTC with milliseconds, and the current time")
    func formatAndValue() throws {
        let before = Date()
        let text = UTCTimestamp.now()
        let after = Date()
        #expect(text.range(of: #"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$"#, options: .regularExpression) != nil, "\(text)")
        let parser = ISO8601DateFormatter()
        parser.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        let parsed = try #require(parser.date(from: text), "\(text)")
        // Milliseconds are truncated, so the stamp may be up to 1 ms before `before`.
        #expect(parsed.timeIntervalSince(before) > -0.002 && parsed.timeIntervalSince(after) < 0.001, "\(text)")
    }
}
