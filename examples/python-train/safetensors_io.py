"""A small safetensors reader and writer (the `safetensors` package is not on Debian).

The format (https://huggingface.co/docs/safetensors): an 8-byte little-endian header length n,
n bytes of JSON {name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__":
{str: str}}, then the raw little-endian tensor data. bpo's Go reader (trainer/model/safetensors.go)
wants the data contiguous in offset order with no trailing bytes, which is what write() makes.
"""
import json
import os
import struct
import tempfile

import torch

# dtype name -> (torch dtype, bytes per element). BF16 and F16 are read only: bpo writes F32
# (weights, adapters) and F64 (optimizer state).
_DTYPES = {
    "F64": (torch.float64, 8),
    "F32": (torch.float32, 4),
    "F16": (torch.float16, 2),
    "BF16": (torch.bfloat16, 2),
}
_NAMES = {torch.float64: "F64", torch.float32: "F32"}

MAX_HEADER = 100_000_000  # the Go reader's limit; a larger header is a corrupt file


def read(path):
    """Returns ({name: float64 tensor}, metadata dict or {}). Errors name the file and tensor."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise ValueError(f"{path}: {len(data)} bytes, too short for a safetensors header")
    (n,) = struct.unpack("<Q", data[:8])
    if n > MAX_HEADER or n > len(data) - 8:
        raise ValueError(f"{path}: header length {n} does not fit the file ({len(data)} bytes)")
    header = json.loads(data[8:8 + n])
    body = memoryview(data)[8 + n:]
    meta = header.pop("__metadata__", None) or {}
    out = {}
    for name, info in header.items():
        dtype, size = _DTYPES.get(info["dtype"], (None, 0))
        if dtype is None:
            raise ValueError(f"{path}: tensor {name}: unsupported dtype {info['dtype']}")
        begin, end = info["data_offsets"]
        shape = list(info["shape"])
        numel = 1
        for s in shape:
            numel *= s
        if end - begin != numel * size or end > len(body):
            raise ValueError(f"{path}: tensor {name}: data_offsets {begin, end} do not hold {info['dtype']}{shape}")
        # frombuffer shares the bytes; .to(float64) copies, so the file's buffer can go.
        t = torch.frombuffer(bytearray(body[begin:end]), dtype=dtype) if numel else torch.empty(0, dtype=dtype)
        out[name] = t.reshape(shape).to(torch.float64)
    return out, meta


def encode(tensors, metadata=None, dtype=torch.float32):
    """The bytes of a safetensors file: tensors (any float dtype) stored as dtype, names sorted,
    header padded with spaces to a multiple of 8 bytes (as the Rust and Go writers do)."""
    name = _NAMES[dtype]
    header, blobs, off = {}, [], 0
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    for key in sorted(tensors):
        t = tensors[key].detach().to("cpu", dtype).contiguous()
        if not torch.isfinite(t).all():
            raise ValueError(f"tensor {key}: non-finite values cannot be saved (overflow in {name}?)")
        b = t.numpy().astype(t.numpy().dtype.newbyteorder("<"), copy=False).tobytes()
        header[key] = {"dtype": name, "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


def write(path, tensors, metadata=None, dtype=torch.float32):
    """Writes a safetensors file atomically (see write_atomic)."""
    write_atomic(path, encode(tensors, metadata, dtype))


def write_atomic(path, data):
    """The contract's atomic write (pipeline.writeFileAtomic): a temp file ".<name>.tmp-*" in the
    same folder, fsync, mode 0644, rename, fsync the folder. A reader never sees half a file, and
    the stage's sweeper recognises the temp name of a write killed half-way."""
    folder, base = os.path.split(path)
    os.makedirs(folder or ".", exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + base + ".tmp-", dir=folder or ".")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), 0o644)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dfd = os.open(folder or ".", os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
