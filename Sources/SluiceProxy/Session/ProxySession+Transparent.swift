import IMAPWire
import Logging
import SluiceFilters
import NIOCore
import NIOPosix
import NIOSSL

/// Transparent mode: who logged in, read from the relayed login, and the rules it brings.
extension ProxySession {
    /// Transparent mode: remember who logs in (for the session log and the
    /// rules) from a LOGIN line or AUTHENTICATE PLAIN with an initial
    /// response. With rules configured, returns `false` for a login whose
    /// user cannot be read here: the proxy refuses it rather than relay a
    /// session whose rules it could not choose. A login that goes on holds
    /// the client's next bytes until it is answered (the rules start then;
    /// commands pipelined behind it must not pass before).
    func noteTransparentLogin(_ segment: LineSegment) -> Bool {
        guard segment.secondWordIs("LOGIN") || segment.secondWordIs("AUTHENTICATE") else { return true }
        let rules = !configuration.filters.isEmpty
        // With rules, the login must be the only command in flight: its
        // answer is matched by tag, and an earlier command with the same tag
        // would answer for it (red team 3: 'a NOOP', 'a LOGIN nobody x').
        if rules, relay.commandsInFlight > 1 { return false }
        transparentLoginTag = segment.tag
        guard segment.endsFrame else { return !rules }
        let frame = Frame(kind: .command, line: segment.bytes)
        defer { if rules, pendingTransparentUser != nil { transparentRulesPending = true } }
        guard let command = try? frame.command() else { return !rules }
        if let login = LoginCommand(command) {
            pendingTransparentUser = String(decoding: login.user, as: UTF8.self)
        } else if let authenticate = AuthenticateCommand(command), authenticate.mechanism.uppercased() == "PLAIN",
                  let initial = authenticate.initialResponse, let decoded = Base64.decode(initial) {
            let parts = decoded.split(separator: 0, omittingEmptySubsequences: false)
            if parts.count == 3 {
                let authz = String(decoding: parts[0], as: UTF8.self)
                pendingTransparentUser = authz.isEmpty ? String(decoding: parts[1], as: UTF8.self) : authz
            }
        }
        return !rules || pendingTransparentUser != nil
    }

    /// Transparent mode: the upstream answered the login. From here the
    /// rules apply as in proxy mode (review S4: they were silently skipped).
    /// Returns `false` when the session was ended instead: with rules
    /// configured, a login whose user the proxy could not read (a mechanism
    /// other than PLAIN, a name sent as a literal) cannot have its rules
    /// chosen, so it is refused rather than relayed unfiltered.
    func transparentLoginAnswered(_ segment: LineSegment) -> Bool {
        transparentLoginTag = nil
        if transparentRulesPending {
            transparentRulesPending = false
            clientGateOpened = true  // the bytes held behind the login go on, now under the rules
        }
        let name = pendingTransparentUser
        pendingTransparentUser = nil
        guard segment.secondWordIs("OK") else { return true }
        if !configuration.filters.isEmpty && name == nil {
            record.endReason = .rulesNeedUser
            logger.warning("login refused: the rules need the user name, which this login did not show")
            let tag = segment.tag ?? "*"
            queueLocalResponse(ByteBuffer(string: "\(tag) NO [UNAVAILABLE] Log in with LOGIN or AUTHENTICATE PLAIN.\r\n"
                + "* BYE Logging out.\r\n"))
            closeWhenWritten()
            return false
        }
        let known = name ?? "(unknown)"
        user = known
        logger[metadataKey: "imap.user"] = "\(known)"
        logger.info("upstream login succeeded")
        loginCompleted()
        filters = configuration.filters.engine(user: known, groups: [], clientAddress: clientAddressText,
                                              upstreamCapabilities: upstreamCapabilities, logger: logger).map(FilterStage.init)
        startInactivityTimer(configuration.idleTimeout)
        return true
    }
}
