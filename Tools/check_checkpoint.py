#!/usr/bin/env python3
"""Opens a CharRNN checkpoint with Python's `safetensors` package and checks
that its tensors have the names and shapes of the state dict of PyTorch's
module for the checkpoint's cell (its `cell` metadata: nn.LSTM under
`lstm.`, nn.GRU under `gru.`, …) plus nn.Linear (prefix `fc.`), with
one-hot input. The cell's gate count G is read from the file (the rows of
`{cell}.weight_hh_l0` over H), and every layer must agree with it.

    pip install safetensors numpy
    python3 Tools/check_checkpoint.py runs/a/best.safetensors

Exits non-zero, naming the problem, if anything does not match."""
import json
import sys

from safetensors import safe_open


def main(path: str) -> int:
    with safe_open(path, framework="np") as f:
        meta = f.metadata() or {}
        vocab = json.loads(meta["vocab"])
        shapes = {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}
        dtypes = {name: str(f.get_tensor(name).dtype) for name in f.keys()}
    cell = meta.get("cell", "lstm")  # files before the cell setting are LSTMs
    V = len(vocab)
    H = shapes["fc.weight"][1]
    L = sum(1 for name in shapes if name.startswith(f"{cell}.weight_ih_l"))
    G = shapes.get(f"{cell}.weight_hh_l0", (0,))[0] // H
    expected = {"fc.weight": (V, H), "fc.bias": (V,)}
    for k in range(L):
        expected[f"{cell}.weight_ih_l{k}"] = (G * H, V if k == 0 else H)
        expected[f"{cell}.weight_hh_l{k}"] = (G * H, H)
        expected[f"{cell}.bias_ih_l{k}"] = (G * H,)
        expected[f"{cell}.bias_hh_l{k}"] = (G * H,)
    problems = [f"{name}: expected {shape}, found {shapes.get(name)}"
                for name, shape in expected.items() if shapes.get(name) != shape]
    # The training state (docs/CHECKPOINT.md) rides along under its own prefixes: not part of the state dict.
    training_state = [name for name in shapes if name.startswith(("optimizer.", "train_state."))]
    problems += [f"unexpected tensor {name}" for name in shapes if name not in expected and name not in training_state]
    problems += [f"{name} is {dtype}, not float32" for name, dtype in dtypes.items() if dtype != "float32"]
    if L == 0 or G == 0:
        problems.append(f"no {cell}.weight_ih_l0 / {cell}.weight_hh_l0 tensors for the cell '{cell}'")
    print(f"{path}: {cell} V={V} H={H} L={L} G={G}, {sum(1 for _ in shapes)} tensors, "
          f"{sum(int.__mul__(*s) if len(s) == 2 else s[0] for s in shapes.values()):,} parameters")
    for name in sorted(expected):
        print(f"  {name:20s} {shapes.get(name)}")
    if training_state:
        print(f"  + {len(training_state)} training-state tensors (optimizer.*, train_state.*)")
    print("  metadata:", ", ".join(f"{k}={meta[k]}" for k in sorted(meta) if k != "vocab"))
    if problems:
        print("PROBLEMS:\n  " + "\n  ".join(problems))
        return 1
    print(f"OK: names and shapes match nn.{cell.upper()}(V, H, L) with {G} gate blocks + nn.Linear(H, V)")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__)
        sys.exit(2)
    sys.exit(main(sys.argv[1]))
