import IMAPWire
import NIOConcurrencyHelpers
import NIOCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Where audit lines go: a file opened for appending, one JSON object per
/// line, each written with one `write(2)` under a lock (shared by every session).
public final class AuditLog: Sendable {
    public let path: String
    private let descriptor: Int32
    private let lock = NIOLock()

    /// Opens (creating) `path` for appending; throws if it cannot.
    public init(path: String) throws(RuleError) {
        let descriptor = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o640)
        guard descriptor >= 0 else { throw RuleError("cannot open \(path) for appending") }
        self.path = path
        self.descriptor = descriptor
    }

    deinit { close(descriptor) }

    func write(_ line: String) {
        let bytes = Array((line + "\n").utf8)
        lock.withLock {
            var offset = 0
            while offset < bytes.count {
                let written = bytes[offset...].withUnsafeBytes { Glibc.write(descriptor, $0.baseAddress, $0.count) }
                if written <= 0 { return }  // an audit sink that fails must not stop the session
                offset += written
            }
        }
    }
}

/// One audit line per chosen command: time, user, client, command, mailbox,
/// result and duration. Never arguments beyond the mailbox, never message
/// content or credentials.
public struct AuditFilter: Filter {
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
            var mailbox = command.mailbox
            if mailbox == nil, case .selected(let selected, _) = context.state { mailbox = selected }
            write(context: context, command: command.name, mailbox: mailbox, result: status.status.rawValue,
                  by: "upstream", started: command.started)
        }
        return next(response, context)
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
            ("time", UTCTimestamp.now()), ("user", context.user), ("client", context.clientAddress ?? "-"),
            ("command", command),
        ]
        if let name = mailbox?.displayName(utf8: context.utf8Enabled) ?? mailbox?.description { fields.append(("mailbox", name)) }
        fields += [("result", result), ("answered_by", by), ("duration_ms", String((milliseconds * 1000).rounded() / 1000))]
        log.write("{" + fields.map { FrameReport.jsonString($0.0) + ":" + FrameReport.jsonString($0.1) }.joined(separator: ",") + "}")
    }
}
