/// A member's step in a group of several processes (data parallelism), and
/// the one place that knows which collective calls training makes, and in
/// what order.
///
/// Each member holds streams `group.streams(ofBatch: B)` of every batch. A
/// step: each computes the gradient of its streams, the group sums the
/// gradients, and every member divides by N, clips and takes the same Adam
/// step, so the weights stay identical (compared by hash at every
/// validation). Validation is shared out and summed the same way. Member 0
/// alone writes the run's files, with the whole batch's carried state
/// gathered from every member. Every failure is agreed on: a member whose
/// set-up or files fail makes the others stop with `.otherProcessFailed`,
/// and a loss or gradient that is not finite anywhere is not finite
/// everywhere (it is summed).
///
/// The calls, in order, each made by every member:
/// - set-up: `countFailures` (did any member's set-up fail?), then
///   `ranksDiffering` on a hash of the text;
/// - start of `run`: `countFailures` after member 0 opens the metrics file;
/// - every iteration: `sum` of the gradients, `sum` of the loss, `sum` of
///   the stop requests; then `countFailures` after member 0 appends the
///   metrics;
/// - every validation, between the stop requests and the metrics:
///   `sum` of the validation loss, `ranksDiffering` on the weights' hash,
///   `gather` of the carried state.
struct ProcessGroupStep: TrainingStep {
    /// What each member does alone.
    let local: SingleProcessStep
    /// The processes training together (more than one).
    let group: any ProcessGroup

    var processCount: Int { group.size }

    func train(on batch: Batch, iteration: Int, learningRate: Float, carried: inout RecurrentState) throws(TrainingError)
        -> StepOutcome
    {
        let own = try local.gradient(on: batch, iteration: iteration, carried: &carried)
        let start = ContinuousClock.now
        let gradients = local.model.gradients
        do { try group.sum(gradients.buffer) } catch { throw .processGroup(error) }
        let loss = try mean(own)
        let communication = (ContinuousClock.now - start).seconds
        let share = 1 / Float(group.size)
        for index in gradients.buffer.indices { gradients.buffer[index] *= share }
        let norm = try local.update(loss: loss, iteration: iteration, learningRate: learningRate)
        return StepOutcome(loss: loss, gradientNorm: norm, communicationSeconds: communication)
    }

    func stopRequested(_ requestedHere: Bool) throws(TrainingError) -> Bool {
        do { return try group.sum([requestedHere ? 1 : 0])[0] > 0 } catch { throw .processGroup(error) }
    }

    /// Each member evaluates its own streams and the group averages them
    /// (the shares are equal, so this is the mean over all streams).
    func validationLoss() throws(TrainingError) -> Float {
        let loss = try mean(try local.ownValidationLoss())
        guard loss.isFinite else { throw .model(.nonFinite(.loss(loss))) }
        return loss
    }

    func checkpointState(of carried: RecurrentState, iteration: Int) throws(TrainingError) -> RecurrentState? {
        // The same summed gradient, clip and Adam arithmetic: the weights
        // must be identical on every member.
        let differing: [Int]
        do { differing = try group.ranksDiffering(local.model.parameterHash) } catch { throw .processGroup(error) }
        if !differing.isEmpty { throw .processesDisagree(iteration: iteration, ranks: differing) }
        let values: [Float]
        do {
            values = try carried.values.withUnsafeBufferPointer { (own) throws(ProcessGroupError) in try group.gather(own) }
        } catch {
            throw .processGroup(error)
        }
        guard group.rank == 0 else { return nil }
        let share = carried.values.count
        let parts = (0..<group.size).map { member in
            RecurrentState(values: Array(values[member * share..<(member + 1) * share]), batchSize: carried.batchSize)
        }
        return RecurrentState(joining: parts, configuration: local.model.configuration)
    }

    func recording(_ write: () throws(TrainingError) -> Void) throws(TrainingError) {
        var failure: TrainingError? = nil
        do { try write() } catch { failure = error }
        try Self.agree(failed: failure != nil, group: group)
        if let failure { throw failure }
    }

    /// The mean of `value` over the group's members.
    private func mean(_ value: Float) throws(TrainingError) -> Float {
        do { return Float(try group.sum([Double(value)])[0] / Double(group.size)) } catch { throw .processGroup(error) }
    }

    // MARK: - Set-up

    /// Every member's set-up outcome, agreed: this member's own error if it
    /// failed, `.otherProcessFailed` if only another did, and
    /// `.processesDisagreeOnText` when the members' texts differ. A run
    /// directory this member opened is abandoned on any failure. With one
    /// process, its own outcome.
    static func agree(on outcome: Result<TrainingSetUp, TrainingError>, group: any ProcessGroup, run: RunDirectory?)
        throws(TrainingError) -> TrainingSetUp
    {
        do {
            try agree(failed: (try? outcome.get()) == nil, group: group)
            let setUp = try outcome.get()
            try agreeOnText(setUp, group: group)
            return setUp
        } catch {
            run?.abandon()
            throw error
        }
    }

    /// Every member must train on the same text (a copy of the corpus on
    /// each host): compares the fingerprints and lengths.
    /// - Throws: `.processesDisagreeOnText` naming the members whose text differs from member 0's.
    private static func agreeOnText(_ setUp: TrainingSetUp, group: any ProcessGroup) throws(TrainingError) {
        guard group.size > 1 else { return }
        var hash = FNV1a()
        hash.add(UInt32(truncatingIfNeeded: setUp.corpusLength))
        hash.add(UInt32(truncatingIfNeeded: setUp.corpusLength >> 32))
        for character in setUp.corpusFingerprint.utf8 { hash.add(UInt32(character)) }
        let differing: [Int]
        do { differing = try group.ranksDiffering(hash.hash) } catch { throw .processGroup(error) }
        if !differing.isEmpty { throw .processesDisagreeOnText(ranks: differing) }
    }

    /// Throws `.otherProcessFailed` on every member that did not fail when
    /// any member did (each then throws its own error); returns when none
    /// did. Every member calls it at the same point.
    private static func agree(failed: Bool, group: any ProcessGroup) throws(TrainingError) {
        let failures: Int
        do { failures = try group.countFailures(failed) } catch { throw .processGroup(error) }
        if failures > 0 && !failed { throw .otherProcessFailed(count: failures) }
    }
}
