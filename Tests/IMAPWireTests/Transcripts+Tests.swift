import Foundation
import IMAPWire
import NIOCore
import Testing

/// A recorded conversation: what the client sent and what the server sent.
struct Transcript: CustomStringConvertible, Sendable {
    var name: String
    var client: [UInt8]
    var server: [UInt8]
    var description: String { name }

    /// The committed recordings (made against Dovecot with
    /// scripts/record-transcripts.py), plus those in $SLUICE_TRANSCRIPT_DIR,
    /// which the test script records afresh from a live Dovecot.
    static func all() -> [Transcript] {
        var directories = [URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Transcripts")]
        if let live = ProcessInfo.processInfo.environment["SLUICE_TRANSCRIPT_DIR"], !live.isEmpty {
            directories.append(URL(fileURLWithPath: live))
        }
        var result: [Transcript] = []
        for directory in directories {
            let names = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
            for file in names.sorted() where file.hasSuffix(".client") {
                let base = String(file.dropLast(".client".count))
                guard let client = FileManager.default.contents(atPath: directory.appendingPathComponent(file).path),
                      let server = FileManager.default.contents(atPath: directory.appendingPathComponent(base + ".server").path)
                else { continue }
                result.append(Transcript(name: directory.lastPathComponent + "/" + base, client: Array(client), server: Array(server)))
            }
        }
        return result
    }
}

/// Names of frames for which IMAPWire has a typed view: real server output of
/// these kinds must be understood.
private let viewedResponses: Set<String> = [
    "CAPABILITY", "LIST", "LSUB", "STATUS", "FLAGS", "EXISTS", "RECENT", "EXPUNGE", "FETCH", "ID", "ENABLED",
    "NAMESPACE", "OK", "NO", "BAD", "BYE", "PREAUTH",
]
private let viewedCommands: Set<String> = [
    "LOGIN", "AUTHENTICATE", "SELECT", "EXAMINE", "LIST", "LSUB", "STATUS", "CREATE", "DELETE", "RENAME", "SUBSCRIBE",
    "UNSUBSCRIBE", "APPEND", "COPY", "MOVE", "UID COPY", "UID MOVE", "FETCH", "UID FETCH", "STORE", "UID STORE",
    "SEARCH", "UID SEARCH", "ENABLE", "ID", "IDLE", "NOOP", "LOGOUT", "CAPABILITY", "CLOSE", "EXPUNGE", "NAMESPACE",
]

@Suite("Recorded Dovecot transcripts")
struct TranscriptTests {
    @Test("there are recordings to test")
    func present() {
        #expect(Transcript.all().count >= 9)
    }

    @Test("re-framed in any split, both directions re-emit byte for byte", arguments: Transcript.all())
    func byteExact(transcript: Transcript) throws {
        for (peer, bytes) in [(IMAPPeer.client, transcript.client), (.server, transcript.server)] {
            var splits: [Split] = [.whole, .random(seed: 11), .random(seed: 12), .random(seed: 13)]
            if bytes.count < 200_000 { splits.append(.bytewise) }
            var reference: [FrameSummary]? = nil
            for split in splits {
                let frames = try decodeFrames(bytes, peer: peer, split: split)
                var out = ByteBuffer()
                for frame in frames { frame.writeOriginal(to: &out) }
                #expect(Array(out.readableBytesView) == bytes, "\(peer) \(split)")
                #expect(frames.map(\.length).reduce(0, +) == bytes.count)
                let summaries = frames.map(FrameSummary.init)
                if let reference { #expect(summaries == reference, "\(peer) \(split)") } else { reference = summaries }
            }
        }
    }

    @Test("secondWordIs agrees with secondWord on every recorded line", arguments: Transcript.all())
    func secondWordInPlace(transcript: Transcript) throws {
        let words: [StaticString] = ["OK", "NO", "BAD", "BYE", "LOGIN", "AUTHENTICATE", "COMPRESS", "STARTTLS", "FETCH", "1"]
        for (peer, bytes) in [(IMAPPeer.client, transcript.client), (.server, transcript.server)] {
            var framer = IMAPFramer(peer: peer)
            var buffer = ByteBuffer(bytes: bytes)
            var checked = 0
            while let event = try framer.next(&buffer) {
                guard case .line(let segment) = event, segment.isFrameStart else { continue }
                let word = segment.secondWord
                for candidate in words {
                    #expect(segment.secondWordIs(candidate) == (word == "\(candidate)"), "\(String(buffer: segment.bytes))")
                }
                checked += 1
            }
            #expect(checked > 0)
        }
    }

    @Test("every command meets its tagged response; known frames are understood", arguments: Transcript.all())
    func semantics(transcript: Transcript) throws {
        let commands = try decodeFrames(transcript.client, peer: .client)
        let responses = try decodeFrames(transcript.server, peer: .server)
        let commandTags = commands.filter { $0.kind == .command }.compactMap(\.tag)
        let responseTags = Set(responses.filter { $0.kind == .taggedResponse }.compactMap(\.tag))
        #expect(!commandTags.isEmpty)
        for tag in commandTags { #expect(responseTags.contains(tag), "no tagged response for \(tag)") }
        for frame in commands where frame.kind != .command || viewedCommands.contains(frame.name ?? "") {
            #expect(frame.isUnderstood(), "not understood: \(FrameSummary(frame))")
        }
        for frame in responses where frame.kind == .continuationRequest || viewedResponses.contains(frame.name ?? "") {
            #expect(frame.isUnderstood(), "not understood: \(FrameSummary(frame))")
        }
    }
}
