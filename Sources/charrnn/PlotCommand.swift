import ArgumentParser
import CharRNN
import Foundation

/// `charrnn plot`: several runs' loss curves in one SVG chart.
struct PlotCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plot",
        abstract: "Draw the training and validation loss of one or more runs into one SVG chart.",
        discussion: """
            Each RUN is a run directory (its metrics.jsonl) or a metrics file. Runs get one colour \
            each, labelled with the directory's name and the run's model and schedule (from its \
            latest checkpoint) unless --label is given. --reference notebook adds the original \
            notebook's validation losses on anna.txt. The chart goes to --out, or to standard \
            output when it is not a terminal. An existing file is replaced only if it is a chart \
            charrnn drew.
            """)

    @Argument(help: "Run directories (or metrics.jsonl files).")
    var runs: [String]

    @Option(name: .long, help: "The SVG file to write.")
    var out: String?

    @Option(name: .long, help: "A reference curve to draw in black: notebook (the original notebook's run on anna.txt).")
    var reference: String?

    @Option(name: .long, help: "The chart's title. (default: Loss)")
    var title = "Loss"

    @Option(name: .long, help: "A legend label, once per run in order (default: the directory's name and the run's settings).")
    var label: [String] = []

    func run() throws {
        do {
            if runs.isEmpty { throw UsageError("give at least one run directory") }
            if label.count > runs.count {
                throw UsageError("--label given \(label.count) times for \(runs.count) runs")
            }
            var referenceCurve: LossChart.Curve?
            if let reference {
                guard reference == "notebook" else { throw UsageError("--reference must be 'notebook' (got '\(reference)')") }
                referenceCurve = .notebook
            }
            var curves: [LossChart.Curve] = []
            for (index, path) in runs.enumerated() {
                let (file, directory) = try metricsFile(path)
                let records = try MetricsRecord.records(contentsOf: file)
                guard !records.isEmpty else { throw UsageError("'\(file.path)' holds no metrics records") }
                let name = index < label.count ? label[index] : defaultLabel(directory)
                curves.append(LossChart.Curve(name: name, records: records))
            }
            let svg = LossChart(curves: curves, reference: referenceCurve, title: title).svg()
            try write(svg)
        } catch {
            throw fail(error)
        }
    }

    /// The metrics file of `path` (a run directory or the file itself) and the run's directory.
    private func metricsFile(_ path: String) throws -> (URL, URL) {
        let url = URL(fileURLWithPath: path)
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory) else {
            throw UsageError("'\(path)' does not exist")
        }
        if isDirectory.boolValue {
            let file = url.appendingPathComponent(RunDirectory.metricsName)
            guard FileManager.default.fileExists(atPath: file.path) else {
                throw UsageError("'\(path)' has no \(RunDirectory.metricsName) (runs write it from this version on)")
            }
            return (file, url)
        }
        return (url, url.deletingLastPathComponent())
    }

    /// "name: 2 × 512 LSTM, Adam 0.001 constant, keep 0.5" from the run's latest checkpoint, or the name alone.
    private func defaultLabel(_ directory: URL) -> String {
        let name = directory.standardizedFileURL.lastPathComponent
        guard let latest = try? RunDirectory.latest(in: directory),
            let metadata = try? Checkpoint.metadata(of: latest.url),
            let options = try? TrainingOptions(checkpointMetadata: metadata)
        else { return name }
        return "\(name): \(options.summary)"
    }

    /// Writes the chart to --out (atomically, replacing only a chart charrnn
    /// drew) or to standard output when that is not a terminal.
    private func write(_ svg: String) throws {
        guard let out else {
            guard isatty(STDOUT_FILENO) == 0 else {
                throw UsageError("give --out FILE.svg (or redirect standard output to a file)")
            }
            FileHandle.standardOutput.write(Data(svg.utf8))
            return
        }
        let url = URL(fileURLWithPath: out)
        if let handle = FileHandle(forReadingAtPath: url.path) {
            let head = String(decoding: handle.readData(ofLength: 200), as: UTF8.self)
            try? handle.close()
            guard head.contains("<!-- charrnn loss chart -->") else {
                throw UsageError("--out '\(out)' exists and is not a chart charrnn drew; choose another name")
            }
        }
        do {
            try Data(svg.utf8).write(to: url, options: .atomic)
        } catch {
            throw UsageError("cannot write --out '\(out)': \((error as NSError).localizedDescription)")
        }
    }
}
