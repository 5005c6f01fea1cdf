"""The trainer and its helpers: the one loop (`trainer`), its DPO and GRPO update rules
(`update_rules`), its set-up (`setup`), resumable state (`state`), the shared-prompt forward
(`sequences`), LoRA (`lora`), checkpoints (`checkpoint`), the memory plan (`plan`, from model
shapes in `model_shape`, read out and checked against the GPU in `plan_report`) and the
prompt-length bound (`prompt_limit`).

The run shell that wraps one tracked run is `harness.training_run`; what the rollout layer shares
with training (`distributed`, `precision`, `models`, `kv_cache`) stays in `harness/`.
"""
