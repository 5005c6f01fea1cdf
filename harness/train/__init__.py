"""The trainer and its helpers: the one loop (`trainer`), its set-up (`setup`), resumable state
(`state`), the shared-prompt forward (`sequences`), LoRA (`lora`), checkpoints (`checkpoint`),
the memory plan (`plan`) and the prompt-length bound (`prompt_limit`).

The run shell that wraps one tracked run is `harness.training_run`; what the rollout layer shares
with training (`distributed`, `precision`, `models`, `kv_cache`) stays in `harness/`.
"""
