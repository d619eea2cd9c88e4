import IMAPWire
import Logging
import NIOCore
import SluiceFilters

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Which framer the fuzzer drives: `SLUICE_FUZZ_PEER=client` or `server` (default both).
private let fuzzPeers: [IMAPPeer] = {
    switch getenv("SLUICE_FUZZ_PEER").map({ String(cString: $0) }) {
    case "client": return [.client]
    case "server": return [.server]
    default: return [.client, .server]
    }
}()

/// Small limits so the fuzzer reaches every limit error quickly.
private let fuzzLimits = IMAPLimits(
    maxLineLength: 512, maxFrameTextLength: 2048, maxLiteralSize: 4096,
    maxLiteralsPerFrame: 8, maxNestingDepth: 8, maxTokensPerFrame: 256)

private struct Outcome: Equatable {
    var frames: [[UInt8]] = []
    var kinds: [FrameKind] = []
    var error: IMAPFramingError? = nil
}

/// Feeds `data` into a buffer in reads of the given sizes (cycled), calling
/// `take` after each read to consume what it can; the first error ends it.
private func feed(_ data: [UInt8], readSizes: [Int],
                  take: (inout ByteBuffer) throws(IMAPFramingError) -> Void) -> IMAPFramingError? {
    var buffer = ByteBuffer()
    var offset = 0
    var step = 0
    do {
        while offset < data.count {
            let end = min(data.count, offset + max(1, readSizes[step % readSizes.count]))
            step += 1
            buffer.writeBytes(data[offset..<end])
            offset = end
            try take(&buffer)
            buffer.discardReadBytes()
        }
    } catch {
        return error
    }
    return nil
}

/// Frames `data` in reads of the given sizes; parses every frame if `parse`.
private func run(_ data: [UInt8], peer: IMAPPeer, readSizes: [Int], parse: Bool = false) -> Outcome {
    var decoder = IMAPFrameDecoder(peer: peer, limits: fuzzLimits, literalCaptureLimit: .max)
    var outcome = Outcome()
    outcome.error = feed(data, readSizes: readSizes) { buffer throws(IMAPFramingError) in
        while let frame = try decoder.next(&buffer) {
            guard let bytes = frame.originalBytes() else { fatalError("captured frame lost its literal bytes") }  // trap-ok: libFuzzer reports a broken invariant as a crash
            outcome.frames.append(Array(bytes.readableBytesView))
            outcome.kinds.append(frame.kind)
            if parse { exercise(frame) }
        }
    }
    return outcome
}

/// Frames server bytes with `streamsLongLines` (pieces past 16 bytes) in
/// reads of the given sizes: the complete frames, joined from their pieces.
private func runStreaming(_ data: [UInt8], readSizes: [Int]) -> Outcome {
    var framer = IMAPFramer(peer: .server, limits: fuzzLimits)
    framer.streamsLongLines = true
    framer.linePieceSize = 16
    var outcome = Outcome()
    var current: [UInt8] = []
    var kind: FrameKind?
    outcome.error = feed(data, readSizes: readSizes) { buffer throws(IMAPFramingError) in
        while let event = try framer.next(&buffer) {
            switch event {
            case .line(let segment):
                if segment.isFrameStart { kind = segment.kind }
                current += segment.bytes.readableBytesView
                if segment.endsFrame, let kind {
                    outcome.frames.append(current)
                    outcome.kinds.append(kind)
                    current = []
                }
            case .literalBytes(let chunk, _):
                current += chunk.readableBytesView
            }
        }
    }
    return outcome
}

/// The built-in rules that read commands and responses, for `exercise`.
private let fuzzRules = FilterSet([
    FilterSet.Entry(filter: DenyCommandsFilter(names: ["FETCH", "DELETE", "COPY"], mailboxes: [Glob("Secret*")])),
    FilterSet.Entry(filter: HideMailboxesFilter(patterns: [Glob("INBOX.Private*")])),
    FilterSet.Entry(filter: ReadOnlyFilter()),
    FilterSet.Entry(filter: CapabilityFilter(remove: ["IDLE"], add: [])),
])

/// Runs a frame through the rules as the relay would; must never crash,
/// and a command that does not parse must never be forwarded.
private func exerciseRules(_ frame: Frame) {
    guard let engine = fuzzRules.engine(user: "fuzz", clientAddress: nil, upstreamCapabilities: [],
                                        logger: Logger(label: "fuzz", factory: { _ in SwiftLogNoOpLogHandler() }))
    else { return }
    switch frame.kind {
    case .command:
        guard let name = frame.name, engine.wantsCommand(named: name) else { return }
        let decision = engine.process(command: frame, streamedLiteral: nil)
        if (try? frame.command()) == nil, case .respond = decision {} else if (try? frame.command()) == nil {
            fatalError("a selected command that does not parse was forwarded")  // trap-ok: libFuzzer reports a broken invariant as a crash
        }
    case .taggedResponse, .untaggedResponse:
        _ = engine.process(response: frame)
    case .continuationRequest, .idleDone, .saslResponse:
        break
    }
}

/// Parses a frame every way a filter could ask; must never crash.
private func exercise(_ frame: Frame) {
    exerciseRules(frame)
    _ = frame.tag
    _ = frame.name
    _ = frame.messageNumber
    _ = frame.isUnderstood(limits: fuzzLimits)
    switch frame.kind {
    case .command:
        if let command = try? frame.command(limits: fuzzLimits), let view = CommandView(command) {
            _ = IMAPEncoder.encode(command, options: EncodingOptions(receiver: .serverWithLiteralMinus)).bytes(original: frame)
            if case .select(let select) = view, let name = select.mailbox.displayName(utf8: false) {
                guard MailboxName(name, utf8: false).displayName(utf8: false) == name else {
                    fatalError("modified UTF-7 round trip changed \(name)")  // trap-ok: libFuzzer reports a broken invariant as a crash
                }
            }
        }
    case .taggedResponse, .untaggedResponse, .continuationRequest:
        if let response = try? frame.response(limits: fuzzLimits) {
            _ = ResponseView(response)
            if case .data(let data) = response {
                _ = IMAPEncoder.encode(data, options: EncodingOptions(receiver: .client)).bytes(original: frame)
            }
        }
    case .idleDone, .saslResponse:
        break
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ start: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    let data = start.map { Array(UnsafeBufferPointer(start: $0, count: count)) } ?? []
    for peer in fuzzPeers {
        let whole = run(data, peer: peer, readSizes: [max(data.count, 1)], parse: true)
        let bytewise = run(data, peer: peer, readSizes: [1])
        let seed = data.first.map(Int.init) ?? 0
        let uneven = run(data, peer: peer, readSizes: [seed % 7 + 1, seed % 13 + 2, 3])
        // Invariant 1: the split of the input never changes the frames or the error kind.
        guard whole.frames == bytewise.frames, whole.frames == uneven.frames,
              whole.kinds == bytewise.kinds, whole.error?.kind == bytewise.error?.kind,
              whole.error?.kind == uneven.error?.kind
        else { fatalError("framing depends on how the input was split") }  // trap-ok: libFuzzer reports a broken invariant as a crash
        // Invariant 3: a server stream read in pieces (streamsLongLines) frames as it does whole,
        // and breaks where it breaks whole. The error may be named differently (a NUL found in a
        // piece before the line is known to be too long), and a NUL in a piece of the line the
        // input ends in is found before that line ends (whole, the line is merely incomplete).
        if peer == .server {
            let streamed = runStreaming(data, readSizes: [seed % 29 + 1, seed % 5 + 17, 40])
            let complete = whole.frames.reduce(0) { $0 + $1.count }
            let nulInTail = whole.error == nil && streamed.error?.kind == .nulByte
                && (streamed.error?.offset ?? 0) >= complete
            guard streamed.frames == whole.frames, streamed.kinds == whole.kinds,
                  (streamed.error == nil) == (whole.error == nil) || nulInTail
            else { fatalError("a stream read in pieces framed differently") }  // trap-ok: libFuzzer reports a broken invariant as a crash
        }
        // Invariant 2: frames are exactly the input's bytes, in order.
        let joined = whole.frames.flatMap { $0 }
        guard joined.count <= data.count, Array(data[0..<joined.count]) == joined else {
            fatalError("re-emitted frames differ from the input")  // trap-ok: libFuzzer reports a broken invariant as a crash
        }
    }
    return 0
}

#if SLUICE_LIBFUZZER
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<CInt>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt
) -> CInt
#endif

/// With libFuzzer (`-DSLUICE_LIBFUZZER`, see scripts/fuzz) the entry point
/// hands over to libFuzzer's driver; built normally it runs the fuzz function
/// over the files named as arguments, to reproduce a crash the fuzzer saved.
@main
struct FuzzMain {
    static func main() {
        #if SLUICE_LIBFUZZER
        var argc = CommandLine.argc
        var argv = CommandLine.unsafeArgv
        exit(LLVMFuzzerRunDriver(&argc, &argv, fuzzOneInput))
        #else
        for path in CommandLine.arguments.dropFirst() {
            guard let file = fopen(path, "rb") else {
                print("cannot open \(path)")
                exit(1)
            }
            var bytes: [UInt8] = []
            var chunk = [UInt8](repeating: 0, count: 65536)
            while true {
                let n = fread(&chunk, 1, chunk.count, file)
                if n <= 0 { break }
                bytes.append(contentsOf: chunk[0..<n])
            }
            fclose(file)
            _ = bytes.withUnsafeBufferPointer { fuzzOneInput($0.baseAddress, $0.count) }
            print("\(path): ok")
        }
        #endif
    }
}
