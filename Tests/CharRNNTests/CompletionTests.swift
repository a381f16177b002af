import CharRNN
import Foundation
import Testing

/// Protects stop strings and log-probabilities: a completion is the text
/// generated without them cut before the first stop string, the same alone,
/// in a batch and through the scheduler; the log-probabilities are the
/// model's distribution after the temperature.
@Suite("Completions")
struct CompletionTests {
    static var generator: TextGenerator { SamplingTests.trained }

    static func completion(stop: [String] = [], logprobs: Int? = nil) -> CompletionOptions {
        var completion = CompletionOptions()
        completion.stop = stop
        completion.logprobs = logprobs
        return completion
    }

    /// Where `text` is cut by `stops`, found the plain way: the first
    /// character at which some stop string ends, less the longest stop string
    /// ending there; nil when none occurs.
    static func expectedCut(_ text: [Unicode.Scalar], stops: [[Unicode.Scalar]]) -> Int? {
        for end in 1...max(1, text.count) where end <= text.count {
            let ending = stops.filter { $0.count <= end && Array(text[end - $0.count..<end]) == $0 }
            if let longest = ending.map(\.count).max() { return end - longest }
        }
        return nil
    }

    @Test("A completion is the text made without stop strings, cut before the first one generated, alone and in a batch")
    func stopStringsCutTheText() throws {
        let generator = Self.generator
        let options = SamplingTests.options(seed: 11) { $0.temperature = 1.2 }
        let full = Array(try generator.generate(prime: "Вой", length: 400, options: options).unicodeScalars.dropFirst(3))
        var random = SystemRandomNumberGenerator()
        var stopSets: [[String]] = [["☃"], [String(String.UnicodeScalarView(full[0..<1]))]]
        // Pieces of the text itself (so they occur), some overlapping, some of a length-1 stop inside a longer one.
        for _ in 0..<40 {
            let count = Int.random(in: 1...3, using: &random)
            stopSets.append(
                (0..<count).map { _ in
                    let length = Int.random(in: 1...5, using: &random)
                    let start = Int.random(in: 0...(full.count - length), using: &random)
                    return String(String.UnicodeScalarView(full[start..<start + length]))
                })
        }
        var stoppedEarly = 0
        for stops in stopSets {
            let cut = Self.expectedCut(full, stops: stops.map { Array($0.unicodeScalars) })
            let expected = String(String.UnicodeScalarView(full.prefix(cut ?? full.count)))
            let alone = try generator.complete(prime: "Вой", length: 400, options: options, completion: Self.completion(stop: stops))
            #expect(alone.text == expected, "stops \(stops)")
            #expect(alone.finishReason == (cut == nil ? .length : .stop), "stops \(stops)")
            if let cut, cut > 0 { stoppedEarly += 1 }
            let batch = try generator.completions(
                count: 2, prime: "Вой", length: 400, options: options, completion: Self.completion(stop: stops))
            #expect(batch[0] == alone, "stops \(stops): the batch's first sample is the sample alone")
        }
        #expect(stoppedEarly > 10, "most stop sets cut the text part-way")
        let first = try generator.complete(prime: "Вой", length: 400, options: options, completion: Self.completion(stop: stopSets[1]))
        #expect(first.text.isEmpty && first.finishReason == .stop, "a stop string that is the first character leaves nothing")
    }

    @Test("Log-probabilities are the model's distribution after the temperature, with the likeliest characters in order")
    func logprobsFollowTheDistribution() throws {
        let generator = Self.generator
        let vocabularySize = generator.vocabulary.count
        func firstCharacter(temperature: Float) throws -> CharacterLogprob {
            let options = SamplingTests.options(seed: 3) { $0.temperature = temperature }
            let completion = try generator.complete(
                prime: "Анна", length: 1, options: options, completion: Self.completion(logprobs: vocabularySize))
            return try #require(completion.logprobs?.first)
        }
        let atOne = try firstCharacter(temperature: 1)
        #expect(atOne.top.count == vocabularySize)
        #expect(abs(atOne.top.map { exp($0.logprob) }.reduce(0, +) - 1) < 1e-9, "the probabilities add up to 1")
        #expect(zip(atOne.top, atOne.top.dropFirst()).allSatisfy { $0.logprob >= $1.logprob }, "most likely first")
        #expect(atOne.top.first { $0.character == atOne.character }?.logprob == atOne.logprob)
        #expect(Set(atOne.top.map(\.character)).count == vocabularySize)
        // At temperature 1/2 every log-probability is 2 log p less its log-sum: the same scores, halved temperature.
        let atHalf = try firstCharacter(temperature: 0.5)
        let twice = atOne.top.map { 2 * $0.logprob }
        let largest = twice.max() ?? 0
        let logSum = largest + log(twice.reduce(0) { $0 + exp($1 - largest) })
        for (alternative, doubled) in zip(atOne.top, twice) {
            let sharpened = try #require(atHalf.top.first { $0.character == alternative.character })
            #expect(abs(sharpened.logprob - (doubled - logSum)) < 1e-9)
        }
        #expect(atHalf.top[0].logprob > atOne.top[0].logprob, "a lower temperature sharpens the distribution")
        // Greedy drawing reports the model's own distribution and takes its likeliest character.
        let greedy = try generator.complete(
            prime: "Анна", length: 1, options: SamplingTests.options(seed: 3) { $0.greedy = true },
            completion: Self.completion(logprobs: 2))
        let greedyFirst = try #require(greedy.logprobs?.first)
        #expect(greedyFirst.top == Array(atOne.top.prefix(2)))
        #expect(greedyFirst.character == atOne.top[0].character)
    }

    @Test("Each character's log-probability comes with it, stream or whole, alone or batched, and with stop strings")
    func logprobsMatchTheirCharacters() throws {
        let generator = Self.generator
        let options = SamplingTests.options(seed: 8)
        let full = try generator.generate(prime: "G", length: 300, options: options)
        let completion = Self.completion(stop: [String(full.unicodeScalars.dropFirst(201).prefix(3))], logprobs: 3)
        let whole = try generator.complete(prime: "G", length: 300, options: options, completion: completion)
        let logprobs = try #require(whole.logprobs)
        #expect(whole.finishReason == .stop, "the stop string is generated")
        #expect(logprobs.map(\.character) == Array(whole.text.unicodeScalars))
        #expect(logprobs.allSatisfy { $0.top.count == 3 && $0.logprob <= 0 })
        let streamed = Array(try generator.completion(prime: "G", length: 300, options: options, completion: completion))
        #expect(streamed.map(\.scalar) == Array(whole.text.unicodeScalars))
        #expect(streamed.compactMap(\.logprob) == logprobs)
        let batched = try generator.completions(count: 3, prime: "G", length: 300, options: options, completion: completion)[0]
        #expect(batched.text == whole.text && batched.finishReason == whole.finishReason)
        // The batched step may round the scores in other last bits.
        for (a, b) in zip(try #require(batched.logprobs), logprobs) {
            #expect(a.character == b.character && abs(a.logprob - b.logprob) < 1e-5)
        }
        #expect(try generator.complete(prime: "G", length: 20, options: options).logprobs == nil, "none unless asked")
    }

    @Test("An empty stop string and a log-probability count beyond the vocabulary are refused, naming the option")
    func badCompletionOptions() {
        let generator = Self.generator
        let size = generator.vocabulary.count
        #expect(throws: SamplingError.invalidOption(.stop, value: "\"\" as item 2", requirement: "strings of at least one character")) {
            try generator.complete(prime: "G", length: 5, options: SamplingOptions(), completion: Self.completion(stop: ["a", ""]))
        }
        for count in [-1, size + 1] {
            #expect(
                throws: SamplingError.invalidOption(.logprobs, value: "\(count)", requirement: "between 0 and the vocabulary size \(size)")
            ) {
                try generator.complete(prime: "G", length: 5, options: SamplingOptions(), completion: Self.completion(logprobs: count))
            }
        }
    }

    @Test("Through the scheduler, a request with stop strings and log-probabilities gets the completion it gets alone")
    func schedulerCompletesAsAlone() async throws {
        let generator = Self.generator
        let scheduler = try SchedulerTests.scheduler(generator)
        let full = try generator.generate(prime: "Вой", length: 200, options: SamplingTests.options(seed: 5))
        let stop = String(String.UnicodeScalarView(Array(full.unicodeScalars)[100..<103]))
        for (stops, logprobs) in [([stop], Optional(2)), ([], 0), ([stop, "☃"], nil)] {
            let request = SchedulerTests.request("Вой", length: 200, seed: 5) {
                $0.completion = Self.completion(stop: stops, logprobs: logprobs)
            }
            let alone = try generator.complete(prime: "Вой", length: 200, options: request.options, completion: request.completion)
            var text = ""
            var received: [CharacterLogprob] = []
            var end: GenerationEnd?
            for await chunk in try scheduler.submit(request) {
                text += chunk.text
                received += chunk.logprobs
                end = chunk.end ?? end
            }
            #expect(text == "Вой" + alone.text, "stops \(stops)")
            #expect(end == (alone.finishReason == .stop ? .stopped : .completed))
            if stops.isEmpty { #expect(end == .completed) } else { #expect(end == .stopped) }
            #expect(received.map(\.character) == (alone.logprobs ?? []).map(\.character))
            for (a, b) in zip(received, alone.logprobs ?? []) { #expect(abs(a.logprob - b.logprob) < 1e-5 && a.top.count == b.top.count) }
        }
        await scheduler.shutDown(gracePeriod: .zero)
    }
}
