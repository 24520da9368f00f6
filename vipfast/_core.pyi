"""
vipfast native core: exact rollout allocation and the success-probability GP
"""
from __future__ import annotations
import numpy
import numpy.typing
import typing
__all__: list[str] = ['PredictionBasis', 'SUCCESS_GP_STATE_VERSION', 'SuccessGP', 'SuccessGPConfig', 'allocate', 'allocate_relaxed', 'allocation_objective']
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
SUCCESS_GP_STATE_VERSION: int = 3
__version__: str = '0.1.0'
