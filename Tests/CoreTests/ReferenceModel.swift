import Foundation

/// An independent, plain Swift implementation of the model in Double
/// precision, for each cell: written from the equations and the layout
/// documented in charrnn.h (PyTorch's nn.LSTM, nn.GRU and nn.RNN), sharing no
/// code with the C core. The cross-language tests hold the core to it; its
/// own gradient is checked by central differences.
struct ReferenceModel {
    enum Cell: String, CaseIterable {
        case lstm, gru, rnn
        /// Gate blocks of H rows.
        var gates: Int { [Cell.lstm: 4, .gru: 3, .rnn: 1][self]! }
        /// State tensors per layer.
        var states: Int { self == .lstm ? 2 : 1 }
    }

    let vocabularySize: Int
    let hiddenSize: Int
    let layerCount: Int
    let cell: Cell

    /// Offsets of each tensor in the flat block, in the documented order:
    /// per layer weight_ih [GH, I], weight_hh [GH, H], bias_ih [GH], bias_hh [GH]; then fc.weight [V, H], fc.bias [V].
    struct Layout {
        var weightIH: [Int] = [], weightHH: [Int] = [], biasIH: [Int] = [], biasHH: [Int] = []
        var fcWeight = 0, fcBias = 0, total = 0
    }

    var layout: Layout {
        var layout = Layout()
        var offset = 0
        let H = hiddenSize
        let GH = cell.gates * H
        for layer in 0..<layerCount {
            let input = layer == 0 ? vocabularySize : H
            layout.weightIH.append(offset)
            offset += GH * input
            layout.weightHH.append(offset)
            offset += GH * H
            layout.biasIH.append(offset)
            offset += GH
            layout.biasHH.append(offset)
            offset += GH
        }
        layout.fcWeight = offset
        offset += vocabularySize * H
        layout.fcBias = offset
        offset += vocabularySize
        layout.total = offset
        return layout
    }

    struct Result {
        var loss: Double
        var gradients: [Double]
        /// [S, L, B, H]: h, then (LSTM) c.
        var finalState: [Double]
    }

    /// The documented dropout mask value of (layer, row r = t*B + b, unit j).
    static func mask(seed: UInt64, layer: Int, row: Int, unit: Int, rows: Int, hidden: Int, keep: Double) -> Double {
        if keep >= 1 { return 1 }
        let index = UInt64((layer * rows + row) * hidden + unit)
        var z = seed &+ 0x9E37_79B9_7F4A_7C15 &* (index &+ 1)
        z ^= z >> 30
        z = z &* 0xBF58_476D_1CE4_E5B9
        z ^= z >> 27
        z = z &* 0x94D0_49BB_1331_11EB
        z ^= z >> 31
        let uniform = Double(Float(z >> 40) * (1.0 / 16_777_216.0))
        // The core compares and scales in float; so does this, to agree on every draw.
        return uniform < Double(Float(keep)) ? Double(1 / Float(keep)) : 0
    }

    private static func sigmoid(_ x: Double) -> Double { 1 / (1 + (-x).exp) }

    /// One unit's step from its blocks' input terms x[q] = W_ih[q] x + b_ih[q]
    /// and recurrent terms h[q] = W_hh[q] h + b_hh[q]: the new h and c.
    private func unitForward(x: [Double], h: [Double], hPrev: Double, cPrev: Double) -> (h: Double, c: Double) {
        switch cell {
        case .lstm:
            let i = Self.sigmoid(x[0] + h[0])
            let f = Self.sigmoid(x[1] + h[1])
            let g = (x[2] + h[2]).tanhValue
            let o = Self.sigmoid(x[3] + h[3])
            let c = f * cPrev + i * g
            return (o * c.tanhValue, c)
        case .gru:
            let r = Self.sigmoid(x[0] + h[0])
            let z = Self.sigmoid(x[1] + h[1])
            let n = (x[2] + r * h[2]).tanhValue
            return ((1 - z) * n + z * hPrev, 0)
        case .rnn:
            return ((x[0] + h[0]).tanhValue, 0)
        }
    }

    /// The same unit's step backwards: given dh and dc at its outputs, the
    /// gradients at every input term, every recurrent term, h_prev (other
    /// than through W_hh) and c_prev.
    private func unitBackward(x: [Double], h: [Double], hPrev: Double, cPrev: Double, dh: Double, dc dcOut: Double)
        -> (dx: [Double], dhTerms: [Double], dhPrev: Double, dcPrev: Double)
    {
        switch cell {
        case .lstm:
            let i = Self.sigmoid(x[0] + h[0])
            let f = Self.sigmoid(x[1] + h[1])
            let g = (x[2] + h[2]).tanhValue
            let o = Self.sigmoid(x[3] + h[3])
            let c = f * cPrev + i * g
            let tc = c.tanhValue
            let dc = dcOut + dh * o * (1 - tc * tc)
            let d = [dc * g * i * (1 - i), dc * cPrev * f * (1 - f), dc * i * (1 - g * g), dh * tc * o * (1 - o)]
            return (d, d, 0, dc * f)
        case .gru:
            let r = Self.sigmoid(x[0] + h[0])
            let z = Self.sigmoid(x[1] + h[1])
            let n = (x[2] + r * h[2]).tanhValue
            let dPreN = dh * (1 - z) * (1 - n * n)
            let dPreR = dPreN * h[2] * r * (1 - r)
            let dPreZ = dh * (hPrev - n) * z * (1 - z)
            return ([dPreR, dPreZ, dPreN], [dPreR, dPreZ, dPreN * r], dh * z, 0)
        case .rnn:
            let out = (x[0] + h[0]).tanhValue
            let d = dh * (1 - out * out)
            return ([d], [d], 0, 0)
        }
    }

    /// `product` rounds each input of a matrix product before it is
    /// multiplied (every weight and activation the core multiplies in a
    /// product; not layer 0's one-hot lookup): the identity for fp32, a
    /// rounding to bf16 for the core's bf16 passes.
    func run(
        parameters p: [Double], inputs: [Int32], targets: [Int32], batchSize B: Int, steps T: Int,
        initialState: [Double]?, keep: Double, seed: UInt64, wantGradients: Bool = true,
        product r: (Double) -> Double = { $0 }
    ) -> Result {
        let H = hiddenSize
        let V = vocabularySize
        let L = layerCount
        let N = B * T
        let G = cell.gates
        let lay = layout
        func state(_ which: Int, _ layer: Int, _ b: Int, _ j: Int) -> Double {
            initialState?[((which * L + layer) * B + b) * H + j] ?? 0
        }
        let zeros = Array(repeating: Array(repeating: Array(repeating: [Double](repeating: 0, count: H), count: B), count: T), count: L)
        var hid = zeros
        var cellState = zeros
        var out = zeros
        var msk = zeros
        // The blocks' input and recurrent terms: [l][t][b][q * H + j].
        var xTerms = Array(repeating: Array(repeating: Array(repeating: [Double](repeating: 0, count: G * H), count: B), count: T), count: L)
        var hTerms = xTerms
        func hPrev(_ l: Int, _ t: Int, _ b: Int, _ k: Int) -> Double { t == 0 ? state(0, l, b, k) : hid[l][t - 1][b][k] }
        func cPrev(_ l: Int, _ t: Int, _ b: Int, _ k: Int) -> Double {
            cell.states < 2 ? 0 : t == 0 ? state(1, l, b, k) : cellState[l][t - 1][b][k]
        }
        for l in 0..<L {
            for t in 0..<T {
                for b in 0..<B {
                    for row in 0..<(G * H) {
                        var x = p[lay.biasIH[l] + row]
                        var h = p[lay.biasHH[l] + row]
                        if l == 0 {
                            x += p[lay.weightIH[0] + row * V + Int(inputs[b * T + t])]
                        } else {
                            for k in 0..<H { x += r(p[lay.weightIH[l] + row * H + k]) * r(out[l - 1][t][b][k]) }
                        }
                        for k in 0..<H { h += r(p[lay.weightHH[l] + row * H + k]) * r(hPrev(l, t, b, k)) }
                        xTerms[l][t][b][row] = x
                        hTerms[l][t][b][row] = h
                    }
                    for j in 0..<H {
                        let blocks = (0..<G).map { $0 * H + j }
                        let step = unitForward(
                            x: blocks.map { xTerms[l][t][b][$0] }, h: blocks.map { hTerms[l][t][b][$0] },
                            hPrev: hPrev(l, t, b, j), cPrev: cPrev(l, t, b, j))
                        hid[l][t][b][j] = step.h
                        cellState[l][t][b][j] = step.c
                        let m = Self.mask(seed: seed, layer: l, row: t * B + b, unit: j, rows: N, hidden: H, keep: keep)
                        msk[l][t][b][j] = m
                        out[l][t][b][j] = step.h * m
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
                    for j in 0..<H { z += r(p[lay.fcWeight + v * H + j]) * r(out[L - 1][t][b][j]) }
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
                        grads[lay.fcWeight + v * H + j] += r(d) * r(out[L - 1][t][b][j])
                        dOut[t][b][j] += r(d) * r(p[lay.fcWeight + v * H + j])
                    }
                }
            }
        }
        loss /= Double(N)
        var final = [Double](repeating: 0, count: cell.states * L * B * H)
        for l in 0..<L {
            for b in 0..<B {
                for j in 0..<H {
                    final[(l * B + b) * H + j] = hid[l][T - 1][b][j]
                    if cell.states > 1 { final[((L + l) * B + b) * H + j] = cellState[l][T - 1][b][j] }
                }
            }
        }
        guard wantGradients else { return Result(loss: loss, gradients: [], finalState: final) }

        for l in stride(from: L - 1, through: 0, by: -1) {
            var dBelow = Array(repeating: Array(repeating: [Double](repeating: 0, count: H), count: B), count: T)
            var dhNext = Array(repeating: [Double](repeating: 0, count: H), count: B)
            var dcNext = dhNext
            for t in stride(from: T - 1, through: 0, by: -1) {
                var dhToPrevious = Array(repeating: [Double](repeating: 0, count: H), count: B)
                for b in 0..<B {
                    for j in 0..<H {
                        let dh = dOut[t][b][j] * msk[l][t][b][j] + dhNext[b][j]
                        let blocks = (0..<G).map { $0 * H + j }
                        let back = unitBackward(
                            x: blocks.map { xTerms[l][t][b][$0] }, h: blocks.map { hTerms[l][t][b][$0] },
                            hPrev: hPrev(l, t, b, j), cPrev: cPrev(l, t, b, j), dh: dh, dc: dcNext[b][j])
                        dcNext[b][j] = back.dcPrev
                        dhToPrevious[b][j] += back.dhPrev
                        for q in 0..<G {
                            let row = q * H + j
                            let dx = back.dx[q]
                            let dhTerm = back.dhTerms[q]
                            grads[lay.biasIH[l] + row] += dx
                            grads[lay.biasHH[l] + row] += dhTerm
                            if l == 0 {
                                grads[lay.weightIH[0] + row * V + Int(inputs[b * T + t])] += dx
                            } else {
                                for k in 0..<H {
                                    grads[lay.weightIH[l] + row * H + k] += r(dx) * r(out[l - 1][t][b][k])
                                    dBelow[t][b][k] += r(dx) * r(p[lay.weightIH[l] + row * H + k])
                                }
                            }
                            for k in 0..<H {
                                grads[lay.weightHH[l] + row * H + k] += r(dhTerm) * r(hPrev(l, t, b, k))
                                dhToPrevious[b][k] += r(dhTerm) * r(p[lay.weightHH[l] + row * H + k])
                            }
                        }
                    }
                }
                dhNext = dhToPrevious
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
