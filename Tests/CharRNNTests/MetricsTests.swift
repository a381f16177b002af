import Foundation
import Testing

@testable import CharRNN

#if canImport(FoundationXML)
    import FoundationXML
#endif

/// Protects the run directory's metrics file (its records and the resume
/// rule) and its loss chart.
@Suite("Metrics and charts")
struct MetricsTests {
    static let corpus = ResumeTests.corpus

    static func records(_ directory: URL) throws -> [MetricsRecord] {
        try MetricsRecord.records(contentsOf: directory.appendingPathComponent(RunDirectory.metricsName))
    }

    /// The records without their times, which differ from run to run.
    static func timeless(_ records: [MetricsRecord]) -> [MetricsRecord] {
        records.map { record in
            var record = record
            record.time = 0
            record.seconds = nil
            record.charactersPerSecond = nil
            return record
        }
    }

    @Test("A run writes one record per iteration and one per validation, with the values it reported")
    func recordsMatchTheRun() throws {
        let directory = try TemporaryDirectory()
        defer { directory.cleanUp() }
        let trainer = try Trainer(
            corpus: Self.corpus, options: ResumeTests.options(maxIterations: 12, saveEvery: 5),
            outputDirectory: directory.url)
        var reports: [IterationReport] = []
        var validations: [(Int, Float, Bool)] = []
        try trainer.run { event in
            switch event {
            case .iteration(let r): reports.append(r)
            case .validated(let i, let loss, let isBest): validations.append((i, loss, isBest))
            default: break
            }
        }
        let records = try Self.records(directory.url)
        let iterations = records.filter { $0.kind == .iteration }
        let validationRecords = records.filter { $0.kind == .validation }
        #expect(iterations.map(\.iteration) == Array(1...12))
        #expect(iterations.map(\.loss) == reports.map(\.batchLoss))
        #expect(iterations.map(\.runningLoss) == reports.map(\.runningLoss))
        #expect(iterations.map(\.gradientNorm) == reports.map(\.gradientNorm))
        #expect(iterations.allSatisfy { $0.learningRate == 0.001 && ($0.seconds ?? 0) > 0 && ($0.charactersPerSecond ?? 0) > 0 })
        #expect(iterations.allSatisfy { $0.epoch == ($0.iteration - 1) / 12 + 1 })
        #expect(validationRecords.map(\.iteration) == [5, 10, 12])
        #expect(validationRecords.map(\.validationLoss) == validations.map { Optional($0.1) })
        #expect(validationRecords.map(\.isBest) == validations.map { Optional($0.2) })
        for record in validationRecords {
            #expect(abs((record.bitsPerCharacter ?? 0) - (record.validationLoss ?? 0) / Float(M_LN2)) < 1e-6)
        }
        #expect(records.firstIndex { $0.kind == .validation && $0.iteration == 5 } == 5, "a validation follows its iteration")
        let times = records.map(\.time)
        #expect(zip(times, times.dropFirst()).allSatisfy { $0 <= $1 } && abs(times[0] - Date().timeIntervalSince1970) < 600)
    }

    @Test("Resuming replaces the records an interrupted run wrote past its checkpoint, leaving no duplicates")
    func resumeReplacesRecordsPastTheCheckpoint() throws {
        let directory = try TemporaryDirectory()
        defer { directory.cleanUp() }
        let whole = try Trainer(
            corpus: Self.corpus, options: ResumeTests.options(maxIterations: 16, saveEvery: 8),
            outputDirectory: directory.file("whole"))
        try whole.run()

        // A run that wrote records to 16 but whose resume point is 8 (as if it
        // had been killed before its checkpoint at 16), and a torn last line.
        let part = directory.file("part")
        let first = try Trainer(corpus: Self.corpus, options: ResumeTests.options(maxIterations: 16, saveEvery: 8), outputDirectory: part)
        try first.run()
        let resumePoint = try #require(try RunDirectory.list(part).checkpoints.first { $0.progress.iteration == 8 && !$0.isBest })
        let metricsFile = part.appendingPathComponent(RunDirectory.metricsName)
        let handle = try FileHandle(forWritingTo: metricsFile)
        handle.seekToEndOfFile()
        handle.write(Data("{\"kind\":\"iteration\",\"iter".utf8))
        try handle.close()
        #expect(try Self.records(part).count == 16 + 2)

        let resumed = try Trainer(resuming: try Checkpoint(contentsOf: resumePoint.url), corpus: Self.corpus, outputDirectory: part)
        try resumed.run()
        let records = try Self.records(part)
        #expect(try records.map(\.iteration) == Self.records(directory.file("whole")).map(\.iteration))
        #expect(
            Self.timeless(records) == Self.timeless(try Self.records(directory.file("whole"))),
            "the resumed run's file equals the uninterrupted run's, times aside")
        let text = try String(contentsOf: metricsFile, encoding: .utf8)
        #expect(text.hasSuffix("}\n") && !text.contains("\"iter\n"), "the torn line is gone")
    }

    @Test("The run directory's loss.svg is valid SVG with the run's training and validation curves and its best point")
    func chartHasTheCurves() throws {
        let directory = try TemporaryDirectory()
        defer { directory.cleanUp() }
        let trainer = try Trainer(
            corpus: Self.corpus, options: ResumeTests.options(maxIterations: 12, saveEvery: 4),
            outputDirectory: directory.url)
        try trainer.run()
        let svg = try String(contentsOf: directory.file(RunDirectory.chartName), encoding: .utf8)
        let chart = try ParsedChart(svg)
        #expect(chart.polylines["validation"]?.count == 1)
        #expect(chart.polylines["validation"]?.first?.count == 3, "one point per validation (4, 8, 12)")
        #expect(chart.polylines["training"]?.first?.count == 12, "one point per iteration for a short run")
        #expect(chart.bestMarkers == 1)
        #expect(chart.texts.contains { $0.contains("2 × 16 LSTM") }, "the legend names the run's model")
        let bestLoss = try #require(try Self.records(directory.url).compactMap(\.validationLoss).min())
        #expect(chart.texts.contains { $0.contains(String(format: "best %.4f", bestLoss)) })
    }

    @Test("A run's chart history stays bounded however long the run, and its spans average the batch losses exactly")
    func historyIsBounded() {
        var history = LossHistory()
        for iteration in 1...100_000 {
            history.add(
                .iteration(
                    iteration, epoch: 1, loss: Float(iteration % 2), runningLoss: 0, gradientNorm: 0,
                    learningRate: 0.001, seconds: 1, characters: 1))
        }
        history.add(.validation(100_000, epoch: 1, loss: 1.5, isBest: true))
        let curve = history.curve(name: "long")
        #expect(curve.training.count <= 2 * LossChart.trainingSpans && curve.training.count >= LossChart.trainingSpans)
        #expect(curve.training.allSatisfy { $0.loss == 0.5 }, "each span holds as many odd as even iterations")
        #expect(curve.training.last?.iteration == 100_000)
        #expect(curve.validation == [LossChart.Point(iteration: 100_000, loss: 1.5)])
    }

    @Test("A chart of several runs has one validation curve per run, a legend entry each, and the notebook's reference")
    func chartOfSeveralRuns() throws {
        func curve(_ name: String, _ offset: Float) -> LossChart.Curve {
            LossChart.Curve(
                name: name, training: (1...3000).map { .init(iteration: $0, loss: 3 - Float($0) / 2000 + offset) },
                validation: stride(from: 200, through: 3000, by: 200).map { .init(iteration: $0, loss: 2.8 - Float($0) / 2000 + offset) })
        }
        let svg = LossChart(curves: [curve("lstm <a&b>", 0), curve("gru", -0.1)], reference: .notebook, title: "Cells").svg()
        let chart = try ParsedChart(svg)
        #expect(chart.polylines["validation"]?.count == 2)
        #expect(chart.polylines["training"]?.allSatisfy { $0.count <= 300 } == true, "long runs are averaged over spans")
        #expect(chart.polylines["reference"]?.first?.count == LossChart.Curve.notebook.validation.count)
        #expect(chart.texts.contains("lstm <a&b>") && chart.texts.contains("gru"), "legend labels, escaped and read back")
        #expect(chart.texts.contains { $0.hasPrefix("notebook") })
        #expect(chart.bestMarkers == 2)
        // The lower run is drawn lower: SVG's y grows downwards.
        let ys = try #require(chart.polylines["validation"]).map { $0.map(\.1).reduce(0, +) }
        #expect(ys[1] > ys[0])
    }
}

/// The parts of a chart the tests check, read with an XML parser (so the
/// file must be well-formed): polylines by class, their points, texts, best markers.
final class ParsedChart: NSObject, XMLParserDelegate {
    var polylines: [String: [[(Double, Double)]]] = [:]
    var texts: [String] = []
    var bestMarkers = 0
    private var text: String?

    init(_ svg: String) throws {
        super.init()
        let parser = XMLParser(data: Data(svg.utf8))
        parser.delegate = self
        guard parser.parse() else { throw ChartError.notWellFormed(parser.parserError.map { "\($0)" } ?? "unknown") }
    }

    enum ChartError: Error { case notWellFormed(String) }

    func parser(
        _ parser: XMLParser, didStartElement element: String, namespaceURI: String?, qualifiedName: String?,
        attributes: [String: String] = [:]
    ) {
        switch element {
        case "polyline":
            let points = (attributes["points"] ?? "").split(separator: " ").map { pair -> (Double, Double) in
                let xy = pair.split(separator: ",").compactMap { Double($0) }
                return (xy.first ?? .nan, xy.last ?? .nan)
            }
            polylines[attributes["class"] ?? "", default: []].append(points)
        case "circle" where attributes["class"] == "best": bestMarkers += 1
        case "text": text = ""
        default: break
        }
    }

    func parser(_ parser: XMLParser, foundCharacters string: String) { text? += string }

    func parser(_ parser: XMLParser, didEndElement element: String, namespaceURI: String?, qualifiedName: String?) {
        if element == "text", let text { texts.append(text) }
        text = nil
    }
}
