#!/usr/bin/env python3
"""Checks that CharRNN checkpoints and PyTorch models move both ways unchanged,
for the cell each checkpoint names (nn.LSTM, nn.GRU, nn.RNN with tanh).

1. charrnn -> PyTorch: loads each checkpoint written by `charrnn train` into
   nn.LSTM / nn.GRU / nn.RNN(V, H, L) + nn.Linear(H, V), the module named by
   the file's `cell` metadata (strict load_state_dict of the cell's and `fc.`
   tensors; the file's training state is skipped), computes the mean
   cross-entropy of the text as one stream from a zero state with one-hot
   input, and compares it with `charrnn eval` on the same text.
2. PyTorch -> charrnn: builds a fresh module of each checkpoint's cell + nn.Linear for the
   text's vocabulary, saves it with safetensors.torch.save_file (the state
   dict under the cell's prefix and `fc.`, and only a `vocab` entry in the
   metadata), then checks that `charrnn eval` gives PyTorch's loss and that
   `charrnn sample` writes text with it.

PyTorch is large, so this does not run in CI:

    pip install torch safetensors
    swift build -c release
    python3 Tools/pytorch_interchange.py --charrnn .build/release/charrnn \
        --checkpoint runs/lstm/best.safetensors --checkpoint runs/gru/best.safetensors --data some.txt

Exits non-zero when a loss differs by more than the tolerance (1e-4, relative)."""
import argparse
import json
import re
import subprocess
import sys
import tempfile

import torch
from safetensors.torch import load_file, save_file


def torch_module(cell):
    """PyTorch's module for a cell named as a checkpoint's `cell` metadata
    names it: "lstm" -> nn.LSTM, "gru" -> nn.GRU, "rnn" -> nn.RNN (tanh)."""
    return getattr(torch.nn, cell.upper())


class CharModel(torch.nn.Module):
    """The recurrent layers under the cell's name (so the state dict's keys
    are `lstm.weight_ih_l0`, `gru.…`, `rnn.…`) and the output layer `fc`."""

    def __init__(self, cell, vocab_size, hidden_size, num_layers):
        super().__init__()
        self.cell = cell
        setattr(self, cell, torch_module(cell)(vocab_size, hidden_size, num_layers, batch_first=True))
        self.fc = torch.nn.Linear(hidden_size, vocab_size)

    def loss(self, tokens):
        """Mean cross-entropy of predicting tokens[1:] from everything before, one stream."""
        x = torch.nn.functional.one_hot(tokens[:-1], self.fc.out_features).float().unsqueeze(0)
        out, _ = getattr(self, self.cell)(x)
        logits = self.fc(out[0])
        return torch.nn.functional.cross_entropy(logits, tokens[1:]).item()


def charrnn_eval(binary, checkpoint, data):
    out = subprocess.run([binary, "eval", "--checkpoint", checkpoint, "--data", data],
                         capture_output=True, text=True, check=True).stdout
    return float(re.search(r"cross-entropy ([0-9.]+) nats", out).group(1))


def text_of(path):
    with open(path, encoding="utf-8", newline=None) as f:  # universal newlines, as charrnn's default
        return f.read()


def within(a, b, tolerance):
    return abs(a - b) <= tolerance * max(1.0, abs(b))


def from_charrnn(args, path, text, failures):
    tensors = load_file(path)
    with open(path, "rb") as f:
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    vocab = json.loads(header["__metadata__"]["vocab"])
    cell = header["__metadata__"].get("cell", "lstm")  # files before the cell setting are LSTMs
    V, H = tensors["fc.weight"].shape
    L = sum(1 for k in tensors if k.startswith(f"{cell}.weight_ih_l"))
    model = CharModel(cell, V, H, L)
    state = {k: v for k, v in tensors.items() if k.startswith((f"{cell}.", "fc."))}
    model.load_state_dict(state, strict=True)
    index = {c: i for i, c in enumerate(vocab)}
    tokens = torch.tensor([index[c] for c in text])
    with torch.no_grad():
        torch_loss = model.loss(tokens)
    ours = charrnn_eval(args.charrnn, path, args.data)
    print(f"charrnn -> PyTorch: nn.{torch_module(cell).__name__} V={V} H={H} L={L}, {len(text)} characters: "
          f"PyTorch {torch_loss:.6f}, charrnn eval {ours:.6f}, difference {abs(torch_loss - ours):.2e}")
    if not within(torch_loss, ours, args.tolerance):
        failures.append(f"charrnn -> PyTorch loss differs ({cell})")
    return cell


def to_charrnn(args, cell, text, failures):
    vocab = sorted(set(text))
    model = CharModel(cell, len(vocab), 48, 2)
    tokens = torch.tensor([vocab.index(c) for c in text])
    with torch.no_grad():
        torch_loss = model.loss(tokens)
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/from_pytorch.safetensors"
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path,
                  metadata={"vocab": json.dumps(vocab)})
        ours = charrnn_eval(args.charrnn, path, args.data)
        sample = subprocess.run([args.charrnn, "sample", "--checkpoint", path, "--prime", text[:3],
                                 "--length", "80", "--seed", "1"], capture_output=True, text=True)
    print(f"PyTorch -> charrnn: nn.{torch_module(cell).__name__} V={len(vocab)} H=48 L=2: PyTorch {torch_loss:.6f}, "
          f"charrnn eval {ours:.6f}, difference {abs(torch_loss - ours):.2e}")
    print(f"  charrnn sample from the PyTorch file (exit {sample.returncode}): {sample.stdout[:83]!r}")
    if not within(torch_loss, ours, args.tolerance):
        failures.append(f"PyTorch -> charrnn loss differs ({cell})")
    if sample.returncode != 0 or len(sample.stdout) != 83:
        failures.append(f"charrnn sample failed on the PyTorch {cell} file: " + sample.stderr.strip())


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--charrnn", required=True, help="the charrnn executable")
    parser.add_argument("--checkpoint", action="append", default=[],
                        help="a checkpoint written by charrnn train (repeatable: one per cell)")
    parser.add_argument("--data", required=True, help="a UTF-8 text in the checkpoints' vocabulary")
    parser.add_argument("--tolerance", type=float, default=1e-4)
    args = parser.parse_args()
    torch.manual_seed(0)
    failures = []
    text = text_of(args.data)
    cells = []
    for path in args.checkpoint:
        cells.append(from_charrnn(args, path, text, failures))
    for cell in dict.fromkeys(cells):  # each checkpoint's cell, once
        to_charrnn(args, cell, text, failures)
    print("FAILED: " + "; ".join(failures) if failures else "OK: both directions agree within %g" % args.tolerance)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
