#!/usr/bin/env python3
"""Checks the golden files of tests/data against independent implementations.

- golden_nf4.txt, golden_fp4.txt: bitsandbytes' own quantize_4bit / dequantize_4bit (its
  pure-PyTorch default kernels, blocksize 64, no double quantization), loaded through the peer
  loader bnb_peer.py of the project's shared folder (BNB_GIT: a git dir of
  bitsandbytes-foundation/bitsandbytes; BNB_REV: a commit).
- golden_nf2.txt, golden_int8.txt: formats bitsandbytes does not have (PEFT's NF2 map; linear
  Int8 per block), checked against a numpy float32 transcription of their definitions.

Usage: BNB_GIT=... python3 tests/data/check_golden.py PATH/TO/bnb_peer_dir
Prints one line per file and per block and exits 1 on any difference.
"""
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def read_sections(name):
    with open(os.path.join(HERE, name)) as f:
        lines = [line.strip() for line in f if line.strip()]
    sections, current = [], None
    for line in lines:
        if line.startswith("#"):
            current = []
            sections.append((line, current))
        else:
            current.extend(line.split())
    return sections


def hexfloats(tokens):
    return np.array([float.fromhex(t) for t in tokens], dtype=np.float32)


def golden_input():
    (_, tokens), = read_sections("golden_input.txt")
    rows, cols = map(int, tokens[:2])
    return hexfloats(tokens[2:]).reshape(rows, cols)


def golden(name):
    (_, head), (_, codes), (_, absmax), (_, dequantized) = read_sections(name)
    rows, cols, block = map(int, head)
    return (rows, cols, block, np.array(list(map(int, codes))), hexfloats(absmax), hexfloats(dequantized))


def codebook(name):
    with open(os.path.join(HERE, "codebooks.json")) as f:
        books = json.load(f)
    return np.array([np.frombuffer(bytes.fromhex(v), "<f4")[0] for v in books[name + "_hex"]], dtype=np.float32)


def compare(label, ours, theirs, failures, signed_zero_differs=False):
    """Bit-for-bit comparison; with signed_zero_differs, 0.0 against -0.0 is reported, not failed."""
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    if ours.dtype.kind == "f":
        theirs = theirs.astype(np.float32)
        same = ours.view(np.uint32) == theirs.view(np.uint32)
        zeros = ~same & (ours == 0) & (theirs == 0)
        if signed_zero_differs and zeros.any():
            print(f"  {label}: {int(zeros.sum())} zeros differ in sign only, at {np.flatnonzero(zeros).tolist()}")
            same |= zeros
    else:
        same = ours == theirs
    bad = np.flatnonzero(~same.ravel())
    print(f"  {label}: {'identical' if bad.size == 0 else f'{bad.size} differ, first at {bad[:5].tolist()}'}")
    if bad.size:
        failures.append(label)


def check_bnb(name, quant_type, peer_dir, failures):
    sys.path.insert(0, peer_dir)
    import torch
    import bnb_peer
    F = bnb_peer.load()
    rows, cols, block, codes, absmax, dequantized = golden(name)
    w = torch.from_numpy(golden_input())
    packed, state = F.quantize_4bit(w, blocksize=block, quant_type=quant_type, compress_statistics=False)
    packed = packed.flatten().numpy()
    bnb_codes = np.stack([packed >> 4, packed & 15], axis=1).ravel()[: rows * cols]
    back = F.dequantize_4bit(torch.from_numpy(packed.reshape(-1, 1)), state).numpy().ravel()
    print(f"{name}: bitsandbytes {bnb_peer.resolved_rev()} quantize_4bit(quant_type={quant_type!r}, blocksize={block})")
    compare("codes", codes, bnb_codes, failures)
    compare("absmax", absmax, state.absmax.numpy(), failures)
    # bitsandbytes' CUDA kernel gives FP4 code 8 (sign bit, zero magnitude) the value -0.0, as our
    # table does; its default PyTorch path's table has +0.0 there.
    compare("dequantized", dequantized, back, failures, signed_zero_differs=quant_type == "fp4")


def check_nf2(failures):
    rows, cols, block, codes, absmax, dequantized = golden("golden_nf2.txt")
    w = golden_input().ravel()
    lut = codebook("nf2")
    order = np.argsort(lut, kind="stable")
    mids = ((lut[order][:-1] + lut[order][1:]) / np.float32(2)).astype(np.float32)
    our_absmax, our_codes, our_values = [], [], []
    for first in range(0, w.size, block):
        x = w[first:first + block]
        m = np.float32(np.max(np.abs(x)))
        s = np.clip(x * (np.float32(1) / np.maximum(m, np.float32(1e-38))), -1, 1).astype(np.float32)
        k = np.searchsorted(mids, s, side="left")  # midpoints strictly below s
        c = order[k]
        our_absmax.append(m)
        our_codes.extend(c)
        our_values.extend((lut[c] * m).astype(np.float32))
    print("golden_nf2.txt: numpy float32, PEFT's NF2 map, reciprocal-multiply scaling")
    compare("codes", codes, our_codes, failures)
    compare("absmax", absmax, np.array(our_absmax, np.float32), failures)
    compare("dequantized", dequantized, np.array(our_values, np.float32), failures)


def check_int8(failures):
    rows, cols, block, codes, absmax, dequantized = golden("golden_int8.txt")
    w = golden_input().ravel()
    our_absmax, our_codes, our_values = [], [], []
    for first in range(0, w.size, block):
        x = w[first:first + block]
        m = np.float32(np.max(np.abs(x)))
        f = np.float32(127) / m if m > 0 else np.float32(np.inf)
        with np.errstate(invalid="ignore"):
            v = (x * f).astype(np.float32)
        v[np.isnan(v)] = 0
        q = np.rint(np.clip(v, -127, 127)).astype(np.int8)  # rint: half to even
        g = np.float32(m / np.float32(127))
        our_absmax.append(m)
        our_codes.extend(q.view(np.uint8) if codes.max() > 127 else q)
        our_values.extend((q.astype(np.float32) * g).astype(np.float32))
    print("golden_int8.txt: numpy float32, q = rint(x * (127 / absmax)), value q * (absmax / 127)")
    compare("codes", codes, our_codes, failures)
    compare("absmax", absmax, np.array(our_absmax, np.float32), failures)
    compare("dequantized", dequantized, np.array(our_values, np.float32), failures)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    failures = []
    check_bnb("golden_nf4.txt", "nf4", sys.argv[1], failures)
    check_bnb("golden_fp4.txt", "fp4", sys.argv[1], failures)
    check_nf2(failures)
    check_int8(failures)
    print("all identical" if not failures else f"DIFFERENT: {failures}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
