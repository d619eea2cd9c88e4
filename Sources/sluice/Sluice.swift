import ArgumentParser

@main
struct Sluice: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sluice",
        abstract: "A programmable IMAP proxy.",
        version: SluiceVersion.text,
        subcommands: [RunCommand.self, CheckCommand.self, ParseCommand.self]
    )
}
