import IMAPWire
import Logging
import SluiceFilters
import NIOCore
import NIOPosix
import NIOSSL

/// The session's timers: the login deadline and the inactivity check.
extension ProxySession {
    /// The login did not complete within `timeouts.login`.
    func loginDeadlinePassed() {
        loginDeadline = nil
        let loggedIn = phase.kind == .relay && (configuration.mode == .proxy || user != nil)
        guard !loggedIn, phase.kind != .closed else { return }
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
        loginDeadline?.cancel()
        loginDeadline = nil
    }

    /// One scheduled check per session (`InactivityClock`).
    func startInactivityTimer(_ limit: TimeAmount) {
        inactivity.restart(limit: limit, now: .now())
        scheduleInactivityCheck(at: inactivity.deadline)
    }

    func scheduleInactivityCheck(at deadline: NIODeadline) {
        inactivityTimer?.cancel()
        let bound = NIOLoopBound(self, eventLoop: clientChannel.eventLoop)
        inactivityTimer = clientChannel.eventLoop.scheduleTask(deadline: deadline) {
            bound.value.inactivityCheck()
        }
    }

    func noteActivity() {
        inactivity.noteActivity(now: .now())
    }

    func inactivityCheck() {
        inactivityTimer = nil
        guard phase.kind != .closed else { return }
        if case .checkAgain(let due) = inactivity.check(now: .now()) {
            scheduleInactivityCheck(at: due)
            return
        }
        switch phase.kind {
        case .connecting, .preAuth, .loggingIn, .loginFailed:
            record.endReason = .preAuthTimeout
            writeToClient("* BYE Disconnected for inactivity.\r\n", flush: true)
            clientChannel.close(promise: nil)
        case .relay:
            // RFC 2177: a client in IDLE is not idle; it re-issues IDLE on its own schedule.
            if clientDecoder.framer.clientExpectation == .idleDone {
                scheduleInactivityCheck(at: .now() + inactivity.limit)
                return
            }
            record.endReason = .idleTimeout
            endUpstreamFrameForBye()
            queueLocalResponse(ByteBuffer(string: "* BYE Disconnected for inactivity.\r\n"))
            closeWhenWritten()
        case .closed:
            break
        }
    }
}
