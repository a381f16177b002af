import Foundation

/// A chart of training and validation loss against iterations, as SVG: one
/// colour per run, validation as a line with dots, training as a thinner
/// line of the mean batch loss over short spans, each run's best
/// validation marked, and a legend. `Trainer` writes one per run directory
/// (`loss.svg`); `charrnn plot` lays several runs over each other.
public struct LossChart: Sendable {
    /// A point: an iteration and a loss.
    public struct Point: Sendable, Equatable {
        /// Iteration, from 1 over the whole run.
        public var iteration: Int
        /// Loss in nats per character.
        public var loss: Float

        /// Bundles the values.
        public init(iteration: Int, loss: Float) {
            self.iteration = iteration
            self.loss = loss
        }
    }

    /// One run's curves.
    public struct Curve: Sendable {
        /// The legend's label.
        public var name: String
        /// Batch training losses (averaged over spans when drawn).
        public var training: [Point]
        /// Validation losses.
        public var validation: [Point]

        /// Bundles the values.
        public init(name: String, training: [Point], validation: [Point]) {
            self.name = name
            self.training = training
            self.validation = validation
        }

        /// A run's curves from its metrics records.
        public init(name: String, records: [MetricsRecord]) {
            self.name = name
            training = records.compactMap { record in
                record.kind == .iteration ? record.loss.map { Point(iteration: record.iteration, loss: $0) } : nil
            }
            validation = records.compactMap { record in
                record.kind == .validation ? record.validationLoss.map { Point(iteration: record.iteration, loss: $0) } : nil
            }
        }

        /// The lowest validation loss (the earliest, on a tie).
        public var best: Point? {
            validation.reduce(nil) { best, point in best.map { point.loss < $0.loss ? point : $0 } ?? point }
        }

        /// The validation losses the original notebook reported for its
        /// reference run on anna.txt (2 × 512 LSTM, batch 100 × 100, keep 0.5,
        /// Adam 0.001, 3,560 iterations).
        public static let notebook = Curve(
            name: "notebook (TensorFlow, Adam 0.001 constant)", training: [],
            validation: [(200, 2.432), (1000, 1.499), (1600, 1.305), (2000, 1.228), (2600, 1.170), (3000, 1.146), (3560, 1.1225)]
                .map { Point(iteration: $0.0, loss: $0.1) })
    }

    /// The runs, in legend order.
    public var curves: [Curve]
    /// A curve drawn in black (validation only), such as `Curve.notebook`.
    public var reference: Curve?
    /// The title above the chart.
    public var title: String

    /// Bundles the values.
    public init(curves: [Curve], reference: Curve? = nil, title: String = "Loss") {
        self.curves = curves
        self.reference = reference
        self.title = title
    }

    /// Colours for successive runs (Tableau 10).
    static let palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]

    /// Training losses are averaged over this many spans at most, so a long
    /// run draws a readable line (and a small file).
    static let trainingSpans = 300

    /// The chart as a standalone SVG document.
    public func svg(width: Int = 880, height: Int = 520) -> String {
        let all = curves + (reference.map { [$0] } ?? [])
        let left = 70.0
        let right = 20.0
        let top = 44.0
        let bottom = 56.0
        let plotWidth = Double(width) - left - right
        let plotHeight = Double(height) - top - bottom

        // Ranges. The top leaves out each run's first validation and the
        // first tenth of its training, where the loss falls from ln(V):
        // the part a reader compares is the long tail.
        let lastIteration = max(all.flatMap { $0.training.map(\.iteration) + $0.validation.map(\.iteration) }.max() ?? 1, 1)
        let trainingDrawn = curves.map { Self.spanMeans($0.training, spans: Self.trainingSpans) }
        var values =
            all.flatMap { $0.validation.map { Double($0.loss) } }
            + trainingDrawn.flatMap { $0.map { Double($0.loss) } }
        if values.isEmpty { values = [0, 1] }
        let low = values.min() ?? 0
        var tail = all.flatMap { $0.validation.dropFirst().map { Double($0.loss) } }
        for points in trainingDrawn { tail += points.dropFirst(points.count / 10).map { Double($0.loss) } }
        var high = (tail.max() ?? values.max()) ?? 1
        if high <= low { high = (values.max() ?? low) > low ? (values.max() ?? low) : low + 1 }
        let pad = (high - low) * 0.06
        let yAxis = Self.niceTicks(low: max(0, low - pad), high: high + pad)
        // The iteration axis ends just past the last iteration (no empty stretch), with round ticks inside it.
        var xAxis = Self.niceTicks(low: 0, high: Double(lastIteration))
        xAxis.high = Double(lastIteration) * 1.02  // room for the last markers
        xAxis.ticks = xAxis.ticks.filter { $0 <= xAxis.high }
        func x(_ iteration: Double) -> Double { left + (iteration - xAxis.low) / (xAxis.high - xAxis.low) * plotWidth }
        func y(_ loss: Double) -> Double { top + (yAxis.high - loss) / (yAxis.high - yAxis.low) * plotHeight }
        func f(_ value: Double) -> String { String(format: "%.1f", value) }

        var out = """
            <?xml version="1.0" encoding="UTF-8"?>
            <!-- charrnn loss chart -->
            <svg xmlns="http://www.w3.org/2000/svg" width="\(width)" height="\(height)" viewBox="0 0 \(width) \(height)" font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="12">
            <rect width="100%" height="100%" fill="white"/>
            <text x="\(f(left))" y="26" font-size="16" font-weight="bold">\(Self.escape(title))</text>
            <defs><clipPath id="plot"><rect x="\(f(left))" y="\(f(top))" width="\(f(plotWidth))" height="\(f(plotHeight))"/></clipPath></defs>

            """
        // Grid and axes.
        for tick in yAxis.ticks {
            out += "<line x1=\"\(f(left))\" y1=\"\(f(y(tick)))\" x2=\"\(f(left + plotWidth))\" y2=\"\(f(y(tick)))\" stroke=\"#e4e4e4\"/>\n"
            out += "<text x=\"\(f(left - 8))\" y=\"\(f(y(tick) + 4))\" text-anchor=\"end\">\(Self.label(tick, step: yAxis.step))</text>\n"
        }
        for tick in xAxis.ticks {
            out += "<line x1=\"\(f(x(tick)))\" y1=\"\(f(top))\" x2=\"\(f(x(tick)))\" y2=\"\(f(top + plotHeight))\" stroke=\"#f0f0f0\"/>\n"
            out += "<text x=\"\(f(x(tick)))\" y=\"\(f(top + plotHeight + 18))\" text-anchor=\"middle\">\(Self.label(tick, step: xAxis.step))</text>\n"
        }
        out += "<rect x=\"\(f(left))\" y=\"\(f(top))\" width=\"\(f(plotWidth))\" height=\"\(f(plotHeight))\" fill=\"none\" stroke=\"#555\"/>\n"
        out += "<text x=\"\(f(left + plotWidth / 2))\" y=\"\(f(Double(height) - 14))\" text-anchor=\"middle\">iteration</text>\n"
        out += "<text transform=\"translate(18 \(f(top + plotHeight / 2))) rotate(-90)\" text-anchor=\"middle\">loss (nats per character)</text>\n"

        // Curves: training under validation, the reference last.
        func polyline(_ points: [Point], color: String, widthPx: Double, opacity: Double, dash: String? = nil, kind: String) -> String {
            guard !points.isEmpty else { return "" }
            let coordinates = points.map { "\(f(x(Double($0.iteration)))),\(f(y(Double($0.loss))))" }.joined(separator: " ")
            return "<polyline class=\"\(kind)\" points=\"\(coordinates)\" fill=\"none\" stroke=\"\(color)\" stroke-width=\"\(widthPx)\" "
                + "stroke-opacity=\"\(opacity)\" stroke-linejoin=\"round\"" + (dash.map { " stroke-dasharray=\"\($0)\"" } ?? "") + "/>\n"
        }
        out += "<g clip-path=\"url(#plot)\">\n"
        for index in curves.indices {
            out += polyline(trainingDrawn[index], color: Self.palette[index % Self.palette.count], widthPx: 1.2, opacity: 0.45, kind: "training")
        }
        for (index, curve) in curves.enumerated() {
            let color = Self.palette[index % Self.palette.count]
            out += polyline(curve.validation, color: color, widthPx: 2.2, opacity: 1, kind: "validation")
            for point in curve.validation where curve.validation.count <= 60 {
                out += "<circle cx=\"\(f(x(Double(point.iteration))))\" cy=\"\(f(y(Double(point.loss))))\" r=\"2.6\" fill=\"\(color)\"/>\n"
            }
        }
        if let reference {
            out += polyline(reference.validation, color: "#000", widthPx: 1.6, opacity: 0.85, dash: "6 4", kind: "reference")
            for point in reference.validation {
                out +=
                    "<rect x=\"\(f(x(Double(point.iteration)) - 3))\" y=\"\(f(y(Double(point.loss)) - 3))\" width=\"6\" height=\"6\" fill=\"#000\"/>\n"
            }
        }
        out += "</g>\n"
        // Best points, labelled, after the curves so nothing covers them.
        for (index, curve) in curves.enumerated() {
            guard let best = curve.best else { continue }
            let color = Self.palette[index % Self.palette.count]
            let cx = x(Double(best.iteration))
            let cy = y(Double(best.loss))
            out += "<circle class=\"best\" cx=\"\(f(cx))\" cy=\"\(f(cy))\" r=\"6\" fill=\"white\" stroke=\"\(color)\" stroke-width=\"2.4\"/>\n"
            let anchorEnd = cx > left + plotWidth * 0.7
            out +=
                "<text x=\"\(f(cx + (anchorEnd ? -10 : 10)))\" y=\"\(f(cy + 16 + Double(index) * 14))\" fill=\"\(color)\" "
                + "text-anchor=\"\(anchorEnd ? "end" : "start")\">best \(String(format: "%.4f", best.loss)) at \(best.iteration)</text>\n"
        }

        // Legend, top right inside the plot.
        let entries =
            curves.enumerated().map { ($0.element.name, Self.palette[$0.offset % Self.palette.count], false) }
            + (reference.map { [($0.name, "#000", true)] } ?? [])
        let legendWidth = 40 + 7.0 * Double(entries.map(\.0.count).max() ?? 10)
        let legendHeight = 20.0 * Double(entries.count) + 30
        let lx = left + plotWidth - legendWidth - 10
        let ly = top + 10
        out +=
            "<g class=\"legend\"><rect x=\"\(f(lx))\" y=\"\(f(ly))\" width=\"\(f(legendWidth))\" height=\"\(f(legendHeight))\" fill=\"white\" fill-opacity=\"0.9\" stroke=\"#ccc\"/>\n"
        for (row, entry) in entries.enumerated() {
            let ey = ly + 18 + Double(row) * 20
            out +=
                "<line x1=\"\(f(lx + 8))\" y1=\"\(f(ey - 4))\" x2=\"\(f(lx + 30))\" y2=\"\(f(ey - 4))\" stroke=\"\(entry.1)\" stroke-width=\"2.4\""
                + (entry.2 ? " stroke-dasharray=\"6 4\"" : "") + "/>\n"
            out += "<text x=\"\(f(lx + 36))\" y=\"\(f(ey))\">\(Self.escape(entry.0))</text>\n"
        }
        out +=
            "<text x=\"\(f(lx + 8))\" y=\"\(f(ly + legendHeight - 8))\" fill=\"#666\" font-size=\"11\">thick: validation · thin: training (mean over spans) · ring: best</text>\n"
        out += "</g>\n</svg>\n"
        return out
    }

    /// `points` averaged over at most `spans` equal runs of consecutive
    /// points (each drawn at its last iteration).
    static func spanMeans(_ points: [Point], spans: Int) -> [Point] {
        guard points.count > spans else { return points }
        let size = (points.count + spans - 1) / spans
        return stride(from: 0, to: points.count, by: size).map { start in
            let chunk = points[start..<min(start + size, points.count)]
            let mean = chunk.reduce(0.0) { $0 + Double($1.loss) } / Double(chunk.count)
            return Point(iteration: chunk.last?.iteration ?? 0, loss: Float(mean))
        }
    }

    /// An axis from `low` to `high` widened to round ticks (1, 2 or 5 × 10ⁿ apart, 4–10 of them).
    static func niceTicks(low: Double, high: Double) -> (low: Double, high: Double, step: Double, ticks: [Double]) {
        let span = max(high - low, 1e-9)
        let raw = span / 6
        let magnitude = pow(10, floor(log10(raw)))
        let step = [1.0, 2, 5, 10].map { $0 * magnitude }.first { $0 >= raw } ?? 10 * magnitude
        let start = floor(low / step) * step
        let end = ceil(high / step) * step
        let ticks = stride(from: start, through: end + step / 2, by: step).map { $0 }
        return (start, end, step, ticks)
    }

    /// A tick's label with as many decimals as the step needs.
    static func label(_ value: Double, step: Double) -> String {
        let decimals = max(0, Int(-floor(log10(step) + 1e-9)))
        return String(format: "%.\(decimals)f", value)
    }

    /// `text` with XML's special characters escaped.
    static func escape(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
    }
}

/// A run's losses as its chart needs them, in memory bounded whatever the
/// run's length: batch losses are summed over spans of consecutive
/// iterations whose length doubles whenever there would be more than
/// `2 × LossChart.trainingSpans` of them; validations are kept as they are.
struct LossHistory {
    private struct Span {
        var lastIteration: Int
        var sum: Double
        var count: Int
    }

    private var spans: [Span] = []
    private var spanLength = 1
    private var validation: [LossChart.Point] = []

    /// Adds a metrics record (an iteration's or a validation's).
    mutating func add(_ record: MetricsRecord) {
        switch record.kind {
        case .iteration:
            guard let loss = record.loss else { return }
            if let last = spans.last, last.count < spanLength {
                spans[spans.count - 1] = Span(lastIteration: record.iteration, sum: last.sum + Double(loss), count: last.count + 1)
            } else {
                spans.append(Span(lastIteration: record.iteration, sum: Double(loss), count: 1))
            }
            if spans.count > 2 * LossChart.trainingSpans {
                spans = stride(from: 0, to: spans.count, by: 2).map { index in
                    let pair = spans[index..<min(index + 2, spans.count)]
                    return Span(
                        lastIteration: pair.last?.lastIteration ?? 0, sum: pair.reduce(0) { $0 + $1.sum },
                        count: pair.reduce(0) { $0 + $1.count })
                }
                spanLength *= 2
            }
        case .validation:
            if let loss = record.validationLoss { validation.append(LossChart.Point(iteration: record.iteration, loss: loss)) }
        }
    }

    /// The curve to draw, labelled `name`.
    func curve(name: String) -> LossChart.Curve {
        LossChart.Curve(
            name: name, training: spans.map { LossChart.Point(iteration: $0.lastIteration, loss: Float($0.sum / Double($0.count))) },
            validation: validation)
    }
}
