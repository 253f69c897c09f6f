"""Prompt-policy accuracy on the shipped evaluation set, and milliseconds per prompt. Prints one JSON line.

    python benchmarks/shield_policy.py

Precision, recall and false-positive rate per category on all rows, on the dev rows (which set the embedding
thresholds) and on the test rows (which did not); latency is the mean over the whole set after one warm-up pass,
for the full policy (embeddings on) and for the rules alone.
"""

from __future__ import annotations

import json
import os
import platform
import time

from garrison.shield.policy import Policy, PolicyConfig, evaluate_policy, load_eval_set


def latency_ms(policy: Policy, prompts: list[str]) -> float:
    for p in prompts[:50]:
        policy.check(p)  # warm-up: model load, exemplar vectors, caches
    start = time.perf_counter()
    for p in prompts:
        policy.check(p)
    return (time.perf_counter() - start) / len(prompts) * 1000


def summary(report: dict) -> dict:
    return {"categories": report["categories"], "overall": report["overall"], "prompts": report["prompts"]}


def main() -> None:
    rows = load_eval_set()
    full = Policy(PolicyConfig(use_embeddings=True))
    rules = Policy(PolicyConfig(use_embeddings=False))
    prompts = [r["prompt"] for r in rows]
    out = {
        "benchmark": "policy",
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus, load {os.getloadavg()[0]:.1f}",
        "policy_version": full.version,
        "all": summary(evaluate_policy(full, rows)),
        "dev": summary(evaluate_policy(full, [r for r in rows if r["split"] == "dev"])),
        "test": summary(evaluate_policy(full, [r for r in rows if r["split"] == "test"])),
        "rules_only_all": summary(evaluate_policy(rules, rows)),
        "ms_per_prompt": round(latency_ms(full, prompts), 3),
        "ms_per_prompt_rules_only": round(latency_ms(rules, prompts), 3),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
