"""Triton kernels of vipfast, installed as vipfast.kernels.

    group_advantages   ragged per-group GRPO / Dr.GRPO / RLOO advantages, and a torch reference
    token_advantages   rollout -> token broadcast (packed or padded) and the fused rewards -> tokens kernel

Submodules import triton; this package does not, so `import vipfast.kernels` works without it.
Use the public wrappers in vipfast.advantages, which validate inputs and pick Triton for CUDA
tensors. To run the kernels on CPU tensors, set TRITON_INTERPRET=1 before importing them.
"""
