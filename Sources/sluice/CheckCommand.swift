import ArgumentParser
import Logging
import SluiceConfig
import SluiceProxy

/// `sluice check`: validate a configuration and exit non-zero on any problem
/// (like `nginx -t`).
struct CheckCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "Check a configuration (file and flags) without running the proxy.",
        discussion: "Prints every problem as FILE:LINE: KEY: message and exits with status 1 if there is any."
    )

    @OptionGroup var options: ConfigurationOptions

    func run() throws {
        let configuration: ProxyConfiguration
        do {
            configuration = try options.configuration()
        } catch {
            printError(error.description)
            throw ExitCode(1)
        }
        // Build what `run` builds (TLS contexts, the router) without binding.
        do {
            _ = try ProxyServer(configuration: configuration, logger: Logger(label: "sluice.check"))
        } catch {
            printError("\(options.config ?? "configuration"): \(error)")
            throw ExitCode(1)
        }
        print("\(options.config ?? "configuration"): OK (\(configuration.listeners.count) listener(s))")
    }
}
