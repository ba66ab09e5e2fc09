#!/usr/bin/env python3
"""Writes a DeepSpeed save_checkpoint folder without torch or DeepSpeed (python3 stdlib), from a safetensors model,
laid out as DeepSpeed 0.16-0.18 writes it (read from deepspeed/runtime/engine.py, zero/stage_1_and_2.py,
zero/stage3.py, bf16_optimizer.py and utils/zero_to_fp32.py):

  fake_deepspeed.py OUT MODEL.safetensors [--stage 1|2|3] [--world W] [--bf16-optimizer] [--groups 1|2]
                    [--subgroups K] [--frozen NAME,...] [--shuffle] [--tag TAG] [--no-param-shapes] [--torch]

OUT/latest names TAG (global_step100); OUT/TAG holds:
  - mp_rank_00_model_states.pt (stages 1-2, the bf16 optimizer) or zero_pp_rank_<r>_mp_rank_00_model_states.pt
    (stage 3, one per rank): "module" (bf16 weights; stage 3 empty placeholders), "param_shapes" (one OrderedDict
    of name -> torch.Size per group, in flattening order), "frozen_param_shapes" / "frozen_param_fragments"
    (requires_grad false: whole, or a rank's piece at stage 3), "shared_params", "buffer_names", the counters,
    "ds_config", "ds_version", a client state;
  - [bf16_]zero_pp_rank_<r>_mp_rank_00_optim_states.pt, one per rank: {"optimizer_state_dict": ..., "ds_config",
    "ds_version"} with the rank's fp32 partition ("single_partition_of_fp32_groups": each group flattened, padded
    to 2 x W and cut in W; stored without the padding, as views of the padded storage. Stage 3
    "fp32_flat_groups": each parameter cut in W pieces of ceil(numel / W), the rank's pieces flattened and split
    into K sub-groups, the second a view at an offset of a shared storage), Adam's state, the loss scaler (an
    object), zero_stage (an IntEnum), partition_count, param_slice_mappings (dataclasses).

--bf16-optimizer: DeepSpeed's BF16_Optimizer (bf16 with ZeRO-1): bf16_zero_pp_rank_* files, no zero_stage, the
padding kept. --no-param-shapes: as without a ZeRO optimizer (bf16 at stage 0), the model states have none.
--torch: the same objects with torch's own tensors (GPU storages when there is a GPU, views of padded storages,
nn.Parameter, torch.Size) written by torch.save (needs torch: scripts/gpu_validate.sh dsreal on the device).
--groups 2 splits the parameters as nanoGPT's configure_optimizers does (2-D ones decayed, then the rest);
--shuffle reverses each group's order (the file's order, not the model's, is the one to follow). The fp32 values
are the model's exactly; the module's bf16 copies are rounded, so a reader that takes the module gives another loss.
"""
import argparse
import collections
import dataclasses
import enum
import os
import struct
import sys
import types

REAL = "--torch" in sys.argv  # torch.save of real tensors (on the device) instead of this file's pickler
if REAL:
    import torch  # noqa: E402,F401  (before fake_torch_save, which then leaves it alone)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fake_torch_save as fts  # noqa: E402  (registers the fake torch modules, unless the real one is there)

torch = sys.modules["torch"]

if REAL:
    Size = torch.Size
else:
    class Size(tuple):
        def __reduce__(self):
            return (Size, (tuple(self),))

    Size.__module__, Size.__qualname__, Size.__name__ = "torch", "Size", "Size"
    torch.Size = Size


def _module(name):
    """a module and its parent packages, importable by pickle"""
    parts = name.split(".")
    for i in range(1, len(parts) + 1):
        sys.modules.setdefault(".".join(parts[:i]), types.ModuleType(".".join(parts[:i])))
    return sys.modules[name]


cfg_mod = _module("deepspeed.runtime.zero.config")
ls_mod = _module("deepspeed.runtime.fp16.loss_scaler")
tf_mod = _module("deepspeed.utils.tensor_fragment")


class ZeroStageEnum(int, enum.Enum):
    disabled = 0
    optimizer_states = 1
    gradients = 2
    weights = 3


ZeroStageEnum.__module__ = cfg_mod.__name__
cfg_mod.ZeroStageEnum = ZeroStageEnum


class DynamicLossScaler:
    def __init__(self):
        self.cur_scale, self.cur_iter, self.last_overflow_iter = 65536.0, 100, -1
        self.scale_factor, self.scale_window, self.min_scale = 2.0, 1000, 1
        self.delayed_shift, self.cur_hysteresis, self.consecutive_hysteresis = 2, 2, False
        self.raise_error_at_min_scale, self.dynamic = True, True


DynamicLossScaler.__module__ = ls_mod.__name__
ls_mod.DynamicLossScaler = DynamicLossScaler


@dataclasses.dataclass
class fragment_address:
    numel: int
    start: int


fragment_address.__module__ = tf_mod.__name__
tf_mod.fragment_address = fragment_address


class Archive:
    """One torch.save file: its storages' bytes by key."""

    def __init__(self):
        self.records = {}

    def storage(self, raw, cls):
        key = str(len(self.records))
        self.records[key] = raw
        esize = 4 if cls is fts.FloatStorage else 2
        return fts.Storage(key, len(raw) // esize, cls)

    def f32(self, values, shape=None, pad=0):
        st = self.storage(struct.pack(f"<{len(values) + pad}f", *(list(values) + [0.0] * pad)), fts.FloatStorage)
        return fts.Tensor(None, shape if shape is not None else (len(values),), storage=st)

    def bf16(self, values, shape):
        return fts.Tensor(None, shape, storage=self.storage(b"".join(struct.pack("<H", to_bf16(v)) for v in values),
                                                            fts.BFloat16Storage))

    def views(self, lead, parts, first_requires_grad=True):
        """tensors of one storage at offsets: `lead` zeros, then the parts one after another"""
        flat = [0.0] * lead + sum(parts, [])
        st = self.storage(struct.pack(f"<{len(flat)}f", *flat), fts.FloatStorage)
        out, off = [], lead
        for i, p in enumerate(parts):
            out.append(fts.Tensor(None, (len(p),), storage=st, offset=off, requires_grad=first_requires_grad and i == 0))
            off += len(p)
        return out

    def save(self, obj, path):
        fts.save(obj, path, self.records, location="cuda:0")


class TorchArchive:
    """The same tensors made by torch (on the GPU when there is one, as DeepSpeed's are) and written by torch.save"""

    def __init__(self):
        self.dev = "cuda" if torch.cuda.is_available() else "cpu"

    def f32(self, values, shape=None, pad=0):
        t = torch.tensor(list(values) + [0.0] * pad, dtype=torch.float32, device=self.dev)
        return t[:len(values)].view(shape if shape is not None else (len(values),))

    def bf16(self, values, shape):
        return torch.tensor(list(values), dtype=torch.float32, device=self.dev).to(torch.bfloat16).view(shape)

    def views(self, lead, parts, first_requires_grad=True):
        base = torch.zeros(lead + sum(len(p) for p in parts), dtype=torch.float32, device=self.dev)
        out, off = [], lead
        for i, p in enumerate(parts):
            base[off:off + len(p)] = torch.tensor(p, dtype=torch.float32)
            v = base[off:off + len(p)]
            out.append(torch.nn.Parameter(v, requires_grad=True) if first_requires_grad and i == 0 else v)
            off += len(p)
        return out

    def save(self, obj, path):
        torch.save(obj, path)


def to_bf16(x):
    (u,) = struct.unpack("<I", struct.pack("<f", x))
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) & 0xFFFF


def prod(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def align(x, a):
    return (x + a - 1) // a * a


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("model")
    ap.add_argument("--stage", type=int, default=2)
    ap.add_argument("--world", type=int, default=2)
    ap.add_argument("--bf16-optimizer", action="store_true")
    ap.add_argument("--groups", type=int, default=1)
    ap.add_argument("--subgroups", type=int, default=1)
    ap.add_argument("--frozen", default="")
    ap.add_argument("--shuffle", action="store_true")
    ap.add_argument("--tag", default="global_step100")
    ap.add_argument("--no-param-shapes", action="store_true")
    ap.add_argument("--torch", action="store_true")
    a = ap.parse_args()
    W = a.world
    tensors = collections.OrderedDict()
    for name, shape, raw in fts.read_safetensors(a.model):
        tensors["transformer." + name if not name.startswith("transformer.") else name] = (
            tuple(shape), list(struct.unpack(f"<{len(raw) // 4}f", raw)))
    frozen = [n for n in a.frozen.split(",") if n]
    for n in frozen:
        assert n in tensors, n
    trainable = [n for n in tensors if n not in frozen]
    if a.groups == 2:
        groups = [[n for n in trainable if len(tensors[n][0]) >= 2], [n for n in trainable if len(tensors[n][0]) < 2]]
    else:
        groups = [trainable]
    if a.shuffle:
        groups = [list(reversed(g)) for g in groups]
    tagdir = os.path.join(a.out, a.tag)
    os.makedirs(tagdir, exist_ok=True)
    with open(os.path.join(a.out, "latest"), "w") as f:
        f.write(a.tag)
    with open(os.path.join(a.out, "zero_to_fp32.py"), "w") as f:
        f.write("# DeepSpeed copies its zero_to_fp32.py here\n")
    ds_config = {"train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 32,
                 "zero_optimization": {"stage": a.stage}, "bf16": {"enabled": True}, "gradient_clipping": 1.0}

    def model_states(rank):
        ar = TorchArchive() if REAL else Archive()
        module = collections.OrderedDict()
        for n, (shape, vals) in tensors.items():
            module[n] = ar.bf16([], (0,)) if a.stage == 3 else ar.bf16(vals, shape)
        module["lm_head.weight"] = module["transformer.wte.weight"]
        zero = not a.no_param_shapes
        fshapes = collections.OrderedDict((n, Size(tensors[n][0])) for n in frozen) if frozen else None
        frags = None
        if frozen:
            frags = collections.OrderedDict()
            for n in frozen:
                vals = tensors[n][1]
                if a.stage == 3:
                    part = -(-len(vals) // W)
                    piece = (vals + [0.0] * (part * W - len(vals)))[rank * part:(rank + 1) * part]
                    frags[n] = ar.f32(piece)
                else:
                    frags[n] = ar.f32(vals, tensors[n][0])
        state = dict(module=module, buffer_names=[], optimizer=None,
                     param_shapes=[collections.OrderedDict((n, Size(tensors[n][0])) for n in g) for g in groups]
                     if zero else None,
                     frozen_param_shapes=fshapes if a.stage >= 2 else None,
                     shared_params={"lm_head.weight": "transformer.wte.weight"} if zero else None,
                     frozen_param_fragments=frags if a.stage >= 2 else None,
                     lr_scheduler={"last_batch_iteration": 99, "warmup_num_steps": 10}, data_sampler=None,
                     random_ltd=None, sparse_tensor_module_names=set(), skipped_steps=0, global_steps=100,
                     global_samples=3200, dp_world_size=W, mp_world_size=1, ds_config=ds_config,
                     ds_version="0.17.2", iter_num=100, best_val_loss=3.25)
        name = (f"zero_pp_rank_{rank}_mp_rank_00_model_states.pt" if a.stage == 3 else "mp_rank_00_model_states.pt")
        ar.save(state, os.path.join(tagdir, name))

    for r in range(W if a.stage == 3 else 1):
        model_states(r)

    def adam_state(ar, sizes):
        st = {i: {"step": ar.f32([100.0], ()), "exp_avg": ar.f32([1e-3] * n), "exp_avg_sq": ar.f32([1e-6] * n)}
              for i, n in enumerate(sizes)}
        pg = [{"lr": 1e-4, "betas": (0.9, 0.95), "eps": 1e-8, "weight_decay": 0.1 if i == 0 else 0.0,
               "amsgrad": False, "params": [i]} for i in range(len(sizes))]
        return {"state": st, "param_groups": pg}

    for r in range(W):
        ar = TorchArchive() if REAL else Archive()
        od = {}
        if a.stage == 3:
            flat = []
            for g in groups:
                for n in g:
                    vals = tensors[n][1]
                    part = -(-len(vals) // W)
                    flat += (vals + [0.0] * (part * W - len(vals)))[r * part:(r + 1) * part]
            cut = [len(flat) * k // a.subgroups for k in range(a.subgroups + 1)]
            subs = [flat[cut[k]:cut[k + 1]] for k in range(a.subgroups)]
            if len(subs) >= 2:  # the second and later ones views at offsets of one storage
                pieces = [ar.f32(subs[0])] + ar.views(3, subs[1:])
            else:
                pieces = [ar.f32(subs[0])]
            od = {"zero_stage": ZeroStageEnum.weights, "loss_scaler": DynamicLossScaler(), "dynamic_loss_scale": True,
                  "overflow": False, "partition_count": W,
                  "optimizer_state_dict": adam_state(ar, [len(p) for p in pieces]), "fp32_flat_groups": pieces}
        else:
            parts, pads, maps = [], [], []
            for g in groups:
                flat = sum((tensors[n][1] for n in g), [])
                padded = align(len(flat), 2 * W)
                ps = padded // W
                mine = (flat + [0.0] * (padded - len(flat)))[r * ps:(r + 1) * ps]
                pad = padded - len(flat) if r == W - 1 else 0
                if a.bf16_optimizer:
                    parts.append(ar.f32(mine))
                else:  # the lean view of the padded partition
                    lean = ar.f32(mine[:ps - pad], pad=pad)
                    parts.append(lean)
                pads.append(pad)
                m, off = collections.OrderedDict(), 0
                for n in g:
                    k = len(tensors[n][1])
                    lo, hi = max(off, r * ps), min(off + k, (r + 1) * ps)
                    if lo < hi:
                        m[n] = fragment_address(numel=hi - lo, start=lo - r * ps)
                    off += k
                maps.append(m)
            sizes = [len(p) for p in parts]
            od = {"clip_grad": 1.0, "base_optimizer_state": adam_state(ar, sizes),
                  "single_partition_of_fp32_groups": parts, "group_paddings": pads,
                  "partition_count": W if a.bf16_optimizer else [W] * len(groups), "ds_version": "0.17.2",
                  "param_slice_mappings": maps}
            if not a.bf16_optimizer:
                od = {"loss_scaler": DynamicLossScaler(), "dynamic_loss_scale": True, "overflow": False, **od,
                      "zero_stage": ZeroStageEnum.gradients if a.stage == 2 else ZeroStageEnum.optimizer_states}
        prefix = "bf16_" if a.bf16_optimizer else ""
        ar.save({"optimizer_state_dict": od, "ds_config": ds_config, "ds_version": "0.17.2"},
                os.path.join(tagdir, f"{prefix}zero_pp_rank_{r}_mp_rank_00_optim_states.pt"))


if __name__ == "__main__":
    main()
