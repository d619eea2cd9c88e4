/// How a client logged in: the `mechanism` label of `sluice_logins_total`
/// (and nginx's `Auth-Method`). The `LOGIN` command and SASL LOGIN are both
/// `login`.
public enum LoginMechanism: String, Sendable, CaseIterable {
    case login, plain, xoauth2, oauthbearer
}
