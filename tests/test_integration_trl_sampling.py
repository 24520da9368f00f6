"""VIPGRPOTrainer's sampling modes: real TRL steps on CPU with the tiny Llama (no downloads).

Each test keeps its own log of what TRL generated and scored, call by call, and checks the trainer's
batches, rows, advantages, allocator updates and logged accounting against it.
"""

import json

import numpy as np
import pytest
import torch

pytest.importorskip("trl", reason="TRL is not installed: pip install '.[trl]'")

from datasets import Dataset  # noqa: E402
from test_integration_trl import (  # noqa: E402
    PROMPTS,
    byte_tokenizer,
    common_args,
    exit_worker,
    outcome_reward,
    tiny_llama,
)

import vipfast  # noqa: E402
from vipfast.integrations.trl import (  # noqa: E402
    ALLOCATOR_CHECKPOINT,
    SAMPLING_CHECKPOINT,
    VIPGRPOConfig,
    VIPGRPOTrainer,
)

pytestmark = pytest.mark.slow

ROWS = 16  # generation_batch_size of common_args: 4 prompts x num_generations 4


def distinct_prompts(kinds=("always", "never", "coin"), each=8) -> list[str]:
    """Prompts that differ in text, kinds interleaved: always 0, never 0, coin 0, always 1, ..."""
    return [f"{kind} {i}: {i} + {2 * i} =" for i in range(each) for kind in kinds]


class RewardLog:
    """outcome_reward that logs every call: the prompts, completions and rewards of each generation round.
    It also logs each completion's length as an extra column of TRL's completions table."""

    def __init__(self):
        self.__name__ = "outcome_reward"
        self.calls = []

    def __call__(self, prompts, completions, log_extra=None, **kwargs):
        rewards = outcome_reward(prompts, completions)
        self.calls.append(dict(prompts=list(prompts), completions=list(completions), rewards=rewards))
        log_extra("length", [len(completion) for completion in completions])
        return rewards


class StepRecorder(VIPGRPOTrainer):
    """Keeps, per training step, the StepBatch, the rows and what the loss receives; counts allocator updates."""

    def __init__(self, *args, reward_log: RewardLog, **kwargs):
        super().__init__(*args, **kwargs)
        self.reward_log, self.steps, self.learned = reward_log, [], []
        update = self.allocator.update

        def counting_update(plan, rewards, group_sizes=None, **options):
            self.learned.append(len(np.asarray(rewards).reshape(-1)))
            return update(plan, rewards, group_sizes, **options)

        self.allocator.update = counting_update

    def _generate_and_score_completions(self, inputs):
        calls_before = len(self.reward_log.calls)
        output = super()._generate_and_score_completions(inputs)
        if self.model.training:
            calls = self.reward_log.calls[calls_before:]
            self.steps.append(dict(batch=self.last_batch, rows=self.last_rows, advantages=output["advantages"].clone(),
                                   tool_mask=output.get("tool_mask"), completion_mask=output["completion_mask"],
                                   num_items=float(output["num_items_in_batch"]),
                                   rewards=np.concatenate([call["rewards"] for call in calls]),
                                   prompts=[p for call in calls for p in call["prompts"]],
                                   completions=[c for call in calls for c in call["completions"]],
                                   table=dict(completion=list(self._logs["completion"]),
                                              length=list(self._logs["extra"]["length"]))))
        return output


def train(tmp_path, prompts, *, allocator_object=None, resume=None, **options):
    reward_log = RewardLog()
    tokenizer = byte_tokenizer()
    args = VIPGRPOConfig(**common_args(tmp_path, **options))
    trainer = StepRecorder(model=tiny_llama(tokenizer), reward_funcs=reward_log, args=args, allocator=allocator_object,
                           train_dataset=Dataset.from_dict({"prompt": prompts}), processing_class=tokenizer,
                           reward_log=reward_log)
    trainer.train(resume_from_checkpoint=resume)
    return trainer


def step_logs(trainer) -> list[dict]:
    return [entry for entry in trainer.state.log_history if "loss" in entry]


def reference_advantages(rewards, sizes, estimator, eps=1e-4) -> np.ndarray:
    """Float64, from the definitions: grpo (r - mean) / (std + eps) with the unbiased std, rloo r_j minus the
    mean of the others; 0 in a group of one."""
    out, start = [], 0
    for n in sizes:
        r = np.asarray(rewards[start:start + n], dtype=np.float64)
        start += n
        if n < 2:
            out += [0.0] * n
        elif estimator == "grpo":
            out += list((r - r.mean()) / (r.std(ddof=1) + eps))
        else:
            out += list(r - (r.sum() - r) / (n - 1))
    return np.array(out)


def even_cut_reference(entries, group_sizes, size) -> np.ndarray:
    """Which `size` trained entries make rows, level by level: each group's first, then each group's second..."""
    group_of = np.repeat(np.arange(len(group_sizes)), group_sizes)
    per_group = [[e for e in entries if group_of[e] == g] for g in range(len(group_sizes))]
    chosen, level = [], 0
    while len(chosen) < size:
        for members in per_group:
            if level < len(members) and len(chosen) < size:
                chosen.append(members[level])
        level += 1
    return np.sort(chosen)


def check_step(step, log, estimator):
    """What every step must satisfy, whatever the mode: its batch and rows against the rewards TRL scored."""
    batch, rows = step["batch"], step["rows"]
    rollouts, trains = rows["rollouts"], rows["trains"]
    generated = step["rewards"]  # one process: reward calls in order are the rollouts in generation order
    assert batch.generated_rollouts == len(generated) == log["vipfast/sampling/generated_rollouts"]
    np.testing.assert_array_equal(batch.rewards, generated[batch.rollouts])
    # TRL's row count: the batch's trained rollouts (evenly cut when there are more), then padding
    assert len(rollouts) == len(trains) == ROWS
    entries = np.flatnonzero(batch.trained)
    if len(entries) > ROWS:
        entries = even_cut_reference(entries, batch.group_sizes, ROWS)
    kept = len(entries)
    np.testing.assert_array_equal(rows["entries"], entries)
    assert trains[:kept].all() and not trains[kept:].any()
    np.testing.assert_array_equal(rollouts[:kept], batch.rollouts[entries])
    if batch.generated_rollouts > kept:  # padding comes from rollouts that do not train
        assert not np.isin(rollouts[kept:], rollouts[:kept]).any()
    # advantages: statistics over every rollout of a group, the rows of trained rollouts carry theirs
    expected = reference_advantages(generated[batch.rollouts], batch.group_sizes, estimator)
    np.testing.assert_allclose(step["advantages"][:kept].numpy(), expected[entries], rtol=1e-5, atol=1e-5)
    assert np.all(step["advantages"][kept:].numpy() == 0)
    # rows that do not train are out of the loss: an all-zero loss mask, and not counted in its normaliser
    mask = step["completion_mask"] if step["tool_mask"] is None else step["completion_mask"] * step["tool_mask"]
    assert mask[torch.from_numpy(~trains)].sum() == 0
    assert step["num_items"] == float(mask.sum())
    assert log["vipfast/sampling/trained_rollouts"] == kept and log["vipfast/sampling/padded_rows"] == ROWS - kept
    assert log["vipfast/sampling/trimmed_rollouts"] == batch.trained_rollouts - kept
    assert log["vipfast/sampling/rounds"] == batch.rounds and log["vipfast/sampling/complete"] == float(batch.complete)
    # TRL's completions table lists the rows, with what the reward function logged for each
    completions = np.array(step["completions"], dtype=object)[rollouts]
    assert step["table"]["completion"] == completions.tolist()
    assert step["table"]["length"] == [len(completion) for completion in completions]


def test_dynamic_sampling_keeps_informative_groups_and_refills(tmp_path):
    trainer = train(tmp_path, distinct_prompts(), max_steps=3, sampling="dynamic", allocator="knapsack",
                    advantage_estimator="rloo", min_rollouts=2, max_rollouts=8)
    logs = step_logs(trainer)
    assert len(trainer.steps) == len(logs) == 3
    for step, log in zip(trainer.steps, logs):
        check_step(step, log, "rloo")
        batch = step["batch"]
        starts = np.concatenate([[0], np.cumsum(batch.group_sizes)[:-1]])
        assert np.all(np.maximum.reduceat(batch.rewards, starts) > np.minimum.reduceat(batch.rewards, starts))
        assert batch.complete and len(batch.group_sizes) == 4 and log["vipfast/sampling/informative_groups"] == 4
        # the first round draws 3 x 4 prompts: the generation batch's 4, then 8 refills from the dataset
        assert batch.prompts_drawn == log["vipfast/sampling/prompts_drawn"] >= 12
        assert len(set(step["prompts"])) > 4
        # a cut keeps every group in the loss
        group_of = np.repeat(np.arange(4), batch.group_sizes)
        assert set(group_of[step["rows"]["entries"]]) == {0, 1, 2, 3}
    # every generated rollout reached the allocator, dropped groups included
    assert sum(trainer.learned) == sum(step["batch"].generated_rollouts for step in trainer.steps)
    assert any(step["batch"].generated_rollouts > ROWS for step in trainer.steps)
    assert any(step["batch"].trained_rollouts > ROWS for step in trainer.steps)  # the even cut ran


def test_dynamic_sampling_at_its_round_limit_pads_and_trains(tmp_path):
    """One round of the generation batch's own prompts: 'always' groups drop, the batch is short and padded."""
    trainer = train(tmp_path, distinct_prompts(kinds=("always", "coin")), max_steps=2, sampling="dynamic",
                    sampling_options={"oversample": 1.0, "max_rounds": 1}, allocator="uniform",
                    min_rollouts=4, max_rollouts=4)
    for step, log in zip(trainer.steps, step_logs(trainer)):
        check_step(step, log, "grpo")
        batch = step["batch"]
        assert not batch.complete and batch.rounds == 1 and batch.prompts_drawn == 4
        assert len(batch.group_sizes) <= 2 and not step["rows"]["trains"][4 * len(batch.group_sizes):].any()
        assert np.isfinite(log["loss"])


def test_dynamic_sampling_without_informative_groups_trains_on_nothing(tmp_path):
    trainer = train(tmp_path, distinct_prompts(kinds=("always", "never")), max_steps=2, sampling="dynamic",
                    sampling_options={"oversample": 1.0, "max_rounds": 2}, allocator="uniform",
                    min_rollouts=4, max_rollouts=4)
    logs = step_logs(trainer)
    for step, log in zip(trainer.steps, logs):
        check_step(step, log, "grpo")
        assert step["batch"].rounds == 2 and step["batch"].generated_rollouts == 2 * ROWS
        assert log["vipfast/sampling/informative_groups"] == 0 and log["vipfast/sampling/padded_rows"] == ROWS
        assert log["loss"] == 0 and log["grad_norm"] == 0
    assert sum(trainer.learned) == 2 * 2 * ROWS


def test_dynamic_sampling_resumes_with_the_same_next_batch(tmp_path):
    options = dict(sampling="dynamic", allocator="knapsack", advantage_estimator="rloo", min_rollouts=2, max_rollouts=8,
                   shuffle_dataset=True,
                   save_strategy="steps", save_steps=2)
    prompts = distinct_prompts()
    straight = train(tmp_path / "straight", prompts, max_steps=3, **options)
    checkpoint = tmp_path / "straight" / "checkpoint-2"
    saved = json.loads((checkpoint / SAMPLING_CHECKPOINT).read_text())
    assert saved["sampling"] == "dynamic" and saved["refill"]["position"] + saved["refill"]["epoch"] > 0
    assert (checkpoint / ALLOCATOR_CHECKPOINT).exists()
    resumed = train(tmp_path / "resumed", prompts, max_steps=3, resume=str(checkpoint), **options)
    assert len(resumed.steps) == 1  # step 3 only
    again, first = resumed.steps[0], straight.steps[-1]
    assert again["prompts"] == first["prompts"]  # the same prompts drawn, refills included, in the same rounds
    assert again["completions"] == first["completions"]
    np.testing.assert_array_equal(again["rows"]["rollouts"], first["rows"]["rollouts"])
    np.testing.assert_allclose(again["advantages"].numpy(), first["advantages"].numpy())


def test_greso_screen_skips_prompts_and_the_source_refills_them(tmp_path):
    allocator = vipfast.make_allocator("greso", budget_per_prompt=4, min_rollouts=4, max_rollouts=4, p_easy=0.05,
                                       p_hard=0.05, seed=3)
    screened = []  # per screen call: (keys, kept)
    screen = allocator.screen

    def recording_screen(keys):
        kept = screen(keys)
        screened.append((np.asarray(keys).copy(), kept.copy()))
        return kept

    allocator.screen = recording_screen
    trainer = train(tmp_path, PROMPTS * 4, max_steps=4, allocator_object=allocator)
    assert len(trainer.steps) == 4
    calls, skipped = iter(screened), 0
    for step, log in zip(trainer.steps, step_logs(trainer)):
        check_step(step, log, "grpo")
        batch = step["batch"]
        drawn, kept = [], []
        while sum(map(len, drawn)) < batch.prompts_drawn:  # this step's screen calls
            keys, keep = next(calls)
            drawn.append(keys)
            kept.append(keys[keep])
        # the step generated exactly the prompts the screen kept, 4 rollouts each, and drew the skipped ones too
        assert batch.prompts_drawn == log["vipfast/sampling/prompts_drawn"] == sum(map(len, drawn))
        np.testing.assert_array_equal(batch.prompts.keys, np.concatenate(kept))
        assert len(batch.prompts) == 4 and batch.complete
        assert step["prompts"] == [text for text in batch.prompts.texts for _ in range(4)]
        skipped += batch.prompts_drawn - len(batch.prompts)
    assert skipped > 0  # settled prompts (always / never) were skipped and refilled from the dataset


@pytest.mark.parametrize("mode, options", [
    ("pods", dict(rollouts_per_prompt=8, max_rollouts=10)),
    ("reinforce_ada", dict(sampling_options={"rounds": 2, "per_round": 4})),
    ("vip_rounds", dict(sampling_options={"first_fraction": 0.5})),
])
def test_other_modes_train_end_to_end(tmp_path, mode, options):
    trainer = train(tmp_path, distinct_prompts(), max_steps=2, sampling=mode, allocator="knapsack",
                    advantage_estimator="rloo", min_rollouts=2, **{"max_rollouts": 8, **options})
    logs = step_logs(trainer)
    assert len(trainer.steps) == len(logs) == 2
    for step, log in zip(trainer.steps, logs):
        check_step(step, log, "rloo")
        assert np.isfinite(log["loss"])
    assert sum(trainer.learned) == sum(step["batch"].generated_rollouts for step in trainer.steps)
    batch = trainer.steps[-1]["batch"]
    if mode == "pods":  # 8 generated per prompt, the 4 of largest variance train
        assert batch.generated_rollouts == 32 and batch.trained_rollouts == ROWS
    if mode == "vip_rounds":
        assert batch.rounds == 2 and batch.generated_rollouts == ROWS


def test_config_and_trainer_reject_what_they_cannot_run(tmp_path):
    with pytest.raises(ValueError, match="sampling must be one of"):
        VIPGRPOConfig(**common_args(tmp_path), sampling="greedy")
    with pytest.raises(ValueError, match="max_rounds must be an integer >= 1"):
        VIPGRPOConfig(**common_args(tmp_path), sampling="dynamic", sampling_options={"max_rounds": 0})
    with pytest.raises(TypeError, match="oversampling"):
        VIPGRPOConfig(**common_args(tmp_path), sampling="dynamic", sampling_options={"oversampling": 2})
    with pytest.raises(ValueError, match=r"rollouts_per_prompt \(8\) differs from num_generations \(4\)"):
        VIPGRPOConfig(**common_args(tmp_path), sampling="dynamic", rollouts_per_prompt=8)
    args = VIPGRPOConfig(**common_args(tmp_path), sampling="pods", sampling_options='{"keep": 3}')
    assert args.sampling_options == {"keep": 3}  # JSON from the command line
    assert VIPGRPOConfig(**common_args(tmp_path), sampling="pods").sampling_options == {"keep": 4}

    tokenizer = byte_tokenizer()

    def build(dataset, **options):
        return VIPGRPOTrainer(model=tiny_llama(tokenizer), reward_funcs=outcome_reward,
                              args=VIPGRPOConfig(**common_args(tmp_path), **options), train_dataset=dataset,
                              processing_class=tokenizer)

    with pytest.raises(ValueError, match="does not support a train_dataset column 'image'"):
        build(Dataset.from_dict({"prompt": PROMPTS, "image": [None] * 4}))
    with pytest.raises(ValueError, match="not an IterableDataset"):
        build(Dataset.from_dict({"prompt": PROMPTS * 4}).to_iterable_dataset(), sampling="dynamic",
              allocator="uniform")
    # dynamic plans 3 x 4 prompts per round: at least 2 rollouts each do not fit a fixed budget of 16
    with pytest.raises(ValueError, match="budget 16 is infeasible for 12 prompts"):
        VIPGRPOTrainer(model=tiny_llama(tokenizer), reward_funcs=outcome_reward,
                       args=VIPGRPOConfig(**common_args(tmp_path), sampling="dynamic"),
                       allocator=vipfast.make_allocator("uniform", budget=16, min_rollouts=2, max_rollouts=8),
                       train_dataset=Dataset.from_dict({"prompt": PROMPTS * 4}), processing_class=tokenizer)


TWO_PROCESS_RUNS = {
    # DAPO's rounds with GRESO's screen: plans and screens come from the main process
    "dynamic": dict(sampling="dynamic", allocator="greso", max_steps=3),
    # rounds of 3 rollouts per active prompt: odd round sizes, so the processes' shares need filler rows
    "reinforce_ada": dict(sampling="reinforce_ada", sampling_options={"rounds": 3, "per_round": 3},
                          allocator="knapsack", advantage_estimator="rloo", min_rollouts=2, max_rollouts=8,
                          max_steps=2),
}


@pytest.mark.parametrize("run", sorted(TWO_PROCESS_RUNS))
def test_two_processes_run_one_sampling_mode(tmp_path, run):
    """Two CPU processes (gloo) run the mode identically; each generates an equal share of every round."""
    import subprocess
    import sys

    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", __file__,
               str(tmp_path), run]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert finished.returncode == 0, finished.stderr[-4000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    estimator = TWO_PROCESS_RUNS[run].get("advantage_estimator", "grpo")
    assert len(ranks[0]) == len(ranks[1]) == TWO_PROCESS_RUNS[run]["max_steps"]
    for step0, step1 in zip(*ranks):
        assert step0["batch"] == step1["batch"] and step0["rows"] == step1["rows"]  # one mode, run alike
        assert [len(call) for call in step0["calls"]] == [len(call) for call in step1["calls"]]  # equal shares
        batch = step0["batch"]
        # a round's rollouts are rank 0's share then rank 1's, the last ones filler
        generated, filler = [], 0
        for call0, call1, size in zip(step0["calls"], step1["calls"], batch["round_sizes"]):
            generated += (call0 + call1)[:size]
            filler += len(call0) + len(call1) - size
        assert step0["log"]["vipfast/sampling/filler_rollouts"] == filler
        generated = np.array(generated)
        assert len(generated) == batch["generated_rollouts"]
        rollouts, entries = np.array(batch["rollouts"]), np.array(step0["rows"]["entries"], dtype=np.int64)
        np.testing.assert_array_equal(batch["rewards"], generated[rollouts])
        expected = reference_advantages(generated[rollouts], batch["group_sizes"], estimator)[entries]
        advantages = step0["advantages"] + step1["advantages"]  # rank 0's rows, then rank 1's
        np.testing.assert_allclose(advantages[:len(entries)], expected, rtol=1e-5, atol=1e-5)
        assert not np.any(advantages[len(entries):])
    if run == "reinforce_ada":
        assert any(step["log"]["vipfast/sampling/filler_rollouts"] > 0 for step in ranks[0])
    else:
        assert any(step["batch"]["prompts_drawn"] > 12 for step in ranks[0])  # the screen skipped, refills came


def _two_process_worker(out_dir: str, run: str) -> None:
    """Run by test_two_processes_run_one_sampling_mode under torch.distributed.run: record what this rank saw."""
    import pathlib

    calls = []

    def recording_reward(prompts, completions, **kwargs):
        rewards = outcome_reward(prompts, completions)
        calls.append(rewards)
        return rewards

    class Recorder(VIPGRPOTrainer):
        def _generate_and_score_completions(self, inputs):
            before = len(calls)
            rounds_before = len(self.round_sizes)
            output = super()._generate_and_score_completions(inputs)
            batch = self.last_batch
            steps.append(dict(calls=calls[before:], advantages=output["advantages"].tolist(),
                              rows={key: value.tolist() for key, value in self.last_rows.items()},
                              batch=dict(rollouts=batch.rollouts.tolist(), rewards=batch.rewards.tolist(),
                                         group_sizes=batch.group_sizes.tolist(), trained=batch.trained.tolist(),
                                         texts=list(batch.prompts.texts), prompts_drawn=batch.prompts_drawn,
                                         generated_rollouts=batch.generated_rollouts,
                                         round_sizes=self.round_sizes[rounds_before:])))
            return output

        def _generate_round(self, prompts, counts):
            self.round_sizes.append(int(np.sum(counts)))
            return super()._generate_round(prompts, counts)

    steps = []
    tokenizer = byte_tokenizer()
    options = dict(TWO_PROCESS_RUNS[run])
    args = VIPGRPOConfig(**common_args(out_dir, per_device_train_batch_size=8, max_steps=options.pop("max_steps")),
                         allocator_embedder="hashing", **options)
    trainer = Recorder(model=tiny_llama(tokenizer), reward_funcs=recording_reward, args=args,
                       train_dataset=Dataset.from_dict({"prompt": distinct_prompts()}), processing_class=tokenizer)
    trainer.round_sizes = []
    trainer.train()
    for step, log in zip(steps, step_logs(trainer)):
        step["log"] = log
    pathlib.Path(out_dir, f"rank{trainer.accelerator.process_index}.json").write_text(json.dumps(steps))
    exit_worker()


if __name__ == "__main__":
    import sys

    _two_process_worker(sys.argv[1], sys.argv[2])
