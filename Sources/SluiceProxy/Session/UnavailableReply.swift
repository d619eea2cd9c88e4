/// What a client hears when the server behind the proxy cannot serve it (a
/// router, connect, TLS or login failure upstream): RFC 5530's UNAVAILABLE,
/// the same words everywhere, never the reason (that goes to the log).
enum UnavailableReply {
    /// After the client's tag (`a NO [UNAVAILABLE] …`).
    static let tagged = "NO [UNAVAILABLE] Server is unavailable."
    /// Ending the connection.
    static let bye = "* BYE [UNAVAILABLE] Server is unavailable.\r\n"
}
