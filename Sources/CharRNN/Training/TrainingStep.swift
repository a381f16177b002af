/// What the training loop asks of the processes that train one model: a
/// step, a validation, whether to stop, the state a checkpoint keeps, and
/// the writing of the run's files, each agreed on where there are several
/// processes. The loop calls these in the same order on every member; it
/// never asks how many there are.
///
/// `SingleProcessStep` is one process on its own; `ProcessGroupStep` is a
/// member of a group of several, and owns every collective call and its order.
protocol TrainingStep {
    /// How many processes take the step together.
    var processCount: Int { get }
    /// One optimisation step on `batch`: the gradient of the whole batch
    /// (carrying `carried` across it), clipping and Adam at `learningRate`.
    /// - Throws: `.diverged` when the loss or the gradient is not finite.
    func train(on batch: Batch, iteration: Int, learningRate: Float, carried: inout RecurrentState) throws(TrainingError)
        -> StepOutcome
    /// Whether the run stops after this iteration: `requestedHere`, or a
    /// request that reached any other member.
    func stopRequested(_ requestedHere: Bool) throws(TrainingError) -> Bool
    /// The mean loss over the whole validation split.
    func validationLoss() throws(TrainingError) -> Float
    /// At a validation: checks that every copy of the model is the same, and
    /// returns the whole batch's carried state where the run's files are
    /// written (`nil` on the other members).
    func checkpointState(of carried: RecurrentState, iteration: Int) throws(TrainingError) -> RecurrentState?
    /// Runs `write` (the run recorder's work) and agrees on its outcome, so a
    /// member whose files fail does not leave the others waiting.
    func recording(_ write: () throws(TrainingError) -> Void) throws(TrainingError)
}

/// What one training step reports.
struct StepOutcome {
    /// The mean loss over the whole batch.
    var loss: Float
    /// The gradient's norm before clipping.
    var gradientNorm: Float
    /// Seconds spent combining the members' gradients (several processes only).
    var communicationSeconds: Double?
}

/// A step of one process on its own; also each member's own part of a
/// group's step.
struct SingleProcessStep: TrainingStep {
    /// The model being trained.
    let model: Model
    /// The batches this process holds.
    let batches: BatchedCorpus
    /// The run's options.
    let options: TrainingOptions

    func train(on batch: Batch, iteration: Int, learningRate: Float, carried: inout RecurrentState) throws(TrainingError)
        -> StepOutcome
    {
        let loss = try gradient(on: batch, iteration: iteration, carried: &carried)
        let norm = try update(loss: loss, iteration: iteration, learningRate: learningRate)
        return StepOutcome(loss: loss, gradientNorm: norm, communicationSeconds: nil)
    }

    /// The gradient of this process's streams of `batch` into the model's
    /// gradient block; returns their mean loss.
    func gradient(on batch: Batch, iteration: Int, carried: inout RecurrentState) throws(TrainingError) -> Float {
        do {
            return try model.computeGradients(
                on: batch, state: &carried, keepProbability: options.keepProbability,
                dropoutSeed: options.dropoutSeed(iteration: iteration), precision: options.precision)
        } catch {
            throw .model(error)
        }
    }

    /// Clipping and Adam with the gradient block as it stands; `loss` is the
    /// whole batch's. Returns the gradient's norm before clipping.
    /// - Throws: `.diverged` when `loss` or the gradient is not finite.
    func update(loss: Float, iteration: Int, learningRate: Float) throws(TrainingError) -> Float {
        guard loss.isFinite else { throw .diverged(iteration: iteration, .loss(loss)) }
        do {
            return try model.applyGradients(clipNorm: options.gradientClip, adam: AdamOptions(learningRate: learningRate))
        } catch .nonFinite(.gradientNorm(let norm, _)) {
            throw .diverged(iteration: iteration, .gradientNorm(norm, loss: loss))
        } catch .nonFinite(let value) {
            throw .diverged(iteration: iteration, value)
        } catch {
            throw .model(error)
        }
    }

    /// The mean loss over this process's validation streams, not finite if
    /// the model's is not.
    func ownValidationLoss() throws(TrainingError) -> Float {
        do {
            return try Trainer.validationLoss(of: model, on: batches)
        } catch .nonFinite(.loss(let value)) {
            return value
        } catch {
            throw .model(error)
        }
    }

    func validationLoss() throws(TrainingError) -> Float {
        let loss = try ownValidationLoss()
        guard loss.isFinite else { throw .model(.nonFinite(.loss(loss))) }
        return loss
    }

    var processCount: Int { 1 }

    func stopRequested(_ requestedHere: Bool) throws(TrainingError) -> Bool { requestedHere }

    func checkpointState(of carried: RecurrentState, iteration: Int) throws(TrainingError) -> RecurrentState? { carried }

    func recording(_ write: () throws(TrainingError) -> Void) throws(TrainingError) { try write() }
}

extension TrainingOptions {
    /// The dropout seed of an iteration: a pure function of the run's seed
    /// and the iteration number, so a run is reproducible and resumable.
    func dropoutSeed(iteration: Int) -> UInt64 {
        var z = seed &+ 0xD1B5_4A32_D192_ED03 &* UInt64(iteration)
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

extension Trainer {
    /// Mean loss of `model` over the validation split of the streams `batches` holds, as training reports it.
    public static func validationLoss(of model: Model, on batches: BatchedCorpus) throws(ModelError) -> Float {
        var state = RecurrentState(configuration: model.configuration, batchSize: batches.streams.count)
        var sum: Double = 0
        for index in 0..<batches.validationBatchCount {
            sum += Double(try model.loss(on: batches.validationBatch(index), state: &state))
        }
        return Float(sum / Double(batches.validationBatchCount))
    }
}
