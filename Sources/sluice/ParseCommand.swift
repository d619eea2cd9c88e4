import ArgumentParser
import IMAPWire
import NIOCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// `sluice parse`: frames one direction of a recorded connection and prints a
/// line per frame; the tool to reach for when a client misbehaves behind the proxy.
struct ParseCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "parse",
        abstract: "Frame a recorded IMAP transcript (one direction) and print one line per frame.",
        discussion: """
            A frame is one whole command or response with every literal it carries; IDLE's DONE \
            and SASL continuation lines are frames of their own. With --json each line is an \
            object with offset, length, kind, tag, name, literals and understood; the lengths \
            add up to the file size. Malformed input is reported with its byte offset and a \
            non-zero exit status. Only tags and names are printed, never content.
            """
    )

    enum Direction: String, ExpressibleByArgument, CaseIterable {
        case client, server
    }

    @Option(name: .long, help: "Whose bytes the file holds: client (commands) or server (responses).")
    var from: Direction

    @Flag(name: .long, help: "Print one JSON object per line.")
    var json = false

    @Argument(help: "The transcript file.")
    var file: String

    func run() throws {
        guard let handle = fopen(file, "rb") else {
            throw ValidationError("cannot open \(file): \(String(cString: strerror(errno)))")
        }
        defer { fclose(handle) }
        let peer: IMAPPeer = from == .client ? .client : .server
        var decoder = IMAPFrameDecoder(peer: peer, literalCaptureLimit: 64 * 1024)
        var buffer = ByteBufferAllocator().buffer(capacity: 64 * 1024)
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        do {
            while true {
                let count = fread(&chunk, 1, chunk.count, handle)
                if count <= 0 { break }
                buffer.writeBytes(chunk[0..<count])
                while let frame = try decoder.next(&buffer) {
                    let report = FrameReport(frame)
                    print(json ? report.json : report.text)
                }
                buffer.discardReadBytes()
            }
            if ferror(handle) != 0 { throw ValidationError("error reading \(file)") }
            try decoder.checkEnd(buffer)
        } catch let error as IMAPFramingError {
            let what = error.kind == .incompleteFrame
                ? "the file ends inside a frame that starts at byte offset \(error.offset)"
                : error.description
            printError("sluice parse: \(file): \(what)")
            throw ExitCode(1)
        }
    }
}

/// Writes a line to standard error (file descriptor 2).
func printError(_ line: String) {
    let bytes = Array((line + "\n").utf8)
    var offset = 0
    while offset < bytes.count {
        let written = bytes.withUnsafeBytes { raw -> Int in
            guard let base = raw.baseAddress else { return -1 }
            return write(2, base + offset, raw.count - offset)
        }
        if written <= 0 { return }
        offset += written
    }
}
