import ArgumentParser

@main
struct Sluice: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sluice",
        abstract: "A programmable IMAP proxy.",
        subcommands: [ParseCommand.self]
    )
}
