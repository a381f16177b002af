/// An independent, plain Swift implementation of the model in Double
/// precision: written from the equations and the layout documented in
/// charrnn.h, sharing no code with the C core. The cross-language tests
/// hold the core to it; its own gradient is checked by central differences.
struct ReferenceLSTM {
    let vocabularySize: Int
    let hiddenSize: Int
    let layerCount: Int

    /// Offsets of each tensor in the flat block, in the documented order:
    /// per layer weight_ih [4H, I], weight_hh [4H, H], bias_ih [4H], bias_hh [4H]; then fc.weight [V, H], fc.bias [V].
    struct Layout {
        var weightIH: [Int] = [], weightHH: [Int] = [], biasIH: [Int] = [], biasHH: [Int] = []
        var fcWeight = 0, fcBias = 0, total = 0
    }

    var layout: Layout {
        var layout = Layout()
        var offset = 0
        let H = hiddenSize
        for layer in 0..<layerCount {
            let input = layer == 0 ? vocabularySize : H
            layout.weightIH.append(offset); offset += 4 * H * input
            layout.weightHH.append(offset); offset += 4 * H * H
            layout.biasIH.append(offset); offset += 4 * H
            layout.biasHH.append(offset); offset += 4 * H
        }
        layout.fcWeight = offset; offset += vocabularySize * H
        layout.fcBias = offset; offset += vocabularySize
        layout.total = offset
        return layout
    }

    struct Result {
        var loss: Double
        var gradients: [Double]
        /// [2, L, B, H]: h then c.
        var finalState: [Double]
    }

    /// The documented dropout mask value of (layer, row r = t*B + b, unit j).
    static func mask(seed: UInt64, layer: Int, row: Int, unit: Int, rows: Int, hidden: Int, keep: Double) -> Double {
        if keep >= 1 { return 1 }
        let index = UInt64((layer * rows + row) * hidden + unit)
        var z = seed &+ 0x9E37_79B9_7F4A_7C15 &* (index &+ 1)
        z ^= z >> 30; z = z &* 0xBF58_476D_1CE4_E5B9
        z ^= z >> 27; z = z &* 0x94D0_49BB_1331_11EB
        z ^= z >> 31
        let uniform = Double(Float(z >> 40) * (1.0 / 16_777_216.0))
        // The core compares and scales in float; so does this, to agree on every draw.
        return uniform < Double(Float(keep)) ? Double(1 / Float(keep)) : 0
    }

    private static func sigmoid(_ x: Double) -> Double { 1 / (1 + (-x).exp) }

    func run(
        parameters p: [Double], inputs: [Int32], targets: [Int32], batchSize B: Int, steps T: Int,
        initialState: [Double]?, keep: Double, seed: UInt64, wantGradients: Bool = true
    ) -> Result {
        let H = hiddenSize, V = vocabularySize, L = layerCount, N = B * T
        let lay = layout
        func state(_ which: Int, _ layer: Int, _ b: Int, _ j: Int) -> Double {
            initialState?[((which * L + layer) * B + b) * H + j] ?? 0
        }
        // Per layer, per step, per stream: activations.
        var gi = Array(repeating: Array(repeating: Array(repeating: [Double](repeating: 0, count: H), count: B), count: T), count: L)
        var gf = gi, gg = gi, go = gi, cell = gi, hid = gi, out = gi, msk = gi
        for l in 0..<L {
            for t in 0..<T {
                for b in 0..<B {
                    for j in 0..<H {
                        var pre = [Double](repeating: 0, count: 4)
                        for q in 0..<4 {
                            let row = q * H + j
                            var z = p[lay.biasIH[l] + row] + p[lay.biasHH[l] + row]
                            if l == 0 {
                                z += p[lay.weightIH[0] + row * V + Int(inputs[b * T + t])]
                            } else {
                                for k in 0..<H { z += p[lay.weightIH[l] + row * H + k] * out[l - 1][t][b][k] }
                            }
                            for k in 0..<H {
                                let hPrev = t == 0 ? state(0, l, b, k) : hid[l][t - 1][b][k]
                                z += p[lay.weightHH[l] + row * H + k] * hPrev
                            }
                            pre[q] = z
                        }
                        let i = Self.sigmoid(pre[0]), f = Self.sigmoid(pre[1]), g = pre[2].tanhValue, o = Self.sigmoid(pre[3])
                        let cPrev = t == 0 ? state(1, l, b, j) : cell[l][t - 1][b][j]
                        let c = f * cPrev + i * g
                        gi[l][t][b][j] = i; gf[l][t][b][j] = f; gg[l][t][b][j] = g; go[l][t][b][j] = o
                        cell[l][t][b][j] = c
                        hid[l][t][b][j] = o * c.tanhValue
                    }
                    for j in 0..<H {
                        let m = Self.mask(seed: seed, layer: l, row: t * B + b, unit: j, rows: N, hidden: H, keep: keep)
                        msk[l][t][b][j] = m
                        out[l][t][b][j] = hid[l][t][b][j] * m
                    }
                }
            }
        }
        var loss = 0.0
        var grads = [Double](repeating: 0, count: lay.total)
        var dOut = Array(repeating: Array(repeating: [Double](repeating: 0, count: H), count: B), count: T)
        for t in 0..<T {
            for b in 0..<B {
                var logits = [Double](repeating: 0, count: V)
                for v in 0..<V {
                    var z = p[lay.fcBias + v]
                    for j in 0..<H { z += p[lay.fcWeight + v * H + j] * out[L - 1][t][b][j] }
                    logits[v] = z
                }
                let maximum = logits.max()!
                let sum = logits.reduce(0) { $0 + ($1 - maximum).exp }
                let target = Int(targets[b * T + t])
                loss += -(logits[target] - maximum - sum.log)
                for v in 0..<V {
                    let d = ((logits[v] - maximum).exp / sum - (v == target ? 1 : 0)) / Double(N)
                    grads[lay.fcBias + v] += d
                    for j in 0..<H {
                        grads[lay.fcWeight + v * H + j] += d * out[L - 1][t][b][j]
                        dOut[t][b][j] += d * p[lay.fcWeight + v * H + j]
                    }
                }
            }
        }
        loss /= Double(N)
        var final = [Double](repeating: 0, count: 2 * L * B * H)
        for l in 0..<L {
            for b in 0..<B {
                for j in 0..<H {
                    final[(l * B + b) * H + j] = hid[l][T - 1][b][j]
                    final[((L + l) * B + b) * H + j] = cell[l][T - 1][b][j]
                }
            }
        }
        guard wantGradients else { return Result(loss: loss, gradients: [], finalState: final) }

        for l in stride(from: L - 1, through: 0, by: -1) {
            var dBelow = Array(repeating: Array(repeating: [Double](repeating: 0, count: H), count: B), count: T)
            var dhNext = Array(repeating: [Double](repeating: 0, count: H), count: B)
            var dcNext = dhNext
            for t in stride(from: T - 1, through: 0, by: -1) {
                var dhRecurrent = Array(repeating: [Double](repeating: 0, count: H), count: B)
                for b in 0..<B {
                    for j in 0..<H {
                        let dh = dOut[t][b][j] * msk[l][t][b][j] + dhNext[b][j]
                        let i = gi[l][t][b][j], f = gf[l][t][b][j], g = gg[l][t][b][j], o = go[l][t][b][j]
                        let c = cell[l][t][b][j], tc = c.tanhValue
                        let cPrev = t == 0 ? state(1, l, b, j) : cell[l][t - 1][b][j]
                        let dc = dcNext[b][j] + dh * o * (1 - tc * tc)
                        let dPre = [dc * g * i * (1 - i), dc * cPrev * f * (1 - f), dc * i * (1 - g * g), dh * tc * o * (1 - o)]
                        dcNext[b][j] = dc * f
                        for q in 0..<4 {
                            let row = q * H + j
                            grads[lay.biasIH[l] + row] += dPre[q]
                            grads[lay.biasHH[l] + row] += dPre[q]
                            if l == 0 {
                                grads[lay.weightIH[0] + row * V + Int(inputs[b * T + t])] += dPre[q]
                            } else {
                                for k in 0..<H {
                                    grads[lay.weightIH[l] + row * H + k] += dPre[q] * out[l - 1][t][b][k]
                                    dBelow[t][b][k] += dPre[q] * p[lay.weightIH[l] + row * H + k]
                                }
                            }
                            for k in 0..<H {
                                let hPrev = t == 0 ? state(0, l, b, k) : hid[l][t - 1][b][k]
                                grads[lay.weightHH[l] + row * H + k] += dPre[q] * hPrev
                                dhRecurrent[b][k] += dPre[q] * p[lay.weightHH[l] + row * H + k]
                            }
                        }
                    }
                }
                dhNext = dhRecurrent
            }
            dOut = dBelow
        }
        return Result(loss: loss, gradients: grads, finalState: final)
    }
}

extension Double {
    var exp: Double { Foundation.exp(self) }
    var log: Double { Foundation.log(self) }
    var tanhValue: Double { Foundation.tanh(self) }
}

import Foundation
