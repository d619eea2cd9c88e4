import IMAPWire
import SluiceFilters

/// Checks what a script wants written to the client, so that no script can
/// desynchronise the stream or the client's idea of the session: texts are
/// one line of printable characters announcing no literal; a status is OK,
/// NO or BAD, and not OK for a command that changes the session's state
/// (the server never ran it); a response code is `[ATOM]` or `[ATOM args]`
/// and carries no state (`READ-WRITE`, `UIDVALIDITY`, `CAPABILITY` …); an
/// untagged line is data of a kind that changes nothing the client tracks
/// (`LIST`, `STATUS`, `SEARCH`, `X…`; not `EXPUNGE`, `EXISTS`, `FETCH`,
/// `CAPABILITY`, `BYE` …).
enum LuaReplyCheck {
    /// Commands whose OK changes the session: only the server may say it.
    static let stateChanging: Set<String> = Set(IMAPCommandCatalog.commands.filter { $0.sessionEffect != .none }.map(\.name))
        .union(["LOGOUT", "STARTTLS", "COMPRESS", "IDLE", "AUTHENTICATE", "LOGIN", "UNAUTHENTICATE", "NOTIFY"])

    /// Untagged responses a script may give: data that describes, never changes, the client's state.
    static let untaggedAllowed: Set<String> = [
        "OK", "NO", "BAD", "LIST", "LSUB", "STATUS", "SEARCH", "ESEARCH", "SORT", "THREAD", "NAMESPACE", "ID",
        "QUOTA", "QUOTAROOT", "METADATA", "ACL", "LISTRIGHTS", "MYRIGHTS",
    ]

    /// Response codes that change what the client believes (mailbox state, capabilities, UIDs).
    static let stateCodes: Set<String> = [
        "CAPABILITY", "READ-ONLY", "READ-WRITE", "UIDVALIDITY", "UIDNEXT", "UNSEEN", "PERMANENTFLAGS",
        "HIGHESTMODSEQ", "NOMODSEQ", "CLOSED", "APPENDUID", "COPYUID", "MODIFIED", "REFERRAL",
    ]

    /// A tagged reply from `sluice.reply("NO", "[TOOBIG] Too big")` to `command`.
    static func reply(status: String, text: String, command: String) -> Result<TaggedReply, RuleError> {
        guard let parsed = ResponseStatus(rawValue: status.uppercased()), [.ok, .no, .bad].contains(parsed) else {
            return .failure(RuleError("the status is OK, NO or BAD, not \(status.debugDescription)"))
        }
        if parsed == .ok, stateChanging.contains(command) {
            return .failure(RuleError("OK to \(command) would change the session's state, which only the server can"))
        }
        guard isPrintable(text) else { return .failure(RuleError("the text has control characters")) }
        if announcesLiteral(text) { return .failure(RuleError("the text ends in a literal announcement ({N})")) }
        guard let reply = TaggedReply(parsing: "\(parsed.rawValue) \(text.isEmpty ? "Done." : text)") else {
            return .failure(RuleError("a response code opens with [ and closes with ]"))
        }
        if let code = reply.code {
            guard isResponseCode(code) else {
                return .failure(RuleError("[\(code)] is not a response code (an atom, then optional arguments)"))
            }
            let name = code.prefix { $0 != " " }.uppercased()
            if stateCodes.contains(name) { return .failure(RuleError("[\(name)] would change the client's idea of the session")) }
        }
        return .success(reply)
    }

    /// Why an untagged line (written as `* LINE`) cannot be sent, or `nil`.
    static func untaggedProblem(_ line: String) -> String? {
        guard !line.isEmpty else { return "an untagged line is empty" }
        guard isPrintable(line) else { return "an untagged line has control characters" }
        let first = line.prefix { $0 != " " }.uppercased()
        guard untaggedAllowed.contains(first) || (first.hasPrefix("X") && first.count > 1) else {
            return "an untagged \(first) would change what the client knows of the session "
                + "(allowed: \(untaggedAllowed.sorted().joined(separator: ", ")) and X… names)"
        }
        if announcesLiteral(line) { return "an untagged line ends in a literal announcement ({N})" }
        if ["OK", "NO", "BAD"].contains(first) {
            let rest = line.dropFirst(first.count).drop { $0 == " " }
            if rest.hasPrefix("[") {
                let code = rest.dropFirst().prefix { $0 != " " && $0 != "]" }.uppercased()
                if stateCodes.contains(code) { return "an untagged [\(code)] would change the client's idea of the session" }
            }
        }
        return nil
    }

    /// Ends in `{N}`, `{N+}`, `{N-}` or `~{N}`: the client would read the next line as literal bytes.
    static func announcesLiteral(_ line: String) -> Bool {
        guard line.hasSuffix("}"), let open = line.lastIndex(of: "{") else { return false }
        var inside = line[line.index(after: open)..<line.index(before: line.endIndex)]
        if inside.hasSuffix("+") || inside.hasSuffix("-") { inside = inside.dropLast() }
        return !inside.isEmpty && inside.allSatisfy(\.isASCII) && inside.allSatisfy(\.isNumber)
    }

    /// No C0 controls and no DEL (UTF-8 text is allowed).
    static func isPrintable(_ text: String) -> Bool {
        !text.unicodeScalars.contains { $0.value < 0x20 || $0.value == 0x7F }
    }

    /// `ATOM` or `ATOM arguments` with no brackets in the arguments.
    static func isResponseCode(_ code: String) -> Bool {
        let name = code.prefix { $0 != " " }
        let atomBytes = name.utf8.allSatisfy { byte in
            byte > 0x20 && byte < 0x7F && !"(){%*\"\\[]".utf8.contains(byte)
        }
        return !name.isEmpty && atomBytes && !code.dropFirst(name.count).contains { $0 == "[" || $0 == "]" }
    }
}
