import ArgumentParser

@main
struct Sluice: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sluice",
        abstract: "A programmable IMAP proxy.",
        subcommands: [RunCommand.self, CheckCommand.self, ParseCommand.self]
    )
}
