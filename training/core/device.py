"""Choose the compute device: CUDA, then Apple MPS, then CPU."""

from __future__ import annotations

import torch


def pick_device(prefer: str = "auto") -> torch.device:
    """Return the requested device, or the best available one for ``prefer="auto"``.

    ``prefer`` may be ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``. A request for an
    unavailable accelerator raises ``ValueError`` instead of silently falling back.
    """
    prefer = (prefer or "auto").lower()
    if prefer == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if prefer.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("CUDA was requested but is not available")
    if prefer == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError("MPS was requested but is not available")
    return torch.device(prefer)


def machine_words(device: torch.device | str) -> dict[str, str | int]:
    """What a model was trained on, for its checkpoint: float rounding may differ between CPU
    instruction sets, thread counts and torch versions, so when two runs of one command differ,
    this tells a machine difference from a command difference."""
    import platform

    dev = torch.device(device)
    words: dict[str, str | int] = {"torch": str(torch.__version__), "device": dev.type,
                                   "threads": int(torch.get_num_threads()),
                                   "cpu": platform.processor() or platform.machine()}
    capability = getattr(torch.backends.cpu, "get_cpu_capability", None)
    if capability is not None:
        words["cpu_instructions"] = str(capability())
    if dev.type == "cuda":
        words["gpu"] = torch.cuda.get_device_name(dev)
    return words
