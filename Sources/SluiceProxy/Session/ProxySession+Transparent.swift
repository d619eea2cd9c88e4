import IMAPWire
import Logging
import SluiceFilters
import NIOCore
import NIOPosix
import NIOSSL

/// Transparent mode: who logged in, read from the relayed login, and the rules it brings.
extension ProxySession {
    /// A command relayed before the user is known: the observer reads a
    /// login's user; `false` when the proxy must refuse the command.
    func noteTransparentLogin(_ segment: LineSegment) -> Bool {
        guard var observer = transparentLogin else { return true }
        let relayed = observer.commandRelayed(segment, commandsInFlight: relay.commandsInFlight)
        transparentLogin = observer
        if relayed, !observer.pending.isEmpty, loginStarted == nil { loginStarted = .now() }
        return relayed
    }

    /// Transparent mode: the upstream answered the login. From here the
    /// rules apply as in proxy mode (review S4: they were silently skipped).
    /// Returns `false` when the session was ended instead: with rules
    /// configured, a login whose user the proxy could not read (a mechanism
    /// other than PLAIN, a name sent as a literal) cannot have its rules
    /// chosen, so it is refused rather than relayed unfiltered.
    func transparentLoginAnswered(_ segment: LineSegment) -> Bool {
        guard var observer = transparentLogin else { return true }
        let (answer, released) = observer.answered(tag: segment.tag ?? "", ok: segment.secondWordIs("OK"))
        transparentLogin = observer
        if released { clientGateOpened = true }  // the bytes held behind the login go on, now under the rules
        switch answer {
        case .refused(let mechanism):
            loginAnswered(.rejected, mechanism: mechanism)
            if !observer.pending.isEmpty { loginStarted = .now() }  // the next pipelined login's own time starts
            return true
        case .rulesNeedUser:
            loginAnswered(.rejected, mechanism: .other)
            record.endReason = .rulesNeedUser
            logger.warning("login refused: the rules need the user name, which this login did not show")
            let tag = segment.tag ?? "*"
            queueLocalResponse(ByteBuffer(string: "\(tag) NO [UNAVAILABLE] Log in with LOGIN or AUTHENTICATE PLAIN.\r\n"
                + "* BYE Logging out.\r\n"))
            closeWhenWritten()
            return false
        case .loggedIn(let name, let mechanism):
            loginAnswered(.ok, mechanism: mechanism)
            let known = name ?? "(unknown)"
            user = known
            logFields.user = known
            logger.info("upstream login succeeded")
            loginCompleted()
            filters = configuration.filters.engine(user: known, groups: [], clientAddress: clientAddressText,
                                                  upstreamCapabilities: [], logger: logger)
                .map(FilterStage.init)
            startIdleTimeout()
            return true
        }
    }
}
