import IMAPWire
import Logging
import SluiceFilters
import NIOCore
import NIOPosix
import NIOSSL

/// The session's deadlines — the login's, the upstream login's, and
/// inactivity — kept by one scheduled task.
///
/// The task fires at the earliest deadline (or earlier), acts on those that
/// passed, and is scheduled again for the next. A deadline set later than
/// the task's time does not move it; one set earlier does. The first check
/// comes no later than the shortest of the timeouts, so that an upstream
/// login's deadline, which starts at routing, does not move the task while
/// that first check is pending: a short session schedules one task and
/// cancels it when it ends, where a task per deadline was four of each
/// (docs/performance.md).
extension ProxySession {
    /// At accept: the pre-auth inactivity limit and the login deadline start.
    func startSessionTimer() {
        let now = NIODeadline.now()
        inactivity.restart(limit: configuration.preAuthTimeout, now: now)
        loginDeadline = now + configuration.loginTimeout
        let shortest = min(configuration.preAuthTimeout, configuration.loginTimeout, configuration.upstreamLoginTimeout)
        armSessionTimer(notAfter: now + shortest)
    }

    /// The timer fires by `deadline` (moved earlier if need be).
    func armSessionTimer(notAfter deadline: NIODeadline) {
        if let timer = sessionTimer {
            guard deadline < timer.due else { return }
            timer.task.cancel()
        }
        let bound = NIOLoopBound(self, eventLoop: clientChannel.eventLoop)
        let task = clientChannel.eventLoop.scheduleTask(deadline: deadline) { bound.value.sessionTimerFired() }
        sessionTimer = (task, deadline)
    }

    private func sessionTimerFired() {
        sessionTimer = nil
        guard phase.kind != .closed else { return }
        let now = NIODeadline.now()
        // Inactivity first: when it and the login deadline pass together, the
        // client hears of its inactivity (as when each had its own task).
        if inactivity.check(now: now) == .expired, inactivityEnds(now: now) {
            return  // the connection is closing
        }
        if let deadline = loginDeadline, deadline <= now {
            loginDeadlinePassed()
        }
        if let deadline = upstreamLoginDeadline, deadline <= now, phase.kind != .closed {
            upstreamLoginDeadline = nil
            loginFailed(response: ProxySession.unavailable, reason: "upstream login timed out")
        }
        guard phase.kind != .closed else { return }
        var next = inactivity.deadline
        if let deadline = loginDeadline { next = min(next, deadline) }
        if let deadline = upstreamLoginDeadline { next = min(next, deadline) }
        armSessionTimer(notAfter: next)
    }

    /// The login did not complete within `timeouts.login`.
    private func loginDeadlinePassed() {
        loginDeadline = nil
        let loggedIn = phase.kind == .relay && (configuration.mode == .proxy || user != nil)
        guard !loggedIn else { return }
        record.endReason = .loginTimeout
        logger.notice("login time exceeded")
        // Transparent mode relays the upstream's lines before login: one may be half sent.
        if phase.kind == .relay { endUpstreamFrameForBye() }
        phase = .closed
        closingUpstream = true
        upstreamChannel?.close(promise: nil)
        writeToClient("* BYE Login time exceeded.\r\n", flush: false)
        closeClientWhenWritten()
    }

    func loginCompleted() {
        loginDeadline = nil
    }

    /// After login: the idle limit replaces the pre-auth one, from now.
    func startIdleTimeout() {
        inactivity.restart(limit: configuration.idleTimeout, now: .now())
        armSessionTimer(notAfter: inactivity.deadline)
    }

    func noteActivity() {
        inactivity.noteActivity(now: .now())
    }

    /// The inactivity limit passed: whether the session ends for it (a
    /// client in IDLE is not inactive; its clock starts again).
    private func inactivityEnds(now: NIODeadline) -> Bool {
        switch phase.kind {
        case .connecting, .preAuth, .loggingIn, .loginFailed:
            record.endReason = .preAuthTimeout
            writeToClient("* BYE Disconnected for inactivity.\r\n", flush: true)
            clientChannel.close(promise: nil)
            return true
        case .relay:
            // RFC 2177: a client in IDLE is not idle; it re-issues IDLE on its own schedule.
            if clientDecoder.framer.clientExpectation == .idleDone {
                inactivity.noteActivity(now: now)
                return false
            }
            record.endReason = .idleTimeout
            endUpstreamFrameForBye()
            queueLocalResponse(ByteBuffer(string: "* BYE Disconnected for inactivity.\r\n"))
            closeWhenWritten()
            return true
        case .closed:
            return true
        }
    }
}
