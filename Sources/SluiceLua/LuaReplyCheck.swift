import IMAPWire
import SluiceFilters

/// Checks what a script wants written to the client, so that no script can
/// desynchronise the stream: texts are one line of printable characters,
/// a status is OK, NO or BAD, a response code is `[ATOM]` or `[ATOM args]`,
/// and an untagged line announces no literal and does not end the session.
enum LuaReplyCheck {
    /// A tagged reply from `sluice.reply("NO", "[TOOBIG] Too big")`.
    static func reply(status: String, text: String) -> Result<TaggedReply, RuleError> {
        guard let parsed = ResponseStatus(rawValue: status.uppercased()), [.ok, .no, .bad].contains(parsed) else {
            return .failure(RuleError("the status is OK, NO or BAD, not \(status.debugDescription)"))
        }
        guard isPrintable(text) else { return .failure(RuleError("the text has control characters")) }
        guard let reply = TaggedReply(parsing: "\(parsed.rawValue) \(text.isEmpty ? "Done." : text)") else {
            return .failure(RuleError("a response code opens with [ and closes with ]"))
        }
        if let code = reply.code, !isResponseCode(code) {
            return .failure(RuleError("[\(code)] is not a response code (an atom, then optional arguments)"))
        }
        return .success(reply)
    }

    /// Why an untagged line (written as `* LINE`) cannot be sent, or `nil`.
    static func untaggedProblem(_ line: String) -> String? {
        guard !line.isEmpty else { return "an untagged line is empty" }
        guard isPrintable(line) else { return "an untagged line has control characters" }
        let first = line.prefix { $0 != " " }.uppercased()
        if first == "BYE" || first == "PREAUTH" { return "an untagged \(first) would change the session's state" }
        if announcesLiteral(line) { return "an untagged line ends in a literal announcement ({N})" }
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
