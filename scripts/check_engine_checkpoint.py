"""Checks that a safetensors checkpoint written by the engine loads into the PyTorch reference
(scripts/reference/dwc_ref.py) with load_state_dict(strict=True) (spec §9).

/usr/bin/python3 scripts/check_engine_checkpoint.py PATH [--strict-trunk]
Reads PATH with scripts/fixtures/common.load_safetensors (and with safetensors.torch when
importable, comparing the two), builds the reference at the dims found, and loads every
global.* / local.* entry strictly. Trunk entries (local.img_model.*) are not part of the
reference head: they are loaded into a torchvision ResNet-50 when their names/shapes are a
subset of it (required with --strict-trunk), otherwise only counted. Prints OK on success.
"""
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "fixtures"))
sys.path.insert(0, os.path.join(HERE, "reference"))
from common import load_safetensors, safetensors_dtypes  # noqa: E402
import dwc_ref as R  # noqa: E402


def fail(msg):
    print(f"FAIL: {msg}")
    sys.exit(1)


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    if len(args) != 1:
        fail("usage: check_engine_checkpoint.py PATH [--strict-trunk]")
    path = args[0]
    sd = load_safetensors(path)
    dtypes = safetensors_dtypes(path)
    try:
        from safetensors.torch import load_file
    except ImportError:
        load_file = None
    if load_file is not None:
        other = load_file(path)
        if other.keys() != sd.keys() or any(not torch.equal(other[k], sd[k]) for k in sd):
            fail("safetensors.torch and the fallback loader disagree")

    # §9 dtypes: num_batches_tracked I64, everything else F32
    for k, dt in dtypes.items():
        if not k.startswith(("global.", "local.")):
            continue
        want = "I64" if k.endswith("num_batches_tracked") else "F32"
        if dt != want:
            fail(f"{k}: dtype {dt}, expected {want}")

    trunk = {k[len("local.img_model."):]: v for k, v in sd.items() if k.startswith("local.img_model.")}
    head = {k: v for k, v in sd.items() if k.startswith(("global.", "local.")) and not k.startswith("local.img_model.")}
    others = [k for k in sd if not k.startswith(("global.", "local."))]
    try:
        dims = R.dims_from_state_dict(head)
    except KeyError as e:
        fail(f"missing {e} (needed to read the dims)")
    model = R.DWC(dims)
    try:
        model.load_state_dict(head, strict=True)
    except RuntimeError as e:
        fail(str(e))
    # the loaded values are the file's values
    msd = model.state_dict()
    note_shapes = []  # load_state_dict accepts [1] for a 0-d tensor (num_batches_tracked)
    for k, v in head.items():
        if v.shape != msd[k].shape:
            note_shapes.append(f"{k} {list(v.shape)} (PyTorch {list(msd[k].shape)})")
        if not torch.equal(msd[k], v.to(msd[k].dtype).reshape(msd[k].shape)):
            fail(f"{k}: value changed on load")
    note = ""
    if trunk:
        try:
            import torchvision
            ref = {k: v for k, v in torchvision.models.resnet50().state_dict().items() if not k.startswith("fc.")}
        except Exception:  # noqa: BLE001
            ref = None
        is_resnet = ref is not None and all(k in ref and tuple(ref[k].shape) == tuple(v.shape) for k, v in trunk.items())
        if is_resnet:
            missing = [k for k in ref if k not in trunk]
            if missing:
                fail(f"trunk: {len(missing)} torchvision ResNet-50 entries missing, e.g. local.img_model.{missing[0]}")
            note = f", trunk: {len(trunk)} entries loaded into torchvision ResNet-50"
        elif "--strict-trunk" in sys.argv:
            fail("trunk entries are not torchvision ResNet-50 names/shapes")
        else:
            note = f", trunk: {len(trunk)} entries (not a torchvision ResNet-50; not checked)"
    if note_shapes:
        note += f", {len(note_shapes)} scalar(s) stored as [1] instead of [] (accepted), e.g. {note_shapes[0]}"
    if others:
        note += f", {len(others)} entries outside global./local. ignored"
    print(f"OK {len(head)} entries, dims Dc={dims.Dc} D={dims.D} C={dims.C} E={dims.E} V={dims.V}{note}")


if __name__ == "__main__":
    main()
