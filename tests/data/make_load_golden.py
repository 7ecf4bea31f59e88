#!/usr/bin/env python3
"""Makes the load-path golden files of tests/data: what bitsandbytes dequantizes at load time.

bitsandbytes' own code is run through the peer loader bnb_peer.py of the project's shared folder
(its pure-PyTorch default kernels and functional.py, read from a git snapshot of
bitsandbytes-foundation/bitsandbytes: env BNB_GIT, a git dir; BNB_REV, a commit). Two inputs:
golden_input.txt (6 x 100, 600 elements: 9 blocks of 64 and a short last block of 24) and
golden_input_8x128.txt (8 x 128, 16 blocks of 64), which this script writes first from a fixed
seed (numpy's legacy RandomState, whose stream numpy keeps unchanged). For each input:

- golden_load4_16bit_<input>.txt, a 16-bit backbone quantized at load (load_in_4bit):
  W16 = W.to(bfloat16 | float16); q, state = quantize_4bit(W16, blocksize=64,
  quant_type=nf4 | fp4, compress_statistics=False | True); out = dequantize_4bit(q, state),
  16-bit, written as float32 (exact).
- golden_load4_32bit_<input>.txt, a backbone stored quantized from float32 values (bnb-nf4):
  q, state = quantize_4bit(W, ...) with W float32; out_bf16 = dequantize_4bit(q, state) with
  state.dtype = bfloat16, out_f32 the same with state.dtype = float32.
- golden_load8_<input>.txt, LLM.int8 (load_in_8bit): codes, SCB, _ =
  int8_vectorwise_quant(W16) (threshold 0) and out = int8_vectorwise_dequant(codes, SCB), for
  W16 = W.half() (a float16 or float32 backbone) and W.to(bfloat16).half() (a bfloat16 one).

And golden_bnb_reads_ours.txt: what bitsandbytes dequantizes from the files loftq-cpp writes,
bnb_*.safetensors of this folder (the library's bnb_tensors / bnb_int8_tensors of the golden
inputs; tests/test_load_golden.cpp checks that the library writes them byte for byte):
QuantState.from_dict() of a 4-bit weight's tensors then dequantize_4bit(), and
int8_vectorwise_dequant(weight, SCB) of a Linear8bitLt's.

File format: lines starting with '#' are comments; every other line is `key: tokens`, tokens
separated by single spaces. Floats are hex float32 ("0x1.8cd078p-3", float.hex() of the float32
value with trailing zero digits dropped; std::strtof / float.fromhex read them back exactly).
Keys of a case are <case>.<field>; the header comments of each file list them (load4_lines(),
load8_lines()) and tests/data/README.md describes them.

Usage (Debian's python3-numpy and python3-torch):
    BNB_GIT=/path/to/bitsandbytes.git /usr/bin/python3 tests/data/make_load_golden.py PEER_DIR
        writes the files and prints the re-quantization checks;
    ... make_load_golden.py PEER_DIR --check
        writes nothing, exits 1 unless every file equals a fresh run bit for bit;
    ... make_load_golden.py PEER_DIR --offset-mean [COUNT]
        the double-quant offset study: torch's float32 mean() of absmax vectors against the mean
        summed in double and rounded once to float32 (writes nothing).
Deterministic: the same bitsandbytes commit and input give the same files.
"""
import math
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
BLOCK = 64
NESTED_BLOCK = 256
INPUTS = (("6x100", "golden_input.txt"), ("8x128", "golden_input_8x128.txt"))
SEED_8X128 = 8128
QUANT_TYPES = ("nf4", "fp4")


# ---------------------------------------------------------------------------- text format

def hexf(x):
    """float.hex() of a float32, trailing zero digits of the fraction dropped: exact."""
    s = float(np.float32(x)).hex()
    mant, exp = s.split("p")
    if "." in mant:
        mant = mant.rstrip("0").rstrip(".")
    return mant + "p" + exp


def f32_tokens(a):
    return " ".join(hexf(v) for v in np.asarray(a, dtype=np.float32).ravel())


def int_tokens(a):
    return " ".join(str(int(v)) for v in np.asarray(a).ravel())


def byte_tokens(a):
    return " ".join(f"{int(v):02x}" for v in np.asarray(a, dtype=np.uint8).ravel())


def read_keyed(path):
    """{key: [tokens]} of a `key: tokens` file."""
    out = {}
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line or line.startswith("#"):
                continue
            key, _, rest = line.partition(": ")
            if key in out:
                raise ValueError(f"{path}: key {key} twice")
            out[key] = rest.split()
    return out


def read_input(name):
    with open(os.path.join(HERE, name)) as f:
        lines = [line.split() for line in f if line.strip() and not line.startswith("#")]
    rows, cols = map(int, lines[0])
    w = np.array([float.fromhex(t) for t in lines[1]], dtype=np.float32)
    return w.reshape(rows, cols)


def bits(a):
    return np.ascontiguousarray(np.asarray(a, dtype=np.float32)).view(np.uint32)


# ---------------------------------------------------------------------------- the 8 x 128 input

def make_input_8x128():
    """8 x 128 float32, 16 blocks of 64 (each row two blocks); rows:
    0: N(0, 0.02^2);
    1: all zeros;
    2: N(0, 0.02^2) with one outlier 3.71875 at column 37;
    3: 0.02 times Student's t with 3 degrees of freedom (heavy-tailed);
    4: N(0, (2e-5)^2) in its first block (float16 subnormals), N(0, 0.002^2) in its second;
    5: odd multiples of 2^-13 and absmax 127 * 2^-12 at column 5 (negative): x * (127 / absmax)
       falls exactly halfway between integers (LLM.int8 ties);
    6: first block: absmax 2^-6 at column 0, then the 15 NF4 and the 15 FP4 midpoints of
       bitsandbytes' tables (their float32 (a + b) / 2; one FP4 midpoint is 0) times 2^-6, the
       rest small normals; second block: absmax -2^-7 at column 64, the FP4 midpoints times
       -2^-7 (so a -0.0 at column 72), small normals;
    7: N(0, 0.02^2), -0.0 at columns 3 and 90, -0.09375 and +0.09375 at columns 100 and 101."""
    rng = np.random.RandomState(SEED_8X128)
    w = np.zeros((8, 128), dtype=np.float32)
    w[0] = 0.02 * rng.standard_normal(128)
    w[2] = 0.02 * rng.standard_normal(128)
    w[2, 37] = 3.71875
    w[3] = 0.02 * rng.standard_t(3, 128)
    w[4, :64] = 2e-5 * rng.standard_normal(64)
    w[4, 64:] = 0.002 * rng.standard_normal(64)
    w[5] = (2 * rng.randint(-64, 64, 128) + 1) / 8192.0
    w[5, 5] = -127 / 4096.0
    nf4 = np.array(NF4_TABLE, dtype=np.float32)
    fp4 = np.sort(np.array(FP4_TABLE, dtype=np.float32))
    nf4_mid = ((nf4[:-1] + nf4[1:]) / np.float32(2)).astype(np.float32)
    fp4_mid = np.unique(((fp4[:-1] + fp4[1:]) / np.float32(2)).astype(np.float32))
    fill = np.clip(0.004 * rng.standard_normal(128), -0.0078, 0.0078)
    w[6] = fill
    w[6, 0] = 2.0 ** -6
    w[6, 1:16] = nf4_mid * np.float32(2.0 ** -6)
    w[6, 16:16 + fp4_mid.size] = fp4_mid * np.float32(2.0 ** -6)
    w[6, 64] = -(2.0 ** -7)
    w[6, 65:65 + fp4_mid.size] = fp4_mid * np.float32(-(2.0 ** -7))
    w[7] = 0.02 * rng.standard_normal(128)
    w[7, 3] = -0.0
    w[7, 90] = -0.0
    w[7, 100] = -0.09375
    w[7, 101] = 0.09375
    return w.astype(np.float32)


# bitsandbytes' get_4bit_type tables, only to place the midpoints of row 6 (the goldens
# themselves use the tables bitsandbytes computes; main() checks these against them).
NF4_TABLE = [-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
             -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
             0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
             0.7229568362236023, 1.0]
FP4_TABLE = list(np.array([0, 0.0625, 8, 12, 4, 6, 2, 3, 0, -0.0625, -8, -12, -4, -6, -2, -3], np.float32)
                 / np.float32(12))  # float32 division, as get_4bit_type; +0.0 at code 8, as there


def write_input(path, w):
    with open(path, "w") as f:
        f.write("# rows cols, then W row-major as hex float32\n")
        f.write(f"{w.shape[0]} {w.shape[1]}\n")
        f.write(" ".join(float(v).hex() for v in w.ravel()) + "\n")


# ---------------------------------------------------------------------------- bitsandbytes runs

def torch_dtype(torch, name):
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "f32": torch.float32}[name]


def unpack(packed, n):
    p = packed.reshape(-1).astype(np.uint8)
    return np.stack([p >> 4, p & 15], axis=1).ravel()[:n]


def absmax_fields(F, state):
    """The scale fields of a quant state, as bitsandbytes holds them, and the absmax that
    dequantize_4bit multiplies by."""
    if state.nested:
        restored = F.dequantize_blockwise(state.absmax, state.state2) + state.offset
        return {
            "absmax_codes": state.absmax.numpy().copy(),
            "nested_absmax": state.state2.absmax.numpy().copy(),
            "offset": np.array([state.offset.item()], dtype=np.float32),
            "absmax_restored": restored.float().numpy().copy(),
        }, restored.float()
    return {"absmax": state.absmax.numpy().copy()}, state.absmax


def run_load4(F, torch, w, source):
    """{case: {field: array}} of golden_load4_<source>bit: source 16 (W16 quantized at load) or
    32 (W float32 quantized, dequantized as bfloat16 and float32)."""
    cases = {}
    wt = torch.from_numpy(w)
    n = w.size
    for qt in QUANT_TYPES:
        for dname in (("bf16", "fp16") if source == 16 else ("f32",)):
            for dq in (False, True):
                name = f"{qt}_{dname}_dq{int(dq)}" if source == 16 else f"{qt}_dq{int(dq)}"
                x = wt.to(torch_dtype(torch, dname))
                q, state = F.quantize_4bit(x, blocksize=BLOCK, quant_type=qt, compress_statistics=dq)
                fields = {"packed": q.numpy().reshape(-1).copy()}
                scale, restored = absmax_fields(F, state)
                fields.update(scale)
                code = F.get_4bit_type(qt, device="cpu")
                codes = torch.from_numpy(unpack(fields["packed"], n).astype(np.int64))
                outs = ("out",) if source == 16 else ("out_bf16", "out_f32")
                for key in outs:
                    if key != "out":
                        state.dtype = torch_dtype(torch, key[4:])
                    out = F.dequantize_4bit(q, state)
                    assert out.dtype == state.dtype and tuple(out.shape) == w.shape
                    # Consistency: out = code[q] * absmax (float32), rounded once to the dtype.
                    scales = torch.repeat_interleave(restored, BLOCK)[:n]
                    assert torch.equal((code[codes] * scales).to(state.dtype), out.reshape(-1)), name
                    fields[key] = out.float().numpy().copy()
                fields["_q"], fields["_state"] = q, state
                cases[name] = fields
    return cases


def run_load8(F, torch, w):
    cases = {}
    wt = torch.from_numpy(w)
    for name, w16 in (("fp16", wt.half()), ("bf16_fp16", wt.to(torch.bfloat16).half())):
        codes, scb, _ = F.kernels["int8_vectorwise_quant"](w16.clone())
        out = F.kernels["int8_vectorwise_dequant"](codes, scb)
        assert codes.dtype == torch.int8 and scb.dtype == torch.float32 and out.dtype == torch.float32
        # Consistency, in numpy float32: SCB = max |W16| per row; codes = round half to even of
        # W16 * (127 / SCB) (0 for a zero row: 0 * inf is NaN, which torch casts to 0 here);
        # out = (codes * SCB) * float32(7.874015718698502e-3).
        x = w16.float().numpy()
        s = scb.numpy()
        assert np.array_equal(bits(s), bits(np.abs(x).max(axis=1)))
        with np.errstate(divide="ignore", invalid="ignore"):
            r = np.rint(x * (np.float32(127) / s)[:, None])
        assert np.array_equal(np.nan_to_num(r, nan=0.0).astype(np.int8), codes.numpy()), name
        o = (codes.numpy().astype(np.float32) * s[:, None]) * np.float32(7.874015718698502e-3)
        assert np.array_equal(bits(o), bits(out.numpy())), name
        cases[name] = {"codes": codes.numpy().copy(), "scb": scb.numpy().copy(), "out": out.numpy().copy()}
    return cases


# ---------------------------------------------------------------------------- writing

def header(rev, input_name, w, lines):
    return ([f"# bitsandbytes {rev} (its pure-PyTorch default kernels through bnb_peer.py)",
             "# made by tests/data/make_load_golden.py; see tests/data/README.md"] + lines +
            [f"bitsandbytes: {rev}", f"input: {input_name}", f"shape: {w.shape[0]} {w.shape[1]}"])


def load4_lines(F, rev, input_name, w, cases, source):
    if source == 16:
        how = ["# <case> = <quant_type>_<bf16|fp16>_dq<0|1>: W16 = W.to(dtype);",
               "#   q, state = quantize_4bit(W16, blocksize=64, quant_type, compress_statistics=dq);",
               "#   out = dequantize_4bit(q, state) (16-bit), written as float32"]
    else:
        how = ["# <case> = <quant_type>_dq<0|1>: q, state = quantize_4bit(W, blocksize=64, quant_type,",
               "#   compress_statistics=dq) with W float32; out_bf16 = dequantize_4bit(q, state) with",
               "#   state.dtype = bfloat16 (as float32), out_f32 the same with state.dtype = float32"]
    how += ["# <case>.packed: q, ceil(n/2) bytes, 2 hex digits each; the first element of a pair in the",
            "#   high nibble (an odd count's last low nibble is the code of the pad 0.0)",
            "# dq0: <case>.absmax: one float32 per block of 64 (the last block may be short)",
            "# dq1: <case>.absmax_codes: one uint8 per block (decimal), codes of dynamic_map;",
            "#   <case>.nested_absmax: float32 per block of 256 absmax; <case>.offset: state.offset;",
            "#   <case>.absmax_restored: dequantize_blockwise(absmax_codes, state2) + offset, float32,",
            "#   what dequantize_4bit multiplies code[q] by",
            "# dynamic_map: bitsandbytes' create_dynamic_map() (the nested quant map), 256 float32"]
    lines = header(rev, input_name, w, how)
    lines += [f"blocksize: {BLOCK}", f"nested_blocksize: {NESTED_BLOCK}", "cases: " + " ".join(cases),
              "dynamic_map: " + f32_tokens(F.create_dynamic_map().numpy())]
    for name, fields in cases.items():
        lines.append(f"# {name}")
        for key, value in fields.items():
            if key.startswith("_"):
                continue
            if key == "packed":
                lines.append(f"{name}.{key}: " + byte_tokens(value))
            elif key == "absmax_codes":
                lines.append(f"{name}.{key}: " + int_tokens(value))
            else:
                lines.append(f"{name}.{key}: " + f32_tokens(value))
    return lines


def load8_lines(rev, input_name, w, cases):
    how = ["# <case> = fp16: W16 = W.half(); bf16_fp16: W16 = W.to(bfloat16).half() (a bfloat16 backbone);",
           "#   codes, SCB, _ = int8_vectorwise_quant(W16) (threshold 0);",
           "#   out = int8_vectorwise_dequant(codes, SCB) = codes * SCB[row] * 7.874015718698502e-3 in float32",
           "# <case>.codes: int8, row-major, decimal; <case>.scb: float32 per row; <case>.out: float32, row-major"]
    lines = header(rev, input_name, w, how) + ["cases: " + " ".join(cases)]
    for name, fields in cases.items():
        lines.append(f"# {name}")
        lines.append(f"{name}.codes: " + int_tokens(fields["codes"]))
        lines.append(f"{name}.scb: " + f32_tokens(fields["scb"]))
        lines.append(f"{name}.out: " + f32_tokens(fields["out"]))
    return lines


def text(lines):
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- checks

def count(mask):
    return int(np.count_nonzero(mask))


def requant_one(F, torch, q, state, qt, dtype, n):
    """Dequantize q as `dtype` (16-bit), quantize the result again (same quant_type and block
    size, no double quantization; the 4-bit codes do not depend on it) and compare. Returns the
    counts: codes that differ, of them FP4 0 <-> 8 (both zero), blocks whose restored absmax is
    <= 0, codes that differ outside those blocks, absmax that differ from the restored absmax
    rounded to `dtype` (zero blocks, whose absmax becomes 0, left out), values that differ
    when dequantized again (only meaningful without double quantization)."""
    if state.nested:
        restored = (F.dequantize_blockwise(state.absmax, state.state2) + state.offset).float()
    else:
        restored = state.absmax
    restored = restored.numpy()
    state.dtype = dtype
    out16 = F.dequantize_4bit(q, state)
    q2, st2 = F.quantize_4bit(out16, blocksize=BLOCK, quant_type=qt, compress_statistics=False)
    c1, c2 = unpack(q.numpy(), n), unpack(q2.numpy(), n)
    diff = c1 != c2
    zero_only = count(diff & np.isin(c1, (0, 8)) & np.isin(c2, (0, 8))) if qt == "fp4" else 0
    bad_block = restored <= 0
    elem_bad = np.repeat(bad_block, BLOCK)[:n]
    expect = torch.from_numpy(restored).to(dtype).float().numpy()
    am2 = st2.absmax.numpy()
    zero_block = np.array([not out16.reshape(-1)[b * BLOCK:(b + 1) * BLOCK].any() for b in range(am2.size)])
    am_diff = count((bits(am2) != bits(expect)) & ~zero_block & ~bad_block)
    out16b = F.dequantize_4bit(q2, st2)
    vals = count(bits(out16b.float().numpy()) != bits(out16.float().numpy()))
    return (count(diff), zero_only, count(bad_block), count(diff & ~elem_bad), am_diff, vals,
            count(zero_block))


def requant_checks(F, torch, tag, w, cases16, cases32, cases8):
    """The re-quantization property: a 16-bit backbone holding the dequantized values is
    quantized again by bitsandbytes to the same codes and scales."""
    print(f"{tag}:")
    n = w.size
    wt = torch.from_numpy(w)
    for name, f in cases16.items():
        qt, dname = name.split("_")[:2]
        dtype = torch_dtype(torch, dname)
        w16 = wt.to(dtype)
        # codes from W16 against codes from W16's float32 values (float32 absmax)
        q32, st32 = F.quantize_4bit(w16.float(), blocksize=BLOCK, quant_type=qt, compress_statistics=False)
        q16, st16 = F.quantize_4bit(w16, blocksize=BLOCK, quant_type=qt, compress_statistics=False)
        from32 = (count(unpack(q16.numpy(), n) != unpack(q32.numpy(), n)),
                  count(bits(st16.absmax.numpy()) != bits(st32.absmax.numpy())))
        r = requant_one(F, torch, f["_q"], f["_state"], qt, dtype, n)
        print(f"  W16 {name}: codes(W16) vs codes(float32(W16)): {from32[0]} codes, {from32[1]} absmax differ; "
              f"re-quantized: {r[0]} codes differ ({r[1]} FP4 0<->8, {r[3]} outside the {r[2]} blocks with "
              f"restored absmax <= 0), {r[4]} absmax differ ({r[6]} zero blocks left out), "
              f"dequantized again: {r[5]} values differ")
    for name, f in cases32.items():
        qt = name.split("_")[0]
        for dname in ("bf16", "fp16"):
            r = requant_one(F, torch, f["_q"], f["_state"], qt, torch_dtype(torch, dname), n)
            print(f"  W f32 {name} as {dname}: re-quantized: {r[0]} codes differ ({r[1]} FP4 0<->8, {r[3]} "
                  f"outside the {r[2]} blocks with restored absmax <= 0), {r[4]} absmax differ from the "
                  f"absmax in {dname} ({r[6]} zero blocks left out), dequantized again: {r[5]} values differ")
    for name, f in cases8.items():
        out = torch.from_numpy(f["out"])
        for cast, x in (("fp16", out.half()), ("bf16_fp16", out.to(torch.bfloat16).half())):
            codes2, scb2, _ = F.kernels["int8_vectorwise_quant"](x.clone())
            dc = count(codes2.numpy() != f["codes"])
            ds = count(bits(scb2.numpy()) != bits(f["scb"]))
            print(f"  int8 {name}: out cast {cast}, re-quantized: {dc} codes differ, {ds} SCB differ")


def edge_notes(F, torch, tag, cases16, cases8, w):
    """Facts about the edge cases, printed for the README."""
    n = w.size
    for name in ("nf4_bf16_dq0", "fp4_bf16_dq0"):
        f = cases16[name]
        c = unpack(f["packed"], n)
        am = f["absmax"]
        zero_blocks = np.flatnonzero(am == 0)
        for b in zero_blocks:
            cb = c[b * BLOCK:(b + 1) * BLOCK]
            ob = f["out"][b * BLOCK:(b + 1) * BLOCK]
            print(f"  {tag} {name}: all-zero block {b}: absmax {am[b]}, codes {sorted(set(cb.tolist()))}, "
                  f"out sign bits {sorted(set(np.signbit(ob).tolist()))}")
        if name.startswith("fp4"):
            ws = w.ravel()
            neg_zero_out = count(np.signbit(f["out"]) & (f["out"] == 0))
            print(f"  {tag} {name}: code 8 count {count(c == 8)}, code 0 count {count(c == 0)}, "
                  f"-0.0 in out {neg_zero_out}, inputs -0.0 {count(np.signbit(ws) & (ws == 0))}")
    for name, f in cases8.items():
        zero_rows = np.flatnonzero(f["scb"] == 0)
        for r in zero_rows:
            print(f"  {tag} int8 {name}: zero row {r}: SCB {f['scb'][r]}, codes {sorted(set(f['codes'][r].tolist()))}")


# ---------------------------------------------------------------------------- offset study

def offset_study(torch, count_vectors):
    """torch's float32 mean() (bitsandbytes' double-quant offset, here on the CPU) against the
    mean summed in double, one rounding to float32 (loftq::double_quantize)."""
    rng = np.random.default_rng(20260101)
    kinds = ("normal-f32", "normal-bf16", "t3-f32", "t3-bf16")
    buckets = ("blocks 1-256", "blocks 257-8192", "blocks 8193-200000")
    tally = {k: [0, 0, 0] for k in kinds + buckets + ("all",)}
    worst = 0
    exact_vs_seq = 0
    lengths = np.exp(rng.uniform(0.0, math.log(200000), count_vectors)).astype(np.int64).clip(1, 200000)
    lengths[:4] = (1, 2, 200000, 199999)
    for i, blocks in enumerate(lengths):
        kind = kinds[i % 4]
        scale = 0.02 * math.exp(rng.uniform(-1.5, 1.5))
        if kind.startswith("normal"):
            x = rng.standard_normal(int(blocks) * 64, dtype=np.float32) * np.float32(scale)
        else:
            x = (rng.standard_t(3, int(blocks) * 64) * scale).astype(np.float32)
        t = torch.from_numpy(x)
        if kind.endswith("bf16"):
            t = t.to(torch.bfloat16).float()
        absmax = t.abs().reshape(-1, 64).max(dim=1)[0].contiguous()
        m_torch = np.float32(absmax.mean().item())
        a = absmax.numpy().astype(np.float64)
        m_ours = np.float32(np.cumsum(a)[-1] / a.size)  # sequential double sum, like the library
        m_exact = np.float32(math.fsum(a) / a.size)
        exact_vs_seq += int(m_ours != m_exact)
        ulps = abs(int(bits(m_torch)[()]) - int(bits(m_ours)[()]))
        worst = max(worst, ulps)
        slot = 0 if ulps == 0 else (1 if ulps == 1 else 2)
        bucket = buckets[0] if blocks <= 256 else (buckets[1] if blocks <= 8192 else buckets[2])
        for k in (kind, bucket, "all"):
            tally[k][slot] += 1
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {count_vectors} absmax vectors of "
          f"1..200000 blocks of 64 (log-uniform lengths)")
    for k, (same, one, more) in tally.items():
        print(f"  {k}: identical {same}, 1 ulp {one}, more {more}")
    print(f"  largest difference: {worst} ulp; sequential double sum vs exact (fsum) after rounding: "
          f"{exact_vs_seq} differ")


# ---------------------------------------------------------------------------- main

OURS = (("bnb_nf4_dq_8x128", "4bit"), ("bnb_fp4_dq_6x100", "4bit"), ("bnb_int8_8x128", "int8"))


def read_safetensors(torch, path):
    """The tensors of a safetensors file, by name (little-endian, as the format has it)."""
    import json
    import struct
    with open(path, "rb") as f:
        raw = f.read()
    (length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + length])
    data = raw[8 + length:]
    dtypes = {"U8": np.uint8, "I8": np.int8, "F32": np.float32}
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        a = np.frombuffer(data[begin:end], dtype=dtypes[info["dtype"]]).reshape(info["shape"]).copy()
        out[name] = torch.from_numpy(a)
    return out


def bnb_reads_ours_lines(F, torch, rev):
    """What bitsandbytes dequantizes from the library's bnb_*.safetensors files."""
    lines = [f"# bitsandbytes {rev}: what it dequantizes from the files loftq-cpp writes",
             "# <file>.out: QuantState.from_dict(tensors) + dequantize_4bit(weight, state), or",
             "#   int8_vectorwise_dequant(weight, SCB); row-major, float32",
             f"bitsandbytes: {rev}", "files: " + " ".join(name for name, _ in OURS)]
    for name, kind in OURS:
        t = read_safetensors(torch, os.path.join(HERE, name + ".safetensors"))
        if kind == "4bit":
            qs = {k[len("w.weight."):]: v for k, v in t.items() if k.startswith("w.weight.")}
            state = F.QuantState.from_dict(qs, device="cpu")
            out = F.dequantize_4bit(t["w.weight"], state).float()
        else:
            out = F.kernels["int8_vectorwise_dequant"](t["w.weight"], t["w.SCB"]).float()
        lines.append(f"{name}.out: " + f32_tokens(out.numpy().reshape(-1)))
    return lines


def main():
    args = sys.argv[1:]
    if not args or args[0].startswith("-"):
        sys.exit(__doc__)
    sys.path.insert(0, args[0])
    import torch
    import bnb_peer
    mode = args[1] if len(args) > 1 else "write"
    if mode == "--offset-mean":
        offset_study(torch, int(args[2]) if len(args) > 2 else 2000)
        return
    if mode not in ("write", "--check"):
        sys.exit(__doc__)
    F = bnb_peer.load()
    rev = F.rev
    for qt, table in (("nf4", NF4_TABLE), ("fp4", FP4_TABLE)):
        assert np.array_equal(bits(F.get_4bit_type(qt, device="cpu").numpy()), bits(table)), qt

    files = {}
    w8 = make_input_8x128()
    path = os.path.join(HERE, "golden_input_8x128.txt")
    if mode == "write":
        write_input(path, w8)
    files_ok = True
    if not np.array_equal(bits(read_input("golden_input_8x128.txt")), bits(w8)):
        print("golden_input_8x128.txt: differs from the generator")
        files_ok = False

    for tag, input_name in INPUTS:
        w = read_input(input_name)
        c16 = run_load4(F, torch, w, 16)
        c32 = run_load4(F, torch, w, 32)
        c8 = run_load8(F, torch, w)
        files[f"golden_load4_16bit_{tag}.txt"] = text(load4_lines(F, rev, input_name, w, c16, 16))
        files[f"golden_load4_32bit_{tag}.txt"] = text(load4_lines(F, rev, input_name, w, c32, 32))
        files[f"golden_load8_{tag}.txt"] = text(load8_lines(rev, input_name, w, c8))
        if mode == "write":
            requant_checks(F, torch, tag, w, c16, c32, c8)
            edge_notes(F, torch, tag, c16, c8, w)

    files["golden_bnb_reads_ours.txt"] = text(bnb_reads_ours_lines(F, torch, rev))

    for name, body in files.items():
        path = os.path.join(HERE, name)
        if mode == "write":
            with open(path, "w") as f:
                f.write(body)
        with open(path) as f:
            same = f.read() == body
        # read back through the parser: every float token is exact
        keyed = read_keyed(path)
        assert keyed["bitsandbytes"] == [rev]
        print(f"{name}: {'identical' if same else 'DIFFERENT'} ({len(body)} bytes)")
        files_ok &= same
    print(f"bitsandbytes {rev}: " + ("all identical" if files_ok else "DIFFERENT"))
    sys.exit(0 if files_ok else 1)


if __name__ == "__main__":
    main()
