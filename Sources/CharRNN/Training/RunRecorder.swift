import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// What a training run leaves behind: its metrics file, its loss chart and,
/// at every validation, a checkpoint (which may become the run's best) and
/// the pruning that follows it.
///
/// The recorder decides what is written and when; the `RunDirectory` it
/// writes into keeps the files' names and rules (the lock, the run's
/// identity, best-first atomic saves, which files pruning may remove).
/// Without a directory (no output asked for, or a member of a process group
/// other than 0) it keeps the loss history and writes nothing.
final class RunRecorder {
    /// Where the run's files go; `nil` writes none.
    let directory: RunDirectory?
    /// What every checkpoint describes besides the model's tensors.
    private let run: RunFacts
    /// The losses so far, for the chart.
    private var history = LossHistory()
    /// The checkpoint written last, if any.
    private(set) var lastCheckpoint: URL? = nil
    /// The metrics file's descriptor (appending) once `begin` opened it; -1 otherwise.
    private var metricsDescriptor: Int32 = -1

    /// The facts of a run that every checkpoint records.
    private struct RunFacts {
        /// The run's options (their metadata goes into every checkpoint).
        let options: TrainingOptions
        /// The corpus's alphabet.
        let vocabulary: Vocabulary
        /// The run's identity.
        let runID: String
        /// Characters in the corpus.
        let corpusCharacters: Int
        /// The corpus's fingerprint (a resumed run must see the same text).
        let corpusFingerprint: String
        /// Training batches per epoch.
        let trainingBatches: Int
    }

    /// A recorder writing into `directory` (if any) for the run `setUp` prepared.
    init(directory: RunDirectory?, setUp: TrainingSetUp) {
        self.directory = directory
        self.run = RunFacts(
            options: setUp.options, vocabulary: setUp.vocabulary, runID: setUp.runID, corpusCharacters: setUp.corpusLength,
            corpusFingerprint: setUp.corpusFingerprint, trainingBatches: setUp.batches.trainingBatchCount)
    }

    deinit {
        if metricsDescriptor >= 0 { Glibc.close(metricsDescriptor) }
    }

    /// Takes the directory's lock (again, if it was released) and opens the
    /// metrics file for a run that continues after `iteration` (0 for a new
    /// run): the records it keeps, those up to and including `iteration`,
    /// start the loss history. Records past it, which a run interrupted
    /// after its last checkpoint wrote, are removed (the file is replaced
    /// atomically), so the resumed run's records follow without duplicates.
    func begin(after iteration: Int) throws(TrainingError) {
        do throws(RunDirectoryError) { try openMetrics(after: iteration) } catch { throw .runDirectory(error) }
    }

    /// `begin`'s work, with the directory's own errors.
    private func openMetrics(after iteration: Int) throws(RunDirectoryError) {
        guard let directory else { return }
        try directory.lock()
        let file = directory.url.appendingPathComponent(RunDirectory.metricsName)
        var kept: [MetricsRecord] = []
        if FileManager.default.fileExists(atPath: file.path) {
            // Records are ASCII; bytes that are not UTF-8 (a torn write) only
            // spoil their own line, which is then dropped.
            guard let data = FileManager.default.contents(atPath: file.path) else {
                throw .cannotRead(path: file.path, reason: String(cString: strerror(errno)))
            }
            let text = String(decoding: data, as: UTF8.self)
            kept = MetricsRecord.records(inJSONLines: text).filter { $0.iteration <= iteration }
            let keptText = kept.map { $0.jsonLine + "\n" }.joined()
            if keptText != text {
                do { try AtomicFile.write(Array(keptText.utf8), to: file) } catch {
                    throw .cannotWrite(path: file.path, reason: error.problem.description)
                }
            }
        }
        for record in kept { history.add(record) }
        if metricsDescriptor >= 0 { Glibc.close(metricsDescriptor) }
        metricsDescriptor = open(file.path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o644)
        guard metricsDescriptor >= 0 else { throw .cannotWrite(path: file.path, reason: String(cString: strerror(errno))) }
    }

    /// Closes the metrics file and releases the directory's lock; the files stay.
    func end() {
        if metricsDescriptor >= 0 { Glibc.close(metricsDescriptor) }
        metricsDescriptor = -1
        directory?.close()
    }

    /// Adds `records` to the history and appends them to the metrics file, as one write.
    func append(_ records: [MetricsRecord]) throws(TrainingError) {
        for record in records { history.add(record) }
        do throws(RunDirectoryError) { try writeMetrics(records) } catch { throw .runDirectory(error) }
    }

    /// Appends `records` to the metrics file, as one write.
    private func writeMetrics(_ records: [MetricsRecord]) throws(RunDirectoryError) {
        guard let directory, metricsDescriptor >= 0, !records.isEmpty else { return }
        let bytes = Array(records.map { $0.jsonLine + "\n" }.joined().utf8)
        var offset = 0
        while offset < bytes.count {
            let n = bytes[offset...].withUnsafeBytes { Glibc.write(metricsDescriptor, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else {
                let path = directory.url.appendingPathComponent(RunDirectory.metricsName).path
                throw .cannotWrite(path: path, reason: n < 0 ? String(cString: strerror(errno)) : "nothing written")
            }
            offset += n
        }
    }

    /// At a validation: redraws the loss chart, writes a checkpoint of
    /// `model` at `progress` holding `carried` (the whole batch's carried
    /// state) straight from the model's blocks, and prunes to the options'
    /// `keepBest`. Returns the checkpoint written (`nil` without a directory).
    func checkpoint(
        _ model: Model, progress: RunProgress, carried: RecurrentState
    ) throws(TrainingError) -> RunDirectory.Saved? {
        guard let directory else { return nil }
        let chart = LossChart(curves: [history.curve(name: run.options.summary)], title: "Loss: \(directory.url.lastPathComponent)")
        let file = directory.url.appendingPathComponent(RunDirectory.chartName)
        do { try AtomicFile.write(Array(chart.svg().utf8), to: file) } catch {
            throw .runDirectory(.cannotWrite(path: file.path, reason: error.problem.description))
        }
        // Never write weights that are not numbers (the step that would make
        // them so stops training first; this is the last line of defence).
        guard model.parametersAreFinite else { throw .diverged(iteration: progress.iteration, .weights) }
        let metadata = Checkpoint.fullMetadata(
            run.options.metadata.merging(progress.metadata) { _, new in new }, configuration: model.configuration,
            vocabulary: run.vocabulary, optimizerStep: model.optimizerStep)
        let saved: Result<RunDirectory.Saved, RunDirectoryError> = carried.values.withUnsafeBufferPointer { values in
            let tensors = Checkpoint.tensors(
                configuration: model.configuration, parameters: UnsafeBufferPointer(model.parameters.buffer),
                moments: UnsafeBufferPointer(model.optimizerState.buffer), carried: (values, carried.batchSize))
            return Result { () throws(RunDirectoryError) in
                try directory.save(progress: progress, hiddenSize: run.options.hiddenSize) { (sink) throws(FileSink.Failure) in
                    try SafeTensors.write(tensors: tensors, metadata: metadata, to: sink)
                }
            }
        }
        do throws(RunDirectoryError) {
            let checkpoint = try saved.get()
            lastCheckpoint = checkpoint.url
            if let keep = run.options.keepBest { try directory.prune(keeping: keep) }
            return checkpoint
        } catch {
            throw .runDirectory(error)
        }
    }

    /// The progress a checkpoint at this point of the run records.
    func progress(
        _ position: Trainer.Progress, epoch: Int, validationLoss: Float, trainingLoss: Float, learningRate: Float
    ) -> RunProgress {
        RunProgress(
            runID: run.runID, iteration: position.iteration, epoch: epoch, validationLoss: validationLoss,
            trainingLoss: trainingLoss, bestValidationLoss: position.bestValidation, epochLossSum: position.epochLossSum,
            trainingBatches: run.trainingBatches, corpusCharacters: run.corpusCharacters, corpusFingerprint: run.corpusFingerprint,
            learningRate: learningRate, validationsSinceBest: position.validationsSinceBest)
    }
}
