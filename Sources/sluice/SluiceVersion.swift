/// What `sluice --version` prints. Set at release time (scripts/install
/// prints it after installing).
enum SluiceVersion {
    static let text = "0.6.0"
}
