"""
vipfast native core: exact rollout allocation and the success-probability GP
"""
from __future__ import annotations
import numpy
import numpy.typing
import typing
__all__: list[str] = ['ESTIMATOR_TABLE', 'KeyIndex', 'LogitCalibration', 'PredictionBasis', 'SUCCESS_GP_STATE_VERSION', 'SuccessGP', 'SuccessGPConfig', 'allocate', 'allocate_relaxed', 'allocation_objective', 'dense_groups', 'expected_bernoulli_variance', 'group_offsets', 'group_order', 'indexed_advantages', 'keyed_advantages', 'laplace_posterior', 'segment_advantages']
class SuccessGPConfig:
    """
    The options of a SuccessGP, one property each; values are checked when a SuccessGP is built from it.
    """
    @staticmethod
    def option_kinds() -> dict:
        """
        {option: 'int' | 'float' | 'float or None' | 'str'}, in the table's order.
        """
    def __init__(self) -> None:
        ...
    def as_dict(self) -> dict:
        """
        {option: value}
        """
    @property
    def auto_exact_max(self) -> typing.Any:
        """
        int
        """
    @auto_exact_max.setter
    def auto_exact_max(self, arg1: typing.Any) -> None:
        ...
    @property
    def calibration_window(self) -> typing.Any:
        """
        int
        """
    @calibration_window.setter
    def calibration_window(self, arg1: typing.Any) -> None:
        ...
    @property
    def capacity(self) -> typing.Any:
        """
        int
        """
    @capacity.setter
    def capacity(self, arg1: typing.Any) -> None:
        ...
    @property
    def clip(self) -> typing.Any:
        """
        float
        """
    @clip.setter
    def clip(self, arg1: typing.Any) -> None:
        ...
    @property
    def dim(self) -> typing.Any:
        """
        int
        """
    @dim.setter
    def dim(self, arg1: typing.Any) -> None:
        ...
    @property
    def forgetting(self) -> typing.Any:
        """
        float
        """
    @forgetting.setter
    def forgetting(self, arg1: typing.Any) -> None:
        ...
    @property
    def jitter(self) -> typing.Any:
        """
        float
        """
    @jitter.setter
    def jitter(self, arg1: typing.Any) -> None:
        ...
    @property
    def lengthscale(self) -> typing.Any:
        """
        float or None
        """
    @lengthscale.setter
    def lengthscale(self, arg1: typing.Any) -> None:
        ...
    @property
    def mode(self) -> typing.Any:
        """
        str
        """
    @mode.setter
    def mode(self, arg1: typing.Any) -> None:
        ...
    @property
    def noise(self) -> typing.Any:
        """
        str
        """
    @noise.setter
    def noise(self, arg1: typing.Any) -> None:
        ...
    @property
    def num_inducing(self) -> typing.Any:
        """
        int
        """
    @num_inducing.setter
    def num_inducing(self, arg1: typing.Any) -> None:
        ...
    @property
    def prior_mean(self) -> typing.Any:
        """
        float or None
        """
    @prior_mean.setter
    def prior_mean(self, arg1: typing.Any) -> None:
        ...
    @property
    def proba(self) -> typing.Any:
        """
        str
        """
    @proba.setter
    def proba(self, arg1: typing.Any) -> None:
        ...
    @property
    def signal_var(self) -> typing.Any:
        """
        float
        """
    @signal_var.setter
    def signal_var(self, arg1: typing.Any) -> None:
        ...
class PredictionBasis:
    """
    What observe can reuse of a prediction of the same rows (read-only).
    """
    def __getstate__(self) -> tuple:
        ...
    def __setstate__(self, arg0: tuple) -> None:
        ...
    @property
    def feature_rows(self) -> numpy.typing.NDArray[numpy.int64]:
        """
        Rows whose features the fast engine computed.
        """
    @property
    def features(self) -> numpy.typing.NDArray[numpy.float64]:
        """
        Their whitened features, float64 [U, M].
        """
    @property
    def inducing_id(self) -> int:
        """
        The fast engine's inducing set (0: none).
        """
    @property
    def keys(self) -> numpy.typing.NDArray[numpy.uint64]:
        ...
    @property
    def latent_mean(self) -> numpy.typing.NDArray[numpy.float64]:
        """
        The GP's posterior mean of the logit, before recalibration.
        """
    @property
    def latent_var(self) -> numpy.typing.NDArray[numpy.float64]:
        """
        The GP's posterior variance of the logit, before recalibration.
        """
class SuccessGP:
    """
    Native success-probability GP; use vipfast.SuccessGP.
    """
    @staticmethod
    def from_state(state: dict) -> SuccessGP:
        ...
    def __init__(self, config: SuccessGPConfig) -> None:
        ...
    def _inject_failure_after(self, stage: str) -> None:
        """
        Tests only: the next observe fails once it has completed this stage.
        """
    def advance(self, steps: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    def observe(self, keys: typing.Annotated[numpy.typing.ArrayLike, numpy.uint64], embeddings: typing.Annotated[numpy.typing.ArrayLike, numpy.float64], successes: typing.Annotated[numpy.typing.ArrayLike, numpy.float64], trials: typing.Annotated[numpy.typing.ArrayLike, numpy.int64], prediction: PredictionBasis = None) -> None:
        ...
    def predict(self, keys: typing.Annotated[numpy.typing.ArrayLike, numpy.uint64], embeddings: typing.Annotated[numpy.typing.ArrayLike, numpy.float64]) -> tuple:
        """
        (mean, var, proba, weight, basis): float64[Q] each and the PredictionBasis observe can take back.
        """
    def pseudo_observations(self) -> dict:
        ...
    def state(self) -> dict:
        ...
    def stored_sites(self, keys: typing.Annotated[numpy.typing.ArrayLike, numpy.uint64]) -> tuple:
        """
        (precision, target) float64[Q] of each key's current site; precision 0 where not stored.
        """
    @property
    def active_mode(self) -> str:
        ...
    @property
    def calibration(self) -> tuple[float, float]:
        """
        (offset, scale) of the recalibration map.
        """
    @property
    def config(self) -> dict:
        ...
    @property
    def dim(self) -> int:
        ...
    @property
    def lengthscale(self) -> typing.Any:
        ...
    @property
    def num_inducing_used(self) -> int:
        ...
    @property
    def num_stored(self) -> int:
        ...
    @property
    def prior_mean(self) -> float:
        ...
    @property
    def step(self) -> int:
        ...
class KeyIndex:
    """
    uint64 key -> dense row; use vipfast.allocators.prompt_table.PromptTable.
    """
    @typing.overload
    def __init__(self) -> None:
        ...
    @typing.overload
    def __init__(self, keys: typing.Annotated[numpy.typing.ArrayLike, numpy.uint64]) -> None:
        """
        An index of distinct keys, row i for keys[i].
        """
    def __len__(self) -> int:
        ...
    def find(self, keys: typing.Annotated[numpy.typing.ArrayLike, numpy.uint64]) -> numpy.typing.NDArray[numpy.int64]:
        """
        int64[Q]: each key's row, -1 when absent.
        """
    def insert(self, keys: typing.Annotated[numpy.typing.ArrayLike, numpy.uint64]) -> numpy.typing.NDArray[numpy.int64]:
        """
        int64[Q]: each key's row, absent keys appended in order of first appearance.
        """
    def keys(self) -> numpy.typing.NDArray[numpy.uint64]:
        """
        uint64[size]: the keys by row.
        """
    @property
    def memory_bytes(self) -> int:
        ...
class LogitCalibration:
    """
    Affine recalibration f -> a + b f of predicted logits, fitted on past outcomes.
    """
    def __init__(self, window: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    def apply(self, mean: typing.Annotated[numpy.typing.ArrayLike, numpy.float64], var: typing.Annotated[numpy.typing.ArrayLike, numpy.float64]) -> tuple:
        """
        (a + b mean, b^2 var).
        """
    def record(self, step: typing.SupportsInt | typing.SupportsIndex, mean: typing.Annotated[numpy.typing.ArrayLike, numpy.float64], var: typing.Annotated[numpy.typing.ArrayLike, numpy.float64], successes: typing.Annotated[numpy.typing.ArrayLike, numpy.float64], trials: typing.Annotated[numpy.typing.ArrayLike, numpy.int64]) -> None:
        """
        Score predictions (mean, var of the logit) against their outcomes, then refit.
        """
    def records(self) -> numpy.typing.NDArray[numpy.float64]:
        """
        (k, 5) float64: step, mean, var, successes, trials.
        """
    def restore(self, offset: typing.SupportsFloat | typing.SupportsIndex, log_scale: typing.SupportsFloat | typing.SupportsIndex, records: typing.Annotated[numpy.typing.ArrayLike, numpy.float64]) -> None:
        ...
    @property
    def log_scale(self) -> float:
        ...
    @property
    def offset(self) -> float:
        ...
def allocate(weights: typing.Annotated[numpy.typing.ArrayLike, numpy.float64] | None, budget: typing.SupportsInt | typing.SupportsIndex, min_rollouts: typing.SupportsInt | typing.SupportsIndex, max_rollouts: typing.SupportsInt | typing.SupportsIndex, estimator: str = 'rloo', curve: typing.Annotated[numpy.typing.ArrayLike, numpy.float64] | None = None) -> numpy.typing.NDArray[numpy.int64]:
    """
    Exact integer minimiser of sum_q w_q phi(n_q) under the budget and bounds (int64[Q]).
    """
def allocate_relaxed(weights: typing.Annotated[numpy.typing.ArrayLike, numpy.float64] | None, budget: typing.SupportsInt | typing.SupportsIndex, min_rollouts: typing.SupportsInt | typing.SupportsIndex, max_rollouts: typing.SupportsInt | typing.SupportsIndex, estimator: str = 'rloo', curve: typing.Annotated[numpy.typing.ArrayLike, numpy.float64] | None = None) -> numpy.typing.NDArray[numpy.float64]:
    """
    Optimum of the continuous relaxation (float64[Q]).
    """
def allocation_objective(weights: typing.Annotated[numpy.typing.ArrayLike, numpy.float64] | None, counts: typing.Annotated[numpy.typing.ArrayLike, numpy.int64], min_rollouts: typing.SupportsInt | typing.SupportsIndex, max_rollouts: typing.SupportsInt | typing.SupportsIndex, estimator: str = 'rloo', curve: typing.Annotated[numpy.typing.ArrayLike, numpy.float64] | None = None) -> float:
    """
    sum_q w_q phi(n_q) for given counts.
    """
def dense_groups(index: numpy.ndarray) -> tuple:
    """
    (group_of, G): each id's group, numbered by first appearance (int32 unless N > 2^31 - 1).
    """
def expected_bernoulli_variance(mean: typing.Annotated[numpy.typing.ArrayLike, numpy.float64], var: typing.Annotated[numpy.typing.ArrayLike, numpy.float64]) -> numpy.typing.NDArray[numpy.float64]:
    """
    E[sigmoid(f)(1 - sigmoid(f))] for f ~ N(mean, var), elementwise, float64[Q].
    """
def group_offsets(bounds: numpy.ndarray, bounds_are_offsets: bool, num_rollouts: typing.SupportsInt | typing.SupportsIndex, allow_empty_groups: bool) -> numpy.typing.NDArray[numpy.int64]:
    """
    Checked CSR offsets (int64[G+1]) from group sizes or offsets.
    """
def group_order(group_of: numpy.ndarray, num_groups: typing.SupportsInt | typing.SupportsIndex) -> tuple:
    """
    (order, sizes): stable counting sort of rollouts by group.
    """
def indexed_advantages(rewards: numpy.ndarray, group_of: numpy.ndarray, num_groups: typing.SupportsInt | typing.SupportsIndex, out: numpy.ndarray, estimator: str, eps: typing.SupportsFloat | typing.SupportsIndex, require_finite: bool) -> None:
    """
    Advantages of groups given by a group id per rollout (int32 or int64) into out (float32[N]).
    """
def keyed_advantages(rewards: numpy.ndarray, keys: numpy.ndarray, out: numpy.ndarray, estimator: str, eps: typing.SupportsFloat | typing.SupportsIndex, require_finite: bool) -> None:
    """
    Advantages of groups given by an integer key per rollout (equal keys, one group) into out (float32[N]).
    """
def laplace_posterior(prior_mean: typing.Annotated[numpy.typing.ArrayLike, numpy.float64], prior_var: typing.Annotated[numpy.typing.ArrayLike, numpy.float64], successes: typing.Annotated[numpy.typing.ArrayLike, numpy.float64], trials: typing.Annotated[numpy.typing.ArrayLike, numpy.float64]) -> tuple:
    """
    (mean, var) of the Laplace approximation of f's posterior under N(prior_mean, prior_var) and binomial
    counts, elementwise, float64[Q] each.
    """
def segment_advantages(rewards: numpy.ndarray, bounds: numpy.ndarray, bounds_are_offsets: bool, out: numpy.ndarray, estimator: str, eps: typing.SupportsFloat | typing.SupportsIndex, require_finite: bool, allow_empty_groups: bool) -> None:
    """
    Advantages of contiguous groups (sizes or CSR offsets) into out (float32[N]).
    """
ESTIMATOR_TABLE: tuple = (('rloo', 2, '1/(n-1)'), ('drgrpo', 3, '(n-1)/n^2'), ('grpo', 3, '(n-1)/n^2'))
SUCCESS_GP_STATE_VERSION: int = 3
__version__: str = '0.1.0'
