/// How a client logged in: the `mechanism` label of `sluice_logins_total`
/// (and nginx's `Auth-Method`). The `LOGIN` command and SASL LOGIN are both
/// `login`.
public enum LoginMechanism: String, Sendable, CaseIterable {
    case login, plain, xoauth2, oauthbearer
    /// Any other SASL mechanism (transparent mode relays what it cannot read).
    case other
}
