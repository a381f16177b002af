#!/usr/bin/env python3
"""Checks that CharRNN checkpoints and PyTorch models move both ways unchanged.

1. charrnn -> PyTorch: loads a checkpoint written by `charrnn train` into
   nn.LSTM(V, H, L) + nn.Linear(H, V) (strict load_state_dict of the `lstm.`
   and `fc.` tensors; the file's training state is skipped), computes the
   mean cross-entropy of the text as one stream from a zero state with
   one-hot input, and compares it with `charrnn eval` on the same text.
2. PyTorch -> charrnn: builds a fresh nn.LSTM + nn.Linear for the text's
   vocabulary, saves it with safetensors.torch.save_file (the state dict
   under `lstm.` and `fc.`, and only a `vocab` entry in the metadata),
   then checks that `charrnn eval` gives PyTorch's loss and that
   `charrnn sample` writes text with it.

PyTorch is large, so this does not run in CI:

    pip install torch safetensors
    swift build -c release
    python3 Tools/pytorch_interchange.py --charrnn .build/release/charrnn \
        --checkpoint runs/a/best.safetensors --data some.txt

Exits non-zero when a loss differs by more than the tolerance (1e-4)."""
import argparse
import json
import re
import subprocess
import sys
import tempfile

import torch
from safetensors.torch import load_file, save_file


class CharLSTM(torch.nn.Module):
    def __init__(self, vocab_size, hidden_size, num_layers):
        super().__init__()
        self.lstm = torch.nn.LSTM(vocab_size, hidden_size, num_layers, batch_first=True)
        self.fc = torch.nn.Linear(hidden_size, vocab_size)

    def loss(self, tokens):
        """Mean cross-entropy of predicting tokens[1:] from everything before, one stream."""
        x = torch.nn.functional.one_hot(tokens[:-1], self.fc.out_features).float().unsqueeze(0)
        out, _ = self.lstm(x)
        logits = self.fc(out[0])
        return torch.nn.functional.cross_entropy(logits, tokens[1:]).item()


def charrnn_eval(binary, checkpoint, data):
    out = subprocess.run([binary, "eval", "--checkpoint", checkpoint, "--data", data],
                         capture_output=True, text=True, check=True).stdout
    return float(re.search(r"cross-entropy ([0-9.]+) nats", out).group(1))


def text_of(path):
    with open(path, encoding="utf-8", newline=None) as f:  # universal newlines, as charrnn's default
        return f.read()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--charrnn", required=True, help="the charrnn executable")
    parser.add_argument("--checkpoint", required=True, help="a checkpoint written by charrnn train")
    parser.add_argument("--data", required=True, help="a UTF-8 text in the checkpoint's vocabulary")
    parser.add_argument("--tolerance", type=float, default=1e-4)
    args = parser.parse_args()
    torch.manual_seed(0)
    failures = []

    # 1. charrnn -> PyTorch
    tensors = load_file(args.checkpoint)
    with open(args.checkpoint, "rb") as f:
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    vocab = json.loads(header["__metadata__"]["vocab"])
    V, H = tensors["fc.weight"].shape
    L = sum(1 for k in tensors if k.startswith("lstm.weight_ih_l"))
    model = CharLSTM(V, H, L)
    state = {k: v for k, v in tensors.items() if k.startswith(("lstm.", "fc."))}
    model.load_state_dict(state, strict=True)
    index = {c: i for i, c in enumerate(vocab)}
    text = text_of(args.data)
    tokens = torch.tensor([index[c] for c in text])
    with torch.no_grad():
        torch_loss = model.loss(tokens)
    ours = charrnn_eval(args.charrnn, args.checkpoint, args.data)
    print(f"charrnn -> PyTorch: V={V} H={H} L={L}, {len(text)} characters: "
          f"PyTorch {torch_loss:.6f}, charrnn eval {ours:.6f}, difference {abs(torch_loss - ours):.2e}")
    if abs(torch_loss - ours) > args.tolerance:
        failures.append("charrnn -> PyTorch loss differs")

    # 2. PyTorch -> charrnn: a new model over the text's own characters
    vocab2 = sorted(set(text))
    model2 = CharLSTM(len(vocab2), 48, 2)
    tokens2 = torch.tensor([vocab2.index(c) for c in text])
    with torch.no_grad():
        torch_loss2 = model2.loss(tokens2)
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/from_pytorch.safetensors"
        save_file({k: v.contiguous() for k, v in model2.state_dict().items()}, path,
                  metadata={"vocab": json.dumps(vocab2)})
        ours2 = charrnn_eval(args.charrnn, path, args.data)
        sample = subprocess.run([args.charrnn, "sample", "--checkpoint", path, "--prime", text[:3],
                                 "--length", "80", "--seed", "1"], capture_output=True, text=True)
    print(f"PyTorch -> charrnn: V={len(vocab2)} H=48 L=2: PyTorch {torch_loss2:.6f}, "
          f"charrnn eval {ours2:.6f}, difference {abs(torch_loss2 - ours2):.2e}")
    print(f"  charrnn sample from the PyTorch file (exit {sample.returncode}): {sample.stdout[:83]!r}")
    if abs(torch_loss2 - ours2) > args.tolerance:
        failures.append("PyTorch -> charrnn loss differs")
    if sample.returncode != 0 or len(sample.stdout) != 83:
        failures.append("charrnn sample failed on the PyTorch file: " + sample.stderr.strip())

    print("FAILED: " + "; ".join(failures) if failures else "OK: both directions agree within %g" % args.tolerance)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
