"""`garrison demo` end to end at a small size: the README's main job, on this machine's real devices."""

from __future__ import annotations

import json

from garrison.governor.demo import DemoConfig, pooled_steps_per_s, run_demo

SUMMARY_KEYS = {
    "training_throughput_retention",
    "lent_capacity_used_fraction",
    "power_over_cap_fraction",
    "max_overshoot_fraction",
    "lost_requests",
    "joules_per_video",
}


def test_a_small_demo_trains_serves_and_reports(tmp_path):
    cfg = DemoConfig(
        out_dir=tmp_path / "demo",
        first_burst=2,
        second_burst=2,
        video_steps=4,
        train_steps=8,
        train_batch_tokens=256,
        warmup_steps=2,
        train_after_videos=1,
        lend_wait_s=60.0,
        grace_period_s=2.0,
        timeout_s=600,
    )
    result = run_demo(cfg)
    s = result.summary
    assert SUMMARY_KEYS <= set(s)
    assert s["lost_requests"] == 0 and s["videos"] == 4
    # the job was submitted once the first burst's first video had completed, not at a fixed time
    assert s["videos_completed_before_training"] >= 1
    assert s["training_steps_per_s_alone"] and s["training_steps_per_s_governed"]
    # the baseline pools the alone runs before and after the governed phase: steps over seconds
    before, after = s["training_steps_per_s_alone_before"], s["training_steps_per_s_alone_after"]
    assert before and after
    assert abs(s["training_steps_per_s_alone"] - 2 / (1 / before + 1 / after)) < 1e-9
    assert s["joules_per_video"] > 0 and s["power_source"] == "estimate"
    assert 0 <= s["power_over_cap_fraction"] <= 1 and s["control_periods"] > 0
    assert json.loads((tmp_path / "demo" / "summary.json").read_text()) == json.loads(json.dumps(s))
    html = result.report_html.read_text()
    assert html.count("<img") == 4 and "Governor decisions" in html
    assert {p.name for p in (tmp_path / "demo" / "charts").iterdir()} == {
        "power.png", "allocation.png", "queue.png", "training.png"
    }  # fmt: skip


def test_the_alone_baseline_pools_steps_over_seconds_and_skips_a_missing_run():
    assert pooled_steps_per_s([0.5, 1.0]) == 2 / 3  # 2 runs of n steps in 2n + n seconds
    assert pooled_steps_per_s([0.8, None]) == 0.8
    assert pooled_steps_per_s([None, None]) is None
