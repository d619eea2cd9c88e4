/// The response codes whose meaning the proxy needs, typed.
///
/// ```
/// resp-text-code = "ALERT" / "BADCHARSET" [...] / capability-data / "PARSE" /
///                  "PERMANENTFLAGS" SP "(" [flag-perm *(SP flag-perm)] ")" /
///                  "READ-ONLY" / "READ-WRITE" / "TRYCREATE" /
///                  "UIDNEXT" SP nz-number / "UIDVALIDITY" SP nz-number /
///                  "UNSEEN" SP nz-number / atom [SP 1*<any TEXT-CHAR except "]">]
/// ```
/// (RFC 3501 §9; HIGHESTMODSEQ from RFC 7162, the rest from RFC 5530.)
public enum KnownResponseCode: Hashable, Sendable {
    case capability(CapabilityResponse)
    case permanentFlags([String])
    case uidValidity(UInt32)
    case uidNext(UInt32)
    case unseen(UInt32)
    case highestModSeq(UInt64)
    case readOnly
    case readWrite
    case tryCreate
    case alert
    /// A code without arguments that the proxy does not interpret (`NONEXISTENT`, `NOPERM`, …).
    case plain(String)

    public init?(_ code: ResponseCode) {
        func number32() -> UInt32? {
            guard let value = code.number, value <= UInt64(UInt32.max) else { return nil }
            return UInt32(value)
        }
        switch code.name {
        case "CAPABILITY":
            guard let capabilities = CapabilityResponse(code) else { return nil }
            self = .capability(capabilities)
        case "PERMANENTFLAGS":
            guard let arguments = code.arguments, arguments.count == 1, let flags = arguments[0].list?.atoms else {
                return nil
            }
            self = .permanentFlags(flags)
        case "UIDVALIDITY":
            guard let value = number32() else { return nil }
            self = .uidValidity(value)
        case "UIDNEXT":
            guard let value = number32() else { return nil }
            self = .uidNext(value)
        case "UNSEEN":
            guard let value = number32() else { return nil }
            self = .unseen(value)
        case "HIGHESTMODSEQ":
            guard let value = code.number else { return nil }
            self = .highestModSeq(value)
        case "READ-ONLY": self = .readOnly
        case "READ-WRITE": self = .readWrite
        case "TRYCREATE": self = .tryCreate
        case "ALERT": self = .alert
        default:
            guard code.rawArguments.isEmpty else { return nil }
            self = .plain(code.name)
        }
    }
}
