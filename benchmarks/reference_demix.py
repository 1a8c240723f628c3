"""The reference to beat: MSST's chunked inference (`demix`, generic mode) around lucidrains' BS-RoFormer.

`reference_demix` re-implements `utils/model_utils.py::demix` of ZFTurbo/Music-Source-Separation-Training
step for step (model-spec §5), including what makes it slower or odder than it needs to be, because the
benchmarks measure against what the original design ran:

- chunk C = 352800 samples, step C // num_overlap, fade C // 10, and a reflect border of C - step on both
  ends when the track is longer than twice that border;
- a linear fade-in/fade-out window, replaced per batch: the first batch (when its last chunk starts at 0)
  gets a flat start, the batch holding the final chunk a flat end, and that one window weights every chunk
  of the batch (so the output depends on the batch size);
- the last chunk is right-padded to C by reflection when longer than C // 2, with zeros otherwise;
- each chunk's output is moved to the host one by one and summed into `result` and `counter`, both
  [stems, channels, samples] float32 on the host, and the output is result / counter with 0/0 set to 0;
- on CUDA the whole loop runs under fp16 autocast when `use_amp` (the viperx config sets use_amp: true);
  MSST's `torch.cuda.amp.autocast` does nothing on a CPU device, and neither does this.

`reference_bs_roformer` builds the model from bs-roformer 0.4.1 (lucidrains), which loads the viperx keys
strictly and is bit-identical to MSST's model code of the time (model-spec §3).
"""

from __future__ import annotations

import importlib.util
import sys
import types
import warnings
from collections.abc import Callable
from importlib.metadata import version

import torch
import torch.nn.functional as F

REFERENCE_VERSIONS = ("0.3.6", "0.3.7", "0.3.8", "0.3.9", "0.3.10", "0.4.0", "0.4.1")
MSST_CHUNK_SAMPLES = 352800  # audio.chunk_size of the viperx config
MSST_NUM_OVERLAP = 2  # inference.num_overlap
MSST_BATCH_SIZE = 4  # inference.batch_size

ProgressCallback = Callable[[int, int], None]  # (chunks done, chunks in total)


def reference_bs_roformer(model_config: dict) -> torch.nn.Module:
    """bs-roformer 0.4.1's BSRoformer built from the `model` section of a viperx-style config.

    The package's `__init__` also imports its Mel-Band model, which needs librosa; the BS model does not,
    so the package is registered without running `__init__` and only `bs_roformer.bs_roformer` is
    imported. 0.4.1 takes no `linear_transformer_depth` (it has no linear attention), so that key, 0 in
    the viperx config, is dropped; lists become tuples as in the MSST yaml.
    """
    installed = version("BS-RoFormer")
    if installed not in REFERENCE_VERSIONS:
        raise RuntimeError(
            f"bs-roformer {installed} is installed; the reference needs one of "
            f"{', '.join(REFERENCE_VERSIONS)} (pip install bs-roformer==0.4.1), the versions that compute "
            "what MSST computed"
        )
    if "bs_roformer" not in sys.modules:
        package = types.ModuleType("bs_roformer")
        package.__path__ = list(importlib.util.find_spec("bs_roformer").submodule_search_locations)
        sys.modules["bs_roformer"] = package
    from bs_roformer.bs_roformer import BSRoformer as ReferenceBSRoformer

    kwargs = {key: tuple(value) if isinstance(value, list) else value for key, value in model_config.items()}
    if kwargs.pop("linear_transformer_depth", 0):
        raise ValueError("bs-roformer 0.4.1 has no linear-attention transformer")
    return ReferenceBSRoformer(**kwargs)


def use_msst_attention_kernels(model: torch.nn.Module, device: torch.device, use_amp: bool) -> None:
    """Set the CUDA attention kernels MSST's `Attend` would use for this run (call before every run).

    MSST uses flash attention alone on CUDA devices of compute capability >= 8.0, which needs the fp16
    inputs autocast gives; bs-roformer 0.4.1 does so on an A100 only and uses the math or
    memory-efficient kernels elsewhere. A run without autocast gets those (flash has no fp32 kernel).
    """
    if device.type != "cuda":
        return
    flash_only = use_amp and torch.cuda.get_device_capability(device)[0] >= 8
    for module in model.modules():
        config = getattr(module, "cuda_config", None)
        if config is not None:  # FlashAttentionConfig(enable_flash, enable_math, enable_mem_efficient)
            module.cuda_config = type(config)(flash_only, not flash_only, not flash_only)


def msst_window(chunk_samples: int, fade_samples: int) -> torch.Tensor:
    """Ones with a linear fade-in over the first and a fade-out over the last `fade_samples`: [chunk]."""
    window = torch.ones(chunk_samples)
    window[-fade_samples:] = torch.linspace(1, 0, fade_samples)
    window[:fade_samples] = torch.linspace(0, 1, fade_samples)
    return window


@torch.inference_mode()
def reference_demix(
    model: torch.nn.Module,
    mix: torch.Tensor,
    device: str | torch.device,
    chunk_samples: int = MSST_CHUNK_SAMPLES,
    num_overlap: int = MSST_NUM_OVERLAP,
    batch_size: int = MSST_BATCH_SIZE,
    use_amp: bool = True,
    progress: ProgressCallback | None = None,
) -> torch.Tensor:
    """MSST `demix` (generic mode). mix: [channels, samples] float32 on the host.

    The model maps [batch, channels, chunk] to [batch, stems, channels, chunk] or, for one stem, to
    [batch, channels, chunk] (bs-roformer 0.4.1). Returns [stems, channels, samples] float32 on the host.
    """
    device = torch.device(device)
    step_samples = chunk_samples // num_overlap
    fade_samples = chunk_samples // 10
    border_samples = chunk_samples - step_samples
    original_samples = mix.shape[-1]
    padded = original_samples > 2 * border_samples and border_samples > 0
    if padded:
        mix = F.pad(mix[None], (border_samples, border_samples), mode="reflect")[0]
    samples = mix.shape[-1]
    base_window = msst_window(chunk_samples, fade_samples)
    total_chunks = len(range(0, samples, step_samples))

    result: torch.Tensor | None = None  # [stems, channels, samples]
    counter: torch.Tensor | None = None  # [stems, channels, samples]
    batch: list[torch.Tensor] = []  # each [channels, chunk] on the device
    locations: list[tuple[int, int]] = []  # (start, length) of each chunk of the batch
    done_chunks = 0
    start = 0
    with warnings.catch_warnings(), torch.autocast("cuda", enabled=use_amp and device.type == "cuda"):
        warnings.simplefilter("ignore", FutureWarning)  # 0.4.1 uses the deprecated sdp_kernel context
        while start < samples:
            part = mix[:, start : start + chunk_samples].to(device)
            part_samples = part.shape[-1]
            pad_mode = "reflect" if part_samples > chunk_samples // 2 else "constant"
            part = F.pad(part[None], (0, chunk_samples - part_samples), mode=pad_mode)[0]
            batch.append(part)
            locations.append((start, part_samples))
            start += step_samples
            if len(batch) < batch_size and start < samples:
                continue
            chunks = torch.stack(batch)  # [b, channels, chunk]
            estimates = model(chunks)
            estimates = estimates.reshape(len(batch), -1, *chunks.shape[1:])  # [b, stems, channels, chunk]
            window = base_window.clone()
            if start - step_samples == 0:  # the batch's last chunk starts at 0
                window[:fade_samples] = 1
            elif start >= samples:  # the batch holds the final chunk
                window[-fade_samples:] = 1
            if result is None:
                result = torch.zeros(estimates.shape[1], *mix.shape, dtype=torch.float32)
                counter = torch.zeros_like(result)
            for estimate, (chunk_start, length) in zip(estimates, locations, strict=True):
                span = slice(chunk_start, chunk_start + length)
                result[..., span] += estimate[..., :length].cpu() * window[:length]
                counter[..., span] += window[:length]
            done_chunks += len(batch)
            if progress is not None:
                progress(done_chunks, total_chunks)
            batch, locations = [], []

    output = torch.nan_to_num(result / counter, nan=0.0)
    if padded:
        output = output[..., border_samples:-border_samples]
    return output
