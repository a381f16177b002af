/// A named starting point for a run's options: the notebook's settings, or
/// a recipe chosen for the best model in a fixed time. Any option set after
/// it (a flag of `charrnn train`) still overrides it.
///
/// The figures behind each are in docs/PERFORMANCE.md ("Time to quality on
/// two cores").
public enum TrainingPreset: String, Sendable, CaseIterable, LosslessStringConvertible {
    /// The original notebook's run: `TrainingOptions()`.
    case notebook
    /// The lowest validation loss found for about 15 minutes on two cores:
    /// 2 × 512 GRU, batch 50 × 100, no dropout, Adam 0.004 warmed up over
    /// 100 iterations and brought down along a cosine to 0 at iteration
    /// 1,500 (7.5 million characters; 14 minutes on two cores of an AMD
    /// EPYC Zen 3). Chosen on anna.txt (2 MB): a much smaller text is seen
    /// more often in those iterations and may want dropout back
    /// (`keepProbability`), a larger one more iterations.
    case fast

    /// The preset named `description` (`notebook`, `fast`).
    public init?(_ description: String) { self.init(rawValue: description) }

    /// The preset's name.
    public var description: String { rawValue }

    /// The options the preset stands for.
    public var options: TrainingOptions {
        var options = TrainingOptions()
        switch self {
        case .notebook:
            break
        case .fast:
            options.cell = .gru
            options.batchSize = 50
            options.keepProbability = 1
            options.learningRate = 0.004
            options.learningRateSchedule = .cosine
            options.warmupIterations = 100
            options.maxIterations = 1500
            options.saveEvery = 250
        }
        return options
    }
}
