"""TEMPORARY (tiny worker): parallel tuning runs pinned to 2 cores each. Deleted after use."""
import json, os, subprocess, sys, tempfile, time
CONFIGS = {
 "sft350": {"sft": {"steps": 350}},
 "sft400": {},
 "sft450": {"sft": {"steps": 450}},
 "sft500": {"sft": {"steps": 500}},
 "rm4L": {"reward_model": {"num_hidden_layers": 4}},
 "rm2L_300_2e3": {"reward_model": {"steps": 300, "lr": 2e-3}},
 "rmscratch": {"reward_model": {"init": "scratch", "steps": 300, "lr": 2e-3}},
 "fp32": {"sft": {"bf16_autocast": False}, "reward_model": {"bf16_autocast": False}},
}
CHILD = r'''
import json, sys, tempfile, time, torch
from harness.tiny import tiny_recipe, build_tiny_assets
from harness.tiny.build import sample_math_accuracy
from harness.tiny.math_task import read_jsonl
from transformers import AutoModelForCausalLM, AutoTokenizer
name, overrides = sys.argv[1], json.loads(sys.argv[2])
d = tempfile.mkdtemp()
s = build_tiny_assets(d, tiny_recipe(**overrides), progress=True)
torch.set_num_threads(2)
tok = AutoTokenizer.from_pretrained(d + "/policy"); m = AutoModelForCausalLM.from_pretrained(d + "/policy").eval()
val = read_jsonl(__import__("pathlib").Path(d) / "data/math/validation.jsonl")
extra = {f"T{t}_s{seed}": sample_math_accuracy(m, tok, val, t, top_p=p, seed=seed)["accuracy"] for t, p in [(1.0, 1.0), (0.6, 0.9)] for seed in (1, 2)}
extra["greedy"] = sample_math_accuracy(m, tok, val, 0.0)["accuracy"]
print("RESULT", json.dumps({"name": name, "timings": s["timings"], "total": s["total_wall_s"], "seed_eval": s["seed_eval"], "rm": s["reward_model"], "extra": extra, "bf16": s["bf16_autocast"]}), flush=True)
'''
out = os.environ.get("OUT", "/tmp")
env = dict(os.environ, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="2", PYTHONPATH=os.getcwd())
procs = {}
for i, (name, ov) in enumerate(CONFIGS.items()):
    log = open(f"{out}/{name}.log", "w")
    procs[name] = subprocess.Popen(["taskset", "-c", f"{2*i},{2*i+1}", sys.executable, "-c", CHILD, name, json.dumps(ov)], stdout=subprocess.PIPE, stderr=log, text=True, env=env)
results = []
for name, p in procs.items():
    stdout, _ = p.communicate()
    for line in stdout.splitlines():
        if line.startswith("RESULT"):
            results.append(json.loads(line[7:]))
            print(line, flush=True)
json.dump(results, open(f"{out}/results.json", "w"), indent=1)
