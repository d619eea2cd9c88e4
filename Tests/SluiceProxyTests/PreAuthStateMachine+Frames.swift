import IMAPWire
import NIOCore
@testable import SluiceProxy

/// Frames `text` as the client framer would, feeding each frame to `machine`
/// (the pre-auth tests and the bearer-login tests).
func send(_ text: String, to machine: inout PreAuthStateMachine) throws -> [PreAuthStateMachine.Action] {
    var decoder = IMAPFrameDecoder(peer: .client)
    var buffer = ByteBuffer(string: text)
    var actions: [PreAuthStateMachine.Action] = []
    while let frame = try decoder.next(&buffer) {
        actions.append(machine.receive(frame))
        if !machine.isAwaitingSASL { decoder.framer.authenticationEnded() }
    }
    return actions
}
