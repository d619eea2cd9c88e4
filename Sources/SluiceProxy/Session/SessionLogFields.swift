import Logging

/// What a session's log lines say about it (`imap.session.id`,
/// `client.address`, `imap.user`, the upstream), kept as plain values and
/// made into logger metadata only when a line is logged.
///
/// A session logs three lines in an ordinary life; holding the metadata in
/// its logger kept a dictionary of ~750 bytes alive for the whole session,
/// a tenth of an idle session's memory (issue 14).
struct SessionLogFields {
    let sessionID: Int
    var clientAddress: String?
    var user: String?
    var upstreamUser: String?
    var upstreamHost: String?
    var upstreamName: String?

    /// `base` with these fields as metadata (added to what its handler has).
    func logger(from base: Logger) -> Logger {
        var metadata = base.handler.metadata
        metadata.reserveCapacity(metadata.count + 6)
        metadata["imap.session.id"] = .string(String(sessionID))
        if let clientAddress { metadata["client.address"] = .string(clientAddress) }
        if let user { metadata["imap.user"] = .string(user) }
        if let upstreamUser { metadata["imap.upstream_user"] = .string(upstreamUser) }
        if let upstreamHost { metadata["upstream.host"] = .string(upstreamHost) }
        if let upstreamName { metadata["upstream.name"] = .string(upstreamName) }
        var logger = base
        logger.handler.metadata = metadata
        return logger
    }
}
