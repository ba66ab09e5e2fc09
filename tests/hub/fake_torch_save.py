#!/usr/bin/env python3
"""Writes a file in torch.save's format without torch (python3 stdlib), for the reader's cases that the real
fixtures (tests/fixtures/torch_tiny, scripts/make_torch_fixture.py) do not cover:

  fake_torch_save.py zero3 OUT   the layout of DeepSpeed ZeRO-3's mp_rank_00_model_states.pt: {"module": names of
                                 GPT-2 parameters -> empty bf16 tensors (the weights live in the optimizer
                                 partitions), "ds_version", "param_shapes", "global_steps"}
  fake_torch_save.py zero2 OUT SAFETENSORS
                                 ZeRO 0-2's: {"module": the safetensors file's F32 tensors under "module."-less
                                 names, "ds_version", "global_steps", "optimizer": None}

The pickle is what torch.save emits for that object: protocol 2, typed storages as persistent ids ("storage",
torch.BFloat16Storage, key, "cpu", numel), tensors as torch._utils._rebuild_tensor_v2 calls, in a zip of stored
records (<name>/data.pkl, <name>/data/<key>, <name>/version)."""
import collections
import io
import pickle
import sys
import types
import zipfile

torch = types.ModuleType("torch")
utils = types.ModuleType("torch._utils")


class BFloat16Storage:
    pass


class FloatStorage:
    pass


def _rebuild_tensor_v2(*args):
    raise RuntimeError("never called: only pickled by reference")


BFloat16Storage.__module__ = "torch"
FloatStorage.__module__ = "torch"
torch.FloatStorage = FloatStorage
_rebuild_tensor_v2.__module__ = "torch._utils"
torch.BFloat16Storage = BFloat16Storage
torch._utils = utils
utils._rebuild_tensor_v2 = _rebuild_tensor_v2
if "torch" not in sys.modules:  # a user of the real torch (fake_deepspeed.py --torch) imported it first
    sys.modules["torch"] = torch
    sys.modules["torch._utils"] = utils


class Storage:
    def __init__(self, key, numel, cls=BFloat16Storage):
        self.key, self.numel, self.cls = key, numel, cls


class Tensor:
    """A contiguous tensor: a storage of its own (key, cls), or `storage` shared with others, from element `offset`"""

    def __init__(self, key, shape, cls=BFloat16Storage, storage=None, offset=0, requires_grad=False):
        self.shape, self.offset, self.requires_grad = tuple(shape), offset, requires_grad
        self.storage = storage if storage is not None else Storage(key, 0, cls)

    def __len__(self):
        return self.shape[0]

    def __reduce_ex__(self, proto):
        numel, stride = 1, []
        for d in reversed(self.shape):
            stride.insert(0, numel)
            numel *= d
        if self.storage.numel == 0:
            self.storage.numel = numel
        return (_rebuild_tensor_v2, (self.storage, self.offset, self.shape, tuple(stride), self.requires_grad,
                                     collections.OrderedDict()))


class Pickler(pickle.Pickler):
    location = "cpu"

    def persistent_id(self, obj):
        if isinstance(obj, Storage):
            return ("storage", obj.cls, obj.key, self.location, obj.numel)
        return None


def save(obj, path, storages, location="cpu"):
    """torch.save's zip of obj, its storages' bytes by key; location: where torch would say they lived"""
    buf = io.BytesIO()
    pk = Pickler(buf, protocol=2)
    pk.location = location
    pk.dump(obj)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", buf.getvalue())
        for key, raw in storages.items():
            z.writestr(f"archive/data/{key}", raw)
        z.writestr("archive/version", b"3\n")


def read_safetensors(path):
    import json
    import struct
    data = open(path, "rb").read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    header.pop("__metadata__", None)
    return [(k, v["shape"], data[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]]) for k, v in
            header.items() if v["dtype"] == "F32"]


def main():
    kind, out = sys.argv[1], sys.argv[2]
    if kind == "zero2":
        tensors = read_safetensors(sys.argv[3])
        module = collections.OrderedDict((name, Tensor(str(i), shape, FloatStorage))
                                         for i, (name, shape, _) in enumerate(tensors))
        save({"module": module, "ds_version": "0.16.0", "global_steps": 100, "optimizer": None}, out,
             {str(i): raw for i, (_, _, raw) in enumerate(tensors)})
        return
    if kind != "zero3":
        raise SystemExit(f"unknown kind {kind}")
    names = ["transformer.wte.weight", "transformer.wpe.weight"]
    for l in range(2):
        for p in ("ln_1", "attn.c_attn", "attn.c_proj", "ln_2", "mlp.c_fc", "mlp.c_proj"):
            names += [f"transformer.h.{l}.{p}.weight", f"transformer.h.{l}.{p}.bias"]
    names += ["transformer.ln_f.weight", "transformer.ln_f.bias"]
    module = collections.OrderedDict((n, Tensor(str(i), (0,))) for i, n in enumerate(names))
    save({"module": module, "ds_version": "0.16.0", "param_shapes": [{n: (1,) for n in names}], "buffer_names": [],
          "global_steps": 100}, out, {str(i): b"" for i in range(len(names))})


if __name__ == "__main__":
    main()
