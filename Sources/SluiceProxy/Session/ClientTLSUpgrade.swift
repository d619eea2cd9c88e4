import NIOCore
import NIOSSL

/// STARTTLS on the client's connection (RFC 9051 §6.2.1), without the
/// plaintext window (review S7).
///
/// The `OK` is written and flushed to the channel before the TLS handler
/// goes in front of the pipeline, in the same event-loop turn: it leaves in
/// plaintext (now, or when the socket can take it), and every byte read from
/// then on passes through TLS. (A flush issued after adding the handler would
/// be held by it until the handshake, which waits for this `OK`.) The
/// session counts as protected only once the handshake completes
/// (`ProxySession.clientTLSEstablished`); plaintext the client pipelined
/// behind STARTTLS is the session's to discard (CVE-2011-0411 and kin).
enum ClientTLSUpgrade {
    static func start(on channel: Channel, context: NIOSSLContext, ok: String) throws {
        channel.writeAndFlush(ByteBuffer(string: ok), promise: nil)
        try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: context), position: .first)
        try channel.pipeline.syncOperations.addHandler(ServerHelloReader(), position: .first)
    }
}
