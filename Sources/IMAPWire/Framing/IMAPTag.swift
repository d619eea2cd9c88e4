/// Command tags (RFC 9051 §9):
///
///     tag          = 1*<any ASTRING-CHAR except "+">
///     ASTRING-CHAR = ATOM-CHAR / resp-specials
///     ATOM-CHAR    = <any CHAR except atom-specials>
///     atom-specials = "(" / ")" / "{" / SP / CTL / list-wildcards / quoted-specials / resp-specials
public enum IMAPTag {
    /// Whether `tag` is a valid command tag: `*` (untagged) and `+`
    /// (continuation) are not, so a server's answer to it can be told apart.
    /// `]` is refused too although the grammar allows it: Dovecot answers
    /// such a command untagged, so it could never be matched to its answer.
    public static func isValid(_ tag: String) -> Bool {
        var tag = tag
        return tag.withUTF8 { bytes in !bytes.isEmpty && bytes.allSatisfy(isTagByte) }
    }

    /// Read on the bytes, not through `String.UTF8View`: a relay asks this of every command.
    private static func isTagByte(_ byte: UInt8) -> Bool {
        switch byte {
        case 0x00...0x20, 0x7F...0xFF: return false
        case UInt8(ascii: "("), UInt8(ascii: ")"), UInt8(ascii: "{"), UInt8(ascii: "%"), UInt8(ascii: "*"),
             UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "+"), UInt8(ascii: "]"):
            return false
        default: return true
        }
    }
}
