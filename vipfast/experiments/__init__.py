"""Experiments on a synthetic RLVR population: compare allocators at equal budget (`vipfast simulate`)."""

from .simulator import ClusterOracleAllocator, OracleAllocator, Population, RunResult, Scenario, simulate

__all__ = ["Scenario", "Population", "OracleAllocator", "ClusterOracleAllocator", "RunResult", "simulate"]
