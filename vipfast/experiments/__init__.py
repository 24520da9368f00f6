"""Experiments on a synthetic RLVR population: compare allocators and sampling modes at equal budget
(`vipfast simulate`, docs/simulator.md)."""

from .oracles import ClusterOracleAllocator, OracleAllocator
from .population import Population, Scenario
from .scenarios import SCENARIOS, scenario
from .simulator import RunResult, simulate

__all__ = ["Scenario", "Population", "OracleAllocator", "ClusterOracleAllocator", "RunResult", "simulate",
           "SCENARIOS", "scenario"]
