/// A command's tag, name and argument tokens.
///
/// ```
/// command = tag SP (command-any / command-auth / command-nonauth / command-select) CRLF
/// ```
/// (RFC 3501 §9.) `name` is upper-cased and includes the `UID` prefix
/// (`UID FETCH`); `arguments` are the tokens after it.
public struct ParsedCommand: Hashable, Sendable {
    public var tag: String
    public var name: String
    public var arguments: [IMAPToken]

    public init(tag: String, name: String, arguments: [IMAPToken]) {
        self.tag = tag
        self.name = name
        self.arguments = arguments
    }

    /// Whether this is the UID form of a command (`UID FETCH`, `UID MOVE`, …).
    public var isUID: Bool { name.hasPrefix("UID ") }

    /// The name without the `UID ` prefix.
    public var baseName: String { isUID ? String(name.dropFirst(4)) : name }
}

extension Frame {
    /// Parses a command frame into its tag, name and argument tokens.
    ///
    /// `continues`: the frame is a command's first part, which goes on after
    /// its last literal (that literal streams): lists left open at the end
    /// are closed there (`APPEND box CATENATE (TEXT {n}` is not an error).
    public func command(limits: IMAPLimits = .client, continues: Bool = false) throws(IMAPParseError) -> ParsedCommand {
        guard kind == .command else { throw IMAPParseError(.missingTagOrName, offset: 0) }
        var tokenizer = IMAPTokenizer(text: FrameText(self), literals: literals, limits: limits,
                                      endsInsideFrame: continues && !literals.isEmpty)
        guard let tagBytes = tokenizer.word(), let tag = String(validating: tagBytes, as: UTF8.self),
              var nameBytes = tokenizer.word(), nameBytes.allSatisfy(FrameHead.isNameByte)
        else { throw IMAPParseError(.missingTagOrName, offset: tokenizer.position) }
        nameBytes = nameBytes.map(FrameHead.upper)
        var name = String(decoding: nameBytes, as: UTF8.self)
        if name == "UID" {
            guard let sub = tokenizer.word(), sub.allSatisfy(FrameHead.isNameByte) else {
                throw IMAPParseError(.missingTagOrName, offset: tokenizer.position)
            }
            name += " " + String(decoding: sub.map(FrameHead.upper), as: UTF8.self)
        }
        return ParsedCommand(tag: tag, name: name, arguments: try tokenizer.tokens())
    }
}
