import IMAPWire
import NIOConcurrencyHelpers
import Dispatch
import NIOCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Where audit lines go: a file opened for appending, one JSON object per
/// line. Lines are written on a queue of their own, never on an event loop
/// (a slow disk must not stall every session, review S14), each with one
/// `write(2)` retried on `EINTR`. At most `maxPendingBytes` wait; past that
/// lines are dropped and counted (an audit sink that fails must not stop
/// the sessions, nor grow memory). `reopen()` (SIGHUP) starts a new file at
/// the same path, for logrotate.
public final class AuditLog: Sendable {
    public let path: String
    /// Bytes of lines queued and not yet written, before new lines are dropped.
    public static let maxPendingBytes = IMAPLimits.maxPendingAuditBytes

    private struct State {
        var descriptor: Int32
        var pendingBytes = 0
        var dropped = 0
    }

    private let state: NIOLockedValueBox<State>
    private let queue = DispatchQueue(label: "sluice.audit-log")

    /// Opens (creating) `path` for appending; throws if it cannot.
    public init(path: String) throws(RuleError) {
        self.path = path
        state = NIOLockedValueBox(State(descriptor: try AuditLog.open(path)))
    }

    deinit { close(state.withLockedValue { $0.descriptor }) }

    private static func open(_ path: String) throws(RuleError) -> Int32 {
        #if canImport(Glibc)
        let descriptor = Glibc.open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o640)
        #else
        let descriptor = Darwin.open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o640)
        #endif
        guard descriptor >= 0 else { throw RuleError("cannot open \(path) for appending") }
        return descriptor
    }

    /// Queues one line; returns at once.
    func write(_ line: String) {
        let bytes = Array((line + "\n").utf8)
        let accepted = state.withLockedValue { state -> Bool in
            guard state.pendingBytes + bytes.count <= AuditLog.maxPendingBytes else {
                state.dropped += 1
                return false
            }
            state.pendingBytes += bytes.count
            return true
        }
        guard accepted else { return }
        queue.async { [self] in
            let descriptor = state.withLockedValue { $0.descriptor }
            AuditLog.writeAll(bytes, to: descriptor)
            state.withLockedValue { $0.pendingBytes -= bytes.count }
        }
    }

    /// Lines dropped because the queue was full.
    public var droppedLines: Int { state.withLockedValue { $0.dropped } }

    /// Opens the path again (after logrotate moved the file away); lines
    /// queued before go to the old file. On failure the old file stays.
    public func reopen() throws(RuleError) {
        let fresh = try AuditLog.open(path)
        queue.async { [self] in
            let old = state.withLockedValue { state in
                defer { state.descriptor = fresh }
                return state.descriptor
            }
            close(old)
        }
    }

    /// Waits until every line queued so far is written (tests, shutdown).
    public func flush() {
        queue.sync {}
    }

    private static func writeAll(_ bytes: [UInt8], to descriptor: Int32) {
        var offset = 0
        while offset < bytes.count {
            let written = bytes[offset...].withUnsafeBytes { systemWrite(descriptor, $0.baseAddress, $0.count) }
            if written < 0 && errno == EINTR { continue }
            if written <= 0 { return }  // a full or failing disk: the line is lost, the session goes on
            offset += written
        }
    }
}

#if canImport(Glibc)
private let systemWrite = Glibc.write
#elseif canImport(Darwin)
private let systemWrite = Darwin.write
#endif

extension FilterSet {
    /// Reopens every audit log (SIGHUP, after logrotate). Returns the
    /// paths that could not be opened again (their old files stay in use).
    public func reopenAuditLogs() -> [String] {
        var failed: [String] = []
        for entry in entries {
            guard let audit = entry.filter as? AuditFilter else { continue }
            do { try audit.log.reopen() } catch { failed.append(audit.log.path) }
        }
        return failed
    }
}

/// One audit line per chosen command: time, user, client, command, mailbox,
/// result and duration. Never arguments beyond the mailbox, never message
/// content or credentials.
public struct AuditFilter: Filter, BuiltInRule {
    public var ruleKind: RuleKind { .audit }

    public let names: Set<String>
    public let log: AuditLog

    public init(names: Set<String>, log: AuditLog) {
        self.names = Set(names.map { $0.uppercased() })
        self.log = log
    }

    public var commands: CommandSelection { .named(names) }
    public var responses: ResponseSelection { ResponseSelection(taggedFor: .named(names)) }

    public func handle(command: ClientCommand, context: FilterContext, next: CommandNext) -> CommandOutcome {
        let outcome = next(command, context)
        // Refused by a later filter: the upstream never sees it, so log it here.
        switch outcome {
        case .reply(let reply), .answer(_, let reply):
            write(context: context, command: command.name, mailbox: mailbox(of: command.parsed, context: context),
                  result: reply.status.rawValue, by: "proxy", started: .now())
        case .forward:
            break
        }
        return outcome
    }

    public func handle(response: ServerResponse, context: FilterContext, next: ResponseNext) -> ResponseOutcome {
        if let command = response.command, case .status(let status) = response.parsed {
            // The client's name, as for refusals (the audit rule runs first, before any renaming).
            var mailbox = command.clientMailbox ?? command.mailbox
            if mailbox == nil, case .selected(let selected, _) = context.state { mailbox = selected }
            write(context: context, command: command.name, mailbox: mailbox, result: status.status.rawValue,
                  by: "upstream", started: command.started)
        }
        return next(response, context)
    }

    /// A command the proxy refused before any rule could read it (it did not parse).
    func recordRefusal(of name: String, status: String, context: FilterContext) {
        write(context: context, command: name, mailbox: nil, result: status, by: "proxy", started: .now())
    }

    private func mailbox(of command: ParsedCommand, context: FilterContext) -> MailboxName? {
        if let mailbox = MailboxArguments.first(of: command) { return mailbox }
        if case .selected(let selected, _) = context.state { return selected }
        return nil
    }

    private func write(context: FilterContext, command: String, mailbox: MailboxName?, result: String, by: String,
                       started: NIODeadline) {
        let milliseconds = Double((NIODeadline.now() - started).nanoseconds) / 1e6
        var fields: [(String, String)] = [
            ("time", UTCTimestamp.now()),
            // The session's id as in the proxy's log lines (imap.session.id), to follow one session across both.
            ("session", context.logger[metadataKey: "imap.session.id"].map { "\($0)" } ?? "-"),
            ("user", context.user), ("client", context.clientAddress ?? "-"), ("command", command),
        ]
        if let name = mailbox?.displayName(utf8: context.utf8Enabled) ?? mailbox?.description { fields.append(("mailbox", name)) }
        fields += [("result", result), ("answered_by", by), ("duration_ms", String((milliseconds * 1000).rounded() / 1000))]
        log.write("{" + fields.map { FrameReport.jsonString($0.0) + ":" + FrameReport.jsonString($0.1) }.joined(separator: ",") + "}")
    }
}
