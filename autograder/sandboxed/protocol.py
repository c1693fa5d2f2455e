"""The wire format between the judge and a worker: length-prefixed JSON, tensors as base64 bytes.

Both sides may be hostile to each other's assumptions, so decoding never unpickles anything: a tensor
is a whitelisted dtype, a shape and raw bytes whose length must match. This file is copied next to
worker.py into each sandbox, so it imports nothing from the autograder package.
"""
import base64
import json
import struct

import numpy as np
import torch

MAX_MESSAGE_BYTES = 64 * 2**20
_HEADER = struct.Struct("!Q")
_DTYPES = {"float32": np.float32, "float64": np.float64, "int64": np.int64, "bool": np.bool_}


class ProtocolError(Exception):
    pass


def encode(value):
    """Turn nested dicts/lists of tensors and plain values into JSON-ready data."""
    if isinstance(value, torch.Tensor):
        array = value.detach().to("cpu").contiguous().numpy()
        if array.dtype.name not in _DTYPES:
            array = array.astype(np.float32)
        return {"__tensor__": array.dtype.name, "shape": list(array.shape),
                "data": base64.b64encode(array.tobytes()).decode("ascii")}
    if isinstance(value, dict):
        return {str(k): encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)[:200]


def decode(value):
    if isinstance(value, dict):
        if "__tensor__" in value:
            return _decode_tensor(value)
        return {k: decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode(v) for v in value]
    return value


def _decode_tensor(blob):
    dtype = _DTYPES.get(blob.get("__tensor__"))
    shape = blob.get("shape")
    if dtype is None or not isinstance(shape, list) or not all(isinstance(n, int) and n >= 0 for n in shape):
        raise ProtocolError("malformed tensor")
    raw = base64.b64decode(blob.get("data", ""), validate=True)
    count = int(np.prod(shape, dtype=np.int64))
    if len(raw) != count * np.dtype(dtype).itemsize:
        raise ProtocolError("tensor byte count does not match its shape")
    return torch.from_numpy(np.frombuffer(raw, dtype=dtype).reshape(shape).copy())


def frame(message):
    """The bytes of one message: its length, then its JSON."""
    payload = json.dumps(encode(message)).encode("utf-8")
    return _HEADER.pack(len(payload)) + payload


def write_message(stream, message):
    stream.write(frame(message))
    stream.flush()


def read_exact(read, n):
    chunks, remaining = [], n
    while remaining:
        chunk = read(remaining)
        if not chunk:
            raise EOFError("peer closed the pipe")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def read_message(read, limit=MAX_MESSAGE_BYTES):
    """`read(n)` returns up to n bytes; raises EOFError when the peer is gone. A message longer than `limit` is
    refused from its header, before its body is read."""
    (length,) = _HEADER.unpack(read_exact(read, _HEADER.size))
    if length > limit:
        raise ProtocolError(f"message of {length} bytes exceeds the limit")
    try:
        return decode(json.loads(read_exact(read, length)))
    except ValueError as exc:
        raise ProtocolError(f"undecodable message: {exc}") from None


# A worker may ask the judge a question in the middle of an operation (the layers' attention stand-in does):
# it writes {"callback": kind, "args": ...} and reads the judge's {"ok": True, "result": ...} or {"ok": False,
# "error": ...}, before it gives the operation's own answer.
CALLBACK = "callback"


def is_callback(message):
    return isinstance(message, dict) and CALLBACK in message


def ask(requests, responses, kind, args):
    """The worker's side of a callback: the judge's result, or RuntimeError with the judge's reason."""
    write_message(responses, {CALLBACK: kind, "args": args})
    return callback_result(kind, read_message(requests.read))


def callback_result(kind, reply):
    if not isinstance(reply, dict) or not reply.get("ok"):
        reason = reply.get("error") if isinstance(reply, dict) else "malformed reply"
        raise RuntimeError(f"the grader refused the {kind} call: {reason}")
    return reply.get("result")
