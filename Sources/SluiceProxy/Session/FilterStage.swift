import SluiceFilters

/// The rules' part of a session: present only when some rule applies to the
/// user (`ProxySession.filters` is `nil` otherwise, and the relay then does
/// no filtering work at all).
struct FilterStage {
    /// The rules' filter chains for this user.
    let engine: FilterEngine
    /// A client command being collected for the filters (up to a streamed literal).
    var collectingCommand: CollectedFrame?
    /// A selected command whose literal streamed: its next parts are judged as they come.
    var continuingCommand: ContinuingCommand?
    /// Tags whose upstream answer the client must not see: a rule refused
    /// the command mid-way and answered it already (`ContinuingCommand`).
    var swallowedAnswers: Set<String> = []

    init(engine: FilterEngine) { self.engine = engine }
}
