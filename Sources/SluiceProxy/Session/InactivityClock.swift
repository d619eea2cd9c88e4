import NIOCore

/// When a session has been inactive too long: the deadline arithmetic of
/// the inactivity timeout, without the timer (the session keeps one
/// scheduled check and asks this clock what to do when it fires).
///
/// Marking activity is one clock read per read event; the check is re-armed
/// only when it fires (docs/design-notes.md says why not NIO's
/// IdleStateHandler, which re-arms per event).
struct InactivityClock {
    /// How long the client may go without bytes moving (pre-auth, then idle).
    private(set) var limit: TimeAmount
    private(set) var lastActivity: NIODeadline

    enum Check: Equatable {
        /// Inactive for the whole limit.
        case expired
        /// Not yet: check again at this deadline.
        case checkAgain(at: NIODeadline)
    }

    init(limit: TimeAmount, now: NIODeadline) {
        self.limit = limit
        self.lastActivity = now
    }

    /// A new limit from now (after login the idle timeout replaces the pre-auth one).
    mutating func restart(limit: TimeAmount, now: NIODeadline) {
        self.limit = limit
        lastActivity = now
    }

    mutating func noteActivity(now: NIODeadline) {
        lastActivity = now
    }

    /// The first deadline after a restart.
    var deadline: NIODeadline { lastActivity + limit }

    func check(now: NIODeadline) -> Check {
        now < deadline ? .checkAgain(at: deadline) : .expired
    }
}
