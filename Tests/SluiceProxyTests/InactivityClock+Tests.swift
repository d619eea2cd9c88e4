import NIOCore
import Testing
@testable import SluiceProxy

/// The inactivity timeout's arithmetic, on a clock the test sets.
@Suite struct InactivityClockTests {
    static func at(_ seconds: Int64) -> NIODeadline { .uptimeNanoseconds(UInt64(seconds) * 1_000_000_000 + 1) }

    @Test func expiresAfterTheLimitWithoutActivity() {
        let clock = InactivityClock(limit: .seconds(60), now: Self.at(100))
        #expect(clock.check(now: Self.at(130)) == .checkAgain(at: Self.at(160)))
        #expect(clock.check(now: Self.at(160)) == .expired)
        #expect(clock.check(now: Self.at(1000)) == .expired)
    }

    @Test func activityMovesTheDeadline() {
        var clock = InactivityClock(limit: .seconds(60), now: Self.at(100))
        clock.noteActivity(now: Self.at(150))
        // The check scheduled for 160 fires: not expired, re-armed at 210.
        #expect(clock.check(now: Self.at(160)) == .checkAgain(at: Self.at(210)))
        #expect(clock.check(now: Self.at(210)) == .expired)
    }

    @Test func restartReplacesTheLimit() {
        var clock = InactivityClock(limit: .seconds(60), now: Self.at(100))
        clock.restart(limit: .seconds(1800), now: Self.at(150))  // login: pre-auth → idle timeout
        #expect(clock.limit == .seconds(1800))
        #expect(clock.check(now: Self.at(300)) == .checkAgain(at: Self.at(1950)))
        #expect(clock.check(now: Self.at(1950)) == .expired)
    }
}
